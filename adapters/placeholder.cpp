// replaced by the adapters sources
