"""An adapter module that cannot be imported, on purpose.

Tests use ``--adapter snakepit_bridge.adapters.broken.BrokenAdapter`` to check that an
adapter import failure exits with code 3 and writes ``<ready-file>.error``.
"""

raise ImportError(
    "snakepit_bridge.adapters.broken always fails to import (test fixture for "
    "adapter import failures)")
