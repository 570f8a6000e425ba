// replaced by the supervision sources
