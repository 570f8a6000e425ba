"""``@tool`` discovery, ToolRegistration, dispatch through ``call_tool``."""

from __future__ import annotations

import json

import pytest

from snakepit_bridge import BaseAdapter, ToolMetadata, UnknownToolError, tool
from snakepit_bridge.adapters.showcase import ShowcaseAdapter


class Sample(BaseAdapter):
    @tool
    def bare(self, x: int, y: str = "d") -> str:
        return f"{x}{y}"

    @tool("positional description")
    def described(self) -> None:
        return None

    @tool(description="streams", supports_streaming=True, required_variables=["v"])
    def gen(self, n: int = 2):
        yield from range(n)

    @tool(name="renamed")
    async def some_method(self, **kwargs):
        return kwargs

    def not_a_tool(self):
        return "hidden"


def test_decorator_forms_record_metadata():
    meta = Sample.tool_metadata()
    assert set(meta) == {"bare", "described", "gen", "renamed"}
    assert isinstance(meta["bare"], ToolMetadata)
    assert meta["described"].description == "positional description"
    assert meta["gen"].supports_streaming and meta["gen"].is_generator
    assert meta["gen"].required_variables == ("v",)
    assert meta["renamed"].is_async and not meta["bare"].is_async


def test_generators_are_streaming_even_without_the_flag():
    class A(BaseAdapter):
        @tool
        def g(self):
            yield 1
    assert A.tool_metadata()["g"].supports_streaming


def test_list_tools_and_call_tool():
    a = Sample()
    assert a.list_tools() == ["bare", "described", "gen", "renamed"]
    assert a.call_tool("bare", x=1) == "1d"
    with pytest.raises(UnknownToolError):
        a.call_tool("not_a_tool")
    with pytest.raises(UnknownToolError):
        a.call_tool("initialize")


def test_call_tool_passes_a_parameter_called_name_to_the_tool():
    class Named(BaseAdapter):
        @tool
        def greet(self, name: str) -> str:
            return f"hello {name}"

    assert Named().call_tool("greet", name="ada") == "hello ada"


def test_get_tools_builds_registrations_from_signatures():
    regs = {r.name: r for r in Sample().get_tools()}
    bare = regs["bare"]
    params = {p.name: p for p in bare.parameters}
    assert params["x"].type == "int" and params["x"].required
    assert params["y"].type == "str" and not params["y"].required
    assert json.loads(params["y"].validation_json) == {"default": "d"}
    assert json.loads(params["y"].default_value.value) == "d"
    assert bare.metadata["adapter_class"] == "Sample"
    assert bare.metadata["module"] == __name__
    assert regs["gen"].supports_streaming
    assert regs["gen"].metadata["required_variables"] == "v"
    assert [p.name for p in regs["renamed"].parameters] == []  # **kwargs is not listed


def test_legacy_execute_tool_adapters_get_a_registration():
    class Legacy(BaseAdapter):
        def execute_tool(self, tool_name, arguments, context):
            return tool_name
    names = [r.name for r in Legacy().get_tools()]
    assert names == ["execute_tool"]


def test_session_context_and_id():
    class Ctx:
        session_id = "s-1"
    a = Sample()
    assert a.session_id is None
    a.set_session_context(Ctx())
    assert a.session_id == "s-1"


def test_showcase_exposes_the_contract_tools():
    expected = {"ping", "echo", "add", "sleep", "async_sleep", "fail", "crash", "info", "env",
                "stream_progress", "record", "bytes_echo"}
    assert expected <= set(ShowcaseAdapter().list_tools())
    assert ShowcaseAdapter.tool_metadata()["stream_progress"].supports_streaming


def test_package_exports():
    import snakepit_bridge
    assert snakepit_bridge.BaseAdapter is BaseAdapter
    assert snakepit_bridge.tool is tool
