"""Shared fixtures: generated modules on sys.path, worker subprocesses that always die.

Run with ``PYTHONPATH=python:<build>/python /usr/bin/python3 -m pytest -q python/tests``.
When ``snakepit_bridge_pb2`` is not importable, it is generated here with protoc into a
temporary directory, so the suite also runs without a build.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

PYTHON_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = PYTHON_DIR.parent
PROTO = REPO_ROOT / "proto" / "snakepit_bridge.proto"
INTERPRETER = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
SHOWCASE = "snakepit_bridge.adapters.showcase.ShowcaseAdapter"
# Test-only adapters live in the test tree, not in the shipped package.
TEST_ADAPTERS_DIR = REPO_ROOT / "tests" / "support" / "python"
BROKEN = "broken_adapter.BrokenAdapter"

if str(PYTHON_DIR) not in sys.path:
    sys.path.insert(0, str(PYTHON_DIR))


def _ensure_generated() -> str:
    try:
        import snakepit_bridge_pb2  # noqa: F401
        import snakepit_bridge_pb2_grpc  # noqa: F401
    except ImportError:
        out = tempfile.mkdtemp(prefix="snakepit-pygen-")
        atexit.register(shutil.rmtree, out, True)
        plugin = shutil.which("grpc_python_plugin") or "/usr/bin/grpc_python_plugin"
        subprocess.run(
            ["protoc", f"--proto_path={PROTO.parent}", f"--python_out={out}",
             f"--grpc_out={out}", f"--plugin=protoc-gen-grpc={plugin}", str(PROTO)],
            check=True)
        sys.path.insert(0, out)
        import snakepit_bridge_pb2  # noqa: F401
    import snakepit_bridge_pb2 as pb2_mod
    return str(Path(pb2_mod.__file__).resolve().parent)


GEN_DIR = _ensure_generated()


def worker_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for worker subprocesses: our package, the generated modules and the
    test-only adapters."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SNAKEPIT_") and k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(PYTHON_DIR), GEN_DIR, str(TEST_ADAPTERS_DIR)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def pid_alive(pid: int) -> bool:
    """True while *pid* exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_for(predicate, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Worker:
    """A worker subprocess in its own session; killed (group-wide) at teardown."""

    def __init__(self, proc: subprocess.Popen, sock: Optional[Path], ready: Path,
                 stdout_path: Path, stderr_path: Path):
        self.proc = proc
        self.sock = sock
        self.ready = ready
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 15.0) -> str:
        ok = wait_for(lambda: self.ready.exists() or self.proc.poll() is not None, timeout)
        if not ok or not self.ready.exists():
            raise AssertionError(f"worker not ready (rc={self.proc.poll()}): {self.stderr()}")
        return self.ready.read_text()

    def stdout(self) -> bytes:
        return self.stdout_path.read_bytes()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                if os.getpgid(self.proc.pid) == self.proc.pid:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                else:
                    self.proc.kill()
            except ProcessLookupError:
                pass
            self.proc.wait(5)


@pytest.fixture
def short_dir():
    """A private 0700 directory with a short path (unix socket paths are limited)."""
    d = tempfile.mkdtemp(prefix="sp-", dir="/tmp")
    os.chmod(d, 0o700)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def spawn(short_dir):
    """``spawn(adapter=..., extra_args=[...], env={...}, pass_fds=(), tcp=False, ...)``."""
    workers: List[Worker] = []

    def _spawn(adapter: str = SHOWCASE, extra_args: Optional[List[str]] = None,
               env: Optional[Dict[str, str]] = None, pass_fds=(), tcp: bool = False,
               name: str = "w1", ready_flag: bool = True,
               new_session: bool = True) -> Worker:
        sock = None if tcp else short_dir / f"{name}.sock"
        ready = short_dir / f"{name}.ready"
        args = [INTERPRETER, "-m", "snakepit_bridge", "--adapter", adapter,
                "--worker-id", name]
        args += ["--port", "0"] if tcp else ["--socket", str(sock)]
        if ready_flag:
            args += ["--ready-file", str(ready)]
        args += extra_args or []
        out = short_dir / f"{name}.stdout"
        err = short_dir / f"{name}.stderr"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe,
                                    env=worker_env(env), pass_fds=pass_fds,
                                    start_new_session=new_session,
                                    cwd=str(short_dir))
        w = Worker(proc, sock, ready, out, err)
        workers.append(w)
        return w

    yield _spawn
    for w in workers:
        w.kill()
