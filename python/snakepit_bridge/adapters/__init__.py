"""Adapters shipped with the worker: ``showcase`` (used by the C++ tests, demo and
benchmarks) and ``broken`` (fails at import, for startup-failure tests)."""
