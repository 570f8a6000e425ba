"""Logging to stderr with the worker id and the current request's correlation id.

stdout stays silent: the host parses nothing from it. The correlation id lives in a
context variable, so it follows a request into ``asyncio.to_thread`` and executor calls
made through ``contextvars.copy_context()``.

Two formats (``SNAKEPIT_LOG_FORMAT``): ``text`` (default, for people) and ``json`` (one
object per line with ts, level, logger, msg, worker_id, correlation_id, pid and, for
exceptions, exc). The C++ host asks for ``json`` when it captures a worker's stderr and
re-logs each record with its level and correlation id.
"""

from __future__ import annotations

import contextvars
import io
import json
import logging
import os
import sys
import threading
import time
from typing import Any, Optional

correlation_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "snakepit_correlation_id", default="-")

_worker_id = "-"

LOG_FORMAT = ("%(asctime)s %(levelname)s snakepit_bridge[%(process)d] "
              "worker=%(worker_id)s cid=%(correlation_id)s %(name)s: %(message)s")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "none": logging.CRITICAL + 10,
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        # time.strftime rather than datetime: the stdio bridge keeps its imports few.
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "worker_id": getattr(record, "worker_id", _worker_id),
            "correlation_id": getattr(record, "correlation_id", "-"),
            "pid": record.process,
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.worker_id = _worker_id
        record.correlation_id = correlation_id.get()
        return True


def parse_level(name: Optional[str]) -> int:
    """Map ``SNAKEPIT_LOG_LEVEL`` values to logging levels (default warning)."""
    if not name:
        return logging.WARNING
    return _LEVELS.get(name.strip().lower(), logging.WARNING)


class LineRecords(io.TextIOBase):
    """sys.stderr (and sys.stdout) of a worker whose host reads JSON: each line written
    becomes one JSON object with ``stream``, the worker id and the current correlation
    id, so ``print(..., file=sys.stderr)`` inside a tool is attributed to its request.
    It has no ``level``: the host logs it at its level for raw output. Partial lines
    are kept per thread until their newline (or a flush)."""

    MAX_LINE = 64 * 1024

    def __init__(self, target: Any, stream: str = "stderr") -> None:
        super().__init__()
        self.target = target
        self.stream = stream
        self._local = threading.local()
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")

    @property
    def errors(self) -> Optional[str]:  # type: ignore[override]
        return getattr(self.target, "errors", None)

    def fileno(self) -> int:
        return self.target.fileno()

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        pending = getattr(self._local, "pending", "") + text
        *lines, rest = pending.split("\n")
        if len(rest) >= self.MAX_LINE:
            lines.append(rest)
            rest = ""
        self._local.pending = rest
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        rest = getattr(self._local, "pending", "")
        if rest:
            self._local.pending = ""
            self._emit(rest)
        try:
            self.target.flush()
        except (OSError, ValueError):
            pass

    def _emit(self, line: str) -> None:
        record = {"msg": line, "stream": self.stream, "worker_id": _worker_id,
                  "pid": os.getpid()}
        cid = correlation_id.get()
        if cid != "-":
            record["correlation_id"] = cid
        try:
            data = json.dumps(record, ensure_ascii=False) + "\n"
        except Exception:  # noqa: BLE001 - e.g. during interpreter teardown
            data = line + "\n"
        with self._lock:
            try:
                self.target.write(data)
                self.target.flush()
            except (OSError, ValueError):
                pass  # the host is gone (broken pipe) or the stream closed


def capture_prints() -> None:
    """Route sys.stderr and sys.stdout through :class:`LineRecords` (JSON format only;
    the logging handler keeps writing to the real stderr)."""
    if isinstance(sys.stderr, LineRecords):
        return
    target = sys.stderr
    sys.stderr = LineRecords(target, "stderr")
    sys.stdout = LineRecords(target, "stdout")


def _real_stderr() -> Any:
    err = sys.stderr
    return err.target if isinstance(err, LineRecords) else err


def parse_format(name: Optional[str]) -> str:
    """Map ``SNAKEPIT_LOG_FORMAT`` values to ``text`` or ``json`` (default text)."""
    return "json" if (name or "").strip().lower() == "json" else "text"


def configure(worker_id: str = "", level: Optional[str] = None,
              fmt: Optional[str] = None) -> None:
    """Send all logging to stderr in our format. Safe to call more than once."""
    global _worker_id
    _worker_id = worker_id or "-"
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_snakepit", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(_real_stderr())
    handler._snakepit = True  # type: ignore[attr-defined]
    if parse_format(fmt) == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_ContextFilter())
    root.addHandler(handler)
    root.setLevel(parse_level(level))
    # grpc's own Python loggers are chatty at info level.
    logging.getLogger("grpc").setLevel(max(parse_level(level), logging.WARNING))


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
