"""An adapter that fails to start while a marker file exists (test fixture).

The circuit-breaker tests point ``SNAKEPIT_FLAKY_START_FILE`` at a path: while that
file exists the adapter module refuses to import, so every new worker fails its
start-up (exit code 3 and ``<ready-file>.error``); once the file is removed,
workers start normally again.
"""

from __future__ import annotations

import os

from snakepit_bridge.adapters.showcase import ShowcaseAdapter

_MARKER = os.environ.get("SNAKEPIT_FLAKY_START_FILE", "")
if _MARKER and os.path.exists(_MARKER):
    raise ImportError(f"start-up refused: {_MARKER} exists")


class FlakyStartAdapter(ShowcaseAdapter):
    """The showcase tools, importable only while the marker file is absent."""
