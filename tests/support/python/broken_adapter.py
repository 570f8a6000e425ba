"""An adapter module that cannot be imported, on purpose (test fixture).

Tests use ``--adapter broken_adapter.BrokenAdapter`` (with this folder on the Python
path) to check that an adapter import failure exits with code 3 and writes
``<ready-file>.error``.
"""

raise ImportError(
    "broken_adapter always fails to import (test fixture for adapter import failures)")
