"""Adapter base class and the ``@tool`` decorator.

An adapter is a class whose ``@tool`` methods the host can call by name. Tools may be
sync (run in a worker thread), async (awaited on an event loop) or generators
(streamed, sync or async). The same adapter runs under both worker kinds: the gRPC
server (``python3 -m snakepit_bridge``) and the stdio bridge
(``python3 -m snakepit_bridge.stdio``).

Hooks, per process and per request:

* ``on_worker_start(self, config)`` — once per worker process, before the worker
  reports ready (the gRPC ready file, the stdio bridge's first ping answer), with the
  pool's adapter config (``SNAKEPIT_ADAPTER_CONFIG``, ``{}`` when none). Load models and
  open connections here. Raising makes the worker fail to start (the message reaches
  the host's start error). May be ``async``.
* ``on_worker_stop(self)`` — once, on a graceful stop (SIGTERM; for stdio also the host
  closing stdin), after in-flight calls finished or were abandoned. May be ``async``.
* ``initialize(self)`` / ``cleanup(self)`` — around every request (upstream's hooks,
  kept for compatibility). May be ``async``.

Instances: an adapter defining ``on_worker_start`` or ``on_worker_stop`` is constructed
once per process and each request works on a shallow copy of that instance (state set
on ``self`` in ``__init__`` or ``on_worker_start`` is shared by all calls; attributes a
call assigns are its own). Other adapters get a new instance per request, as upstream
(cache expensive state at module or class level). See ``calls.AdapterRuntime``.

Adapters written for upstream Snakepit, which implement
``execute_tool(tool_name, arguments, context)`` themselves, work unchanged.
"""

from __future__ import annotations

import functools
import json
import weakref
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from .errors import UnknownToolError

__all__ = ["BaseAdapter", "StreamChunk", "ToolMetadata", "tool"]

# Plain classes and code-flag checks rather than dataclasses and inspect: both import
# ast, dis and tokenize, a sixth of the stdio bridge's start-up (the gRPC-only
# get_tools imports inspect when called).
_CO_GENERATOR = 0x20
_CO_COROUTINE = 0x80
_CO_ASYNC_GENERATOR = 0x200


def code_flags(fn: Any) -> int:
    """``co_flags`` of a function, method, static/class method or functools.partial
    (0 for anything without Python code)."""
    fn = getattr(fn, "__func__", fn)
    while isinstance(fn, functools.partial):
        fn = getattr(fn.func, "__func__", fn.func)
    code = getattr(fn, "__code__", None)
    return getattr(code, "co_flags", 0)


def _cleandoc(doc: Optional[str]) -> str:
    """``inspect.cleandoc``: first line stripped, common indentation of the rest
    removed, blank lines at both ends dropped."""
    if not doc:
        return ""
    lines = doc.expandtabs().split("\n")
    margin = min((len(ln) - len(ln.lstrip()) for ln in lines[1:] if ln.strip()), default=0)
    lines = [lines[0].lstrip()] + [ln[margin:] for ln in lines[1:]]
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines)


class ToolMetadata:
    """What ``@tool`` records on a method (as ``func._tool_metadata``); immutable."""

    __slots__ = ("name", "description", "supports_streaming", "required_variables",
                 "is_async", "is_generator", "is_async_generator")

    def __init__(self, name: str, description: str = "", supports_streaming: bool = False,
                 required_variables: Tuple[str, ...] = (), is_async: bool = False,
                 is_generator: bool = False, is_async_generator: bool = False):
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "description", description)
        set_(self, "supports_streaming", supports_streaming)
        set_(self, "required_variables", tuple(required_variables))
        set_(self, "is_async", is_async)  # coroutine function
        set_(self, "is_generator", is_generator)  # sync or async generator function
        set_(self, "is_async_generator", is_async_generator)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"ToolMetadata is immutable (cannot set {name!r})")

    def _fields(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, k) for k in self.__slots__)

    def __eq__(self, other: Any) -> bool:
        return type(other) is ToolMetadata and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return "ToolMetadata(" + ", ".join(f"{k}={getattr(self, k)!r}"
                                           for k in self.__slots__) + ")"


class StreamChunk:
    """Optional wrapper a streaming tool may yield to set ``is_final`` or chunk metadata."""

    __slots__ = ("data", "is_final", "metadata")

    def __init__(self, data: Any, is_final: bool = False,
                 metadata: Optional[Dict[str, Any]] = None):
        self.data = data
        self.is_final = is_final
        self.metadata = metadata

    def __eq__(self, other: Any) -> bool:
        return (type(other) is StreamChunk and self.data == other.data
                and self.is_final == other.is_final and self.metadata == other.metadata)

    __hash__ = None  # type: ignore[assignment] - mutable, like the dataclass it was

    def __repr__(self) -> str:
        return (f"StreamChunk(data={self.data!r}, is_final={self.is_final!r}, "
                f"metadata={self.metadata!r})")


def tool(func: Optional[Callable] = None, *, description: str = "",
         supports_streaming: bool = False,
         required_variables: Optional[List[str]] = None,
         name: Optional[str] = None):
    """Mark an adapter method as a tool.

    Usable bare (``@tool``), with arguments (``@tool(description="...")``) or with the
    description as the only positional argument (``@tool("Adds two numbers")``).
    Generator functions are streaming tools whether or not ``supports_streaming`` is set.
    """
    if isinstance(func, str):
        description, func = func, None

    def decorate(f: Callable) -> Callable:
        flags = code_flags(f)
        is_agen = bool(flags & _CO_ASYNC_GENERATOR)
        is_gen = is_agen or bool(flags & _CO_GENERATOR)
        f._tool_metadata = ToolMetadata(  # type: ignore[attr-defined]
            name=name or f.__name__,
            description=description or _cleandoc(getattr(f, "__doc__", None)),
            supports_streaming=bool(supports_streaming or is_gen),
            required_variables=tuple(required_variables or ()),
            is_async=bool(flags & _CO_COROUTINE),
            is_generator=is_gen,
            is_async_generator=is_agen,
        )
        return f

    if func is not None:
        return decorate(func)
    return decorate


# Per-class tool table: {tool name: (attribute name, ToolMetadata)}.
_TOOL_TABLES: "weakref.WeakKeyDictionary[type, Dict[str, Tuple[str, ToolMetadata]]]" = \
    weakref.WeakKeyDictionary()


def _tool_table(cls: type) -> Dict[str, Tuple[str, ToolMetadata]]:
    table = _TOOL_TABLES.get(cls)
    if table is None:
        # Each attribute as the class sees it: its first definition along the MRO
        # (what inspect.getattr_static finds), in dir() order.
        members: Dict[str, Any] = {}
        for klass in cls.__mro__:
            for attr, member in vars(klass).items():
                members.setdefault(attr, member)
        table = {}
        for attr in sorted(members):
            member = members[attr]
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            meta = getattr(member, "_tool_metadata", None)
            if isinstance(meta, ToolMetadata):
                table[meta.name] = (attr, meta)
        _TOOL_TABLES[cls] = table
    return table


def _annotation_name(annotation: Any) -> str:
    import inspect

    if annotation is inspect.Parameter.empty:
        return "any"
    if isinstance(annotation, str):
        return annotation.lower()
    return getattr(annotation, "__name__", str(annotation)).lower()


def _defines_execute_tool(cls: type) -> bool:
    return callable(getattr(cls, "execute_tool", None))


class BaseAdapter:
    """Base class for adapters. Subclasses add ``@tool`` methods.

    Lifecycle per process: ``on_worker_start(config)`` at start, ``on_worker_stop()`` on
    a graceful stop. Lifecycle per request: an instance (see the module docstring),
    ``set_session_context(ctx)``, ``initialize()`` (sync or async), the tool call,
    ``cleanup()`` (sync or async).
    """

    _session_context: Any = None

    # ------------------------------------------------------------------ session
    def set_session_context(self, session_context: Any) -> None:
        self._session_context = session_context

    @property
    def session_context(self) -> Any:
        return self._session_context

    @property
    def session_id(self) -> Optional[str]:
        ctx = self._session_context
        return getattr(ctx, "session_id", None) if ctx is not None else None

    # ------------------------------------------------------------------ lifecycle
    def on_worker_start(self, config: Dict[str, Any]) -> None:
        """Called once per worker process, before it reports ready, with the pool's
        adapter config; override to load models or open connections."""

    def on_worker_stop(self) -> None:
        """Called once when the worker stops gracefully; override to release what
        ``on_worker_start`` acquired."""

    def initialize(self) -> None:
        """Called before each request's tool; override for per-request setup."""

    def cleanup(self) -> None:
        """Called after each request, also when the tool raised."""

    # ------------------------------------------------------------------ tools
    @classmethod
    def tool_metadata(cls) -> Dict[str, ToolMetadata]:
        """``{tool name: ToolMetadata}`` for every ``@tool`` method of the class."""
        return {name: meta for name, (_, meta) in _tool_table(cls).items()}

    def list_tools(self) -> List[str]:
        return sorted(_tool_table(type(self)))

    def get_tool(self, name: str) -> Tuple[Callable, ToolMetadata]:
        """The bound method and metadata of tool *name*; ``UnknownToolError`` if none."""
        entry = _tool_table(type(self)).get(name)
        if entry is None:
            raise UnknownToolError(
                f"unknown tool {name!r} on {type(self).__name__}; "
                f"available: {', '.join(self.list_tools()) or '(none)'}")
        attr, meta = entry
        return getattr(self, attr), meta

    def call_tool(self, name: str, /, **kwargs: Any) -> Any:
        """Call tool *name* directly (a coroutine for async tools). *name* is
        positional-only, so a tool may have a parameter called ``name`` too."""
        fn, _ = self.get_tool(name)
        return fn(**kwargs)

    def get_tools(self) -> list:
        """``ToolRegistration`` messages describing the tools (for ``RegisterTools``)."""
        import inspect

        from .protocol import load
        from .serialization import encode_any

        pb2, _ = load()
        cls = type(self)
        regs = []
        for tool_name, (attr, meta) in sorted(_tool_table(cls).items()):
            fn = getattr(self, attr)
            params = []
            try:
                sig = inspect.signature(fn)
            except (TypeError, ValueError):
                sig = None
            for p in (sig.parameters.values() if sig else ()):
                if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                spec = pb2.ParameterSpec(name=p.name, type=_annotation_name(p.annotation),
                                         required=p.default is inspect.Parameter.empty)
                if p.default is not inspect.Parameter.empty:
                    try:
                        spec.validation_json = json.dumps({"default": p.default})
                        spec.default_value.CopyFrom(encode_any(p.default))
                    except (TypeError, ValueError):
                        spec.validation_json = json.dumps({"default": repr(p.default)})
                params.append(spec)
            regs.append(pb2.ToolRegistration(
                name=tool_name,
                description=meta.description,
                parameters=params,
                metadata={
                    "adapter_class": cls.__name__,
                    "module": cls.__module__,
                    "required_variables": ",".join(meta.required_variables),
                },
                supports_streaming=meta.supports_streaming,
            ))
        if _defines_execute_tool(cls):
            regs.append(pb2.ToolRegistration(
                name="execute_tool",
                description="Legacy dispatcher (execute_tool)",
                metadata={"adapter_class": cls.__name__, "module": cls.__module__,
                          "legacy": "true"},
            ))
        return regs

    def register_with_session(self, session_id: str, stub: Any,
                              worker_id: Optional[str] = None, timeout: float = 5.0) -> Mapping:
        """Register the tools with the host (sync stub). Returns ``{name: tool id}``."""
        from .protocol import load

        pb2, _ = load()
        resp = stub.RegisterTools(
            pb2.RegisterToolsRequest(session_id=session_id, tools=self.get_tools(),
                                     worker_id=worker_id or f"python-{id(self)}"),
            timeout=timeout)
        if not resp.success and "duplicate_tool" not in resp.error_message:
            raise RuntimeError(f"RegisterTools failed: {resp.error_message}")
        return dict(resp.tool_ids)
