"""The showcase adapter: small tools the host's tests, demo and benchmarks rely on.

Tool names and signatures are part of the test contract with the C++ side. The same
tools run under both worker kinds (gRPC and stdio); over stdio the command ``ping`` is
answered by the bridge itself, so the ``ping`` tool below is reachable over gRPC only.

Per-process hooks: ``on_worker_start`` keeps the pool's adapter config (the
``worker_config`` tool returns it) and, when the config has ``"hook_log": "<path>"``,
appends ``start <pid>`` to that file; ``on_worker_stop`` appends ``stop <pid>``. Tests
use the file to see that the hooks ran once per process.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Dict, Iterator, Optional

from snakepit_bridge import telemetry
from snakepit_bridge.adapter import BaseAdapter, tool


def _append_line(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{line}\n")
        f.flush()


class ShowcaseAdapter(BaseAdapter):
    """Echo, arithmetic, sleeps, failures, crashes, process info and a stream."""

    # Set on the process instance by on_worker_start; per-request copies share it.
    worker_config_seen: Optional[Dict[str, Any]] = None

    def on_worker_start(self, config: Dict[str, Any]) -> None:
        self.worker_config_seen = dict(config)
        if config.get("hook_log"):
            _append_line(str(config["hook_log"]), f"start {os.getpid()}")

    def on_worker_stop(self) -> None:
        config = self.worker_config_seen or {}
        if config.get("hook_log"):
            _append_line(str(config["hook_log"]), f"stop {os.getpid()}")

    @tool(description="The adapter config on_worker_start received (null when the "
                      "worker ran no start hook) and the pid")
    def worker_config(self) -> Dict[str, Any]:
        return {"config": self.worker_config_seen, "pid": os.getpid()}

    @tool(description="Prints message with print() (to stdout: over stdio it must land "
                      "on stderr, not in the frame channel); returns true")
    def print_stdout(self, message: str) -> bool:
        print(message, flush=True)
        return True

    @tool(description="Cheapest possible round trip; returns \"pong\"")
    async def ping(self) -> str:
        # async on purpose: runs on the event loop, no thread hop (benchmarks use it).
        return "pong"

    @tool(description="Returns all its arguments as a map")
    def echo(self, **kwargs: Any) -> Dict[str, Any]:
        return kwargs

    @tool(description="Returns a + b")
    def add(self, a: float, b: float) -> float:
        return a + b

    @tool(description="Sleeps ms milliseconds in a worker thread")
    def sleep(self, ms: float) -> Dict[str, Any]:
        time.sleep(float(ms) / 1000.0)
        return {"slept_ms": ms, "pid": os.getpid()}

    @tool(description="Sleeps ms milliseconds on the event loop (async tool)")
    async def async_sleep(self, ms: float) -> Dict[str, Any]:
        import asyncio  # here: an idle stdio worker does not load asyncio

        await asyncio.sleep(float(ms) / 1000.0)
        return {"slept_ms": ms, "pid": os.getpid()}

    @tool(description="Raises ValueError(message)")
    def fail(self, message: str = "boom") -> None:
        raise ValueError(message)

    @tool(description="Exits the worker process at once with the given code")
    def crash(self, code: int = 1) -> None:
        os._exit(int(code))

    @tool(description="Kills the worker process with the given signal (11: segfault)")
    def crash_signal(self, signal: int = 11) -> None:
        os.kill(os.getpid(), int(signal))
        time.sleep(5)  # the signal arrives at once; never reached

    @tool(description="Keeps mb megabytes allocated (touched) until the process ends; "
                      "returns the total held")
    def hold_memory(self, mb: int) -> Dict[str, Any]:
        held = ShowcaseAdapter._held
        held.append(bytearray(b"\x01" * (int(mb) << 20)))
        return {"held_mb": sum(len(b) for b in held) >> 20, "pid": os.getpid()}

    _held: list = []

    @tool(description="Process facts: pid, ppid, worker id, thread-limit env")
    def info(self) -> Dict[str, Any]:
        # Imported here: config builds dataclasses, which the stdio bridge never loads.
        from snakepit_bridge.config import THREAD_LIMIT_VARS, current_worker_id

        return {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "worker_id": current_worker_id(),
            "env": {k: os.environ.get(k) for k in THREAD_LIMIT_VARS},
        }

    @tool(description="Value of an environment variable (null when unset)")
    def env(self, name: str) -> Optional[str]:
        return os.environ.get(name)

    @tool(description="Streams {step, total} for step in 1..steps", supports_streaming=True)
    def stream_progress(self, steps: int = 5, delay_ms: float = 0) -> Iterator[Dict[str, int]]:
        steps = int(steps)
        for i in range(1, steps + 1):
            if delay_ms:
                time.sleep(float(delay_ms) / 1000.0)
            yield {"step": i, "total": steps}

    @tool(description="Appends value and a newline to the file at path; returns true")
    def record(self, path: str, value: Any) -> bool:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{value}\n")
            f.flush()
        return True

    @tool(description="Streams steps chunks, appending a line to path as each is produced "
                      "(shows how far the producer ran ahead of the consumer)",
          supports_streaming=True)
    def stream_record(self, steps: int = 10, path: str = "",
                      size: int = 0) -> Iterator[Dict[str, Any]]:
        pad = "x" * int(size)
        for i in range(1, int(steps) + 1):
            if path:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(f"{i}\n")
            yield {"step": i, "pad": pad} if pad else {"step": i}

    @tool(description="Streams a number, a string, raw bytes and an object (how each "
                      "kind of chunk reaches the host)", supports_streaming=True)
    def stream_mixed(self) -> Iterator[Any]:
        yield 7
        yield "seven"
        yield b"\x00\x01\x02"
        yield {"k": 1}

    @tool(description="Streams `after` chunks, then raises RuntimeError", supports_streaming=True)
    def stream_fail(self, after: int = 2) -> Iterator[Dict[str, int]]:
        for i in range(1, int(after) + 1):
            yield {"step": i}
        raise RuntimeError(f"failed after {after} chunks")

    @tool(description="The request's metadata, correlation id and session id as the "
                      "worker saw them")
    def request_metadata(self) -> Dict[str, Any]:
        ctx = self.session_context
        if ctx is None:
            return {}
        out: Dict[str, Any] = dict(getattr(ctx, "request_metadata", {}) or {})
        out["correlation_id"] = getattr(ctx, "correlation_id", "") or out.get("correlation_id", "")
        out["session_id"] = getattr(ctx, "session_id", "")
        out["pid"] = os.getpid()
        return out

    @tool(description="Sleeps ms milliseconds in a worker thread; returns wall-clock start "
                      "and end (seconds) and the pid, to observe overlap")
    def timed_sleep(self, ms: float) -> Dict[str, Any]:
        start = time.time()
        time.sleep(float(ms) / 1000.0)
        return {"start": start, "end": time.time(), "pid": os.getpid()}

    @tool(description="Holds its worker thread until a file exists at path (a gate the "
                      "caller opens by creating it), at most timeout_ms; returns whether "
                      "the gate opened, and the pid")
    def wait_gate(self, path: str, timeout_ms: float = 30000) -> Dict[str, Any]:
        deadline = time.monotonic() + float(timeout_ms) / 1000.0
        while not os.path.exists(path):
            if time.monotonic() >= deadline:
                return {"opened": False, "pid": os.getpid()}
            time.sleep(0.005)
        return {"opened": True, "pid": os.getpid()}

    @tool(description="Blocks the worker's event loop for ms milliseconds (a misbehaving "
                      "async tool: the worker stops answering, heartbeats included)")
    async def block_loop(self, ms: float) -> bool:
        time.sleep(float(ms) / 1000.0)
        return True

    @tool(description="Sleeps ms milliseconds in a worker thread WITHOUT releasing the "
                      "GIL (usleep through ctypes.PyDLL): no other Python thread runs, so "
                      "the worker answers nothing, heartbeats included")
    def hold_gil(self, ms: float) -> bool:
        import ctypes  # pylint: disable=import-outside-toplevel
        ctypes.PyDLL(None).usleep(int(float(ms) * 1000))
        return True

    @tool(description="Records value to the file at path, then sleeps ms milliseconds "
                      "(upstream's slow_probe: proves whether a request executed)")
    def slow_probe(self, path: str, value: Any, ms: float = 500) -> bool:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{value}\n")
            f.flush()
        time.sleep(ms / 1000.0)
        return True

    @tool(description="Sizes of the binary (and other) parameters it received")
    def bytes_echo(self, **kwargs: Any) -> Dict[str, Any]:
        sizes = {k: len(v) for k, v in kwargs.items()
                 if isinstance(v, (bytes, bytearray, memoryview))}
        return {"sizes": sizes, "total": sum(sizes.values()),
                "other": sorted(k for k in kwargs if k not in sizes)}

    @tool(description="Concatenation of all binary parameters (sorted by name) as bytes")
    def bytes_concat(self, **kwargs: Any) -> bytes:
        return b"".join(bytes(kwargs[k]) for k in sorted(kwargs)
                        if isinstance(kwargs[k], (bytes, bytearray, memoryview)))

    @tool(description="Logs message through Python logging at level (debug, info, "
                      "warning, error) and, if raw, prints it to stderr too")
    def log(self, message: str, level: str = "info", raw: bool = False) -> bool:
        logging.getLogger("snakepit_bridge.showcase").log(
            logging.getLevelName(level.upper()), "%s", message)
        if raw:
            print(message, file=sys.stderr, flush=True)
        return True

    @tool(description="Streams steps chunks, logging message (at info) and emitting the "
                      "telemetry event showcase.stream_step before each",
          supports_streaming=True)
    def stream_log(self, message: str, steps: int = 2) -> Iterator[Dict[str, int]]:
        for step in range(1, int(steps) + 1):
            logging.getLogger("snakepit_bridge.showcase").info("%s step %d", message, step)
            telemetry.emit("showcase.stream_step", {"step": step}, {"message": message})
            yield {"step": step}

    @tool(description="Emits a telemetry event (relayed to the host as "
                      "snakepit.python.<name>); returns whether it was queued")
    def emit_event(self, name: str, measurements: Optional[Dict[str, Any]] = None,
                   metadata: Optional[Dict[str, Any]] = None) -> bool:
        return telemetry.emit(name, measurements or {}, metadata or {})
