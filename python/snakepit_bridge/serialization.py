"""Wire conventions shared with upstream Snakepit (docs/python.md, "Wire conventions").

* ``google.protobuf.Any`` is a JSON carrier, not a packed message: ``value`` holds raw
  UTF-8 JSON. Only the last dotted segment of ``type_url`` is looked at.
* Results use ``type.googleapis.com/snakepit.<type>`` with the type inferred from the
  Python value; ``bytes`` results go to ``binary_result`` (type ``snakepit.binary``).
* ``binary_parameters`` are raw bytes, unpickled only when the request metadata says
  ``binary_format:<name> = pickle``.
* Tool errors are in-band: ``error_message`` is a JSON object (see ``error_payload``).

The protobuf-free parts (JSON encoding, binary parameters, error descriptions) live in
``codec`` and are shared with the stdio bridge.
"""

from __future__ import annotations

import json
from typing import Any as PyAny, Dict, Iterable, Mapping, Optional, Tuple

from google.protobuf import any_pb2, wrappers_pb2

from .codec import (BINARY_FORMAT_PREFIX, decode_binary, describe_error, is_binary,
                    to_json_bytes)
from .errors import InvalidArgumentError

__all__ = ["BINARY_FORMAT_PREFIX", "decode_any", "decode_binary", "decode_parameters",
           "encode_any", "encode_chunk_data", "encode_param", "encode_result",
           "error_payload", "infer_type", "is_binary", "parse_error_payload",
           "stringify_metadata", "to_json_bytes", "type_name"]

RESULT_TYPE_PREFIX = "type.googleapis.com/snakepit."
PARAM_TYPE_URL = "type.googleapis.com/google.protobuf.StringValue"

# Real wrapper messages some upstream clients pack instead of JSON (docs/python.md).
_WRAPPERS = {
    "StringValue": wrappers_pb2.StringValue,
    "BoolValue": wrappers_pb2.BoolValue,
    "Int64Value": wrappers_pb2.Int64Value,
    "Int32Value": wrappers_pb2.Int32Value,
    "UInt64Value": wrappers_pb2.UInt64Value,
    "UInt32Value": wrappers_pb2.UInt32Value,
    "DoubleValue": wrappers_pb2.DoubleValue,
    "FloatValue": wrappers_pb2.FloatValue,
    "BytesValue": wrappers_pb2.BytesValue,
}


def type_name(type_url: str) -> str:
    """The last dotted segment of a type_url (``.../snakepit.float`` → ``float``)."""
    return type_url.rsplit("/", 1)[-1].rsplit(".", 1)[-1]


# --------------------------------------------------------------------------- decoding

def decode_any(value: any_pb2.Any, name: str = "") -> PyAny:
    """Decode a JSON-carrying ``Any``. Raises ``InvalidArgumentError`` when undecodable."""
    raw = value.value
    if not raw:
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        wrapper = _WRAPPERS.get(type_name(value.type_url))
        if wrapper is not None:
            msg = wrapper()
            try:
                msg.ParseFromString(raw)
                return msg.value
            except Exception:  # noqa: BLE001 - fall through to the JSON error
                pass
        label = f"parameter {name!r}" if name else "Any value"
        raise InvalidArgumentError(f"{label} is not valid UTF-8 JSON: {exc}") from None


def decode_parameters(parameters: Mapping[str, any_pb2.Any],
                      binary_parameters: Mapping[str, bytes],
                      metadata: Mapping[str, str]) -> Dict[str, PyAny]:
    """All arguments of a request as one dict; binary parameters win on a name clash."""
    args = {name: decode_any(v, name) for name, v in parameters.items()}
    for name, data in binary_parameters.items():
        args[name] = decode_binary(name, data, metadata)
    return args


def encode_param(value: PyAny) -> any_pb2.Any:
    """Encode a parameter like the host does (JSON in a StringValue-typed ``Any``)."""
    return any_pb2.Any(type_url=PARAM_TYPE_URL, value=to_json_bytes(value))


# --------------------------------------------------------------------------- encoding

def infer_type(value: PyAny) -> str:
    """Result type label, in upstream's order: bool, dict, str, number, list, null."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "float"
    if isinstance(value, (list, tuple)):
        return "list"
    if value is None:
        return "null"
    return "string"


def encode_any(value: PyAny) -> any_pb2.Any:
    """Encode a tool result as ``Any(type_url=.../snakepit.<type>, value=<json>)``."""
    return any_pb2.Any(type_url=RESULT_TYPE_PREFIX + infer_type(value),
                       value=to_json_bytes(value))


def encode_result(value: PyAny) -> Tuple[any_pb2.Any, bytes]:
    """``(result Any, binary_result)`` for a tool's return value.

    ``bytes`` go to ``binary_result`` unchanged; the ``Any`` then has type
    ``snakepit.binary`` and JSON ``{"size": n}`` as value.
    """
    if is_binary(value):
        data = bytes(value)
        return (any_pb2.Any(type_url=RESULT_TYPE_PREFIX + "binary",
                            value=to_json_bytes({"size": len(data)})), data)
    return encode_any(value), b""


def encode_chunk_data(payload: PyAny) -> bytes:
    """Stream chunk bytes: bytes as is, str as UTF-8, anything else as JSON."""
    if is_binary(payload):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return to_json_bytes(payload)


# --------------------------------------------------------------------------- errors

def error_payload(exc: BaseException, context: Optional[Mapping[str, PyAny]] = None) -> str:
    """The in-band error JSON: ``{type, message, stacktrace, traceback, context}``."""
    payload = describe_error(exc)
    payload["context"] = dict(context or {})
    return json.dumps(payload, default=str)


def parse_error_payload(text: str) -> Dict[str, PyAny]:
    """Inverse of ``error_payload`` (for tests and Python clients)."""
    return json.loads(text)


def stringify_metadata(meta: Optional[Mapping[PyAny, PyAny]]) -> Iterable[Tuple[str, str]]:
    """Chunk/response metadata values are strings on the wire (``str(v)``, like upstream)."""
    for k, v in (meta or {}).items():
        yield str(k), str(v)
