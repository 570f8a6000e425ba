"""The stdio bridge: ``python3 -m snakepit_bridge.stdio --adapter pkg.module.Class
[--worker-id ID]`` runs the same ``@tool`` adapters as the gRPC worker, speaking the
Snakepit stdio worker protocol (v1) on its stdin/stdout. It imports neither grpc nor
protobuf.

Framing
    Each message, in either direction, is a 4-byte big-endian unsigned length N
    followed by N bytes of UTF-8 JSON holding one object. A frame longer than
    ``SNAKEPIT_MAX_MESSAGE_BYTES`` (default 100 MiB) from the host is a protocol error:
    the bridge says so on stderr and exits with status 4. A frame that is not UTF-8
    JSON holding an object with an ``id`` cannot be answered: it is logged (error) and
    skipped, and the bridge reads on.

Private channel
    At start the bridge duplicates fds 0 and 1 to private descriptors used for frames
    only, then points fd 1 and ``sys.stdout`` at stderr and fd 0 at /dev/null: whatever
    a tool (or a C library) prints lands on stderr and never breaks framing.

Requests (host -> bridge)
    ``{"id": <int>, "command": "<tool>", "args": {...}, "timestamp": "..."}`` and,
    optionally, ``"session_id"``, ``"correlation_id"``, ``"deadline_ms"`` (remaining
    budget), ``"stream": true``, ``"binary_args": {"name": "<base64>"}`` (raw bytes,
    merged into the arguments; they win on a name clash) and ``"metadata": {...}``
    (strings; ``"binary_format:<name>": "pickle"`` unpickles that binary argument, as
    on gRPC). ``args`` missing or null means ``{}``. The id is echoed verbatim.

Responses (bridge -> host)
    success: ``{"id", "success": true, "timestamp", "execution_time_ms", "result"}``;
    a ``bytes`` result is sent as ``"binary_result": "<base64>"`` with
    ``"result": {"size": <n>}`` (as the gRPC worker's ``snakepit.binary``).
    failure: ``{"id", "success": false, "error": "<message>", "error_type": "<type>",
    "traceback": "<text>", "timestamp", "execution_time_ms"}``. ``error_type`` is
    ``UnknownToolError`` (no such tool: answered at once by the reader),
    ``InvalidArgumentError`` (args not an object, undecodable binary_args, arguments
    that do not fit the tool's signature — the tool did not run — or a streaming tool
    called without ``"stream": true``), ``DeadlineExceededError`` (the deadline had
    passed before the tool started; it was not run), ``ResultTooLargeError`` (the
    encoded result exceeds the frame limit) or the Python class name of whatever the
    tool raised (``ValueError``, ...). ``error`` is the exception's message, or its
    type when the message is empty. Results are strict JSON: a NaN in a result is a
    ``ValueError`` failure. ``timestamp`` is ISO-8601 UTC with milliseconds.

ping
    ``"command": "ping"`` is answered by the reader thread itself, at once, even while
    sync tools run (an adapter tool named ``ping`` is not reachable over stdio)::

        {"id", "success": true, "timestamp", "result": {"pong": true,
         "bridge": "python", "version": "<package version>", "streaming": true,
         "pid": <int>, "worker_id": "<id>",
         "tools": [{"name", "streaming", "description"}, ...]}}

    ``tools`` lists the adapter's ``@tool`` methods sorted by name; it is omitted for
    upstream-style adapters (``execute_tool``), which accept any name. The first ping
    is answered only after ``on_worker_start`` returned. Pings are not counted as
    calls: they never wait behind tools and have no ``execution_time_ms``.

Concurrency
    Sync tools (and sync generators) run on executor threads: one at a time by default,
    up to ``SNAKEPIT_THREADS`` at once. Async tools (and async generators) run
    concurrently on an asyncio loop in its own thread, started (and asyncio imported)
    on the first async call. Responses go out in completion order, not request order.
    Responses finished together are written together (one write), but a response is
    never held back behind a call whose tool is not known to be fast.

Streaming
    For ``"stream": true`` the bridge sends ``{"id", "chunk": <JSON>}`` per item the
    tool yields, then the final response: ``{"id", "success": true, "result": null}``
    at a clean end, or a failure response if the tool raised midway. A yielded
    ``StreamChunk`` sends its ``data``; one with ``is_final`` ends the stream after it.
    A ``bytes`` item is sent as ``{"id", "chunk": "<base64>", "chunk_encoding":
    "base64"}``; a ``str`` item as the JSON it contains, or, when it is not JSON, as
    its UTF-8 bytes the same way (the gRPC worker's rule for chunks). A tool that does not stream, called with ``"stream": true``, sends its
    result as one chunk, then the final response. A stream whose deadline passes is
    closed and ends with a ``DeadlineExceededError`` failure.

Adapters
    Exactly as on the gRPC worker (``calls.AdapterRuntime``): ``@tool`` methods, or an
    upstream-style ``execute_tool(tool_name, arguments, context)`` taking every call;
    ``initialize()`` / ``cleanup()`` around each call (sync or async); an adapter with
    ``on_worker_start`` / ``on_worker_stop`` is built once and each call works on a
    shallow copy of it, others get a new instance per call.

Session context
    Tools see ``self.session_context`` (``session_id``, ``correlation_id``,
    ``request_metadata`` with ``timeout_ms`` from ``deadline_ms``) as on gRPC; the
    correlation id is also on every log line of the call. Host-owned session state
    and host tools (``get``/``set``/``increment``/``call_host_tool``/...) raise
    ``WorkerKindError``: they need the gRPC worker kind (kind = "grpc").

Lifecycle
    Start: parse arguments, configure logging (``SNAKEPIT_LOG_LEVEL``,
    ``SNAKEPIT_LOG_FORMAT``, as the gRPC worker), import the adapter, run its
    ``on_worker_start(config)`` with ``SNAKEPIT_ADAPTER_CONFIG`` (``{}`` when unset),
    then read frames. EOF on stdin: running calls are abandoned, ``on_worker_stop`` gets
    at most 0.8 s (it is left behind if slower), exit 0 within 1 s. SIGTERM (or
    SIGINT; also when it arrives during ``on_worker_start``): stop reading,
    let the calls already received finish and answer (for at most
    ``SNAKEPIT_GRACE_MS``, default 5000; the rest are abandoned unanswered), run
    ``on_worker_stop``, exit 0. The host closing stdout (EPIPE) counts as EOF.

Exit status
    0 stopped (EOF, SIGTERM/SIGINT); 1 startup failure (bad ``SNAKEPIT_ADAPTER_CONFIG``,
    ``on_worker_start`` raised); 2 usage error (bad arguments or environment values);
    3 the adapter could not be imported; 4 protocol error (oversized frame, stdin
    closed in the middle of a frame). A crashing tool (``os._exit``, a signal) ends the
    process with its own status. Startup failures print exactly one line on stderr::

        snakepit_bridge.stdio: adapter import failed: cannot import adapter module
            'pkg.mod': ModuleNotFoundError: No module named 'numpy' (at /path/mod.py:3)
        snakepit_bridge.stdio: on_worker_start failed: RuntimeError: <message>
            (at /path/adapter.py:29)
        snakepit_bridge.stdio: startup failed: SNAKEPIT_ADAPTER_CONFIG is not valid JSON: ...
        snakepit_bridge.stdio: error: unknown argument '--x'; usage: ...

    (each on one line; ``at`` names the innermost frame of the adapter's own code and
    is left out when there is none).

Environment
    ``SNAKEPIT_WORKER_ID`` (when no ``--worker-id``), ``SNAKEPIT_ADAPTER_CONFIG``,
    ``SNAKEPIT_LOG_LEVEL``, ``SNAKEPIT_LOG_FORMAT``, ``SNAKEPIT_MAX_MESSAGE_BYTES``,
    ``SNAKEPIT_GRACE_MS``, ``SNAKEPIT_THREADS``. ``--help`` prints the usage line on
    stderr and exits 0.
"""

from __future__ import annotations

import binascii
import collections
import json
import logging
import os
import select
import signal
import struct
import sys
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from . import __version__
from . import logging_setup
from .adapter import StreamChunk
from .calls import (AGEN, GEN, SYNC, AdapterRuntime, adapter_config, close_stream,
                    import_adapter, invoke, is_awaitable, is_stream)
from .codec import decode_binary, describe_error, is_binary, to_json_bytes, where
from .errors import (AdapterImportError, BridgeError, DeadlineExceededError,
                     InvalidArgumentError, ResultTooLargeError, StartupError)
from .session_context import SessionContext

log = logging.getLogger("snakepit_bridge.stdio")

EXIT_OK = 0
EXIT_STARTUP_FAILURE = 1
EXIT_USAGE = 2
EXIT_ADAPTER_IMPORT_FAILURE = 3
EXIT_PROTOCOL_ERROR = 4

DEFAULT_MAX_MESSAGE_BYTES = 100 * 1024 * 1024
DEFAULT_GRACE_MS = 5000
#: on_worker_stop gets at most this long after EOF (the process must be gone in 1 s).
EOF_EXIT_BUDGET_S = 0.8

_READ_SIZE = 256 * 1024
#: Frames at least this long are read straight into their own buffer.
_BIG_FRAME = 1024 * 1024
#: Output smaller than this is joined into one buffer before writing.
_JOIN_LIMIT = 256 * 1024
#: A sync tool that took less than this last time does not make finished responses wait.
_FAST_TOOL_S = 0.0005
#: Longest error message / traceback text sent (characters).
_MAX_ERROR_TEXT = 64 * 1024
#: Responses a sync worker thread holds before writing regardless.
_MAX_HELD = 128

_pack_len = struct.Struct(">I").pack
_unpack_len = struct.Struct(">I").unpack_from
#: Result types that are neither bytes, awaitables nor streams (checked by type only).
_PLAIN = frozenset((dict, list, str, int, float, bool, type(None), tuple))
_USAGE = "usage: python3 -m snakepit_bridge.stdio --adapter pkg.module.Class [--worker-id ID]"


# ----------------------------------------------------------------------------- config

class StdioConfig:
    """What the bridge needs, fixed at start (from argv and the environment)."""

    __slots__ = ("adapter", "worker_id", "threads", "grace_ms", "max_message_bytes",
                 "log_level", "log_format")

    def __init__(self, adapter: str, worker_id: str = "", threads: int = 1,
                 grace_ms: int = DEFAULT_GRACE_MS,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 log_level: str = "warning", log_format: str = "text"):
        self.adapter = adapter
        self.worker_id = worker_id
        self.threads = threads
        self.grace_ms = grace_ms
        self.max_message_bytes = max_message_bytes
        self.log_level = log_level
        self.log_format = log_format


def _env_int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def parse_args(argv: Sequence[str], env: Mapping[str, str]) -> StdioConfig:
    """``StdioConfig`` from the command line and environment; ``ValueError`` when
    unusable."""
    opts: Dict[str, str] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name not in ("--adapter", "--worker-id"):
            raise ValueError(f"unknown argument {arg!r}")
        if not eq:
            if i + 1 >= len(args):
                raise ValueError(f"{name} needs a value")
            i += 1
            value = args[i]
        opts[name] = value
        i += 1
    adapter = opts.get("--adapter", "")
    if not adapter:
        raise ValueError("--adapter is required (pkg.module.ClassName)")
    if "." not in adapter:
        raise ValueError(f"--adapter must be pkg.module.ClassName, got {adapter!r}")
    return StdioConfig(
        adapter=adapter,
        worker_id=opts.get("--worker-id") or env.get("SNAKEPIT_WORKER_ID", ""),
        threads=_env_int(env, "SNAKEPIT_THREADS", 1, 1),
        grace_ms=_env_int(env, "SNAKEPIT_GRACE_MS", DEFAULT_GRACE_MS, 0),
        max_message_bytes=_env_int(env, "SNAKEPIT_MAX_MESSAGE_BYTES",
                                   DEFAULT_MAX_MESSAGE_BYTES, 64),
        log_level=(env.get("SNAKEPIT_LOG_LEVEL") or "warning").strip().lower(),
        log_format=(env.get("SNAKEPIT_LOG_FORMAT") or "text").strip().lower(),
    )


# ----------------------------------------------------------------------------- frames

_ts_cache = (-1, b"")


def _timestamp() -> bytes:
    """ISO-8601 UTC with milliseconds, formatted once per millisecond."""
    global _ts_cache
    now = time.time()
    ms = int(now * 1000)
    cached = _ts_cache
    if cached[0] == ms:
        return cached[1]
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)
    value = text.encode("ascii")
    _ts_cache = (ms, value)
    return value


def _b64(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False)


def _frame(body: bytes, out: List[bytes]) -> int:
    """Append length prefix and *body* to *out*; returns the frame's size."""
    if len(body) < _BIG_FRAME:
        out.append(_pack_len(len(body)) + body)
    else:
        out.append(_pack_len(len(body)))
        out.append(body)
    return len(body) + 4


def _success(rid: bytes, result: Any, elapsed_ms: int, limit: int) -> List[bytes]:
    """The frame parts of a success response (a failure if the result cannot go)."""
    if is_binary(result):
        data = bytes(result)
        head = (b'{"id":%b,"success":true,"timestamp":"%b","execution_time_ms":%d,'
                b'"result":{"size":%d},"binary_result":"'
                % (rid, _timestamp(), elapsed_ms, len(data)))
        encoded = _b64(data)
        size = len(head) + len(encoded) + 2
        if size > limit:
            return _failure(rid, _too_large(size, limit), elapsed_ms, limit)
        return [_pack_len(size), head, encoded, b'"}']
    return _json_success(rid, to_json_bytes(result), elapsed_ms, limit)


def _json_success(rid: bytes, body: bytes, elapsed_ms: int, limit: int) -> List[bytes]:
    if len(body) < _BIG_FRAME:
        frame = (b'{"id":%b,"success":true,"timestamp":"%b","execution_time_ms":%d,'
                 b'"result":%b}' % (rid, _timestamp(), elapsed_ms, body))
        if len(frame) > limit:
            return _failure(rid, _too_large(len(frame), limit), elapsed_ms, limit)
        return [_pack_len(len(frame)) + frame]
    head = (b'{"id":%b,"success":true,"timestamp":"%b","execution_time_ms":%d,"result":'
            % (rid, _timestamp(), elapsed_ms))
    size = len(head) + len(body) + 1
    if size > limit:
        return _failure(rid, _too_large(size, limit), elapsed_ms, limit)
    return [_pack_len(size), head, body, b"}"]


def _too_large(size: int, limit: int) -> ResultTooLargeError:
    return ResultTooLargeError(f"the encoded result is {size} bytes, more than the "
                               f"frame limit of {limit} (SNAKEPIT_MAX_MESSAGE_BYTES)")


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[:size] + " ... (truncated)"


def _failure(rid: bytes, exc: BaseException, elapsed_ms: int = 0,
             limit: int = DEFAULT_MAX_MESSAGE_BYTES) -> List[bytes]:
    """The frame of a failure response. Message and traceback are clipped (an
    exception may carry a whole input) so that the frame stays under *limit*."""
    d = describe_error(exc)
    room = max(16, min(_MAX_ERROR_TEXT, (limit - 256) // 12))
    frame = (b'{"id":%b,"success":false,"error":%b,"error_type":%b,"traceback":%b,'
             b'"timestamp":"%b","execution_time_ms":%d}'
             % (rid, to_json_bytes(_clip(d["message"] or d["type"], room)),
                to_json_bytes(_clip(d["type"], 256)),
                to_json_bytes(_clip(d["traceback"], room)), _timestamp(), elapsed_ms))
    return [_pack_len(len(frame)) + frame]


def _end_of_stream(rid: bytes, elapsed_ms: int) -> List[bytes]:
    frame = (b'{"id":%b,"success":true,"timestamp":"%b","execution_time_ms":%d,'
             b'"result":null}' % (rid, _timestamp(), elapsed_ms))
    return [_pack_len(len(frame)) + frame]


def _chunk(rid: bytes, item: Any, limit: int) -> List[bytes]:
    # As over gRPC (serialization.encode_chunk_data): bytes are raw, a str is text that
    # the host decodes as JSON when it is JSON and keeps as raw bytes otherwise.
    raw: Optional[bytes] = None
    if is_binary(item):
        raw = bytes(item)
    elif isinstance(item, str):
        try:
            item = json.loads(item)
        except ValueError:
            raw = item.encode("utf-8")
    if raw is not None:
        frame = (b'{"id":%b,"chunk":"%b","chunk_encoding":"base64"}' % (rid, _b64(raw)))
    else:
        frame = b'{"id":%b,"chunk":%b}' % (rid, to_json_bytes(item))
    if len(frame) > limit:
        raise _too_large(len(frame), limit)
    out: List[bytes] = []
    _frame(frame, out)
    return out


def _write_all(fd: int, parts: List[Any]) -> None:
    """Write every part, in order, whatever the kernel accepts per call."""
    if len(parts) > 1 and sum(map(len, parts)) <= _JOIN_LIMIT:
        parts = [b"".join(parts)]
    else:
        parts = [p for p in parts if len(p)]  # writev of nothing would return 0 forever
    i = 0
    while i < len(parts):
        n = os.writev(fd, parts[i:i + 512])
        while n > 0:
            size = len(parts[i])
            if n >= size:
                n -= size
                i += 1
            else:
                parts[i] = memoryview(parts[i])[n:]
                n = 0


# ----------------------------------------------------------------------------- calls

class Call:
    """One accepted request."""

    __slots__ = ("rid", "command", "req", "kind", "stream", "deadline")

    def __init__(self, rid: bytes, command: str, req: Dict[str, Any], kind: str,
                 stream: bool, deadline: Optional[float]):
        self.rid = rid  # the id as JSON text, echoed verbatim
        self.command = command
        self.req = req
        self.kind = kind
        self.stream = stream
        self.deadline = deadline  # time.monotonic() value, or None


class SyncLane:
    """Executor threads for sync tools: started on first use, at most ``threads``.

    A thread keeps the responses it produced while more calls are queued and the next
    one is known to be fast, then writes them at once: under load one write carries
    many responses, and no response waits behind a slow call."""

    def __init__(self, bridge: "Bridge", threads: int):
        self.bridge = bridge
        self.max_threads = threads
        self._jobs: "collections.deque[Call]" = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._threads: List[threading.Thread] = []
        self._idle = 0

    def submit(self, calls: List[Call]) -> None:
        with self._cond:
            self._jobs.extend(calls)
            if self._idle:
                self._cond.notify(min(self._idle, len(calls)))
            else:
                self._grow_locked()

    def _grow_locked(self) -> None:
        """One more thread when calls wait, none is idle and the limit allows."""
        if len(self._threads) < self.max_threads:
            t = threading.Thread(target=self._work, daemon=True,
                                 name=f"snakepit-tool-{len(self._threads) + 1}")
            self._threads.append(t)
            t.start()

    def _work(self) -> None:
        jobs, cond, bridge = self._jobs, self._cond, self.bridge
        speed = bridge.speed
        out: List[bytes] = []
        held = 0
        while True:
            call = None
            with cond:
                if jobs:
                    call = jobs.popleft()
                elif not held:
                    self._idle += 1
                    while not jobs:
                        cond.wait()
                    self._idle -= 1
                    call = jobs.popleft()
                if jobs and not self._idle:
                    self._grow_locked()
            if call is None or (held and speed.get(call.command, 1.0) >= _FAST_TOOL_S):
                bridge.write(out, held)
                out = []
                held = 0
                if call is None:
                    continue
            if bridge.run_sync(call, out):
                held += 1
            if held >= _MAX_HELD:
                bridge.write(out, held)
                out = []
                held = 0


class AsyncLane:
    """The asyncio loop thread for async tools, started (asyncio imported) on first
    use: an adapter that never awaits costs no asyncio."""

    def __init__(self, bridge: "Bridge"):
        self.bridge = bridge
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._loop: Any = None
        self._pending: List[Call] = []
        self._tasks: set = set()
        self._out: List[bytes] = []
        self._out_calls = 0
        self._out_bytes = 0
        self._flush_scheduled = False

    def submit(self, calls: List[Call]) -> None:
        with self._lock:
            loop = self._loop
            if loop is None:
                self._pending.extend(calls)
                self._start_locked()
                return
        loop.call_soon_threadsafe(self._begin, calls)

    def run(self, coro: Any, timeout: Optional[float] = None) -> Any:
        """Run *coro* on the loop from another thread and return its result."""
        with self._lock:
            self._start_locked()
        self._ready.wait()
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _start_locked(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="snakepit-loop",
                                            daemon=True)
            self._thread.start()

    def _main(self) -> None:
        import asyncio

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        with self._lock:
            self._loop = loop
            pending, self._pending = self._pending, []
        self._ready.set()
        if pending:
            loop.call_soon(self._begin, pending)
        loop.run_forever()

    def _begin(self, calls: List[Call]) -> None:
        run, tasks = self.bridge.run_async, self._tasks
        for call in calls:
            # The loop keeps only weak references to tasks: hold them until done.
            task = self._loop.create_task(run(call, self))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def emit(self, parts: List[bytes], calls: int = 0) -> None:
        """Queue frames (loop thread); written together once the loop is idle."""
        self._out.extend(parts)
        self._out_calls += calls
        self._out_bytes += sum(map(len, parts))
        if self._out_bytes >= _JOIN_LIMIT:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, calls = self._out, self._out_calls
        self._out, self._out_calls, self._out_bytes = [], 0, 0
        if out:
            self.bridge.write(out, calls)


# ----------------------------------------------------------------------------- bridge

class Bridge:
    """Reads frames, answers pings, hands calls to the lanes, writes responses."""

    def __init__(self, runtime: AdapterRuntime, cfg: StdioConfig, rfd: int, wfd: int):
        self.runtime = runtime
        self.cfg = cfg
        self.rfd = rfd
        self.wfd = wfd
        self.limit = cfg.max_message_bytes
        self.sync = SyncLane(self, cfg.threads)
        self.aio = AsyncLane(self)
        #: Last run time (s) of each sync tool: decides whether responses may wait.
        self.speed: Dict[str, float] = {}
        self._wlock = threading.Lock()
        self._count_lock = threading.Lock()
        self.accepted = 0  # calls handed to a lane (reader thread only)
        self.answered = 0  # of those, answered (under _count_lock)
        self.stop_requested = False
        self.host_gone = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        self._scan = json.JSONDecoder().scan_once
        #: {tool name: kind}; upstream-style adapters answer every name (kind_of).
        self._kinds: Dict[str, str] = {} if runtime.legacy else {
            t["name"]: runtime.kind_of(t["name"]) for t in runtime.describe_tools() or ()}
        pong: Dict[str, Any] = {"pong": True, "bridge": "python", "version": __version__,
                                "streaming": True, "pid": os.getpid(),
                                "worker_id": cfg.worker_id}
        tools = runtime.describe_tools()
        if tools is not None:
            pong["tools"] = tools
        self._pong = to_json_bytes(pong)

    # ------------------------------------------------------------------ output
    def write(self, parts: List[Any], answered: int = 0) -> None:
        """Write frame parts (any thread); *answered* calls are then complete."""
        if parts:
            try:
                with self._wlock:
                    _write_all(self.wfd, parts)
            except OSError as exc:
                self._lost_host(exc)
        if answered:
            with self._count_lock:
                self.answered += answered

    def _lost_host(self, exc: OSError) -> None:
        if not self.host_gone:
            self.host_gone = True
            log.info("the host closed the frame channel (%s)", exc.strerror or exc)
            self.wake()

    def wake(self) -> None:
        """Make the reader look at its flags (signal handlers, lost host)."""
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass

    # ------------------------------------------------------------------ input
    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: Any) -> None:
            if not self.stop_requested:
                self.stop_requested = True
                log.info("stopping: %s", signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        # The C-level handler writes here, so a blocked poll() returns at once.
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def read_loop(self) -> str:
        """Serve until EOF ("eof"), a stop signal ("signal") or a protocol error
        ("protocol")."""
        rfd, wake_r = self.rfd, self._wake_r
        poller = select.poll()
        poller.register(rfd, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        buf = bytearray()
        while True:
            if self.stop_requested:
                return "signal"
            if self.host_gone:
                return "eof"
            ready = poller.poll()
            if any(fd == wake_r for fd, _ in ready):
                try:
                    os.read(wake_r, 512)
                except OSError:
                    pass
                continue  # look at the flags before reading any further request
            try:
                data = os.read(rfd, _READ_SIZE)
            except InterruptedError:
                continue
            except OSError as exc:
                log.error("cannot read requests: %s", exc)
                return "eof"
            if not data:
                if buf:
                    log.error("stdin closed in the middle of a frame (%d bytes pending)",
                              len(buf))
                    return "protocol"
                return "eof"
            buf += data
            status = self._consume(buf)
            if status:
                return status

    def _consume(self, buf: bytearray) -> str:
        """Handle every complete frame in *buf* (and finish a big one in place);
        returns a status to stop with, else ''."""
        mv = memoryview(buf)
        off, n = 0, len(buf)
        now = time.monotonic()
        out: List[bytes] = []
        sync_calls: List[Call] = []
        async_calls: List[Call] = []
        status = ""
        try:
            while n - off >= 4:
                size = _unpack_len(buf, off)[0]
                if size > self.limit:
                    log.error("a request frame of %d bytes exceeds "
                              "SNAKEPIT_MAX_MESSAGE_BYTES (%d)", size, self.limit)
                    status = "protocol"
                    break
                if n - off - 4 < size:
                    if size >= _BIG_FRAME:
                        text = self._read_rest(mv[off + 4:n], size)
                        off = n
                        if text is None:
                            status = "protocol"
                        else:
                            self._dispatch(text, now, out, sync_calls, async_calls)
                    break
                start, off = off + 4, off + 4 + size
                try:
                    text = str(mv[start:off], "utf-8")
                except UnicodeDecodeError as exc:
                    log.error("dropping a request frame that is not UTF-8: %s", exc)
                    continue
                self._dispatch(text, now, out, sync_calls, async_calls)
        finally:
            mv.release()
        del buf[:off]
        if sync_calls:
            self.sync.submit(sync_calls)
        if async_calls:
            self.aio.submit(async_calls)
        if out:
            self.write(out)
        return status

    def _read_rest(self, head: memoryview, size: int) -> Optional[str]:
        """Read the rest of a big frame straight into one buffer."""
        frame = bytearray(size)
        view = memoryview(frame)
        got = len(head)
        view[:got] = head
        while got < size:
            try:
                n = os.readv(self.rfd, [view[got:]])
            except InterruptedError:
                continue
            if n == 0:
                log.error("stdin closed in the middle of a %d-byte frame", size)
                return None
            got += n
        view.release()
        try:
            return frame.decode("utf-8")
        except UnicodeDecodeError as exc:
            log.error("dropping a request frame that is not UTF-8: %s", exc)
            return ""

    def _dispatch(self, text: str, now: float, out: List[bytes],
                  sync_calls: List[Call], async_calls: List[Call]) -> None:
        try:
            req, end = self._scan(text, 0)
            if end != len(text) and text[end:].strip():
                raise ValueError("extra data after the JSON object")
        except (StopIteration, ValueError) as exc:
            log.error("dropping a request frame that is not JSON: %s",
                      exc if isinstance(exc, ValueError) else "no JSON value")
            return
        rid = req.get("id") if type(req) is dict else None
        if rid is None:
            log.error("dropping a request frame that is not an object with an id")
            return
        rid_json = b"%d" % rid if type(rid) is int else to_json_bytes(rid)
        command = req.get("command")
        if command == "ping":
            frame = (b'{"id":%b,"success":true,"timestamp":"%b","result":%b}'
                     % (rid_json, _timestamp(), self._pong))
            out.append(_pack_len(len(frame)) + frame)
            return
        kind = self._kinds.get(command) if type(command) is str else None
        if kind is None:
            try:
                if type(command) is not str:
                    raise InvalidArgumentError("command must be a string")
                kind = self.runtime.kind_of(command)
            except BridgeError as exc:
                out.extend(_failure(rid_json, exc, 0, self.limit))
                return
        dl = req.get("deadline_ms")
        deadline = now + dl / 1000.0 if type(dl) in (int, float) and dl > 0 else None
        call = Call(rid_json, command, req, kind, req.get("stream") is True, deadline)
        self.accepted += 1
        if kind is SYNC or kind is GEN:
            sync_calls.append(call)
        else:
            async_calls.append(call)

    # ------------------------------------------------------------------ one call
    def _prepare(self, call: Call) -> Any:
        """``(adapter, fn, kwargs, kind)`` of *call*: context, instance, arguments."""
        req = call.req
        args = req.get("args")
        if type(args) is not dict:
            if args is not None:
                raise InvalidArgumentError(f"args must be a JSON object, got "
                                           f"{type(args).__name__}")
            args = {}
        metadata = req.get("metadata")
        if metadata is not None and type(metadata) is not dict:
            metadata = None
        binary = req.get("binary_args")
        if binary:
            if type(binary) is not dict:
                raise InvalidArgumentError("binary_args must be a JSON object")
            args = dict(args)
            for name, value in binary.items():
                try:
                    raw = binascii.a2b_base64(value)
                except (binascii.Error, TypeError, ValueError):
                    raise InvalidArgumentError(
                        f"binary argument {name!r} is not base64") from None
                args[name] = decode_binary(name, raw, metadata or {})
        cid = req.get("correlation_id") or ""
        deadline = call.deadline
        ctx = SessionContext(
            req.get("session_id") or "", metadata, cid, self.cfg.worker_id,
            time_remaining=(None if deadline is None
                            else lambda: max(0.0, deadline - time.monotonic())),
            transport="stdio")
        adapter = self.runtime.new_instance(ctx)
        fn, kwargs, kind = self.runtime.bind(adapter, call.command, args, ctx)
        return adapter, fn, kwargs, kind

    def run_sync(self, call: Call, out: List[bytes]) -> bool:
        """Run a sync (or sync generator) call in this thread. Appends its response
        to *out* and returns True, or writes it itself (streams) and returns False."""
        started = time.perf_counter()
        adapter = None
        logging_setup.correlation_id.set(call.req.get("correlation_id") or "-")
        try:
            if call.deadline is not None and time.monotonic() > call.deadline:
                raise DeadlineExceededError("the deadline passed before the tool started")
            adapter, fn, kwargs, kind = self._prepare(call)
            if self.runtime.has_initialize:
                self._settle(adapter.initialize())
            result = invoke(fn, kwargs)
            if type(result) in _PLAIN and not call.stream:
                body = to_json_bytes(result)
                elapsed = time.perf_counter() - started
                out.extend(_json_success(call.rid, body, int(elapsed * 1000), self.limit))
                self.speed[call.command] = elapsed
                return True
            if is_awaitable(result) and not is_stream(result):
                result = self.aio.run(result)
            if call.stream or is_stream(result):
                self._stream_sync(call, result, started)
                return False
            elapsed = time.perf_counter() - started
            out.extend(_success(call.rid, result, int(elapsed * 1000), self.limit))
            self.speed[call.command] = elapsed
            return True
        except Exception as exc:  # noqa: BLE001 - every tool failure is in-band
            elapsed = time.perf_counter() - started
            self.speed[call.command] = elapsed
            log.info("tool %s failed: %s: %s", call.command, type(exc).__name__, exc)
            out.extend(_failure(call.rid, exc, int(elapsed * 1000), self.limit))
            return True
        finally:
            if adapter is not None and self.runtime.has_cleanup:
                try:
                    self._settle(adapter.cleanup())
                except Exception:  # noqa: BLE001 - cleanup never changes the answer
                    log.exception("adapter cleanup failed")

    def _settle(self, value: Any) -> Any:
        """An awaitable returned to a worker thread is run on the loop."""
        if is_awaitable(value):
            return self.aio.run(value)
        return value

    def _stream_sync(self, call: Call, source: Any, started: float) -> None:
        """Send a sync call's chunks as they come, then its final response."""
        rid, limit = call.rid, self.limit
        self.speed[call.command] = 1.0  # never let responses wait behind a stream
        if hasattr(source, "__anext__"):
            self.aio.run(self._stream_async(call, source, started, None))
            return
        if not is_stream(source):
            source = iter((StreamChunk(source, is_final=True),))
        elif not call.stream:
            close_stream(source)
            self.write(_failure(rid, _not_streamed(call.command), 0, limit), 1)
            return
        try:
            for item in source:
                if call.deadline is not None and time.monotonic() > call.deadline:
                    raise DeadlineExceededError("the deadline passed while streaming")
                final = False
                if isinstance(item, StreamChunk):
                    item, final = item.data, item.is_final
                self.write(_chunk(rid, item, limit))
                if final:
                    break
        except Exception as exc:  # noqa: BLE001
            log.info("stream %s failed: %s: %s", call.command, type(exc).__name__, exc)
            self.write(_failure(rid, exc, _ms_since(started), limit), 1)
            return
        finally:
            close_stream(source)
        self.write(_end_of_stream(rid, _ms_since(started)), 1)

    async def run_async(self, call: Call, lane: AsyncLane) -> None:
        """Run an async (or async generator) call as a task on the loop."""
        started = time.perf_counter()
        adapter = None
        logging_setup.correlation_id.set(call.req.get("correlation_id") or "-")
        try:
            if call.deadline is not None and time.monotonic() > call.deadline:
                raise DeadlineExceededError("the deadline passed before the tool started")
            adapter, fn, kwargs, kind = self._prepare(call)
            if self.runtime.has_initialize:
                value = adapter.initialize()
                if is_awaitable(value):
                    await value
            result = invoke(fn, kwargs)
            if kind is not AGEN and is_awaitable(result) and not is_stream(result):
                result = await result
            if call.stream or is_stream(result):
                await self._stream_async(call, result, started, lane)
                return
            lane.emit(_success(call.rid, result, _ms_since(started), self.limit), 1)
        except Exception as exc:  # noqa: BLE001 - every tool failure is in-band
            log.info("tool %s failed: %s: %s", call.command, type(exc).__name__, exc)
            lane.emit(_failure(call.rid, exc, _ms_since(started), self.limit), 1)
        finally:
            if adapter is not None and self.runtime.has_cleanup:
                try:
                    value = adapter.cleanup()
                    if is_awaitable(value):
                        await value
                except Exception:  # noqa: BLE001
                    log.exception("adapter cleanup failed")

    async def _stream_async(self, call: Call, source: Any, started: float,
                            lane: Optional[AsyncLane]) -> None:
        """Chunks of an async (or, from a coroutine tool, sync) stream, then the final
        response; *lane* None means write directly (called for a worker thread)."""
        rid, limit = call.rid, self.limit
        send = lane.emit if lane is not None else self.write
        if not is_stream(source):
            source_items: Any = (StreamChunk(source, is_final=True),)
        elif not call.stream:
            await _aclose(source)
            send(_failure(rid, _not_streamed(call.command), 0, limit), 1)
            return
        else:
            source_items = source
        try:
            async for item in _aiter(source_items):
                if call.deadline is not None and time.monotonic() > call.deadline:
                    raise DeadlineExceededError("the deadline passed while streaming")
                final = False
                if isinstance(item, StreamChunk):
                    item, final = item.data, item.is_final
                send(_chunk(rid, item, limit))
                if final:
                    break
        except Exception as exc:  # noqa: BLE001
            log.info("stream %s failed: %s: %s", call.command, type(exc).__name__, exc)
            send(_failure(rid, exc, _ms_since(started), limit), 1)
            return
        finally:
            await _aclose(source)
        send(_end_of_stream(rid, _ms_since(started)), 1)

    # ------------------------------------------------------------------ stopping
    def drain(self, grace_s: float) -> bool:
        """Wait until every accepted call is answered, at most *grace_s*."""
        deadline = time.monotonic() + grace_s
        while True:
            with self._count_lock:
                if self.answered >= self.accepted:
                    return True
            if time.monotonic() >= deadline or self.host_gone:
                return False
            time.sleep(0.005)


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _not_streamed(command: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"tool {command!r} streams; send the request with "
                                '"stream": true')


async def _aiter(source: Any) -> Any:
    if hasattr(source, "__anext__"):
        async for item in source:
            yield item
    else:
        for item in source:
            yield item


async def _aclose(source: Any) -> None:
    aclose = getattr(source, "aclose", None)
    if callable(aclose):
        try:
            await aclose()
        except Exception:  # noqa: BLE001
            pass
    else:
        close_stream(source)


# ----------------------------------------------------------------------------- main

def take_over_stdio() -> "tuple[int, int]":
    """Private frame descriptors; fd 1 and sys.stdout now go to stderr, fd 0 reads
    /dev/null."""
    rfd = os.dup(0)
    wfd = os.dup(1)
    try:
        sys.stdout.flush()
    except (OSError, ValueError, AttributeError):
        pass
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = sys.stderr
    return rfd, wfd


def _say(message: str) -> None:
    """One plain line on stderr (not a log record: the host quotes it in its start
    error)."""
    line = f"snakepit_bridge.stdio: {message}".replace("\n", " ") + "\n"
    try:
        os.write(2, line.encode("utf-8", "replace"))
    except OSError:
        pass


def _failed(what: str, exc: BaseException) -> str:
    cause = exc.cause if isinstance(exc, AdapterImportError) and exc.cause else exc
    at = where(cause)
    text = str(exc) if isinstance(exc, (AdapterImportError, StartupError)) \
        else f"{type(exc).__name__}: {exc}"
    return f"{what}: {text}" + (f" (at {at})" if at else "")


def _run_hook(bridge: Bridge, value: Any, timeout: Optional[float] = None) -> None:
    if is_awaitable(value):
        bridge.aio.run(value, timeout)


def _stop_hook(bridge: Bridge, budget_s: Optional[float]) -> None:
    """``on_worker_stop`` once; with a budget it runs in its own thread and is left
    behind when it overruns (the process exits anyway)."""
    def run() -> None:
        try:
            _run_hook(bridge, bridge.runtime.stop(), budget_s)
        except Exception:  # noqa: BLE001
            log.exception("on_worker_stop failed")

    if budget_s is None:
        run()
        return
    t = threading.Thread(target=run, name="snakepit-stop", daemon=True)
    t.start()
    t.join(max(0.0, budget_s))
    if t.is_alive():
        log.warning("on_worker_stop still running after %.2f s; exiting anyway", budget_s)


def run(argv: Optional[Sequence[str]] = None, env: Optional[Mapping[str, str]] = None,
        fds: Optional["tuple[int, int]"] = None) -> int:
    """The bridge's main; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    started = time.perf_counter()
    rfd, wfd = fds if fds is not None else take_over_stdio()

    if any(a in ("-h", "--help") for a in argv):
        _say(_USAGE)
        return EXIT_OK
    try:
        cfg = parse_args(argv, env)
    except ValueError as exc:
        _say(f"error: {exc}; {_USAGE}")
        return EXIT_USAGE

    logging_setup.configure(cfg.worker_id, cfg.log_level, cfg.log_format)
    if logging_setup.parse_format(cfg.log_format) == "json":
        logging_setup.capture_prints()
    if cfg.worker_id:
        # config.current_worker_id() (used by adapters) falls back to the environment;
        # the gRPC worker's WorkerConfig would cost a dataclasses import here.
        os.environ["SNAKEPIT_WORKER_ID"] = cfg.worker_id

    try:
        runtime = AdapterRuntime(import_adapter(cfg.adapter))
    except AdapterImportError as exc:
        log.debug("adapter import failed", exc_info=exc.cause or exc)
        _say(_failed("adapter import failed", exc))
        return EXIT_ADAPTER_IMPORT_FAILURE
    try:
        adapter_cfg = adapter_config(env)
    except StartupError as exc:
        _say(f"startup failed: {exc}")
        return EXIT_STARTUP_FAILURE

    bridge = Bridge(runtime, cfg, rfd, wfd)
    bridge.install_signal_handlers()
    try:
        _run_hook(bridge, runtime.start(adapter_cfg))
    except Exception as exc:  # noqa: BLE001 - any failure stops the start
        log.debug("on_worker_start failed", exc_info=exc)
        _say(_failed("on_worker_start failed", exc))
        return EXIT_STARTUP_FAILURE
    log.info("ready in %.1f ms (adapter %s, %d sync thread(s))",
             (time.perf_counter() - started) * 1000, cfg.adapter, cfg.threads)

    status = bridge.read_loop()
    if status == "signal":
        if not bridge.drain(cfg.grace_ms / 1000.0):
            log.warning("abandoning %d call(s) still running after the grace period",
                        bridge.accepted - bridge.answered)
        _stop_hook(bridge, None)
        return EXIT_OK
    # EOF, a lost host or a protocol error: nobody waits for answers.
    if runtime.has_worker_hooks:
        _stop_hook(bridge, EOF_EXIT_BUDGET_S)
    return EXIT_PROTOCOL_ERROR if status == "protocol" else EXIT_OK


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: run, flush stderr, exit without waiting for tool threads."""
    code = run(argv)
    try:
        logging.shutdown()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass
    os._exit(code)


if __name__ == "__main__":
    main()
