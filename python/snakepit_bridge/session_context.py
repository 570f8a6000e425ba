"""Per-request context handed to adapters (``set_session_context`` / ``context=``).

The worker is computation only: session state lives in the host. A tool reads and
updates it through this object, which calls the host's bridge server (the worker's
``--elixir-address``): ``get``/``set``/``delete``/``keys``, ``increment`` and
``compare_and_set`` (atomic in the host), and host tools (``host_tools``,
``call_host_tool``; upstream's ``elixir_tools``/``call_elixir_tool`` are aliases).

All calls block: use them from sync tools (which run in worker threads), not from
``async`` tools on the event loop.

Worker kinds: only the gRPC worker has a way back to the host. Under the stdio bridge
(``transport="stdio"``) the request's identity (session id, correlation id, metadata,
``timeout_ms``) is here as on gRPC, but state and host-tool calls raise
``WorkerKindError`` saying they need the gRPC worker kind (kind = "grpc").

grpc is imported only when a host call is made, so the stdio bridge never loads it.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Mapping, Optional

from .errors import WorkerKindError

_MISSING = object()


def _rpc_error() -> type:
    import grpc

    return grpc.RpcError


class HostToolError(RuntimeError):
    """A host tool failed (it raised in the host, or the host refused the call)."""

    def __init__(self, tool_name: str, error_type: str, message: str):
        super().__init__(f"host tool {tool_name!r} failed: {error_type}: {message}")
        self.tool_name = tool_name
        self.error_type = error_type
        self.host_message = message


class SessionError(RuntimeError):
    """A session-state call failed in the host (bad id, quota, host stopping)."""

    def __init__(self, operation: str, code: Any, details: str):
        super().__init__(f"session {operation} failed: {details}")
        self.code = code
        self.details = details


class SessionContext:
    """Identity of the current request plus the session's state and host tools."""

    def __init__(self, session_id: str, metadata: Optional[Mapping[str, str]] = None,
                 correlation_id: str = "", worker_id: str = "",
                 host_stub_factory: Optional[Callable[[], Any]] = None,
                 timeout: float = 10.0,
                 time_remaining: Optional[Callable[[], Optional[float]]] = None,
                 transport: str = "grpc"):
        self.session_id = session_id
        #: "grpc" or "stdio": which worker kind carried the request.
        self.transport = transport
        # Copied on first use: most tools never look at the request metadata, and a
        # protobuf map copy costs microseconds on every call.
        self._raw_metadata = metadata
        self._metadata: Optional[Dict[str, str]] = None
        self._time_remaining = time_remaining
        self.correlation_id = correlation_id
        self.worker_id = worker_id
        self.timeout = timeout
        self._host_stub_factory = host_stub_factory
        self._host_tools: Optional[Dict[str, Dict[str, Any]]] = None

    @property
    def request_metadata(self) -> Dict[str, str]:
        """The request's metadata (correlation id, ``timeout_ms``, …) as a dict."""
        if self._metadata is None:
            md = dict(self._raw_metadata or {})
            self._raw_metadata = None
            if "correlation_id" not in md and self.correlation_id:
                md["correlation_id"] = self.correlation_id
            if "timeout_ms" not in md and self._time_remaining is not None:
                # The host sends its budget as the gRPC deadline only; upstream's key
                # is filled in from it (what is left of the budget when first read).
                try:
                    left = self._time_remaining()
                except Exception:  # noqa: BLE001 - a context without a deadline
                    left = None
                if left is not None:
                    md["timeout_ms"] = str(max(0, int(left * 1000)))
            self._metadata = md
        return self._metadata

    # Upstream name for the same thing.
    @property
    def metadata(self) -> Dict[str, str]:
        return self.request_metadata

    @property
    def has_host(self) -> bool:
        return self._host_stub_factory is not None

    def _require_host(self, operation: str) -> None:
        if self.transport != "grpc":
            raise WorkerKindError(
                f"SessionContext.{operation} needs the gRPC worker kind (kind = \"grpc\"): "
                f"host-owned session state and host tools are not available to a "
                f"{self.transport} worker")

    def _stub(self, operation: str = "call") -> Any:
        self._require_host(operation)
        if self._host_stub_factory is None:
            raise RuntimeError("no host callbacks: the worker was started without "
                               "--elixir-address")
        return self._host_stub_factory()

    @staticmethod
    def _pb2() -> Any:
        from .protocol import load

        return load()[0]

    # ------------------------------------------------------------------ state
    def _session(self, operation: str) -> str:
        if not self.session_id:
            raise RuntimeError(f"session {operation}: this request has no session "
                               "(call the tool with a session id)")
        return self.session_id

    def _state_call(self, operation: str, method: str, request: Any) -> Any:
        stub = self._stub(operation)
        import grpc

        try:
            return getattr(stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise ValueError(f"session {operation}: {details}") from None
            raise SessionError(operation, code, details) from None

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under *key* in the session, or *default*."""
        self._require_host("get")
        from .serialization import decode_any

        pb2 = self._pb2()
        resp = self._state_call("get", "GetSessionState", pb2.GetSessionStateRequest(
            session_id=self._session("get"), key=key))
        if not resp.found:
            return default
        return decode_any(resp.value)

    def set(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable *value* under *key* (last writer wins)."""
        self._require_host("set")
        from .serialization import encode_param

        pb2 = self._pb2()
        self._state_call("set", "SetSessionState", pb2.SetSessionStateRequest(
            session_id=self._session("set"), key=key, value=encode_param(value)))

    def compare_and_set(self, key: str, expected: Any, value: Any) -> bool:
        """Write *value* only if the current value equals *expected* (absent = None)."""
        self._require_host("compare_and_set")
        from .serialization import encode_param

        pb2 = self._pb2()
        resp = self._state_call("compare_and_set", "SetSessionState",
                                pb2.SetSessionStateRequest(
                                    session_id=self._session("compare_and_set"), key=key,
                                    value=encode_param(value), compare=True,
                                    expected=encode_param(expected)))
        return bool(resp.success)

    def delete(self, key: str) -> bool:
        """Remove *key*; True if it existed."""
        self._require_host("delete")
        pb2 = self._pb2()
        resp = self._state_call("delete", "DeleteSessionState",
                                pb2.DeleteSessionStateRequest(
                                    session_id=self._session("delete"), key=key))
        return bool(resp.existed)

    def keys(self) -> List[str]:
        """The session's state keys, sorted."""
        self._require_host("keys")
        pb2 = self._pb2()
        resp = self._state_call("keys", "ListSessionStateKeys",
                                pb2.ListSessionStateKeysRequest(
                                    session_id=self._session("keys")))
        return list(resp.keys)

    def increment(self, key: str, by: Any = 1) -> Any:
        """Add *by* to the number under *key* (absent = 0) atomically in the host and
        return the new value. Unlike ``set(key, get(key) + by)`` from several workers,
        no update is lost."""
        self._require_host("increment")
        from .serialization import decode_any, encode_param

        pb2 = self._pb2()
        resp = self._state_call("increment", "IncrementSessionState",
                                pb2.IncrementSessionStateRequest(
                                    session_id=self._session("increment"), key=key,
                                    by=encode_param(by)))
        return decode_any(resp.value)

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def __contains__(self, key: str) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    # ------------------------------------------------------------------ host tools
    @property
    def host_tools(self) -> Dict[str, Dict[str, Any]]:
        """Tools the host exposes: ``{name: {"description", "parameters", ...}}``
        (loaded once per context)."""
        if self._host_tools is None:
            self._require_host("host_tools")
            pb2 = self._pb2()
            resp = self._stub().GetExposedElixirTools(
                pb2.GetExposedElixirToolsRequest(session_id=self.session_id),
                timeout=self.timeout)
            self._host_tools = {
                t.name: {
                    "name": t.name,
                    "description": t.description,
                    "parameters": [{"name": p.name, "type": p.type,
                                    "description": p.description, "required": p.required}
                                   for p in t.parameters],
                    "metadata": dict(t.metadata),
                    "supports_streaming": t.supports_streaming,
                }
                for t in resp.tools
            }
        return self._host_tools

    # Upstream name.
    @property
    def elixir_tools(self) -> Dict[str, Dict[str, Any]]:
        return self.host_tools

    def call_host_tool(self, tool_name: str, timeout: Optional[float] = None,
                       **kwargs: Any) -> Any:
        """Call a tool the host exposes and return its result (blocking).

        Raises ``ValueError`` when the host exposes no such tool and ``HostToolError``
        when the tool fails in the host."""
        self._require_host("call_host_tool")
        from .serialization import decode_any, encode_param

        pb2 = self._pb2()
        req = pb2.ExecuteElixirToolRequest(
            session_id=self.session_id, tool_name=tool_name,
            parameters={k: encode_param(v) for k, v in kwargs.items()},
            metadata={"correlation_id": self.correlation_id} if self.correlation_id else {})
        resp = self._stub().ExecuteElixirTool(
            req, timeout=timeout if timeout is not None else max(self.timeout, 30.0))
        if not resp.success:
            try:
                payload = json.loads(resp.error_message)
                error_type = str(payload.get("type", "Error"))
                message = str(payload.get("message", resp.error_message))
            except (ValueError, AttributeError):
                error_type, message = "Error", resp.error_message
            if error_type == "UnknownToolError":
                raise ValueError(f"host tool {tool_name!r} not found: {message}")
            raise HostToolError(tool_name, error_type, message)
        if resp.binary_result:
            return bytes(resp.binary_result)
        return decode_any(resp.result) if resp.HasField("result") else None

    def call_elixir_tool(self, tool_name: str, timeout: Optional[float] = None,
                         **kwargs: Any) -> Any:
        """Upstream name of ``call_host_tool``."""
        return self.call_host_tool(tool_name, timeout=timeout, **kwargs)

    # ------------------------------------------------------------------ lifetime
    def cleanup(self) -> int:
        """Ask the host to drop the session (state and tools); best effort. Returns
        the number of entries the host removed (0 when unreachable)."""
        if self._host_stub_factory is None or not self.session_id \
                or self.transport != "grpc":
            return 0
        pb2 = self._pb2()
        try:
            resp = self._stub().CleanupSession(
                pb2.CleanupSessionRequest(session_id=self.session_id),
                timeout=self.timeout)
            return int(resp.resources_cleaned)
        except _rpc_error():
            return 0

    def __enter__(self) -> "SessionContext":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return (f"SessionContext(session_id={self.session_id!r}, "
                f"correlation_id={self.correlation_id!r})")

    def to_json(self) -> str:
        return json.dumps({"session_id": self.session_id,
                           "correlation_id": self.correlation_id,
                           "worker_id": self.worker_id})
