"""Tools for many parallel calls: a short I/O-like wait and a small CPU task."""

from __future__ import annotations

import os
import time
from typing import Any, Dict

from snakepit_bridge.adapter import tool


class ConcurrentOps:
    """Each call reports the process that served it."""

    @tool(description="Waits ms milliseconds (an I/O-bound task); returns task id and pid")
    def io_task(self, task_id: int, ms: float = 20) -> Dict[str, Any]:
        time.sleep(float(ms) / 1000.0)
        return {"task_id": task_id, "pid": os.getpid()}

    @tool(description="Sums i*i for i < n (a CPU-bound task); returns task id, result, pid")
    def cpu_task(self, task_id: int, n: int = 100000) -> Dict[str, Any]:
        total = sum(i * i for i in range(int(n)))
        return {"task_id": task_id, "result": total, "pid": os.getpid()}
