"""Test-only adapters for the stdio bridge and the per-process hooks (both kinds).

The hook adapter writes what happened to the file named by ``"log"`` in its adapter
config, so a test can see from outside whether and when the hooks ran.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, List

from snakepit_bridge import BaseAdapter, tool
from snakepit_bridge.errors import WorkerKindError


def _append(path: str, line: str) -> None:
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


class HookAdapter(BaseAdapter):
    """Records on_worker_start / on_worker_stop and the calls that ran."""

    def on_worker_start(self, config: Dict[str, Any]) -> None:
        if config.get("fail_start"):
            raise RuntimeError("cannot load the model")
        self.config = dict(config)
        self.log_path = str(config.get("log", ""))
        _append(self.log_path, f"start {os.getpid()}")

    def on_worker_stop(self) -> None:
        delay = float(self.config.get("stop_delay_ms", 0)) / 1000.0
        if delay:
            time.sleep(delay)
        _append(self.log_path, "stop")

    @tool
    def config_seen(self) -> Dict[str, Any]:
        return self.config

    @tool
    def slow(self, ms: float, tag: str = "") -> str:
        _append(self.log_path, f"begin {tag}")
        time.sleep(float(ms) / 1000.0)
        _append(self.log_path, f"end {tag}")
        return tag

    @tool
    def per_call_state(self, value: Any) -> Any:
        # Assigned on the request's own copy: the next call must not see it.
        previous = getattr(self, "scratch", None)
        self.scratch = value
        return previous


class StdioTestAdapter(BaseAdapter):
    """Prints, async tools, an async stream, session context probes, module lists."""

    @tool
    def shout(self, text: str) -> str:
        print(text)
        sys.stdout.write(text + "\n")
        os.write(1, (text + "\n").encode())
        return "done"

    @tool
    async def async_wait(self, ms: float, tag: str) -> str:
        import asyncio

        await asyncio.sleep(float(ms) / 1000.0)
        return tag

    @tool
    async def async_count(self, n: int):
        import asyncio

        for i in range(int(n)):
            await asyncio.sleep(0)
            yield {"i": i}

    @tool
    def text(self, value: str) -> str:
        return value

    @tool
    def repeat(self, value: str, times: int) -> str:
        return value * int(times)

    @tool
    def context_seen(self) -> Dict[str, Any]:
        ctx = self.session_context
        try:
            ctx.get("k")
            state_error = None
        except WorkerKindError as exc:
            state_error = str(exc)
        try:
            ctx.call_host_tool("anything")
            host_error = None
        except WorkerKindError as exc:
            host_error = str(exc)
        return {"session_id": ctx.session_id, "correlation_id": ctx.correlation_id,
                "metadata": ctx.request_metadata, "state_error": state_error,
                "host_error": host_error}

    @tool
    def loaded_modules(self) -> List[str]:
        return sorted(m for m in sys.modules
                      if m.split(".")[0] in ("grpc", "google", "asyncio")
                      or m.startswith("snakepit_bridge_pb2"))

    @tool
    def raise_big(self, size: int) -> None:
        raise ValueError("x" * int(size))

    @tool
    def nan(self) -> float:
        return float("nan")


class UpstreamStyleAdapter:
    """No BaseAdapter, no @tool: upstream's execute_tool dispatcher."""

    def execute_tool(self, tool_name: str, arguments: Dict[str, Any], context: Any) -> Any:
        if tool_name == "boom":
            raise KeyError("boom")
        return {"tool": tool_name, "arguments": arguments,
                "session_id": context.session_id}


class LifecycleAdapter(BaseAdapter):
    """Async start hook; initialize/cleanup around every call (recorded per class)."""

    events: List[str] = []

    async def on_worker_start(self, config: Dict[str, Any]) -> None:
        import asyncio

        await asyncio.sleep(0)
        LifecycleAdapter.events.append("start")

    def initialize(self) -> None:
        LifecycleAdapter.events.append("initialize")

    async def cleanup(self) -> None:
        LifecycleAdapter.events.append("cleanup")

    @tool
    def events_so_far(self) -> List[str]:
        return list(LifecycleAdapter.events)

    @tool
    async def async_events(self) -> List[str]:
        return list(LifecycleAdapter.events)
