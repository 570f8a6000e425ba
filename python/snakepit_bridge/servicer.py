"""``BridgeService`` implementation: runs adapter tools, answers session calls.

Wire behaviour follows upstream Snakepit (docs/python.md, "Wire conventions"): JSON in
``Any``, in-band tool errors, ``ToolChunk`` streams fed through a bounded queue so a
slow client slows the producer down. Tool lookup, kinds, instances and argument errors
come from ``calls.AdapterRuntime``, shared with the stdio bridge.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import os
import threading
import time
from concurrent.futures import Executor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Dict, Optional, Tuple

import grpc
from google.protobuf import timestamp_pb2

from . import host_link
from . import serialization as ser
from . import telemetry as _telemetry
from .adapter import StreamChunk
from .calls import AGEN, ASYNC, GEN, AdapterRuntime, close_stream, invoke, is_stream
from .config import WorkerConfig
from .errors import InvalidArgumentError
from .logging_setup import correlation_id as _cid_var
from .protocol import load
from .session_context import SessionContext

#: Exit status of a worker whose cancelled sync tool kept running past the grace
#: period (the host classifies it as ``exit_86``).
STUCK_TOOL_EXIT_CODE = 86

pb2, pb2_grpc = load()

log = logging.getLogger("snakepit_bridge.servicer")

CORRELATION_HEADER = "x-snakepit-correlation-id"
STREAM_QUEUE_SIZE = 100
HOST_CALL_TIMEOUT_S = 5.0

_END = object()
_ERROR = object()
_ITEM = object()

def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


class BridgeServicer(pb2_grpc.BridgeServiceServicer):
    """Serves one adapter class. Create inside the running event loop's thread."""

    def __init__(self, adapter_class: type, config: Optional[WorkerConfig] = None,
                 executor: Optional[Executor] = None,
                 telemetry: Optional[_telemetry.TelemetryStream] = None,
                 runtime: Optional[AdapterRuntime] = None):
        self.adapter_class = adapter_class
        # The server starts and stops the runtime (per-process hooks); a servicer
        # made on its own (tests) serves fresh instances without them.
        self.runtime = runtime if runtime is not None else AdapterRuntime(adapter_class)
        # The process's event buffer, relayed by StreamTelemetry.
        self.telemetry = telemetry if telemetry is not None else _telemetry.stream()
        self.config = config or WorkerConfig()
        self.executor = executor
        self._sessions: Dict[str, timestamp_pb2.Timestamp] = {}
        self._host_channel: Any = None
        self._host_stub: Any = None
        self._sync_host_channel: Any = None
        self._sync_host_stub: Any = None
        self._sync_lock = threading.Lock()
        self._register_task: Optional[asyncio.Future] = None
        if self.has_host:
            try:
                self._register_task = asyncio.get_running_loop().create_task(
                    self._register_tools_with_host())
            except RuntimeError:  # no running loop: registration is left to the caller
                pass

    async def tools_registered(self, timeout: float) -> None:
        """Waits, at most ``timeout`` seconds, until the registration of this worker's
        tools with the host has ended (done, refused or given up); the server writes
        its ready file only then, so a host that decides how to call a tool from its
        registration (a stream or not) never sees a ready worker without its tools."""
        task = self._register_task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except asyncio.TimeoutError:
            log.info("tool registration with the host still pending after %.1f s; "
                     "ready without it", timeout)

    async def _register_tools_with_host(self) -> None:
        """Tell the host which tools this worker serves (upstream registers per
        session; the host keeps these for every session). Best effort."""
        get_tools = getattr(self.adapter_class, "get_tools", None)
        if not callable(get_tools):
            return
        try:
            tools = self.adapter_class().get_tools()
        except Exception:  # noqa: BLE001 - an adapter that cannot describe itself
            log.warning("cannot list the adapter's tools for the host", exc_info=True)
            return
        req = pb2.RegisterToolsRequest(session_id="", tools=tools,
                                       worker_id=self.config.worker_id)
        for attempt in range(5):
            try:
                resp = await self._host().RegisterTools(req, timeout=HOST_CALL_TIMEOUT_S)
                if not resp.success:
                    log.warning("host refused the tool registration: %s", resp.error_message)
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 4:
                    log.info("tool registration with the host failed: %s", exc.details())
                    return
                await asyncio.sleep(0.05 * (2 ** attempt))

    # ------------------------------------------------------------------ host link
    @property
    def has_host(self) -> bool:
        return bool(self.config.elixir_address)

    def _host(self) -> Any:
        if self._host_stub is None:
            self._host_channel = host_link.aio_channel(self.config.elixir_address,
                                                       self.config.bridge_token)
            self._host_stub = pb2_grpc.BridgeServiceStub(self._host_channel)
        return self._host_stub

    async def ping_host(self, timeout_s: float) -> None:
        """One heartbeat call to the host's bridge server (raises on failure)."""
        await self._host().Heartbeat(pb2.HeartbeatRequest(session_id=""), timeout=timeout_s)

    def _sync_host(self) -> Any:
        with self._sync_lock:
            if self._sync_host_stub is None:
                self._sync_host_channel = host_link.sync_channel(self.config.elixir_address,
                                                                 self.config.bridge_token)
                self._sync_host_stub = pb2_grpc.BridgeServiceStub(self._sync_host_channel)
            return self._sync_host_stub

    async def close(self) -> None:
        """Close channels to the host (called on shutdown)."""
        if self._register_task is not None and not self._register_task.done():
            self._register_task.cancel()
        if self._host_channel is not None:
            await self._host_channel.close()
            self._host_channel = self._host_stub = None
        with self._sync_lock:
            if self._sync_host_channel is not None:
                self._sync_host_channel.close()
                self._sync_host_channel = self._sync_host_stub = None

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _correlation_id(request: Any, context: Any) -> str:
        cid = request.metadata.get("correlation_id", "") if hasattr(request, "metadata") else ""
        if cid:
            return cid
        try:
            for key, value in context.invocation_metadata() or ():
                if key == CORRELATION_HEADER:
                    return value if isinstance(value, str) else value.decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - metadata is best effort
            pass
        return ""

    def _session_context(self, request: Any, cid: str, context: Any) -> SessionContext:
        # The session id travels in the request field; metadata "session_id" is
        # accepted too for hosts that cannot set the field.
        session_id = request.session_id or request.metadata.get("session_id", "")
        return SessionContext(session_id, request.metadata, cid,
                              self.config.worker_id,
                              self._sync_host if self.has_host else None,
                              time_remaining=getattr(context, "time_remaining", None))

    def _call_context(self, request: Any, call_type: str) -> Dict[str, Any]:
        return {
            "tool_name": request.tool_name,
            "session_id": request.session_id,
            "python_module": self.adapter_class.__module__,
            "function": request.tool_name,
            "call_type": call_type,
            "adapter_class": self.adapter_class.__name__,
            "worker_id": self.config.worker_id,
        }

    async def _run_sync(self, inline: bool, name: str, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in a worker thread (on the loop when *inline*)."""
        if inline:
            return fn(*args)
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args)
        if self.executor is None:
            return await loop.run_in_executor(None, call)
        job = self.executor.submit(call)
        try:
            return await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            # The call was cancelled (deadline, caller gone). A sync tool that is
            # already running cannot be interrupted: watch it.
            if not job.cancel():
                self._watch_cancelled(job, name)
            raise

    def _watch_cancelled(self, job: Any, name: str) -> None:
        """Exits the worker when a cancelled sync tool is still running after the
        cancel grace period: it holds a thread (and possibly the GIL) for nobody,
        and only a new process frees them. The host sees the exit (code
        STUCK_TOOL_EXIT_CODE) and the worker's starter restarts it."""
        grace_s = self.config.cancel_grace_ms / 1000.0
        if grace_s <= 0:
            return
        cid = _cid_var.get()

        def check() -> None:
            if job.done():
                return
            log.error("tool %s ignored its cancellation for %.1f s (correlation id %s); "
                      "the worker exits so that it is restarted", name, grace_s, cid)
            for handler in logging.getLogger().handlers:
                try:
                    handler.flush()
                except Exception:  # noqa: BLE001
                    pass
            os._exit(STUCK_TOOL_EXIT_CODE)

        asyncio.get_running_loop().call_later(grace_s, check)

    async def _create_adapter(self, session_ctx: SessionContext, inline: bool) -> Any:
        adapter = self.runtime.new_instance(session_ctx)
        if self.runtime.has_initialize:
            init = adapter.initialize
            if inspect.iscoroutinefunction(init):
                await init()
            else:
                result = await self._run_sync(inline, "initialize", init)
                if inspect.isawaitable(result):
                    await result
        return adapter

    async def _cleanup(self, adapter: Any) -> None:
        if adapter is None or not self.runtime.has_cleanup:
            return
        try:
            result = adapter.cleanup()
            if inspect.isawaitable(result):
                await result
        except Exception:  # noqa: BLE001 - cleanup failures never change the reply
            log.exception("adapter cleanup failed")

    async def _invoke(self, adapter: Any, request: Any, arguments: Dict[str, Any],
                      session_ctx: SessionContext, inline: bool) -> Any:
        """Run the tool; returns its value (a generator/iterator for streaming tools)."""
        fn, kwargs, kind = self.runtime.bind(adapter, request.tool_name, arguments,
                                             session_ctx)
        if kind is GEN or kind is AGEN:
            return invoke(fn, kwargs)
        if kind is ASYNC:
            return await invoke(fn, kwargs)
        result = await self._run_sync(inline, request.tool_name, invoke, fn, kwargs)
        if inspect.isawaitable(result) and not is_stream(result):
            result = await result
        return result

    # ------------------------------------------------------------------ RPCs
    async def Ping(self, request, context):
        return pb2.PingResponse(message=f"pong: {request.message}", server_time=_now())

    async def ExecuteTool(self, request, context):
        started = time.perf_counter()
        cid = self._correlation_id(request, context)
        token = _cid_var.set(cid or "-")
        adapter = None
        log.debug("tool %s started", request.tool_name)
        try:
            inline = request.metadata.get("thread_sensitive", "").lower() == "true"
            try:
                arguments = ser.decode_parameters(request.parameters,
                                                  request.binary_parameters,
                                                  request.metadata)
                session_ctx = self._session_context(request, cid, context)
                adapter = await self._create_adapter(session_ctx, inline)
                result = await self._invoke(adapter, request, arguments, session_ctx, inline)
                if is_stream(result):
                    close_stream(result)
                    raise InvalidArgumentError(
                        f"tool {request.tool_name!r} streams; call it with "
                        "ExecuteStreamingTool")
                any_value, binary = ser.encode_result(result)
                response = pb2.ExecuteToolResponse(success=True, result=any_value,
                                                   binary_result=binary)
            except Exception as exc:  # noqa: BLE001 - every tool failure is in-band
                log.info("tool %s failed: %s: %s", request.tool_name,
                         type(exc).__name__, exc)
                response = pb2.ExecuteToolResponse(
                    success=False,
                    error_message=ser.error_payload(
                        exc, self._call_context(request, "execute_tool")))
            finally:
                await self._cleanup(adapter)
            response.execution_time_ms = int((time.perf_counter() - started) * 1000)
            log.debug("tool %s finished in %d ms (success=%s)", request.tool_name,
                      response.execution_time_ms, response.success)
            return response
        finally:
            _cid_var.reset(token)

    def _chunk(self, tool_name: str, n: int, item: Any) -> Any:
        if isinstance(item, pb2.ToolChunk):
            if not item.chunk_id:
                item.chunk_id = f"{tool_name}-{n}"
            return item
        meta = None
        final = False
        if isinstance(item, StreamChunk):
            item, final, meta = item.data, item.is_final, item.metadata
        return pb2.ToolChunk(chunk_id=f"{tool_name}-{n}", data=ser.encode_chunk_data(item),
                             is_final=bool(final),
                             metadata=dict(ser.stringify_metadata(meta)))

    async def _produce_async(self, source: Any, queue: asyncio.Queue) -> None:
        try:
            async for item in source:
                await queue.put((_ITEM, item))
            await queue.put((_END, None))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            await queue.put((_ERROR, exc))
        finally:
            aclose = getattr(source, "aclose", None)
            if callable(aclose):
                try:
                    await aclose()
                except Exception:  # noqa: BLE001
                    pass

    @staticmethod
    def _drain_sync(source: Any, queue: asyncio.Queue, loop: asyncio.AbstractEventLoop,
                    stop: threading.Event) -> None:
        """Runs in a worker thread: pulls from a sync iterator, pushes with backpressure."""

        def put(entry: Tuple[Any, Any]) -> bool:
            try:
                fut = asyncio.run_coroutine_threadsafe(queue.put(entry), loop)
            except RuntimeError:  # loop closed
                return False
            while True:
                try:
                    fut.result(timeout=0.1)
                    return True
                except FutureTimeout:
                    if stop.is_set():
                        fut.cancel()
                        return False
                except Exception:  # noqa: BLE001 - cancelled with the loop
                    return False

        try:
            for item in source:
                if stop.is_set() or not put((_ITEM, item)):
                    return
                if stop.is_set():
                    return
            put((_END, None))
        except Exception as exc:  # noqa: BLE001
            put((_ERROR, exc))
        finally:
            close_stream(source)

    async def ExecuteStreamingTool(self, request, context):
        cid = self._correlation_id(request, context)
        token = _cid_var.set(cid or "-")
        call_ctx = self._call_context(request, "execute_streaming_tool")
        tool_name = request.tool_name
        started = time.perf_counter()
        log.debug("streaming tool %s started", tool_name)
        adapter = None
        producer: Optional[asyncio.Future] = None
        stop = threading.Event()
        error: Optional[BaseException] = None
        try:
            inline = request.metadata.get("thread_sensitive", "").lower() == "true"
            source: Any = None
            try:
                arguments = ser.decode_parameters(request.parameters,
                                                  request.binary_parameters,
                                                  request.metadata)
                session_ctx = self._session_context(request, cid, context)
                adapter = await self._create_adapter(session_ctx, inline)
                source = await self._invoke(adapter, request, arguments, session_ctx, inline)
            except Exception as exc:  # noqa: BLE001
                error = exc
            if error is not None:
                await context.abort(grpc.StatusCode.INTERNAL,
                                    ser.error_payload(error, call_ctx))

            if not is_stream(source):
                # A plain tool called through the streaming RPC: one final chunk.
                try:
                    chunk = self._chunk(tool_name, 1, StreamChunk(source, is_final=True))
                except Exception as exc:  # noqa: BLE001
                    error = exc
                if error is not None:
                    await context.abort(grpc.StatusCode.INTERNAL,
                                        ser.error_payload(error, call_ctx))
                yield chunk
                return

            loop = asyncio.get_running_loop()
            queue: asyncio.Queue = asyncio.Queue(maxsize=STREAM_QUEUE_SIZE)
            if hasattr(source, "__anext__"):
                producer = asyncio.ensure_future(self._produce_async(source, queue))
            else:
                ctx = contextvars.copy_context()
                producer = loop.run_in_executor(
                    self.executor, functools.partial(ctx.run, self._drain_sync,
                                                     source, queue, loop, stop))
            if hasattr(context, "add_done_callback"):
                try:
                    context.add_done_callback(lambda _ctx: stop.set())
                except Exception:  # noqa: BLE001
                    pass

            n = 0
            final_sent = False
            while True:
                kind, item = await queue.get()
                if kind is _END:
                    break
                if kind is _ERROR:
                    error = item
                    break
                n += 1
                try:
                    chunk = self._chunk(tool_name, n, item)
                except Exception as exc:  # noqa: BLE001
                    error = exc
                    break
                yield chunk
                if chunk.is_final:
                    final_sent = True
                    break
            if error is not None:
                await context.abort(grpc.StatusCode.INTERNAL,
                                    ser.error_payload(error, call_ctx))
            if not final_sent:
                yield pb2.ToolChunk(chunk_id=f"{tool_name}-{n + 1}", data=b"", is_final=True)
        finally:
            stop.set()
            if producer is not None and not producer.done():
                producer.cancel()
                # Give a sync generator a moment to notice and close before cleanup.
                try:
                    await asyncio.wait({producer}, timeout=1.0)
                except BaseException:  # noqa: BLE001
                    pass
            await self._cleanup(adapter)
            log.debug("streaming tool %s ended after %d ms (error=%s)", tool_name,
                      int((time.perf_counter() - started) * 1000),
                      type(error).__name__ if error is not None else None)
            try:
                _cid_var.reset(token)
            except ValueError:  # finalized from another context
                pass

    # ------------------------------------------------------------------ sessions
    async def _proxy(self, method: str, request: Any, context: Any) -> Any:
        try:
            return await getattr(self._host(), method)(request, timeout=HOST_CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), f"host {method} failed: {exc.details()}")

    async def InitializeSession(self, request, context):
        if self.has_host:
            return await self._proxy("InitializeSession", request, context)
        self._sessions.setdefault(request.session_id, _now())
        return pb2.InitializeSessionResponse(success=True)

    async def CleanupSession(self, request, context):
        if self.has_host:
            return await self._proxy("CleanupSession", request, context)
        existed = self._sessions.pop(request.session_id, None) is not None
        return pb2.CleanupSessionResponse(success=True, resources_cleaned=int(existed))

    async def GetSession(self, request, context):
        if self.has_host:
            return await self._proxy("GetSession", request, context)
        created = self._sessions.get(request.session_id) or _now()
        tools = getattr(self.adapter_class, "tool_metadata", None)
        count = len(tools()) if callable(tools) else 0
        return pb2.GetSessionResponse(session_id=request.session_id, created_at=created,
                                      tool_count=count)

    async def Heartbeat(self, request, context):
        if self.has_host:
            return await self._proxy("Heartbeat", request, context)
        return pb2.HeartbeatResponse(server_time=_now(), session_valid=True)

    # ------------------------------------------------------------------ not served here
    async def _unimplemented(self, context: Any, name: str) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            f"{name} is served by the host, not by a Python worker")

    async def RegisterTools(self, request, context):
        await self._unimplemented(context, "RegisterTools")

    async def GetExposedElixirTools(self, request, context):
        await self._unimplemented(context, "GetExposedElixirTools")

    async def ExecuteElixirTool(self, request, context):
        await self._unimplemented(context, "ExecuteElixirTool")

    async def StreamTelemetry(self, request_iterator, context):
        """Relays this process's telemetry events until the worker stops or the host
        cancels; control messages from the host (toggle, sampling, filter) apply as
        they arrive."""
        stream = self.telemetry

        async def consume_controls() -> None:
            try:
                async for control in request_iterator:
                    stream.apply_control(control)
            except Exception:  # noqa: BLE001 - the host went away or closed its side
                pass

        controls = asyncio.ensure_future(consume_controls())
        try:
            while True:
                batch = await stream.next_batch()
                if not batch:
                    return
                for event in batch:
                    yield _telemetry.to_proto(event, pb2)
        finally:
            controls.cancel()
