"""Adapters shipped with the worker: ``showcase`` (used by the C++ tests, demo and
benchmarks) and ``session_showcase`` (session state and host tools). Adapters that exist
only for tests live in the test tree (tests/support/python)."""
