"""The worker template (snakepit_bridge.forkserver) on its own: a copy made by its
Cloner is a child of the template's parent (here: the test process's child, via a
helper), carries the right thread id in glibc's descriptor, and writes its own command
line; the template refuses modules other than the bridge."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

from conftest import INTERPRETER, PYTHON_DIR

SCRIPT = textwrap.dedent("""
    import ctypes, json, os, sys
    from snakepit_bridge import forkserver
    clone = forkserver.Cloner()
    r, w = os.pipe()
    pid = clone()
    if pid == 0:
        os.close(r)
        ok = forkserver.set_cmdline(["/usr/bin/python3", "-m", "snakepit_bridge",
                                     "--worker-id", "copy_1"])
        tid = ctypes.c_int.from_address(clone._tid_addr).value
        os.write(w, json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "tid": tid,
                                "cmdline_set": ok}).encode())
        os._exit(0)
    os.close(w)
    print(json.dumps({"template": os.getpid(), "copy": pid,
                      "report": json.loads(os.read(r, 4096))}), flush=True)
""")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PYTHON_DIR)] + sys.path)
    return env


def test_a_copy_is_the_grandparents_child_with_its_own_tid_and_command_line():
    # The template is a child of this test; the copy becomes this test's child too.
    padding = "_" * 512
    proc = subprocess.run([INTERPRETER, "-c", SCRIPT, padding], capture_output=True,
                          text=True, env=_env(), timeout=30)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    report = out["report"]
    assert report["pid"] == out["copy"]
    assert report["ppid"] == os.getpid()  # CLONE_PARENT: not the template
    assert report["tid"] == out["copy"]  # CLONE_CHILD_SETTID fixed glibc's cached tid
    assert report["cmdline_set"] is True
    pid, status = os.waitpid(out["copy"], 0)  # ours to reap
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_template_serves_only_the_bridge_module_and_exits_on_eof():
    host, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen([INTERPRETER, "-m", "snakepit_bridge.forkserver", "_" * 64],
                            stdin=child, env=_env(), stderr=subprocess.PIPE)
    child.close()
    try:
        host.settimeout(30)
        ready = json.loads(host.recv(65536))
        assert ready["ready"] is True and ready["pid"] == proc.pid
        host.send(json.dumps({"module": "os", "argv": [], "env": [], "cwd": ""}).encode())
        reply = json.loads(host.recv(65536))
        assert "cannot be started here" in reply["error"]
    finally:
        host.close()
    assert proc.wait(timeout=10) == 0
