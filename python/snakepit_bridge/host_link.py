"""Channels to the host's bridge server that carry this worker's token.

The host admits a call only with a live token in the metadata ``x-snakepit-token``
(docs/security.md). Each worker gets its own token in ``SNAKEPIT_BRIDGE_TOKEN`` at
launch; ``server.run`` removes it from ``os.environ`` so processes a tool starts do not
inherit it. Every call to the host is unary, so only unary calls are intercepted.
"""

from __future__ import annotations

import collections
from typing import Any, List, Optional, Tuple

import grpc
import grpc.aio

#: The metadata key of the token (the host's ``bridge_token_header``).
TOKEN_HEADER = "x-snakepit-token"

#: The environment variable the host puts the token in.
TOKEN_ENV = "SNAKEPIT_BRIDGE_TOKEN"


def _with_token(metadata: Any, token: str) -> List[Tuple[str, Any]]:
    pairs = [(k, v) for k, v in (metadata or ()) if k != TOKEN_HEADER]
    pairs.append((TOKEN_HEADER, token))
    return pairs


class _CallDetails(collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
        grpc.ClientCallDetails):
    pass


class _SyncToken(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_CallDetails(
            details.method, details.timeout, _with_token(details.metadata, self._token),
            details.credentials, getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None)), request)


class _AioToken(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, details: Any,
                                    request: Any) -> Any:
        metadata = grpc.aio.Metadata(*_with_token(details.metadata, self._token))
        return await continuation(grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials,
            details.wait_for_ready), request)


def sync_channel(address: str, token: Optional[str]) -> grpc.Channel:
    """A blocking channel to the host; every call carries *token* (if any)."""
    channel = grpc.insecure_channel(address)
    return grpc.intercept_channel(channel, _SyncToken(token)) if token else channel


def aio_channel(address: str, token: Optional[str]) -> grpc.aio.Channel:
    """An asyncio channel to the host; every call carries *token* (if any)."""
    interceptors = [_AioToken(token)] if token else None
    return grpc.aio.insecure_channel(address, interceptors=interceptors)
