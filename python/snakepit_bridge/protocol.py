"""Access to the generated gRPC modules (``snakepit_bridge_pb2`` / ``_pb2_grpc``).

The build generates them as top-level modules into ``<build>/python``; the host puts
that directory on ``PYTHONPATH``. They are never committed.
"""

from __future__ import annotations

from types import ModuleType
from typing import Tuple

from .errors import ProtocolModulesMissing

_HINT = ("the generated modules snakepit_bridge_pb2 / snakepit_bridge_pb2_grpc are not "
         "importable; build the project (they land in <build>/python) and put that "
         "directory on PYTHONPATH, or generate them with: protoc --proto_path=proto "
         "--python_out=OUT --grpc_out=OUT --plugin=protoc-gen-grpc=$(which "
         "grpc_python_plugin) proto/snakepit_bridge.proto")


def load() -> Tuple[ModuleType, ModuleType]:
    """Return ``(pb2, pb2_grpc)`` or raise ``ProtocolModulesMissing`` with a hint."""
    try:
        import snakepit_bridge_pb2 as pb2  # noqa: WPS433 (generated, top level)
        import snakepit_bridge_pb2_grpc as pb2_grpc
    except ImportError as exc:
        raise ProtocolModulesMissing(f"{_HINT} ({exc})") from exc
    return pb2, pb2_grpc
