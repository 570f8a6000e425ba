"""``--list-tools``: the adapter's tools as JSON on stdout (used by ``snakepit tools``)."""

from __future__ import annotations

import json
import subprocess

from conftest import INTERPRETER, SHOWCASE, worker_env


def run_list(adapter):
    return subprocess.run([INTERPRETER, "-m", "snakepit_bridge", "--list-tools",
                           "--adapter", adapter],
                          env=worker_env(), capture_output=True, timeout=60)


def test_list_tools_prints_the_showcase_tools_as_json():
    res = run_list(SHOWCASE)
    assert res.returncode == 0, res.stderr
    tools = {t["name"]: t for t in json.loads(res.stdout)}
    assert {"echo", "add", "fail", "ping"} <= set(tools)
    assert tools["add"]["description"] == "Returns a + b"
    assert tools["add"]["parameters"] == [{"name": "a", "required": True},
                                          {"name": "b", "required": True}]
    assert tools["stream_progress"]["supports_streaming"] is True
    assert tools["fail"]["parameters"] == [{"name": "message", "required": False}]


def test_list_tools_with_an_unimportable_adapter_fails_with_exit_3():
    res = run_list("no_such_module.Adapter")
    assert res.returncode == 3
    assert res.stdout == b""
    assert b"no_such_module" in res.stderr
