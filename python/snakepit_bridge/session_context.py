"""Per-request context handed to adapters (``set_session_context`` / ``context=``).

State lives in the host: this object only carries the request's identity and, when
the worker was started with ``--elixir-address``, a way to call tools the host exposes.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Mapping, Optional


class SessionContext:
    """Identity of the current request plus optional callbacks into the host."""

    def __init__(self, session_id: str, metadata: Optional[Mapping[str, str]] = None,
                 correlation_id: str = "", worker_id: str = "",
                 host_stub_factory: Optional[Callable[[], Any]] = None):
        self.session_id = session_id
        self.request_metadata: Dict[str, str] = dict(metadata or {})
        self.correlation_id = correlation_id
        self.worker_id = worker_id
        self._host_stub_factory = host_stub_factory

    # Upstream name for the same thing.
    @property
    def metadata(self) -> Dict[str, str]:
        return self.request_metadata

    @property
    def has_host(self) -> bool:
        return self._host_stub_factory is not None

    def _stub(self) -> Any:
        if self._host_stub_factory is None:
            raise RuntimeError("no host callbacks: the worker was started without "
                               "--elixir-address")
        return self._host_stub_factory()

    def call_elixir_tool(self, tool_name: str, timeout: float = 30.0, **kwargs: Any) -> Any:
        """Call a tool the host exposes (blocking; call it from a sync tool)."""
        from .protocol import load
        from .serialization import decode_any, encode_param

        pb2, _ = load()
        req = pb2.ExecuteElixirToolRequest(
            session_id=self.session_id, tool_name=tool_name,
            parameters={k: encode_param(v) for k, v in kwargs.items()},
            metadata={"correlation_id": self.correlation_id} if self.correlation_id else {})
        resp = self._stub().ExecuteElixirTool(req, timeout=timeout)
        if not resp.success:
            raise RuntimeError(f"host tool {tool_name!r} failed: {resp.error_message}")
        if resp.binary_result:
            return bytes(resp.binary_result)
        return decode_any(resp.result) if resp.HasField("result") else None

    def __repr__(self) -> str:
        return (f"SessionContext(session_id={self.session_id!r}, "
                f"correlation_id={self.correlation_id!r})")

    def to_json(self) -> str:
        return json.dumps({"session_id": self.session_id,
                           "correlation_id": self.correlation_id,
                           "worker_id": self.worker_id})
