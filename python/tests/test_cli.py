"""The real worker process: readiness, silence on stdout, signals, failures, lifeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import threading
import time

import grpc
import pytest

import snakepit_bridge_pb2 as pb2
import snakepit_bridge_pb2_grpc as pb2_grpc
from snakepit_bridge.serialization import encode_param

from conftest import BROKEN, INTERPRETER, SHOWCASE, pid_alive, wait_for, worker_env


def call(address, tool_name, timeout=10, **params):
    with grpc.insecure_channel(address) as channel:
        stub = pb2_grpc.BridgeServiceStub(channel)
        return stub.ExecuteTool(pb2.ExecuteToolRequest(
            tool_name=tool_name, parameters={k: encode_param(v) for k, v in params.items()}),
            timeout=timeout)


def test_ready_file_silent_stdout_and_sigterm(spawn):
    w = spawn()
    address = w.wait_ready()
    assert address == f"unix:{w.sock}"
    assert not os.path.exists(f"{w.ready}.tmp")
    assert oct(os.stat(w.sock).st_mode & 0o777) == "0o600"
    with grpc.insecure_channel(address) as channel:
        stub = pb2_grpc.BridgeServiceStub(channel)
        assert stub.Ping(pb2.PingRequest(message="x"), timeout=5).message == "pong: x"
    info = json.loads(call(address, "info").result.value)
    assert info["pid"] == w.pid and info["worker_id"] == "w1"

    started = time.monotonic()
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(5) == 0
    assert time.monotonic() - started < 3
    assert not w.sock.exists()
    assert w.stdout() == b""


class SlowRegistrationHost(pb2_grpc.BridgeServiceServicer):
    """A host that takes its time to accept a worker's tools."""

    def __init__(self):
        self.registered = threading.Event()

    def RegisterTools(self, request, context):
        time.sleep(1.0)
        self.registered.set()
        return pb2.RegisterToolsResponse(success=True)


def test_ready_file_comes_after_the_tool_registration(spawn, short_dir):
    # A host decides from a tool's registration how to call it (a stream or not):
    # a ready worker whose tools it does not know yet gets the wrong call.
    from concurrent.futures import ThreadPoolExecutor

    host = SlowRegistrationHost()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    pb2_grpc.add_BridgeServiceServicer_to_server(host, server)
    address = f"unix:{short_dir}/host.sock"
    assert server.add_insecure_port(address)
    server.start()
    try:
        w = spawn(extra_args=["--elixir-address", address])
        w.wait_ready()
        assert host.registered.is_set(), "ready before the host had the tools"
    finally:
        server.stop(0)


def test_sigterm_lets_in_flight_requests_finish(spawn):
    w = spawn(extra_args=["--grace-period-ms", "3000"])
    address = w.wait_ready()
    outcome = {}

    def slow():
        try:
            outcome["resp"] = call(address, "sleep", ms=500)
        except grpc.RpcError as exc:  # pragma: no cover - reported below
            outcome["err"] = exc

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.2)
    w.proc.send_signal(signal.SIGTERM)
    t.join(10)
    assert "resp" in outcome, outcome
    assert json.loads(outcome["resp"].result.value)["slept_ms"] == 500
    assert w.proc.wait(5) == 0


def test_tcp_port_mode_and_env_thread_limits(spawn):
    w = spawn(tcp=True, env={"OPENBLAS_NUM_THREADS": "1", "SNAKEPIT_PROBE": "yes"})
    address = w.wait_ready()
    host, port = address.split(":")
    assert host == "127.0.0.1" and int(port) > 0
    info = json.loads(call(address, "info").result.value)
    assert info["env"]["OPENBLAS_NUM_THREADS"] == "1"
    assert json.loads(call(address, "env", name="SNAKEPIT_PROBE").result.value) == "yes"


def test_ready_file_from_env_like_upstream(spawn, short_dir):
    ready = short_dir / "env.ready"
    w = spawn(env={"SNAKEPIT_READY_FILE": str(ready)}, ready_flag=False)
    assert wait_for(ready.exists, 15), w.stderr()
    assert ready.read_text() == f"unix:{w.sock}"


def test_broken_adapter_exits_3_with_error_file(spawn):
    w = spawn(adapter=BROKEN)
    assert w.proc.wait(15) == 3
    assert not w.ready.exists()
    error = json.loads((w.ready.parent / f"{w.ready.name}.error").read_text())
    assert error["type"] == "ImportError"
    assert "broken" in error["message"]
    assert "Traceback" in error["traceback"]
    assert "always fails to import" in w.stderr()
    assert w.stdout() == b""


def test_missing_adapter_class_exits_3(spawn):
    w = spawn(adapter="snakepit_bridge.adapters.showcase.NoSuchAdapter")
    assert w.proc.wait(15) == 3
    error = json.loads((w.ready.parent / f"{w.ready.name}.error").read_text())
    assert error["type"] == "AttributeError" and "NoSuchAdapter" in error["message"]


def test_bad_command_line_exits_1_with_error_file(spawn):
    w = spawn(extra_args=["--max-workers", "0"])
    assert w.proc.wait(15) == 1
    error = json.loads((w.ready.parent / f"{w.ready.name}.error").read_text())
    assert error["type"] == "StartupError" and "max-workers" in error["message"]


def test_health_check():
    env = worker_env()
    ok = subprocess.run([INTERPRETER, "-m", "snakepit_bridge", "--health-check",
                         "--adapter", SHOWCASE], env=env, capture_output=True, timeout=30)
    assert ok.returncode == 0 and ok.stdout == b""
    bad = subprocess.run([INTERPRETER, "-m", "snakepit_bridge", "--health-check",
                          "--adapter", BROKEN], env=env, capture_output=True, timeout=30)
    assert bad.returncode == 1 and b"always fails to import" in bad.stderr


def test_crash_tool_exits_with_its_code(spawn):
    w = spawn()
    address = w.wait_ready()
    with pytest.raises(grpc.RpcError):
        call(address, "crash", code=7)
    assert w.proc.wait(5) == 7


def test_lifeline_fd_eof_exits_within_one_second(spawn):
    r, wfd = os.pipe()
    try:
        w = spawn(extra_args=["--parent-fd", str(r)], pass_fds=(r,))
    finally:
        os.close(r)
    w.wait_ready()
    started = time.monotonic()
    os.close(wfd)
    assert w.proc.wait(5) == 0
    assert time.monotonic() - started < 1.0
    assert not w.sock.exists()


def test_lifeline_fd_from_env_ignores_data_and_exits_on_eof(spawn):
    r, wfd = os.pipe()
    try:
        w = spawn(env={"SNAKEPIT_PARENT_FD": str(r)}, pass_fds=(r,))
    finally:
        os.close(r)
    address = w.wait_ready()
    os.write(wfd, b"keepalive\n")
    time.sleep(0.3)
    assert w.proc.poll() is None
    assert json.loads(call(address, "ping").result.value) == "pong"
    os.close(wfd)
    assert w.proc.wait(5) == 0


def test_lifeline_cuts_long_requests_short(spawn):
    r, wfd = os.pipe()
    try:
        w = spawn(extra_args=["--parent-fd", str(r), "--grace-period-ms", "10000"],
                  pass_fds=(r,))
    finally:
        os.close(r)
    address = w.wait_ready()
    t = threading.Thread(target=lambda: _swallow(call, address, "sleep", ms=10000))
    t.start()
    time.sleep(0.2)
    started = time.monotonic()
    os.close(wfd)
    assert w.proc.wait(5) == 0
    assert time.monotonic() - started < 1.0
    t.join(10)


def _swallow(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except grpc.RpcError:
        pass


INTERMEDIATE = textwrap.dedent("""
    import os, subprocess, sys, time
    ready, sock, pidfile, mode = sys.argv[1:5]
    args = [sys.executable, "-m", "snakepit_bridge", "--adapter", sys.argv[5],
            "--socket", sock, "--ready-file", ready, "--worker-id", "orphan"]
    fds = ()
    if mode == "pipe":
        r, w = os.pipe()
        args += ["--parent-fd", str(r)]
        fds = (r,)
    proc = subprocess.Popen(args, pass_fds=fds, stdin=subprocess.DEVNULL)
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(proc.pid))
    os.replace(pidfile + ".tmp", pidfile)
    time.sleep(120)
""")


@pytest.mark.parametrize("mode", ["ppid", "pipe"])
def test_worker_dies_when_its_parent_is_sigkilled(short_dir, mode):
    ready = short_dir / "orphan.ready"
    sock = short_dir / "orphan.sock"
    pidfile = short_dir / "orphan.pid"
    host = subprocess.Popen(
        [INTERPRETER, "-c", INTERMEDIATE, str(ready), str(sock), str(pidfile), mode, SHOWCASE],
        env=worker_env(), start_new_session=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker_pid = None
    try:
        assert wait_for(ready.exists, 15), "worker never became ready"
        worker_pid = int(pidfile.read_text())
        assert pid_alive(worker_pid)
        os.kill(host.pid, signal.SIGKILL)
        host.wait(5)
        started = time.monotonic()
        assert wait_for(lambda: not pid_alive(worker_pid), 1.5), "worker outlived its parent"
        assert time.monotonic() - started < 1.5
        assert not sock.exists()
    finally:
        if host.poll() is None:
            os.killpg(host.pid, signal.SIGKILL)
            host.wait(5)
        if worker_pid and pid_alive(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)


def test_process_group_env_makes_the_worker_a_group_leader(spawn):
    w = spawn(env={"SNAKEPIT_PROCESS_GROUP": "1"}, new_session=False)
    w.wait_ready()
    assert os.getpgid(w.pid) == w.pid
    assert os.getsid(w.pid) == w.pid


def test_without_process_group_env_the_group_is_left_alone(spawn):
    w = spawn(new_session=False)
    w.wait_ready()
    assert os.getpgid(w.pid) == os.getpgid(0)


def test_upstream_style_launch_writes_a_bare_port(short_dir):
    ready = short_dir / "upstream.ready"
    proc = subprocess.Popen(
        [INTERPRETER, "-m", "snakepit_bridge", "--adapter", SHOWCASE, "--port", "0",
         "--snakepit-run-id", "abc12de", "--heartbeat-enabled", "true",
         "--heartbeat-interval-ms", "2000"],
        env=worker_env({"SNAKEPIT_READY_FILE": str(ready)}), start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(ready.exists, 15)
        port = int(ready.read_text())
        assert json.loads(call(f"127.0.0.1:{port}", "add", a=1, b=2).result.value) == 3
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=5)
        assert proc.returncode == 0 and out == b""
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=5)
