"""Session tools: every value lives in the host's session store (SessionContext), so
consecutive calls of one session may run on different workers and still agree."""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional

from snakepit_bridge.adapter import tool


def _where(ctx: Any) -> Dict[str, Any]:
    return {"worker_id": ctx.worker_id, "pid": os.getpid()}


class SessionOps:
    """Counters, worker facts and a small model registered in the session."""

    @tool(description="Initialises the session's state in the host: start time, "
                      "command count and counter")
    def init_session(self) -> Dict[str, Any]:
        ctx = self.session_context
        ctx.set("session_start_time", time.time())
        ctx.set("command_count", 0)
        ctx.set("counter", 0)
        return {"session_id": ctx.session_id, **_where(ctx)}

    @tool(description="Adds `by` to the session counter (atomic in the host); the new "
                      "value and the worker that served the call")
    def increment_counter(self, by: int = 1) -> Dict[str, Any]:
        ctx = self.session_context
        value = ctx.increment("counter", by)
        ctx.increment("command_count")
        return {"value": value, **_where(ctx)}

    @tool(description="The session counter")
    def get_counter(self) -> Dict[str, Any]:
        ctx = self.session_context
        return {"value": ctx.get("counter", 0), **_where(ctx)}

    @tool(description="Which worker serves this call; with hold, first records it in "
                      "the session (key `holding`) and keeps the worker busy until the "
                      "host sets the session key `release` (at most 10 s)")
    def get_worker_info(self, hold: bool = False) -> Dict[str, Any]:
        ctx = self.session_context
        ctx.increment("command_count")
        if hold:
            ctx.set("holding", ctx.worker_id)
            deadline = time.monotonic() + 10.0
            while not ctx.get("release", False) and time.monotonic() < deadline:
                time.sleep(0.01)
        return {"session_id": ctx.session_id, "command_count": ctx.get("command_count"),
                **_where(ctx)}

    @tool(description="Registers a linear model y = w.x + b under `name` in the session")
    def register_model(self, name: str, weights: List[float], bias: float = 0.0) -> Dict[str, Any]:
        ctx = self.session_context
        ctx.set(f"model:{name}", {"weights": [float(w) for w in weights], "bias": float(bias)})
        ctx.increment("command_count")
        return {"registered": name, **_where(ctx)}

    @tool(description="Applies the session's model `name` to x")
    def predict(self, name: str, x: List[float]) -> Dict[str, Any]:
        ctx = self.session_context
        model: Optional[Dict[str, Any]] = ctx.get(f"model:{name}")
        if model is None:
            raise KeyError(f"no model {name!r} in session {ctx.session_id}")
        y = sum(w * v for w, v in zip(model["weights"], x)) + model["bias"]
        ctx.increment("command_count")
        return {"y": y, **_where(ctx)}

    @tool(description="Reads the session's duration and command count (the host drops "
                      "the state itself with cleanup_session)")
    def session_summary(self) -> Dict[str, Any]:
        ctx = self.session_context
        start = ctx.get("session_start_time", time.time())
        return {"duration_ms": round((time.time() - start) * 1000.0, 2),
                "command_count": ctx.get("command_count", 0), **_where(ctx)}
