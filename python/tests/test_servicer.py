"""BridgeService in-process: a grpc.aio server on a unix socket and a real client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

import snakepit_bridge_pb2 as pb2
import snakepit_bridge_pb2_grpc as pb2_grpc
from snakepit_bridge import BaseAdapter, StreamChunk, tool
from snakepit_bridge.adapters.showcase import ShowcaseAdapter
from snakepit_bridge.config import WorkerConfig
from snakepit_bridge.serialization import encode_param
from snakepit_bridge.servicer import BridgeServicer


@contextlib.asynccontextmanager
async def serving(adapter_class, sock_dir, config=None):
    executor = ThreadPoolExecutor(max_workers=4)
    asyncio.get_running_loop().set_default_executor(executor)
    server = grpc.aio.server()
    servicer = BridgeServicer(adapter_class, config or WorkerConfig(worker_id="t1"), executor)
    pb2_grpc.add_BridgeServiceServicer_to_server(servicer, server)
    address = f"unix:{sock_dir}/s.sock"
    assert server.add_insecure_port(address)
    await server.start()
    channel = grpc.aio.insecure_channel(address)
    try:
        yield pb2_grpc.BridgeServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)
        await servicer.close()
        executor.shutdown(wait=True, cancel_futures=True)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def request(tool_name, metadata=None, binary=None, **params):
    return pb2.ExecuteToolRequest(
        session_id="sess-1", tool_name=tool_name,
        parameters={k: encode_param(v) for k, v in params.items()},
        metadata=metadata or {}, binary_parameters=binary or {})


def result_of(resp):
    assert resp.success, resp.error_message
    return json.loads(resp.result.value) if resp.result.value else None


def error_of(resp):
    assert not resp.success
    return json.loads(resp.error_message)


# ------------------------------------------------------------------------- unary

def test_ping(short_dir):
    async def body():
        async with serving(ShowcaseAdapter, short_dir) as stub:
            resp = await stub.Ping(pb2.PingRequest(message="hello"))
            assert resp.message == "pong: hello"
            assert abs(resp.server_time.ToSeconds() - time.time()) < 60
    run(body())


def test_ping_echo_add_tools(short_dir):
    async def body():
        async with serving(ShowcaseAdapter, short_dir) as stub:
            resp = await stub.ExecuteTool(request("ping"))
            assert result_of(resp) == "pong"
            assert resp.result.type_url == "type.googleapis.com/snakepit.string"

            resp = await stub.ExecuteTool(request("echo", a=1, b="two", c=[1, {"d": None}]))
            assert result_of(resp) == {"a": 1, "b": "two", "c": [1, {"d": None}]}
            assert resp.result.type_url.endswith("snakepit.map")

            resp = await stub.ExecuteTool(request("add", a=2, b=3.5))
            assert result_of(resp) == 5.5
            assert resp.result.type_url.endswith("snakepit.float")
            assert resp.execution_time_ms >= 0
    run(body())


def test_fail_is_an_in_band_value_error_with_traceback(short_dir):
    async def body():
        async with serving(ShowcaseAdapter, short_dir) as stub:
            resp = await stub.ExecuteTool(request("fail", message="kaputt"))
            err = error_of(resp)
            assert err["type"] == "ValueError"
            assert err["message"] == "kaputt"
            assert "Traceback" in err["traceback"] and "showcase.py" in err["traceback"]
            assert err["stacktrace"]
            ctx = err["context"]
            assert ctx["tool_name"] == "fail" and ctx["session_id"] == "sess-1"
            assert ctx["call_type"] == "execute_tool"
            assert ctx["python_module"] == "snakepit_bridge.adapters.showcase"
            assert ctx["function"] == "fail"
    run(body())


def test_unknown_tool_and_bad_arguments(short_dir):
    async def body():
        async with serving(ShowcaseAdapter, short_dir) as stub:
            err = error_of(await stub.ExecuteTool(request("no_such_tool")))
            assert err["type"] == "UnknownToolError" and "no_such_tool" in err["message"]

            err = error_of(await stub.ExecuteTool(request("add", a=1)))
            assert err["type"] == "InvalidArgumentError" and "b" in err["message"]

            bad = request("echo")
            bad.parameters["x"].type_url = "type.googleapis.com/google.protobuf.StringValue"
            bad.parameters["x"].value = b"{not json"
            err = error_of(await stub.ExecuteTool(bad))
            assert err["type"] == "InvalidArgumentError"
    run(body())


def test_async_tool_runs_on_the_loop_concurrently(short_dir):
    async def body():
        async with serving(ShowcaseAdapter, short_dir) as stub:
            started = time.monotonic()
            results = await asyncio.gather(
                *[stub.ExecuteTool(request("async_sleep", ms=200)) for _ in range(5)])
            assert time.monotonic() - started < 0.9
            assert all(result_of(r)["slept_ms"] == 200 for r in results)
    run(body())


def test_sync_tools_run_in_threads_concurrently(short_dir):
    async def body():
        async with serving(ShowcaseAdapter, short_dir) as stub:
            started = time.monotonic()
            results = await asyncio.gather(
                *[stub.ExecuteTool(request("sleep", ms=200)) for _ in range(4)])
            assert time.monotonic() - started < 0.7
            assert all(r.success for r in results)
    run(body())


def test_binary_parameters_and_binary_result(short_dir):
    async def body():
        async with serving(ShowcaseAdapter, short_dir) as stub:
            resp = await stub.ExecuteTool(request(
                "bytes_echo", binary={"a": b"\x00" * 10, "b": b"xyz"}, n=1))
            assert result_of(resp) == {"sizes": {"a": 10, "b": 3}, "total": 13,
                                       "other": ["n"]}

            resp = await stub.ExecuteTool(request(
                "echo", metadata={"binary_format:obj": "pickle"},
                binary={"obj": pickle.dumps({"k": [1, 2]})}))
            assert result_of(resp) == {"obj": {"k": [1, 2]}}

            resp = await stub.ExecuteTool(request("bytes_concat",
                                                  binary={"b": b"BB", "a": b"AA"}))
            assert resp.success and resp.binary_result == b"AABB"
            assert resp.result.type_url.endswith("snakepit.binary")
    run(body())


def test_correlation_id_from_metadata_or_header(short_dir):
    async def body():
        async with serving(ShowcaseAdapter, short_dir) as stub:
            resp = await stub.ExecuteTool(
                request("request_metadata", metadata={"correlation_id": "c-1"}))
            assert result_of(resp)["correlation_id"] == "c-1"
            resp = await stub.ExecuteTool(
                request("request_metadata"), metadata=(("x-snakepit-correlation-id", "c-2"),))
            assert result_of(resp)["correlation_id"] == "c-2"
            # The metadata wins over the header when both are sent.
            resp = await stub.ExecuteTool(
                request("request_metadata", metadata={"correlation_id": "c-3"}),
                metadata=(("x-snakepit-correlation-id", "c-4"),))
            assert result_of(resp)["correlation_id"] == "c-3"
            # The caller knows its id: the response does not repeat it (a map entry
            # costs the round trip several per cent of a trivial call).
            assert "correlation_id" not in resp.metadata
    run(body())


def test_timeout_ms_comes_from_the_grpc_deadline(short_dir):
    async def body():
        async with serving(ShowcaseAdapter, short_dir) as stub:
            got = result_of(await stub.ExecuteTool(request("request_metadata"), timeout=5))
            # gRPC carries the deadline as a rounded-up timeout header: a few ms over.
            assert 4000 < int(got["timeout_ms"]) <= 5100
            # A host that sends the key itself is believed.
            got = result_of(await stub.ExecuteTool(
                request("request_metadata", metadata={"timeout_ms": "123"}), timeout=5))
            assert got["timeout_ms"] == "123"
            # No deadline, no key.
            got = result_of(await stub.ExecuteTool(request("request_metadata")))
            assert "timeout_ms" not in got
    run(body())


def test_request_metadata_is_copied_on_first_use_only():
    from snakepit_bridge.session_context import SessionContext
    raw = {"correlation_id": "c-5", "timeout_ms": "250"}
    ctx = SessionContext("s", raw, "c-5")
    assert ctx._metadata is None  # nothing copied until a tool asks
    md = ctx.metadata
    assert md == raw and md is not raw and ctx.request_metadata is md
    md["extra"] = "x"
    assert "extra" not in raw
    assert SessionContext("s").metadata == {}


class Lifecycle(BaseAdapter):
    """Records per-request lifecycle calls and which thread ran the tool."""

    events: list = []

    def initialize(self):
        Lifecycle.events.append("init")

    def cleanup(self):
        Lifecycle.events.append("cleanup")

    @tool
    def where(self):
        return threading.current_thread().name

    @tool
    def explode(self):
        raise KeyError("missing")

    @tool
    def gen(self):
        yield 1

    @tool
    def session(self):
        return {"session_id": self.session_id,
                "cid": self.session_context.correlation_id}


def test_lifecycle_thread_sensitivity_and_generator_misuse(short_dir):
    async def body():
        Lifecycle.events.clear()
        async with serving(Lifecycle, short_dir) as stub:
            assert result_of(await stub.ExecuteTool(request("where"))) != "MainThread"
            inline = request("where", metadata={"thread_sensitive": "true"})
            assert result_of(await stub.ExecuteTool(inline)) == "MainThread"
            err = error_of(await stub.ExecuteTool(request("explode")))
            assert err["type"] == "KeyError"
            err = error_of(await stub.ExecuteTool(request("gen")))
            assert err["type"] == "InvalidArgumentError" and "stream" in err["message"]
            got = result_of(await stub.ExecuteTool(
                request("session", metadata={"correlation_id": "c-9"})))
            assert got == {"session_id": "sess-1", "cid": "c-9"}
        assert Lifecycle.events == ["init", "cleanup"] * 5
    run(body())


class Legacy:
    """An upstream-style adapter: no BaseAdapter, its own execute_tool."""

    def set_session_context(self, ctx):
        self.ctx = ctx

    def initialize(self):
        pass

    def execute_tool(self, tool_name, arguments, context):
        if tool_name == "whoami":
            return {"tool": tool_name, "args": arguments, "session": context.session_id}
        raise NotImplementedError(tool_name)


class AsyncLegacy(BaseAdapter):
    async def execute_tool(self, tool_name, arguments, context):
        await asyncio.sleep(0)
        return [tool_name, arguments]


def test_upstream_style_execute_tool_adapters(short_dir):
    async def body():
        async with serving(Legacy, short_dir) as stub:
            got = result_of(await stub.ExecuteTool(request("whoami", x=1)))
            assert got == {"tool": "whoami", "args": {"x": 1}, "session": "sess-1"}
            err = error_of(await stub.ExecuteTool(request("other")))
            assert err["type"] == "NotImplementedError"
    run(body())

    async def body_async():
        async with serving(AsyncLegacy, short_dir) as stub:
            assert result_of(await stub.ExecuteTool(request("t", y=2))) == ["t", {"y": 2}]
    run(body_async())


def test_sessions_answered_locally_and_host_rpcs_unimplemented(short_dir):
    async def body():
        async with serving(ShowcaseAdapter, short_dir) as stub:
            r = await stub.InitializeSession(pb2.InitializeSessionRequest(session_id="s"))
            assert r.success
            g = await stub.GetSession(pb2.GetSessionRequest(session_id="s"))
            assert g.session_id == "s" and g.tool_count >= 12
            h = await stub.Heartbeat(pb2.HeartbeatRequest(session_id="s"))
            assert h.session_valid
            c = await stub.CleanupSession(pb2.CleanupSessionRequest(session_id="s"))
            assert c.success and c.resources_cleaned == 1
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.RegisterTools(pb2.RegisterToolsRequest())
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    run(body())


# ------------------------------------------------------------------------- streaming

def test_streaming_order_and_final_chunk(short_dir):
    async def body():
        async with serving(ShowcaseAdapter, short_dir) as stub:
            chunks = [c async for c in stub.ExecuteStreamingTool(
                request("stream_progress", steps=5))]
            assert [c.chunk_id for c in chunks] == [f"stream_progress-{i}" for i in range(1, 7)]
            assert [json.loads(c.data) for c in chunks[:-1]] == \
                [{"step": i, "total": 5} for i in range(1, 6)]
            assert [c.is_final for c in chunks] == [False] * 5 + [True]
            assert chunks[-1].data == b""
    run(body())


class Streams(BaseAdapter):
    produced = 0
    closed = False

    @tool(supports_streaming=True)
    def endless(self, delay_ms: int = 10):
        Streams.produced = 0
        Streams.closed = False
        try:
            while True:
                time.sleep(delay_ms / 1000)
                Streams.produced += 1
                yield {"n": Streams.produced}
        finally:
            Streams.closed = True

    @tool
    async def aendless(self):
        Streams.produced = 0
        Streams.closed = False
        try:
            while True:
                await asyncio.sleep(0.01)
                Streams.produced += 1
                yield Streams.produced
        finally:
            Streams.closed = True

    @tool
    def marked(self):
        yield "text"
        yield StreamChunk({"done": True}, is_final=True, metadata={"k": 1})
        yield "never sent"

    @tool
    def broken(self):
        yield 1
        raise RuntimeError("stream broke")

    @tool
    def plain(self):
        return {"single": True}


@pytest.mark.parametrize("tool_name", ["endless", "aendless"])
def test_cancellation_stops_the_producer(short_dir, tool_name):
    async def body():
        async with serving(Streams, short_dir) as stub:
            call = stub.ExecuteStreamingTool(request(tool_name))
            seen = 0
            async for _chunk in call:
                seen += 1
                if seen == 3:
                    break
            call.cancel()
            await asyncio.sleep(0.4)
            after_cancel = Streams.produced
            await asyncio.sleep(0.4)
            assert Streams.produced == after_cancel
            assert Streams.closed
    run(body())


def test_streaming_final_marker_errors_and_plain_tools(short_dir):
    async def body():
        async with serving(Streams, short_dir) as stub:
            chunks = [c async for c in stub.ExecuteStreamingTool(request("marked"))]
            assert [c.data for c in chunks] == [b"text", b'{"done":true}']
            assert chunks[-1].is_final and chunks[-1].metadata["k"] == "1"

            call = stub.ExecuteStreamingTool(request("broken"))
            got = []
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for c in call:
                    got.append(c)
            assert len(got) == 1
            assert info.value.code() == grpc.StatusCode.INTERNAL
            payload = json.loads(info.value.details())
            assert payload["type"] == "RuntimeError" and payload["message"] == "stream broke"
            assert payload["context"]["call_type"] == "execute_streaming_tool"

            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for c in stub.ExecuteStreamingTool(request("nope")):
                    pass
            assert json.loads(info.value.details())["type"] == "UnknownToolError"

            chunks = [c async for c in stub.ExecuteStreamingTool(request("plain"))]
            assert len(chunks) == 1 and chunks[0].is_final
            assert json.loads(chunks[0].data) == {"single": True}
    run(body())


# ------------------------------------------------------------------------- host callbacks

class FakeHost(pb2_grpc.BridgeServiceServicer):
    """Stands in for the C++ bridge server."""

    async def InitializeSession(self, request, context):
        return pb2.InitializeSessionResponse(success=False,
                                             error_message=f"host saw {request.session_id}")

    async def Heartbeat(self, request, context):
        return pb2.HeartbeatResponse(session_valid=False)

    async def ExecuteElixirTool(self, request, context):
        args = {k: json.loads(v.value) for k, v in request.parameters.items()}
        return pb2.ExecuteElixirToolResponse(
            success=True, result=encode_param({"host_tool": request.tool_name, **args}))


class CallsHost(BaseAdapter):
    @tool
    def via_host(self, x: int):
        return self.session_context.call_elixir_tool("double", x=x)


def test_session_rpcs_and_host_tools_go_to_the_host(short_dir):
    async def body():
        host = grpc.aio.server()
        pb2_grpc.add_BridgeServiceServicer_to_server(FakeHost(), host)
        host_address = f"unix:{short_dir}/host.sock"
        assert host.add_insecure_port(host_address)
        await host.start()
        try:
            cfg = WorkerConfig(worker_id="t1", elixir_address=host_address)
            async with serving(CallsHost, short_dir, cfg) as stub:
                r = await stub.InitializeSession(pb2.InitializeSessionRequest(session_id="s7"))
                assert not r.success and r.error_message == "host saw s7"
                h = await stub.Heartbeat(pb2.HeartbeatRequest(session_id="s7"))
                assert not h.session_valid
                got = result_of(await stub.ExecuteTool(request("via_host", x=21)))
                assert got == {"host_tool": "double", "x": 21}
        finally:
            await host.stop(0)
    run(body())


def test_host_tools_without_a_host_fail_in_band(short_dir):
    async def body():
        async with serving(CallsHost, short_dir) as stub:
            err = error_of(await stub.ExecuteTool(request("via_host", x=1)))
            assert err["type"] == "RuntimeError" and "elixir-address" in err["message"]
    run(body())
