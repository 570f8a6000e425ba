"""A stateless adapter that keeps everything in the host session (SessionContext).

Any worker can serve any call of a session: the adapter instance lives for one
request and holds nothing, every value is read from and written to the host.
The C++ session tests and docs/sessions.md rely on these tool names.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from snakepit_bridge.adapter import BaseAdapter, tool


class SessionShowcaseAdapter(BaseAdapter):
    """Counters, a key/value notebook and host-tool calls, all through the session."""

    @property
    def ctx(self) -> Any:
        return self.session_context

    @tool(description="Atomically adds `by` to the counter `key` in the host; new value")
    def incr(self, key: str = "counter", by: float = 1) -> Any:
        return self.ctx.increment(key, by)

    @tool(description="Adds 1 with get then set (not atomic: concurrent calls lose "
                      "updates; kept to show why increment exists)")
    def racy_incr(self, key: str = "racy") -> Any:
        value = self.ctx.get(key, 0) + 1
        self.ctx.set(key, value)
        return value

    @tool(description="Stores value under key; returns true")
    def remember(self, key: str, value: Any) -> bool:
        self.ctx.set(key, value)
        return True

    @tool(description="The value under key, or default")
    def recall(self, key: str, default: Any = None) -> Any:
        return self.ctx.get(key, default)

    @tool(description="Deletes key; whether it existed")
    def forget(self, key: str) -> bool:
        return self.ctx.delete(key)

    @tool(description="The session's state keys")
    def state_keys(self) -> List[str]:
        return self.ctx.keys()

    @tool(description="Appends item to the list under key (compare-and-set loop)")
    def append(self, key: str, item: Any) -> List[Any]:
        while True:
            current = self.ctx.get(key)
            updated = list(current or []) + [item]
            if self.ctx.compare_and_set(key, current, updated):
                return updated

    @tool(description="The session id and worker id serving this call")
    def whoami(self) -> Dict[str, Optional[str]]:
        return {"session_id": self.ctx.session_id, "worker_id": self.ctx.worker_id}

    @tool(description="Holds this worker for ms milliseconds (tests use it to make the "
                      "next call of a session go to another worker); returns the worker id")
    def pause(self, ms: float) -> Optional[str]:
        time.sleep(float(ms) / 1000.0)
        return self.ctx.worker_id

    @tool(description="Calls the host tool `name` with `args`; returns its result")
    def call_host(self, name: str, args: Optional[Dict[str, Any]] = None) -> Any:
        return self.ctx.call_host_tool(name, **(args or {}))

    @tool(description="Names of the tools the host exposes")
    def host_tool_names(self) -> List[str]:
        return sorted(self.ctx.host_tools)
