"""Per-process adapter hooks on the gRPC worker: ``on_worker_start(config)`` before the
ready file, ``on_worker_stop()`` on a graceful stop, a start failure is a startup
failure. (The stdio bridge's side is in test_stdio.py; the runtime itself is shared.)
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import grpc

import snakepit_bridge_pb2 as pb2
import snakepit_bridge_pb2_grpc as pb2_grpc
from snakepit_bridge import BaseAdapter, tool
from snakepit_bridge.calls import AdapterRuntime
from snakepit_bridge.serialization import encode_param

from conftest import GEN_DIR, PYTHON_DIR

TESTS_DIR = Path(__file__).resolve().parent
HOOKS = "stdio_adapters.HookAdapter"


def hook_env(log: Path, **config):
    return {"SNAKEPIT_ADAPTER_CONFIG": json.dumps(dict(config, log=str(log))),
            "PYTHONPATH": os.pathsep.join([str(PYTHON_DIR), GEN_DIR, str(TESTS_DIR)])}


def call(address, tool_name, **params):
    with grpc.insecure_channel(address) as channel:
        resp = pb2_grpc.BridgeServiceStub(channel).ExecuteTool(pb2.ExecuteToolRequest(
            tool_name=tool_name, parameters={k: encode_param(v) for k, v in params.items()}),
            timeout=10)
    assert resp.success, resp.error_message
    return json.loads(resp.result.value) if resp.result.value else None


def test_start_hook_runs_before_ready_and_stop_hook_on_sigterm(spawn, short_dir):
    log = short_dir / "hooks.log"
    w = spawn(HOOKS, env=hook_env(log, model="m1"))
    address = w.wait_ready()
    assert log.read_text().splitlines() == [f"start {w.pid}"]
    assert call(address, "config_seen") == {"model": "m1", "log": str(log)}
    # Each request works on its own copy of the process instance.
    assert call(address, "per_call_state", value=1) is None
    assert call(address, "per_call_state", value=2) is None
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(10) == 0
    assert log.read_text().splitlines() == [f"start {w.pid}", "stop"]


def test_a_failing_start_hook_is_a_startup_failure(spawn, short_dir):
    w = spawn(HOOKS, env=hook_env(short_dir / "hooks.log", fail_start=True))
    assert w.proc.wait(15) == 1
    assert not w.ready.exists()
    error = json.loads(Path(f"{w.ready}.error").read_text())
    assert "on_worker_start failed: RuntimeError: cannot load the model" in error["message"]
    assert "cannot load the model" in error["traceback"]


class Plain(BaseAdapter):
    def __init__(self):
        self.calls = []

    @tool
    def note(self, x: int) -> list:
        self.calls.append(x)
        return self.calls


class Hooked(Plain):
    def on_worker_start(self, config):
        self.config = config


def test_adapters_without_hooks_get_a_new_instance_per_request():
    rt = AdapterRuntime(Plain)
    assert rt.start({}) is None and rt.instance is None
    a, b = rt.new_instance(), rt.new_instance()
    assert a is not b and a.calls is not b.calls
    assert rt.stop() is None


def test_hooked_adapters_share_the_process_instances_state():
    rt = AdapterRuntime(Hooked)
    rt.start({"k": 1})
    a, b = rt.new_instance("ctx-a"), rt.new_instance("ctx-b")
    assert a.config == {"k": 1} and a.config is b.config
    assert a.session_context == "ctx-a" and b.session_context == "ctx-b"
    # What __init__ built is shared too (documented: a shallow copy).
    assert a.calls is b.calls is rt.instance.calls
