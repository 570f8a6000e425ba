"""The stdio bridge as the host sees it: a real ``python3 -m snakepit_bridge.stdio``
subprocess, length-prefixed JSON frames on its stdin/stdout, stderr captured.

The bridge runs without the generated gRPC modules on its path: nothing here needs
them, and one test checks that grpc and protobuf are never imported.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import signal
import struct
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from conftest import INTERPRETER, PYTHON_DIR, pid_alive, wait_for

TESTS_DIR = Path(__file__).resolve().parent
SHOWCASE = "snakepit_bridge.adapters.showcase.ShowcaseAdapter"
HOOKS = "stdio_adapters.HookAdapter"
PROBE = "stdio_adapters.StdioTestAdapter"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def bridge_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SNAKEPIT_") and k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(PYTHON_DIR), str(TESTS_DIR)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


class Bridge:
    """One bridge subprocess and the host end of its frame channel."""

    def __init__(self, proc: subprocess.Popen, stderr_path: Path):
        self.proc = proc
        self.stderr_path = stderr_path
        self._buf = bytearray()
        self._next_id = 100

    # ------------------------------------------------------------------ frames
    def send(self, obj: Dict[str, Any]) -> None:
        body = json.dumps(obj).encode()
        self.send_raw(struct.pack(">I", len(body)) + body)

    def send_raw(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def request(self, command: str, args: Optional[Dict[str, Any]] = None,
                **fields: Any) -> int:
        self._next_id += 1
        req = {"id": self._next_id, "command": command, "args": args or {},
               "timestamp": "2024-01-01T00:00:00.000Z"}
        req.update(fields)
        self.send(req)
        return self._next_id

    def recv(self, timeout: float = 15.0) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            if len(self._buf) >= 4:
                (n,) = struct.unpack_from(">I", self._buf)
                if len(self._buf) >= 4 + n:
                    body = bytes(self._buf[4:4 + n])
                    del self._buf[:4 + n]
                    return json.loads(body)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise AssertionError(f"no frame within {timeout} s; stderr: {self.stderr()}")
            data = os.read(fd, 1 << 20)
            if not data:
                raise EOFError(f"the bridge closed stdout; stderr: {self.stderr()}")
            self._buf += data

    def call(self, command: str, args: Optional[Dict[str, Any]] = None,
             **fields: Any) -> Dict[str, Any]:
        rid = self.request(command, args, **fields)
        resp = self.recv()
        assert resp["id"] == rid, resp
        return resp

    def result(self, command: str, args: Optional[Dict[str, Any]] = None,
               **fields: Any) -> Any:
        resp = self.call(command, args, **fields)
        assert resp["success"] is True, resp
        return resp["result"]

    # ------------------------------------------------------------------ process
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def close_stdin(self) -> None:
        self.proc.stdin.close()

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


@pytest.fixture
def start(short_dir):
    """``start(adapter=SHOWCASE, env={...}, args=[...]) -> Bridge``; killed at teardown."""
    bridges: List[Bridge] = []

    def _start(adapter: str = SHOWCASE, env: Optional[Dict[str, str]] = None,
               args: Optional[List[str]] = None) -> Bridge:
        err = short_dir / f"bridge{len(bridges)}.stderr"
        cmd = [INTERPRETER, "-m", "snakepit_bridge.stdio", "--adapter", adapter]
        cmd += args if args is not None else ["--worker-id", "w1"]
        with open(err, "wb") as fe:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=fe, env=bridge_env(env), cwd=str(short_dir),
                                    start_new_session=True, bufsize=0)
        b = Bridge(proc, err)
        bridges.append(b)
        return b

    yield _start
    for b in bridges:
        b.kill()


def hook_env(log: Path, **config: Any) -> Dict[str, str]:
    return {"SNAKEPIT_ADAPTER_CONFIG": json.dumps(dict(config, log=str(log)))}


def read_lines(path: Path) -> List[str]:
    return path.read_text().splitlines() if path.exists() else []


# ------------------------------------------------------------------------- ping

def test_ping_reports_bridge_capabilities_and_tools(start):
    b = start()
    resp = b.call("ping")
    assert resp["success"] is True
    assert TIMESTAMP.match(resp["timestamp"])
    pong = resp["result"]
    assert pong["pong"] is True and pong["bridge"] == "python"
    assert pong["streaming"] is True and pong["version"]
    assert pong["pid"] == b.proc.pid and pong["worker_id"] == "w1"
    tools = {t["name"]: t for t in pong["tools"]}
    assert {"echo", "add", "fail", "sleep", "crash", "stream_progress"} <= set(tools)
    assert tools["stream_progress"]["streaming"] is True
    assert tools["echo"]["streaming"] is False
    assert tools["add"]["description"] == "Returns a + b"


def test_ping_is_answered_while_a_sync_tool_runs(start):
    b = start()
    slow = b.request("sleep", {"ms": 1500})
    time.sleep(0.2)  # the sleep is running on the tool thread
    ping = b.request("ping")
    first = b.recv()
    assert first["id"] == ping and first["result"]["pong"] is True
    second = b.recv()
    assert second["id"] == slow and second["success"] is True


# ------------------------------------------------------------------------- calls

def test_echo_round_trip(start):
    b = start()
    args = {"text": "héllo", "n": 3, "nested": {"list": [1, 2.5, None, True]}}
    resp = b.call("echo", args)
    assert resp["success"] is True and resp["result"] == args
    assert TIMESTAMP.match(resp["timestamp"])
    assert isinstance(resp["execution_time_ms"], int)
    assert b.result("add", {"a": 2, "b": 3.5}) == 5.5


def test_a_tool_exception_comes_back_with_type_message_and_traceback(start):
    b = start()
    resp = b.call("fail", {"message": "bad input"})
    assert resp["success"] is False
    assert resp["error"] == "bad input"
    assert resp["error_type"] == "ValueError"
    assert "raise ValueError(message)" in resp["traceback"]
    assert b.result("add", {"a": 1, "b": 1}) == 2  # the bridge carries on


def test_unknown_tools_and_arguments_that_do_not_fit(start):
    b = start()
    resp = b.call("no_such_tool")
    assert resp["success"] is False and resp["error_type"] == "UnknownToolError"
    assert "no_such_tool" in resp["error"]
    resp = b.call("add", {"a": 1})
    assert resp["error_type"] == "InvalidArgumentError" and "'b'" in resp["error"]
    resp = b.call("add", {"a": 1, "b": 2, "c": 3})
    assert resp["error_type"] == "InvalidArgumentError"
    b.send({"id": 7, "command": "echo", "args": [1, 2]})
    resp = b.recv()
    assert resp["id"] == 7 and resp["error_type"] == "InvalidArgumentError"


def test_a_nan_result_is_a_failure_not_invalid_json(start):
    b = start(PROBE)
    resp = b.call("nan")
    assert resp["success"] is False and resp["error_type"] == "ValueError"


def test_a_huge_exception_message_is_clipped(start):
    b = start(PROBE)
    resp = b.call("raise_big", {"size": 5_000_000})
    assert resp["error_type"] == "ValueError"
    assert resp["error"].startswith("xxx") and resp["error"].endswith("(truncated)")
    assert len(resp["error"]) < 100_000 and len(resp["traceback"]) < 100_000


def test_binary_arguments_and_binary_results(start):
    b = start()
    blob = bytes(range(256)) * 10
    resp = b.call("bytes_concat", {}, binary_args={
        "a": base64.b64encode(blob).decode(), "b": base64.b64encode(b"\x00tail").decode()})
    assert resp["success"] is True, resp
    assert base64.b64decode(resp["binary_result"]) == blob + b"\x00tail"
    assert resp["result"] == {"size": len(blob) + 5}
    resp = b.call("bytes_echo", {"x": 1}, binary_args={"a": "not base64!"})
    assert resp["error_type"] == "InvalidArgumentError"


def test_a_fifty_mib_string_round_trip(start):
    b = start(PROBE)
    text = "0123456789abcdef" * (50 * 1024 * 1024 // 16)
    resp = b.call("text", {"value": text})
    assert resp["success"] is True
    assert len(resp["result"]) == len(text) and resp["result"] == text
    assert b.result("text", {"value": "small"}) == "small"  # framing intact after it


# ------------------------------------------------------------------------- streaming

def test_streaming_sends_chunks_then_the_final_response(start):
    b = start()
    rid = b.request("stream_progress", {"steps": 3}, stream=True)
    frames = [b.recv() for _ in range(4)]
    assert all(f["id"] == rid for f in frames)
    assert [f["chunk"] for f in frames[:3]] == [{"step": i, "total": 3} for i in (1, 2, 3)]
    assert frames[3]["success"] is True and frames[3]["result"] is None


def test_a_stream_that_fails_midway_ends_with_a_failure(start):
    b = start()
    rid = b.request("stream_fail", {"after": 2}, stream=True)
    frames = [b.recv() for _ in range(3)]
    assert [f.get("chunk") for f in frames[:2]] == [{"step": 1}, {"step": 2}]
    assert frames[2]["id"] == rid and frames[2]["success"] is False
    assert frames[2]["error_type"] == "RuntimeError"


def test_a_plain_tool_called_as_a_stream_sends_one_chunk(start):
    b = start()
    rid = b.request("add", {"a": 1, "b": 2}, stream=True)
    chunk, end = b.recv(), b.recv()
    assert chunk == {"id": rid, "chunk": 3}
    assert end["id"] == rid and end["success"] is True and end["result"] is None


def test_a_streaming_tool_called_without_stream_is_an_argument_error(start):
    b = start()
    resp = b.call("stream_progress", {"steps": 2})
    assert resp["success"] is False and resp["error_type"] == "InvalidArgumentError"


def test_async_generators_stream_too(start):
    b = start(PROBE)
    rid = b.request("async_count", {"n": 3}, stream=True)
    frames = [b.recv() for _ in range(4)]
    assert [f.get("chunk") for f in frames[:3]] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert frames[3] == {**frames[3], "id": rid, "success": True, "result": None}


# ------------------------------------------------------------------------- concurrency

def test_async_calls_run_concurrently_and_answer_out_of_order(start):
    b = start(PROBE)
    slow = b.request("async_wait", {"ms": 800, "tag": "slow"})
    fast = b.request("async_wait", {"ms": 10, "tag": "fast"})
    sync = b.request("text", {"value": "sync"})
    answers = [b.recv() for _ in range(3)]
    order = [a["id"] for a in answers]
    assert order[-1] == slow  # both others overtook it
    assert set(order) == {slow, fast, sync}
    by_id = {a["id"]: a["result"] for a in answers}
    assert by_id == {slow: "slow", fast: "fast", sync: "sync"}


def _overlap(start, threads: Optional[str]) -> bool:
    b = start(env={"SNAKEPIT_THREADS": threads} if threads else None)
    first = b.request("timed_sleep", {"ms": 300})
    second = b.request("timed_sleep", {"ms": 300})
    got = {r["id"]: r["result"] for r in (b.recv(), b.recv())}
    return got[second]["start"] < got[first]["end"]


def test_sync_tools_run_one_at_a_time_by_default(start):
    assert not _overlap(start, None)


def test_snakepit_threads_lets_sync_tools_run_at_once(start):
    assert _overlap(start, "2")


# ------------------------------------------------------------------------- channel

def test_printing_in_a_tool_goes_to_stderr_not_into_the_frames(start):
    b = start(PROBE)
    assert b.result("shout", {"text": "HELLO-FROM-TOOL"}) == "done"
    assert b.result("text", {"value": "after"}) == "after"
    assert wait_for(lambda: b.stderr().count("HELLO-FROM-TOOL") == 3, 5)


def test_grpc_protobuf_and_asyncio_are_not_loaded(start):
    b = start(PROBE)
    assert b.result("loaded_modules") == []
    b.result("async_wait", {"ms": 1, "tag": "x"})  # the loop starts on first use
    loaded = b.result("loaded_modules")
    assert "asyncio" in loaded
    assert all(m.split(".")[0] == "asyncio" for m in loaded), loaded


def test_importing_the_bridge_loads_no_grpc_or_protobuf():
    # asyncio (loaded with the first async call), argparse, inspect and dataclasses
    # are left out on purpose too: they are most of a start-up's import time.
    code = ("import sys, snakepit_bridge.stdio, snakepit_bridge.adapters.showcase; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('grpc', 'google', 'asyncio', 'argparse', 'inspect', 'dataclasses')))")
    out = subprocess.run([INTERPRETER, "-c", code], env=bridge_env(), capture_output=True,
                         text=True, timeout=30, check=True)
    assert out.stdout.strip() == "[]"


def test_frames_that_cannot_be_answered_are_skipped(start):
    b = start()
    b.send_raw(struct.pack(">I", 5) + b"nope!")
    b.send({"command": "echo", "args": {}})  # no id
    assert b.result("echo", {"still": "here"}) == {"still": "here"}
    assert "not JSON" in b.stderr() and "with an id" in b.stderr()


def test_an_oversized_frame_is_a_protocol_error(start):
    b = start(env={"SNAKEPIT_MAX_MESSAGE_BYTES": "1000"})
    b.call("ping")
    b.send_raw(struct.pack(">I", 5000) + b"x" * 10)
    assert b.wait(5) == 4
    assert "exceeds SNAKEPIT_MAX_MESSAGE_BYTES" in b.stderr()


def test_a_result_over_the_frame_limit_is_reported_instead(start):
    b = start(PROBE, env={"SNAKEPIT_MAX_MESSAGE_BYTES": "1000"})
    resp = b.call("repeat", {"value": "x", "times": 2000})
    assert resp["success"] is False and resp["error_type"] == "ResultTooLargeError"
    assert b.result("repeat", {"value": "x", "times": 10}) == "x" * 10


# ------------------------------------------------------------------------- context

def test_session_and_correlation_ids_reach_the_tool_but_host_state_needs_grpc(start):
    b = start(PROBE)
    seen = b.result("context_seen", session_id="s-1", correlation_id="cid-42",
                    deadline_ms=5000, metadata={"k": "v"})
    assert seen["session_id"] == "s-1" and seen["correlation_id"] == "cid-42"
    assert seen["metadata"]["k"] == "v"
    assert seen["metadata"]["correlation_id"] == "cid-42"
    assert 0 < int(seen["metadata"]["timeout_ms"]) <= 5000
    for key in ("state_error", "host_error"):
        assert 'gRPC worker kind (kind = "grpc")' in seen[key]


def test_the_correlation_id_is_on_the_tools_log_lines(start):
    b = start(env={"SNAKEPIT_LOG_FORMAT": "json", "SNAKEPIT_LOG_LEVEL": "info"})
    assert b.result("log", {"message": "marker-line"}, correlation_id="cid-7") is True

    def record():
        for line in b.stderr().splitlines():
            if line.startswith("{") and "marker-line" in line:
                return json.loads(line)
        return None

    assert wait_for(lambda: record() is not None, 5)
    rec = record()
    assert rec["correlation_id"] == "cid-7" and rec["level"] == "INFO"
    assert rec["worker_id"] == "w1"


def test_a_deadline_that_passed_before_the_start_skips_the_tool(start, short_dir):
    b = start()
    probe = short_dir / "probe.txt"
    b.request("sleep", {"ms": 400})
    late = b.request("record", {"path": str(probe), "value": 1}, deadline_ms=100)
    answers = {r["id"]: r for r in (b.recv(), b.recv())}
    assert answers[late]["error_type"] == "DeadlineExceededError"
    assert not probe.exists()


# ------------------------------------------------------------------------- hooks

def test_on_worker_start_gets_the_adapter_config_once(start, short_dir):
    log = short_dir / "hooks.log"
    b = start(HOOKS, env=hook_env(log, model="small"))
    assert b.call("ping")["success"] is True
    assert read_lines(log) == [f"start {b.proc.pid}"]  # before the first answer
    assert b.result("config_seen") == {"model": "small", "log": str(log)}
    assert b.result("config_seen")["model"] == "small"
    assert read_lines(log) == [f"start {b.proc.pid}"]


def test_each_call_gets_its_own_copy_of_the_process_instance(start, short_dir):
    b = start(HOOKS, env=hook_env(short_dir / "hooks.log"))
    assert b.result("per_call_state", {"value": 1}) is None
    assert b.result("per_call_state", {"value": 2}) is None


def test_showcase_hooks_and_config_without_adapter_config(start, short_dir):
    assert start().result("worker_config")["config"] == {}
    log = short_dir / "showcase.log"
    b = start(env={"SNAKEPIT_ADAPTER_CONFIG": json.dumps({"hook_log": str(log)})})
    assert b.result("worker_config")["config"] == {"hook_log": str(log)}
    b.close_stdin()
    assert b.wait(5) == 0
    assert read_lines(log) == [f"start {b.proc.pid}", f"stop {b.proc.pid}"]


def test_upstream_style_adapters_take_any_command(start):
    b = start("stdio_adapters.UpstreamStyleAdapter")
    pong = b.result("ping")
    assert "tools" not in pong  # any name may be a tool
    assert b.result("whatever", {"x": 1}, session_id="s9") == {
        "tool": "whatever", "arguments": {"x": 1}, "session_id": "s9"}
    resp = b.call("boom")
    assert resp["success"] is False and resp["error_type"] == "KeyError"


def test_async_start_hook_and_per_call_initialize_cleanup(start):
    b = start("stdio_adapters.LifecycleAdapter")
    assert b.result("events_so_far") == ["start", "initialize"]
    assert b.result("async_events") == ["start", "initialize", "cleanup", "initialize"]
    assert b.result("events_so_far")[-2:] == ["cleanup", "initialize"]


# ------------------------------------------------------------------------- lifecycle

def test_eof_exits_within_a_second_abandoning_running_work(start, short_dir):
    log = short_dir / "hooks.log"
    b = start(HOOKS, env=hook_env(log))
    b.call("ping")
    b.request("slow", {"ms": 10000, "tag": "long"})
    assert wait_for(lambda: "begin long" in read_lines(log), 5)
    began = time.monotonic()
    b.close_stdin()
    assert b.wait(5) == 0
    assert time.monotonic() - began < 1.0
    assert read_lines(log)[-1] == "stop"


def test_sigterm_lets_the_running_call_finish_then_stops(start, short_dir):
    log = short_dir / "hooks.log"
    b = start(HOOKS, env=hook_env(log))
    rid = b.request("slow", {"ms": 700, "tag": "job"})
    assert wait_for(lambda: "begin job" in read_lines(log), 5)
    b.proc.send_signal(signal.SIGTERM)
    resp = b.recv()
    assert resp["id"] == rid and resp["success"] is True and resp["result"] == "job"
    assert b.wait(5) == 0
    assert read_lines(log)[1:] == ["begin job", "end job", "stop"]
    with pytest.raises(EOFError):
        b.recv(2)


def test_sigterm_lets_async_calls_finish_too(start):
    b = start(PROBE)
    rid = b.request("async_wait", {"ms": 500, "tag": "late"})
    b.result("text", {"value": "loop started"})
    b.proc.send_signal(signal.SIGTERM)
    resp = b.recv()
    assert resp["id"] == rid and resp["result"] == "late"
    assert b.wait(5) == 0


def test_sigterm_abandons_calls_still_running_after_the_grace_period(start, short_dir):
    log = short_dir / "hooks.log"
    b = start(HOOKS, env=dict(hook_env(log), SNAKEPIT_GRACE_MS="200"))
    b.request("slow", {"ms": 10000, "tag": "stuck"})
    assert wait_for(lambda: "begin stuck" in read_lines(log), 5)
    began = time.monotonic()
    b.proc.send_signal(signal.SIGTERM)
    assert b.wait(5) == 0
    assert time.monotonic() - began < 3.0
    assert read_lines(log)[-1] == "stop" and "end stuck" not in read_lines(log)
    with pytest.raises(EOFError):
        b.recv(2)


def test_a_crashing_tool_takes_the_process_down(start):
    b = start()
    b.request("crash", {"code": 7})
    assert b.wait(5) == 7
    assert not pid_alive(b.proc.pid)


# ------------------------------------------------------------------------- startup

def _one_line_error(b: Bridge) -> str:
    lines = [ln for ln in b.stderr().splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_an_adapter_that_cannot_be_imported_fails_the_start(start):
    b = start("no_such_module.Adapter")
    assert b.wait(10) == 3
    line = _one_line_error(b)
    assert line.startswith("snakepit_bridge.stdio: adapter import failed:")
    assert "no_such_module" in line


def test_on_worker_start_raising_fails_the_start(start, short_dir):
    b = start(HOOKS, env=hook_env(short_dir / "hooks.log", fail_start=True))
    assert b.wait(10) == 1
    line = _one_line_error(b)
    assert "on_worker_start failed: RuntimeError: cannot load the model" in line
    assert "stdio_adapters.py:" in line


def test_bad_adapter_config_and_bad_arguments_fail_the_start(start):
    b = start(env={"SNAKEPIT_ADAPTER_CONFIG": "[1, 2]"})
    assert b.wait(10) == 1
    assert "SNAKEPIT_ADAPTER_CONFIG must be a JSON object" in _one_line_error(b)
    b = start(args=["--bogus"])
    assert b.wait(10) == 2
    assert "unknown argument '--bogus'" in _one_line_error(b)
    b = start(env={"SNAKEPIT_THREADS": "0"})
    assert b.wait(10) == 2
