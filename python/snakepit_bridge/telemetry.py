"""Python-side telemetry relayed to the host over ``StreamTelemetry`` (as upstream).

Adapters call :func:`emit` (or use :func:`span`); as upstream, the worker emits nothing
by itself, so a call costs nothing extra unless its tool emits. Events wait
in one bounded buffer per process (oldest dropped, counted) until the host's stream
reads them, so events emitted before the host connects are not lost. The host puts them
on its bus as ``snakepit.python.<name>`` with the worker id and pool added.

The stream honours upstream's ``TelemetryControl`` messages: a toggle, a sampling rate
(optionally for some event patterns only) and allow/deny filters (``fnmatch`` patterns
on the dotted name).
"""

from __future__ import annotations

import collections
import contextlib
import fnmatch
import re
import threading
import time
from typing import Any, Deque, Dict, Iterator, List, Mapping, Optional, Tuple

from .logging_setup import correlation_id as _cid_var

MAX_BUFFER = 1024
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


class TelemetryStream:
    """The process's event buffer; thread-safe (tools emit from executor threads)."""

    def __init__(self, max_buffer: int = MAX_BUFFER) -> None:
        self._lock = threading.Lock()
        self._events: Deque[Dict[str, Any]] = collections.deque()
        self._max = max_buffer
        # (event loop, asyncio.Event) per consumer; asyncio is imported only by
        # consumers (the gRPC StreamTelemetry), so emitting costs no asyncio import.
        self._waiters: List[Tuple[Any, Any]] = []
        self.enabled = True
        self.sampling_rate = 1.0
        self.sampling_patterns: List[str] = []
        self.allow: List[str] = []
        self.deny: List[str] = []
        self.dropped = 0
        self.closed = False

    # ------------------------------------------------------------------ producing
    def accepts(self, name: str) -> bool:
        if not self.enabled or self.closed:
            return False
        if self.allow and not any(fnmatch.fnmatchcase(name, p) for p in self.allow):
            return False
        if any(fnmatch.fnmatchcase(name, p) for p in self.deny):
            return False
        if self.sampling_rate < 1.0:
            sampled = not self.sampling_patterns or any(
                fnmatch.fnmatchcase(name, p) for p in self.sampling_patterns)
            import random  # only with sampling on: emitting needs no random otherwise

            if sampled and random.random() >= self.sampling_rate:
                return False
        return True

    def emit(self, name: str, measurements: Optional[Mapping[str, Any]] = None,
             metadata: Optional[Mapping[str, Any]] = None,
             correlation_id: Optional[str] = None) -> bool:
        """Queue one event; False if it was filtered out or the name is invalid."""
        if not _NAME_RE.match(name or "") or not self.accepts(name):
            return False
        if correlation_id is None:
            cid = _cid_var.get()
            correlation_id = "" if cid == "-" else cid
        event = {
            "name": name,
            "measurements": dict(measurements or {}),
            "metadata": {str(k): str(v) for k, v in (metadata or {}).items()},
            "timestamp_ns": time.time_ns(),
            "correlation_id": correlation_id or "",
        }
        with self._lock:
            if len(self._events) >= self._max:
                self._events.popleft()
                self.dropped += 1
            self._events.append(event)
            waiters = list(self._waiters)
        for loop, ev in waiters:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # loop closed
                pass
        return True

    # ------------------------------------------------------------------ consuming
    def drain(self) -> List[Dict[str, Any]]:
        with self._lock:
            out = list(self._events)
            self._events.clear()
        return out

    async def next_batch(self) -> List[Dict[str, Any]]:
        """Waits until events are queued (or the stream closes: then [])."""
        import asyncio

        loop = asyncio.get_running_loop()
        ev = asyncio.Event()
        entry = (loop, ev)
        with self._lock:
            self._waiters.append(entry)
        try:
            while True:
                batch = self.drain()
                if batch or self.closed:
                    return batch
                await ev.wait()
                ev.clear()
        finally:
            with self._lock:
                self._waiters.remove(entry)

    def close(self) -> None:
        """Ends every consumer's wait (the worker is stopping)."""
        with self._lock:
            self.closed = True
            waiters = list(self._waiters)
        for loop, ev in waiters:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:
                pass

    # ------------------------------------------------------------------ control
    def apply_control(self, control: Any) -> None:
        """Applies one ``TelemetryControl`` message."""
        kind = control.WhichOneof("control")
        if kind == "toggle":
            self.enabled = bool(control.toggle.enabled)
        elif kind == "sampling":
            self.sampling_rate = min(max(float(control.sampling.sampling_rate), 0.0), 1.0)
            self.sampling_patterns = list(control.sampling.event_patterns)
        elif kind == "filter":
            self.allow = list(control.filter.allow)
            self.deny = list(control.filter.deny)


_stream = TelemetryStream()


def stream() -> TelemetryStream:
    """The process-wide stream (one worker process serves one host)."""
    return _stream


def emit(name: str, measurements: Optional[Mapping[str, Any]] = None,
         metadata: Optional[Mapping[str, Any]] = None,
         correlation_id: Optional[str] = None) -> bool:
    """Emit ``name`` (dotted, e.g. ``"model.loaded"``) with numeric or string
    measurements and string metadata; the current request's correlation id is added."""
    return _stream.emit(name, measurements, metadata, correlation_id)


@contextlib.contextmanager
def span(name: str, metadata: Optional[Mapping[str, Any]] = None) -> Iterator[None]:
    """Emits ``<name>.start``, then ``<name>.stop`` or ``<name>.exception`` with
    ``duration_ms``."""
    emit(f"{name}.start", {}, metadata)
    started = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        md = dict(metadata or {})
        md["error_type"] = type(exc).__name__
        emit(f"{name}.exception",
             {"duration_ms": (time.perf_counter() - started) * 1000.0}, md)
        raise
    emit(f"{name}.stop", {"duration_ms": (time.perf_counter() - started) * 1000.0}, metadata)


def to_proto(event: Mapping[str, Any], pb2: Any) -> Any:
    """One buffered event as a ``TelemetryEvent``."""
    msg = pb2.TelemetryEvent(event_parts=event["name"].split("."),
                             timestamp_ns=int(event["timestamp_ns"]),
                             correlation_id=event["correlation_id"])
    for key, value in event["measurements"].items():
        tv = msg.measurements[str(key)]
        if isinstance(value, bool):
            tv.int_value = int(value)
        elif isinstance(value, int) and -(1 << 63) <= value < (1 << 63):
            tv.int_value = value
        elif isinstance(value, int):
            tv.float_value = float(value)
        elif isinstance(value, float):
            tv.float_value = value
        else:
            tv.string_value = str(value)
    for key, value in event["metadata"].items():
        msg.metadata[key] = value
    return msg
