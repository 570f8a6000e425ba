"""SessionContext against an in-process fake host that implements the state RPCs.

The real host (C++ bridge_server) is exercised by tests/integration/sessions.test.cpp;
here the Python side is checked: encoding, error mapping, aliases, the session id
reaching the context, and tool registration at worker start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

import snakepit_bridge_pb2 as pb2
import snakepit_bridge_pb2_grpc as pb2_grpc
from snakepit_bridge import SessionContext
from snakepit_bridge.adapters.session_showcase import SessionShowcaseAdapter
from snakepit_bridge.config import WorkerConfig
from snakepit_bridge.serialization import encode_param
from snakepit_bridge.servicer import BridgeServicer
from snakepit_bridge.session_context import HostToolError, SessionError


class StateHost(pb2_grpc.BridgeServiceServicer):
    """A minimal host: session state in a dict, one host tool, tool registrations."""

    def __init__(self):
        self.state = {}
        self.lock = threading.Lock()
        self.registrations = []

    def _check(self, sid, context):
        if not sid or " " in sid:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid_session_id: {sid!r}")
        if sid == "full":
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota_exceeded")
        return self.state.setdefault(sid, {})

    def GetSessionState(self, request, context):
        st = self._check(request.session_id, context)
        if request.key not in st:
            return pb2.GetSessionStateResponse(found=False)
        return pb2.GetSessionStateResponse(found=True, value=encode_param(st[request.key]))

    def SetSessionState(self, request, context):
        st = self._check(request.session_id, context)
        value = json.loads(request.value.value)
        with self.lock:
            if request.compare:
                current = st.get(request.key)
                if current != json.loads(request.expected.value):
                    return pb2.SetSessionStateResponse(success=False,
                                                       current=encode_param(current))
            st[request.key] = value
        return pb2.SetSessionStateResponse(success=True, current=encode_param(value))

    def DeleteSessionState(self, request, context):
        st = self._check(request.session_id, context)
        return pb2.DeleteSessionStateResponse(existed=st.pop(request.key, None) is not None)

    def ListSessionStateKeys(self, request, context):
        return pb2.ListSessionStateKeysResponse(
            keys=sorted(self._check(request.session_id, context)))

    def IncrementSessionState(self, request, context):
        st = self._check(request.session_id, context)
        with self.lock:
            st[request.key] = st.get(request.key, 0) + json.loads(request.by.value)
            return pb2.IncrementSessionStateResponse(value=encode_param(st[request.key]))

    def GetExposedElixirTools(self, request, context):
        return pb2.GetExposedElixirToolsResponse(tools=[
            pb2.ToolSpec(name="double", description="x * 2",
                         parameters=[pb2.ParameterSpec(name="x", type="int", required=True)])])

    def ExecuteElixirTool(self, request, context):
        args = {k: json.loads(v.value) for k, v in request.parameters.items()}
        if request.tool_name == "double":
            return pb2.ExecuteElixirToolResponse(success=True, result=encode_param(args["x"] * 2))
        if request.tool_name == "explode":
            return pb2.ExecuteElixirToolResponse(success=False, error_message=json.dumps(
                {"type": "HostToolError", "message": "kaboom"}))
        return pb2.ExecuteElixirToolResponse(success=False, error_message=json.dumps(
            {"type": "UnknownToolError", "message": "no host tool exposed as x"}))

    def CleanupSession(self, request, context):
        removed = self.state.pop(request.session_id, {})
        return pb2.CleanupSessionResponse(success=True, resources_cleaned=len(removed) + 1)

    def RegisterTools(self, request, context):
        self.registrations.append((request.worker_id, [t.name for t in request.tools]))
        return pb2.RegisterToolsResponse(success=True)


@contextlib.contextmanager
def host(short_dir):
    """A sync gRPC server (the fake host) on a unix socket; yields (fake, address)."""
    fake = StateHost()
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    pb2_grpc.add_BridgeServiceServicer_to_server(fake, server)
    address = f"unix:{short_dir}/host.sock"
    assert server.add_insecure_port(address)
    server.start()
    channel = grpc.insecure_channel(address)
    stub = pb2_grpc.BridgeServiceStub(channel)
    try:
        yield fake, address, stub
    finally:
        channel.close()
        server.stop(0)


def test_state_round_trips_through_the_host(short_dir):
    with host(short_dir) as (fake, _, stub):
        ctx = SessionContext("s1", host_stub_factory=lambda: stub)
        assert ctx.get("missing") is None
        assert ctx.get("missing", 7) == 7
        ctx.set("model", {"layers": [1, 2], "name": "m"})
        assert ctx.get("model") == {"layers": [1, 2], "name": "m"}
        ctx["flag"] = False
        assert ctx["flag"] is False and "flag" in ctx and "nope" not in ctx
        with pytest.raises(KeyError):
            ctx["nope"]
        assert ctx.keys() == ["flag", "model"]
        assert ctx.delete("flag") is True and ctx.delete("flag") is False
        assert ctx.increment("n") == 1
        assert ctx.increment("n", by=41) == 42
        assert ctx.increment("f", by=0.5) == 0.5
        assert ctx.compare_and_set("n", 41, 0) is False
        assert ctx.compare_and_set("n", 42, 0) is True and ctx.get("n") == 0
        assert fake.state["s1"]["model"]["name"] == "m"


def test_state_errors_map_to_python_exceptions(short_dir):
    with host(short_dir) as (_, _, stub):
        with pytest.raises(ValueError, match="invalid_session_id"):
            SessionContext("bad id", host_stub_factory=lambda: stub).set("k", 1)
        with pytest.raises(SessionError) as info:
            SessionContext("full", host_stub_factory=lambda: stub).increment("k")
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(RuntimeError, match="no session"):
            SessionContext("", host_stub_factory=lambda: stub).get("k")
        with pytest.raises(RuntimeError, match="elixir-address"):
            SessionContext("s").get("k")


def test_host_tools_and_upstream_aliases(short_dir):
    with host(short_dir) as (_, _, stub):
        ctx = SessionContext("s1", host_stub_factory=lambda: stub)
        assert list(ctx.host_tools) == ["double"]
        assert ctx.elixir_tools is ctx.host_tools
        assert ctx.host_tools["double"]["parameters"][0]["name"] == "x"
        assert ctx.call_host_tool("double", x=21) == 42
        assert ctx.call_elixir_tool("double", x=4) == 8
        with pytest.raises(HostToolError) as info:
            ctx.call_host_tool("explode")
        assert info.value.error_type == "HostToolError" and "kaboom" in str(info.value)
        assert isinstance(info.value, RuntimeError)  # upstream raised RuntimeError
        with pytest.raises(ValueError, match="not found"):
            ctx.call_host_tool("absent")


def test_cleanup_is_best_effort_and_a_context_manager(short_dir):
    with host(short_dir) as (fake, _, stub):
        with SessionContext("s9", host_stub_factory=lambda: stub) as ctx:
            ctx.set("a", 1)
        assert "s9" not in fake.state
        assert SessionContext("s9").cleanup() == 0


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


@contextlib.asynccontextmanager
async def worker(short_dir, address):
    executor = ThreadPoolExecutor(max_workers=4)
    asyncio.get_running_loop().set_default_executor(executor)
    server = grpc.aio.server()
    servicer = BridgeServicer(SessionShowcaseAdapter,
                              WorkerConfig(worker_id="w7", elixir_address=address), executor)
    pb2_grpc.add_BridgeServiceServicer_to_server(servicer, server)
    waddr = f"unix:{short_dir}/w.sock"
    assert server.add_insecure_port(waddr)
    await server.start()
    channel = grpc.aio.insecure_channel(waddr)
    try:
        yield pb2_grpc.BridgeServiceStub(channel), servicer
    finally:
        await channel.close()
        await server.stop(0)
        await servicer.close()
        executor.shutdown(wait=True, cancel_futures=True)


def _call(tool_name, session_id="", metadata=None, **params):
    return pb2.ExecuteToolRequest(session_id=session_id, tool_name=tool_name,
                                  parameters={k: encode_param(v) for k, v in params.items()},
                                  metadata=metadata or {})


def _result(resp):
    assert resp.success, resp.error_message
    return json.loads(resp.result.value)


def test_the_worker_builds_the_context_from_the_request_and_registers_its_tools(short_dir):
    with host(short_dir) as (fake, address, _):
        async def body():
            async with worker(short_dir, address) as (stub, servicer):
                got = _result(await stub.ExecuteTool(_call("whoami", session_id="abc")))
                assert got == {"session_id": "abc", "worker_id": "w7"}
                # metadata fallback for hosts that cannot set the field
                got = _result(await stub.ExecuteTool(
                    _call("whoami", metadata={"session_id": "meta"})))
                assert got["session_id"] == "meta"
                assert _result(await stub.ExecuteTool(_call("incr", session_id="abc"))) == 1
                assert _result(await stub.ExecuteTool(
                    _call("append", session_id="abc", key="l", item="x"))) == ["x"]
                assert _result(await stub.ExecuteTool(
                    _call("call_host", session_id="abc", name="double",
                          args={"x": 5}))) == 10
                err = await stub.ExecuteTool(_call("call_host", session_id="abc",
                                                   name="explode"))
                assert not err.success
                assert json.loads(err.error_message)["type"] == "HostToolError"
                await asyncio.wait_for(servicer._register_task, 10)
        _run(body())
        assert fake.state["abc"] == {"counter": 1, "l": ["x"]}
        assert len(fake.registrations) == 1
        worker_id, names = fake.registrations[0]
        assert worker_id == "w7" and "incr" in names and "racy_incr" in names
