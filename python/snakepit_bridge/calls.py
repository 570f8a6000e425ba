"""Finding and calling an adapter's tools: the part both transports share.

The gRPC servicer (``servicer.py``) and the stdio bridge (``stdio.py``) differ in how
requests arrive and on which thread code runs; what a call *means* is decided here,
once, for both:

* ``import_adapter``: ``pkg.module.Class`` to a class, or ``AdapterImportError``.
* ``AdapterRuntime``: the adapter class one worker process serves — its tools and
  their kinds (sync, async, generator, async generator), the per-process instance and
  its hooks, the instance each request works on.
* ``invoke``: calls a tool; arguments that do not fit its signature become
  ``InvalidArgumentError`` (the tool never ran), an unknown name ``UnknownToolError``.
* ``adapter_config``: the pool's adapter config from ``SNAKEPIT_ADAPTER_CONFIG``.

Instances and hooks. An adapter that defines ``on_worker_start(config)`` or
``on_worker_stop()`` is constructed once per process (the *process instance*);
``on_worker_start`` runs on it before the worker reports ready, ``on_worker_stop`` on a
graceful stop. Each request then works on a shallow copy of the process instance, so
what ``__init__`` or ``on_worker_start`` put on ``self`` (a model, a connection pool) is
shared by every call, while attributes a call assigns (its session context included)
stay its own. Adapters without those hooks keep upstream's behaviour: a new instance
(``__init__``) per request. ``initialize()`` / ``cleanup()`` run around every call in
both cases.
"""

from __future__ import annotations

import copy
import importlib
import json
import types
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .adapter import BaseAdapter, _tool_table, code_flags
from .errors import AdapterImportError, InvalidArgumentError, StartupError, UnknownToolError

#: Tool kinds: where a transport runs the call and how it reads the result.
SYNC = "sync"  # plain function: a worker thread
ASYNC = "async"  # coroutine function: an event loop
GEN = "gen"  # generator function: a stream, pulled in a worker thread
AGEN = "agen"  # async generator function: a stream, pulled on an event loop

ADAPTER_CONFIG_ENV = "SNAKEPIT_ADAPTER_CONFIG"


# ----------------------------------------------------------------------------- import

def import_adapter(path: str) -> type:
    """Import ``pkg.module.Class``; any failure becomes ``AdapterImportError``."""
    module_name, _, class_name = path.rpartition(".")
    if not module_name:
        raise AdapterImportError(f"--adapter must be pkg.module.ClassName, got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:  # noqa: BLE001 - SystemExit in a module counts too
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise AdapterImportError(
            f"cannot import adapter module {module_name!r}: {type(exc).__name__}: {exc}",
            exc) from exc
    try:
        cls = getattr(module, class_name)
    except AttributeError as exc:
        raise AdapterImportError(
            f"module {module_name!r} has no adapter class {class_name!r}", exc) from exc
    if not isinstance(cls, type):
        raise AdapterImportError(f"{path!r} is not a class")
    return cls


def adapter_config(env: Mapping[str, str]) -> Dict[str, Any]:
    """The JSON object in ``SNAKEPIT_ADAPTER_CONFIG`` (``{}`` when unset or empty);
    ``StartupError`` when it is not a JSON object."""
    raw = (env.get(ADAPTER_CONFIG_ENV) or "").strip()
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise StartupError(f"{ADAPTER_CONFIG_ENV} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise StartupError(f"{ADAPTER_CONFIG_ENV} must be a JSON object, "
                           f"got {type(doc).__name__}")
    return doc


# ----------------------------------------------------------------------------- calling

def function_kind(fn: Any) -> str:
    """SYNC, ASYNC, GEN or AGEN for a function or method (from its code flags, as
    inspect.is*function, without importing inspect)."""
    flags = code_flags(fn)
    if flags & 0x200:  # CO_ASYNC_GENERATOR
        return AGEN
    if flags & 0x20:  # CO_GENERATOR
        return GEN
    if flags & 0x80:  # CO_COROUTINE
        return ASYNC
    return SYNC


# Signature cache for argument validation: {function: inspect.Signature or None}.
_SIGNATURES: Dict[Any, Any] = {}


def check_arguments(fn: Any, arguments: Mapping[str, Any]) -> None:
    """Raise ``InvalidArgumentError`` when *arguments* do not fit *fn*'s signature.

    Tools are always looked up as bound methods, so the cached signature (keyed by the
    underlying function) never includes ``self``.
    """
    import inspect  # only when arguments did not fit: not on the hot path

    key = getattr(fn, "__func__", fn)
    if key not in _SIGNATURES:
        try:
            _SIGNATURES[key] = inspect.signature(fn)
        except (TypeError, ValueError):
            _SIGNATURES[key] = None
    sig = _SIGNATURES[key]
    if sig is None:
        return
    try:
        sig.bind(**arguments)
    except TypeError as exc:
        raise InvalidArgumentError(f"{getattr(fn, '__name__', 'tool')}: {exc}") from None


def invoke(fn: Any, kwargs: Mapping[str, Any]) -> Any:
    """``fn(**kwargs)`` (a coroutine or generator for async and streaming tools).

    Arguments are not checked up front (binding a signature costs more than many
    tools): a ``TypeError`` raised by the call itself, before the tool's frame existed,
    is checked against the signature and reported as ``InvalidArgumentError``; one
    raised inside the tool stays the tool's own error.
    """
    try:
        return fn(**kwargs)
    except TypeError as exc:
        tb = exc.__traceback__
        if tb is not None and tb.tb_next is None:
            check_arguments(fn, kwargs)
        raise


def is_stream(value: Any) -> bool:
    """Generators and iterators (sync or async) are streams; lists and dicts are not."""
    return (isinstance(value, (types.GeneratorType, types.AsyncGeneratorType))
            or hasattr(value, "__anext__")
            or (hasattr(value, "__next__") and not isinstance(value, (str, bytes))))


def is_awaitable(value: Any) -> bool:
    """``inspect.isawaitable``: coroutines, generator-based coroutines and objects
    with ``__await__``."""
    return (isinstance(value, types.CoroutineType)
            or (isinstance(value, types.GeneratorType)
                and bool(value.gi_code.co_flags & 0x100))  # CO_ITERABLE_COROUTINE
            or hasattr(type(value), "__await__"))


def close_stream(value: Any) -> None:
    """Close a sync generator a caller no longer reads (runs its ``finally``)."""
    close = getattr(value, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001
            pass


def overrides(cls: type, name: str) -> bool:
    """Whether *cls* has its own *name* (not BaseAdapter's no-op)."""
    impl = getattr(cls, name, None)
    return callable(impl) and impl is not getattr(BaseAdapter, name, None)


def _fast_clonable(cls: type) -> bool:
    """A shallow copy can be made by copying ``__dict__`` (no slots, no ``__copy__``,
    no custom ``__new__``)."""
    if getattr(cls, "__copy__", None) is not None or cls.__new__ is not object.__new__:
        return False
    return all("__slots__" not in vars(k) for k in cls.__mro__ if k is not object)


# ----------------------------------------------------------------------------- runtime

class AdapterRuntime:
    """The adapter class one worker process serves (see the module docstring)."""

    def __init__(self, adapter_class: type):
        self.adapter_class = adapter_class
        #: Upstream-style adapter: every call goes through ``execute_tool``.
        self.legacy = callable(getattr(adapter_class, "execute_tool", None))
        self.has_worker_hooks = (overrides(adapter_class, "on_worker_start")
                                 or overrides(adapter_class, "on_worker_stop"))
        self.has_initialize = overrides(adapter_class, "initialize")
        self.has_cleanup = overrides(adapter_class, "cleanup")
        #: The process instance (adapters with worker hooks, once started).
        self.instance: Any = None
        self._fast_clone = _fast_clonable(adapter_class)
        self._started = False
        self._stopped = False
        self._tools: Dict[str, Tuple[str, str]] = {}
        for name, (attr, meta) in _tool_table(adapter_class).items():
            kind = (AGEN if meta.is_async_generator else GEN if meta.is_generator
                    else ASYNC if meta.is_async else SYNC)
            self._tools[name] = (attr, kind)
        self._legacy_kind = (function_kind(adapter_class.execute_tool) if self.legacy
                             else SYNC)

    # ------------------------------------------------------------------ hooks
    def start(self, config: Mapping[str, Any]) -> Any:
        """Create the process instance and run ``on_worker_start(config)`` on it.
        Returns the hook's result: a coroutine for an ``async`` hook, which the caller
        runs to completion before reporting ready. Exceptions propagate (the worker
        does not start)."""
        if self._started:
            return None
        self._started = True
        if not self.has_worker_hooks:
            return None
        self.instance = self.adapter_class()
        if overrides(self.adapter_class, "on_worker_start"):
            return self.instance.on_worker_start(dict(config))
        return None

    def stop(self) -> Any:
        """Run ``on_worker_stop()`` once (after a successful ``start``); returns its
        result (a coroutine for an ``async`` hook), else None."""
        if not self._started or self._stopped:
            return None
        self._stopped = True
        if self.instance is not None and overrides(self.adapter_class, "on_worker_stop"):
            return self.instance.on_worker_stop()
        return None

    # ------------------------------------------------------------------ instances
    def new_instance(self, context: Any = None) -> Any:
        """The adapter a request works on, with *context* set as its session context."""
        proto = self.instance
        if proto is None:
            adapter = self.adapter_class()
        elif self._fast_clone:
            adapter = object.__new__(self.adapter_class)
            adapter.__dict__.update(proto.__dict__)
        else:
            adapter = copy.copy(proto)
        if context is not None:
            setter = getattr(adapter, "set_session_context", None)
            if setter is not None:
                setter(context)
        return adapter

    # ------------------------------------------------------------------ tools
    def kind_of(self, name: str) -> str:
        """The kind of tool *name* (no instance needed); ``UnknownToolError`` if none."""
        if self.legacy:
            return self._legacy_kind
        entry = self._tools.get(name)
        if entry is None:
            raise self._unknown(name)
        return entry[1]

    def bind(self, adapter: Any, name: str, arguments: Dict[str, Any],
             context: Any = None) -> Tuple[Any, Dict[str, Any], str]:
        """``(function, kwargs, kind)`` for calling tool *name* on *adapter*."""
        if self.legacy:
            return (adapter.execute_tool,
                    {"tool_name": name, "arguments": arguments, "context": context},
                    self._legacy_kind)
        entry = self._tools.get(name)
        if entry is None:
            raise self._unknown(name)
        return getattr(adapter, entry[0]), arguments, entry[1]

    def describe_tools(self) -> Optional[List[Dict[str, Any]]]:
        """``[{name, streaming, description}]`` sorted by name; None for upstream-style
        adapters, whose ``execute_tool`` accepts names nobody can list."""
        if self.legacy:
            return None
        table = _tool_table(self.adapter_class)
        return [{"name": name, "streaming": meta.supports_streaming,
                 "description": meta.description}
                for name, (_attr, meta) in sorted(table.items())]

    def _unknown(self, name: str) -> UnknownToolError:
        return UnknownToolError(
            f"unknown tool {name!r} on {self.adapter_class.__name__}; "
            f"available: {', '.join(sorted(self._tools)) or '(none)'}")
