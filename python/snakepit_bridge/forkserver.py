"""The template process of a gRPC pool: imports grpc and the bridge once, then starts
each worker as a copy of itself.

``python3 -m snakepit_bridge.forkserver`` (started by the host, never by hand). Importing
grpc, asyncio, protobuf and the bridge costs a fresh interpreter ~0.2 s of CPU; a copy
of a process that has done it once is ready in a few milliseconds. It is what
``multiprocessing``'s forkserver does, with one difference that keeps the host's
process rules intact: the copy is made with ``clone(CLONE_PARENT)``, so each worker is
the **host's** child, not the template's. The host reaps it, watches it through a
pidfd, and signals its own process group exactly as for a worker it spawned itself.

Protocol, on the control socket that is this process's stdin (``SOCK_SEQPACKET``, one
JSON object per message):

* template → host, once the imports are done:
  ``{"ready": true, "pid": <template pid>}`` or ``{"ready": false, "error": "..."}``.
* host → template: ``{"module": "snakepit_bridge", "argv": [...], "env": [[k, v], ...],
  "cwd": "..."}`` with up to one descriptor attached (``SCM_RIGHTS``): the worker's
  stderr. The worker's stdin is ``/dev/null``; its stdout and fd 3 (the lifeline) are
  the template's.
* template → host: ``{"pid": <worker pid>}`` or ``{"error": "..."}``.

The host passes one long argument of padding after the module name: the room in
which each copy writes its own command line (``set_cmdline``).

The template exits when the host closes the socket (or dies: the kernel closes it).

Safety of the copy: the template runs no thread and has created no gRPC channel,
server or event loop when it copies itself (checked before it reports ready), so the
copy inherits no lock held by another thread. The copy then runs the bridge's ``main``
as ``python3 -m snakepit_bridge ARGS`` would, and never returns into this loop.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import socket
import sys
import threading
import traceback
from typing import Any, Dict, List, Sequence

#: Modules every gRPC worker imports: done once here.
PRELOAD = ("asyncio", "concurrent.futures", "grpc", "grpc.aio", "google.protobuf",
           "snakepit_bridge.server", "snakepit_bridge.servicer",
           "snakepit_bridge.session_context", "snakepit_bridge.heartbeat",
           "snakepit_bridge.telemetry")

#: The only module a worker may be started from.
ALLOWED_MODULES = ("snakepit_bridge",)

MAX_MESSAGE = 1 << 20

_CLONE_PARENT = 0x00008000
_CLONE_CHILD_SETTID = 0x01000000
_SIGCHLD = 17
#: clone's syscall number per architecture, and where its child_tid argument goes
#: (x86_64: flags, stack, parent_tid, child_tid, tls; the generic order swaps the last
#: two).
_SYS_CLONE = {"x86_64": (56, 3), "aarch64": (220, 4), "riscv64": (220, 4)}


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _tid_offsets(libc: Any) -> set:
    """Offsets in the calling thread's glibc thread descriptor that hold its tid."""
    base = libc.pthread_self()
    tid = libc.gettid()
    raw = ctypes.string_at(base, 4096)
    return {i for i in range(0, len(raw), 4)
            if int.from_bytes(raw[i:i + 4], sys.byteorder, signed=True) == tid}


class Cloner:
    """``clone(CLONE_PARENT | CLONE_CHILD_SETTID | SIGCHLD)``: glibc's own fork (which
    has the kernel write the child's tid into the thread descriptor, so pthread calls
    on the main thread name the right thread), except that the child's parent is ours.
    """

    def __init__(self) -> None:
        arch = _SYS_CLONE.get(platform.machine())
        if arch is None:
            raise OSError(f"no clone syscall known for {platform.machine()}")
        self._number, self._tid_arg = arch
        # PyDLL keeps the GIL across the call: the copy resumes exactly as it was.
        libc = ctypes.PyDLL(None, use_errno=True)
        libc.pthread_self.restype = ctypes.c_void_p
        libc.gettid.restype = ctypes.c_int
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        # Where glibc keeps the tid: the offset that holds it in this thread's
        # descriptor and in another thread's (one short-lived thread, joined before
        # anything is copied).
        found: List[set] = []
        probe = threading.Thread(target=lambda: found.append(_tid_offsets(libc)))
        probe.start()
        probe.join()
        offsets = _tid_offsets(libc) & (found[0] if found else set())
        if len(offsets) != 1:
            raise OSError(f"cannot locate the thread id in glibc's descriptor ({offsets})")
        self._tid_addr = libc.pthread_self() + offsets.pop()

    def __call__(self) -> int:
        args = [ctypes.c_long(0)] * 5
        args[0] = ctypes.c_long(_CLONE_PARENT | _CLONE_CHILD_SETTID | _SIGCHLD)
        args[self._tid_arg] = ctypes.c_long(self._tid_addr)
        pid = self._syscall(ctypes.c_long(self._number), *args)
        if pid < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return pid


def set_cmdline(args: Sequence[str]) -> bool:
    """Makes ``/proc/self/cmdline`` read *args*: ps, pgrep and the host's sweep of a
    dead run (which looks for ``--snakepit-run-id``) see the worker, not the template.
    Overwrites the argument area in place (fields 48/49 of ``/proc/self/stat``); the
    host launches the template with a long last argument to make room. Arguments that
    do not fit are cut."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat_line = f.read()
        fields = stat_line[stat_line.rindex(b")") + 2:].split()
        # fields[0] is field 3 (state): field n is fields[n - 3].
        start, end = int(fields[48 - 3]), int(fields[49 - 3])
    except (OSError, ValueError, IndexError):
        return False
    size = end - start
    if size <= 1:
        return False
    data = b"\0".join(a.encode("utf-8", "surrogateescape") for a in args)[:size - 1]
    data += b"\0" * (size - len(data))
    ctypes.memmove(start, data, size)
    return True


def _send(sock: socket.socket, obj: Dict[str, Any]) -> None:
    sock.send(json.dumps(obj).encode("utf-8"))


def _become_worker(sock: socket.socket, request: Dict[str, Any], fds: Sequence[int]) -> None:
    """In the copy: take the worker's descriptors, environment and arguments, run the
    bridge, exit. Never returns."""
    code = 1
    try:
        sock.close()
        os.setpgid(0, 0)  # the host sets it too; whoever comes first wins the race
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        if fds:
            os.dup2(fds[0], 2)
            for fd in fds:
                os.close(fd)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in request.get("env", [])})
        cwd = request.get("cwd") or ""
        if cwd:
            os.chdir(cwd)
        if "random" in sys.modules:
            sys.modules["random"].seed()  # a copy must not repeat its siblings' numbers
        argv: List[str] = [str(a) for a in request.get("argv", [])]
        sys.argv = [request["module"]] + argv
        set_cmdline([sys.executable, "-m", request["module"]] + argv)
        from snakepit_bridge.server import main
        main(argv)  # exits the process
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - anything here ends the copy
        traceback.print_exc(file=sys.stderr)
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(sock: socket.socket) -> int:
    """The template's loop: one request in, one copy and one reply out."""
    try:
        clone = Cloner()
        for name in PRELOAD:
            __import__(name)
        from snakepit_bridge.protocol import load
        load()
        threads = _threads()
        if threads != 1:
            raise RuntimeError(f"{threads} threads after the imports; copying is unsafe")
    except BaseException as exc:  # noqa: BLE001 - reported to the host, which spawns
        _send(sock, {"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    _send(sock, {"ready": True, "pid": os.getpid()})
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 4)
        except InterruptedError:
            continue
        if not msg:
            return 0  # the host closed the socket, or died
        try:
            request = json.loads(msg.decode("utf-8"))
            if request.get("module") not in ALLOWED_MODULES:
                raise ValueError(f"module {request.get('module')!r} cannot be started here")
            pid = clone()
            if pid == 0:
                _become_worker(sock, request, fds)
            reply: Dict[str, Any] = {"pid": pid}
        except Exception as exc:  # noqa: BLE001 - answered, the template goes on
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        for fd in fds:
            os.close(fd)
        _send(sock, reply)


def main() -> None:
    sock = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    code = serve(sock)
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
