"""Wire conventions shared with upstream Snakepit (docs/python.md, "Wire conventions").

* ``google.protobuf.Any`` is a JSON carrier, not a packed message: ``value`` holds raw
  UTF-8 JSON. Only the last dotted segment of ``type_url`` is looked at.
* Results use ``type.googleapis.com/snakepit.<type>`` with the type inferred from the
  Python value; ``bytes`` results go to ``binary_result`` (type ``snakepit.binary``).
* ``binary_parameters`` are raw bytes, unpickled only when the request metadata says
  ``binary_format:<name> = pickle``.
* Tool errors are in-band: ``error_message`` is a JSON object (see ``error_payload``).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import traceback
from typing import Any as PyAny, Dict, Iterable, Mapping, Optional, Tuple

from google.protobuf import any_pb2, wrappers_pb2

from .errors import InvalidArgumentError, error_type_name

RESULT_TYPE_PREFIX = "type.googleapis.com/snakepit."
PARAM_TYPE_URL = "type.googleapis.com/google.protobuf.StringValue"
BINARY_FORMAT_PREFIX = "binary_format:"

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


def decode_binary(name: str, data: bytes, metadata: Mapping[str, str]) -> PyAny:
    """Raw bytes, or the unpickled object when ``binary_format:<name>`` is ``pickle``."""
    if metadata.get(BINARY_FORMAT_PREFIX + name, "").lower() == "pickle":
        try:
            return pickle.loads(data)
        except Exception as exc:  # noqa: BLE001
            raise InvalidArgumentError(
                f"binary parameter {name!r} is flagged pickle but does not unpickle: {exc}"
            ) from None
    return bytes(data)


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


def _json_default(obj: PyAny) -> PyAny:
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("utf-8", errors="replace")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    tolist = getattr(obj, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return tolist()
    return str(obj)


def to_json_bytes(value: PyAny) -> bytes:
    """Strict JSON (NaN/Infinity raise ``ValueError``: the host's parser rejects them)."""
    return json.dumps(value, default=_json_default, allow_nan=False,
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_any(value: PyAny) -> any_pb2.Any:
    """Encode a tool result as ``Any(type_url=.../snakepit.<type>, value=<json>)``."""
    return any_pb2.Any(type_url=RESULT_TYPE_PREFIX + infer_type(value),
                       value=to_json_bytes(value))


def is_binary(value: PyAny) -> bool:
    return isinstance(value, (bytes, bytearray, memoryview))


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

def _stacktrace(exc: BaseException) -> list:
    return [f'File "{f.filename}", line {f.lineno}, in {f.name}'
            for f in traceback.extract_tb(exc.__traceback__)]


def error_payload(exc: BaseException, context: Optional[Mapping[str, PyAny]] = None) -> str:
    """The in-band error JSON: ``{type, message, stacktrace, traceback, context}``."""
    formatted = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    payload = {
        "type": error_type_name(exc),
        "message": str(exc),
        "stacktrace": _stacktrace(exc),
        "traceback": formatted,
        "context": dict(context or {}),
    }
    return json.dumps(payload, default=str)


def parse_error_payload(text: str) -> Dict[str, PyAny]:
    """Inverse of ``error_payload`` (for tests and Python clients)."""
    return json.loads(text)


def stringify_metadata(meta: Optional[Mapping[PyAny, PyAny]]) -> Iterable[Tuple[str, str]]:
    """Chunk/response metadata values are strings on the wire (``str(v)``, like upstream)."""
    for k, v in (meta or {}).items():
        yield str(k), str(v)
