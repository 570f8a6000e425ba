"""Python telemetry: the bounded buffer, filters, sampling, spans, and StreamTelemetry
served by a real grpc.aio server with a real client."""

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
from snakepit_bridge import telemetry
from snakepit_bridge.adapters.showcase import ShowcaseAdapter
from snakepit_bridge.config import WorkerConfig
from snakepit_bridge.logging_setup import correlation_id
from snakepit_bridge.serialization import encode_param
from snakepit_bridge.servicer import BridgeServicer


def names(events):
    return [e["name"] for e in events]


def test_emit_buffers_with_correlation_id_and_drops_oldest_when_full():
    s = telemetry.TelemetryStream(max_buffer=3)
    token = correlation_id.set("cid-7")
    try:
        assert s.emit("a.one", {"n": 1}, {"k": 2})
    finally:
        correlation_id.reset(token)
    assert s.emit("a.two")
    assert s.emit("a.three")
    assert s.emit("a.four")
    events = s.drain()
    assert names(events) == ["a.two", "a.three", "a.four"]
    assert s.dropped == 1
    assert s.drain() == []
    s2 = telemetry.TelemetryStream()
    token = correlation_id.set("cid-8")
    try:
        s2.emit("x.y", {"n": 1}, {"k": 2})
    finally:
        correlation_id.reset(token)
    (ev,) = s2.drain()
    assert ev["correlation_id"] == "cid-8"
    assert ev["metadata"] == {"k": "2"}
    assert ev["timestamp_ns"] > 0


def test_invalid_names_toggle_filters_and_sampling():
    s = telemetry.TelemetryStream()
    assert not s.emit("")
    assert not s.emit("bad name")
    assert not s.emit("a..b")
    ctl = pb2.TelemetryControl(toggle=pb2.TelemetryToggle(enabled=False))
    s.apply_control(ctl)
    assert not s.emit("a.b")
    s.apply_control(pb2.TelemetryControl(toggle=pb2.TelemetryToggle(enabled=True)))
    s.apply_control(pb2.TelemetryControl(
        filter=pb2.TelemetryEventFilter(allow=["tool.*", "model.*"], deny=["tool.secret*"])))
    assert s.emit("tool.execution.stop")
    assert not s.emit("tool.secret.x")
    assert not s.emit("other.x")
    assert s.emit("model.loaded")
    s.apply_control(pb2.TelemetryControl(filter=pb2.TelemetryEventFilter()))
    s.apply_control(pb2.TelemetryControl(
        sampling=pb2.TelemetrySamplingUpdate(sampling_rate=0.0, event_patterns=["noisy.*"])))
    assert not s.emit("noisy.tick")
    assert s.emit("quiet.tick")
    assert names(s.drain()) == ["tool.execution.stop", "model.loaded", "quiet.tick"]


def test_span_emits_start_and_stop_or_exception():
    s = telemetry.TelemetryStream()
    old, telemetry._stream = telemetry._stream, s
    try:
        with telemetry.span("work", {"k": "v"}):
            pass
        with pytest.raises(ValueError):
            with telemetry.span("work"):
                raise ValueError("x")
    finally:
        telemetry._stream = old
    events = s.drain()
    assert names(events) == ["work.start", "work.stop", "work.start", "work.exception"]
    assert events[1]["measurements"]["duration_ms"] >= 0
    assert events[3]["metadata"]["error_type"] == "ValueError"


def test_to_proto_keeps_types():
    ev = {"name": "a.b", "measurements": {"i": 3, "f": 0.5, "s": "x", "b": True,
                                          "big": 1 << 70},
          "metadata": {"k": "v"}, "timestamp_ns": 5, "correlation_id": "c"}
    msg = telemetry.to_proto(ev, pb2)
    assert list(msg.event_parts) == ["a", "b"]
    assert msg.measurements["i"].int_value == 3
    assert msg.measurements["f"].float_value == 0.5
    assert msg.measurements["s"].string_value == "x"
    assert msg.measurements["b"].int_value == 1
    assert msg.measurements["big"].float_value == float(1 << 70)
    assert msg.metadata["k"] == "v" and msg.timestamp_ns == 5 and msg.correlation_id == "c"


@contextlib.asynccontextmanager
async def serving(sock_dir, stream):
    executor = ThreadPoolExecutor(max_workers=4)
    asyncio.get_running_loop().set_default_executor(executor)
    server = grpc.aio.server()
    servicer = BridgeServicer(ShowcaseAdapter, WorkerConfig(worker_id="t1"), executor,
                              telemetry=stream)
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


def test_stream_telemetry_relays_buffered_and_live_events_and_ends_on_close(short_dir):
    async def body():
        stream = telemetry.TelemetryStream()
        stream.emit("before.connect", {"n": 1}, correlation_id="")
        # Tools emit through the module-level stream: make it this test's.
        old, telemetry._stream = telemetry._stream, stream
        try:
            await relay(stream)
        finally:
            telemetry._stream = old

    async def relay(stream):
        async with serving(short_dir, stream) as stub:
            controls: asyncio.Queue = asyncio.Queue()

            async def control_messages():
                while True:
                    item = await controls.get()
                    if item is None:
                        return
                    yield item

            call = stub.StreamTelemetry(control_messages())
            first = await call.read()
            assert list(first.event_parts) == ["before", "connect"]
            assert first.measurements["n"].int_value == 1
            # A tool's event carries its call's correlation id; the worker emits
            # nothing by itself.
            resp = await stub.ExecuteTool(pb2.ExecuteToolRequest(
                tool_name="emit_event",
                parameters={"name": encode_param("model.loaded"),
                            "measurements": encode_param({"size": 3})},
                metadata={"correlation_id": "cid-s"}))
            assert resp.success and json.loads(resp.result.value) is True
            ev = await call.read()
            assert list(ev.event_parts) == ["model", "loaded"]
            assert ev.measurements["size"].int_value == 3
            assert ev.correlation_id == "cid-s"
            # Control from the host: deny model events from now on.
            await controls.put(pb2.TelemetryControl(
                filter=pb2.TelemetryEventFilter(deny=["model.*"])))
            for _ in range(100):
                if stream.deny:
                    break
                await asyncio.sleep(0.01)
            assert stream.deny == ["model.*"]
            await stub.ExecuteTool(pb2.ExecuteToolRequest(
                tool_name="emit_event", parameters={"name": encode_param("model.denied")}))
            threading.Thread(target=stream.emit, args=("from.thread",)).start()
            ev = await call.read()
            assert list(ev.event_parts) == ["from", "thread"]
            stream.close()
            assert await call.read() == grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK
            await controls.put(None)
    asyncio.run(asyncio.wait_for(body(), 20))
