"""Adapter of the chaos suite: the showcase tools plus one that leaves a grandchild in
the worker's process group, so tests can check that nothing a worker started outlives
the host."""

from __future__ import annotations

import os
import subprocess
from typing import Any, Dict

from snakepit_bridge.adapter import tool
from snakepit_bridge.adapters.showcase import ShowcaseAdapter


class ChaosAdapter(ShowcaseAdapter):
    """Showcase + spawn_grandchild."""

    @tool(description="Starts `sleep 300` in the worker's process group; returns its pid")
    def spawn_grandchild(self) -> Dict[str, Any]:
        child = subprocess.Popen(["/bin/sleep", "300"], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return {"pid": child.pid, "pgid": os.getpgid(child.pid), "worker": os.getpid()}
