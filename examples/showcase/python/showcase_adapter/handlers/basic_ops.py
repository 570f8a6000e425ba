"""Stateless tools: ping, echo, arithmetic, deliberate errors, a slow call and a call
back into a host tool."""

from __future__ import annotations

import os
import time
from typing import Any, Dict

from snakepit_bridge.adapter import tool


class ShowcaseError(Exception):
    """An application-level failure; the host matches on its type name."""


_OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,  # b == 0 raises ZeroDivisionError, on purpose
    "pow": lambda a, b: a ** b,
}


class BasicOps:
    """Computation without state: any worker can serve any call."""

    @tool(description="Returns pong with the pid and worker id that answered")
    def ping(self) -> Dict[str, Any]:
        ctx = self.session_context
        return {"pong": True, "pid": os.getpid(), "worker_id": getattr(ctx, "worker_id", "")}

    @tool(description="Returns its arguments unchanged")
    def echo(self, **kwargs: Any) -> Dict[str, Any]:
        return kwargs

    @tool(description="Applies op (add, sub, mul, div, pow) to a and b")
    def compute(self, op: str, a: float, b: float) -> float:
        if op not in _OPS:
            raise ShowcaseError(f"unknown operation {op!r}; known: {', '.join(_OPS)}")
        return _OPS[op](a, b)

    @tool(description="Raises the exception named by kind (value, key, showcase)")
    def error_demo(self, kind: str = "value") -> None:
        if kind == "key":
            raise KeyError("missing_key")
        if kind == "showcase":
            raise ShowcaseError("the application refused the input")
        raise ValueError(f"bad value for kind {kind!r}")

    @tool(description="Sleeps ms milliseconds, then returns how long it slept")
    def slow(self, ms: float) -> Dict[str, Any]:
        time.sleep(float(ms) / 1000.0)
        return {"slept_ms": ms, "pid": os.getpid()}

    @tool(description="Calls the host tool `name` with `args` and wraps its result")
    def ask_host(self, name: str, args: Dict[str, Any] = None) -> Dict[str, Any]:
        result = self.session_context.call_host_tool(name, **(args or {}))
        return {"tool": name, "result": result, "pid": os.getpid()}

    @tool(description="The host tools this worker can call")
    def host_tool_names(self) -> list:
        return sorted(self.session_context.host_tools)
