"""Streaming tools (generators): progress, a stream that fails midway and an endless
stream the host halts."""

from __future__ import annotations

import time
from typing import Any, Dict, Iterator

from snakepit_bridge.adapter import StreamChunk, tool


class StreamingOps:
    """Each yielded value reaches the host as one chunk, in order."""

    @tool(description="Streams `count` chunks {index, total, value=index^2}, then a "
                      "final summary chunk", supports_streaming=True)
    def stream_squares(self, count: int = 5, delay_ms: float = 0) -> Iterator[Any]:
        total = 0
        for i in range(1, int(count) + 1):
            if delay_ms:
                time.sleep(float(delay_ms) / 1000.0)
            total += i * i
            yield {"index": i, "total": int(count), "value": i * i}
        yield StreamChunk({"done": True, "sum": total}, is_final=True)

    @tool(description="Streams `after` good chunks, then raises RuntimeError",
          supports_streaming=True)
    def stream_then_fail(self, after: int = 3) -> Iterator[Dict[str, int]]:
        for i in range(1, int(after) + 1):
            yield {"index": i}
        raise RuntimeError(f"sensor went offline after {after} readings")

    @tool(description="Streams readings forever (one per delay_ms); reading 4 is "
                      "invalid. When the consumer halts, the generator is closed and "
                      "records `stream_closed_at` in the session", supports_streaming=True)
    def stream_readings(self, delay_ms: float = 10) -> Iterator[Dict[str, Any]]:
        ctx = self.session_context
        i = 0
        try:
            while True:
                i += 1
                time.sleep(float(delay_ms) / 1000.0)
                yield {"index": i, "valid": i != 4, "reading": 20.0 + i * 0.5}
        finally:
            if ctx is not None and ctx.session_id:
                ctx.set("stream_closed_at", i)
