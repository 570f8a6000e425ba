"""JSON values, binary parameters and error descriptions, shared by both transports.

Nothing here imports protobuf or grpc: the stdio bridge uses this module directly and
``serialization`` (the gRPC wire conventions) builds on it, so a tool's result and a
tool's failure look the same whichever transport carried the call.
"""

from __future__ import annotations

import dataclasses
import json
import traceback
from typing import Any, Dict, List, Mapping

from .errors import InvalidArgumentError, error_type_name

BINARY_FORMAT_PREFIX = "binary_format:"


def json_default(obj: Any) -> Any:
    """Values JSON has no type for: sets as lists, bytes as (lossy) UTF-8 text,
    dataclasses as objects, numpy values through ``tolist``, anything else as ``str``."""
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


# One encoder for the process: json.dumps with options builds a new one per call.
# allow_nan=False because the host's parser rejects NaN/Infinity.
_ENCODER = json.JSONEncoder(default=json_default, allow_nan=False, separators=(",", ":"),
                            ensure_ascii=False)
_ASCII_ENCODER = json.JSONEncoder(default=json_default, allow_nan=False,
                                  separators=(",", ":"), ensure_ascii=True)

#: ``value -> str``: compact, strict JSON (``ValueError`` on NaN/Infinity).
to_json_text = _ENCODER.encode


def to_json_bytes(value: Any) -> bytes:
    """Compact, strict UTF-8 JSON. Strings holding lone surrogates (possible after
    decoding ``"\\ud800"``) cannot be UTF-8: those are sent as ``\\u`` escapes."""
    try:
        return _ENCODER.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        return _ASCII_ENCODER.encode(value).encode("ascii")


def is_binary(value: Any) -> bool:
    return isinstance(value, (bytes, bytearray, memoryview))


def decode_binary(name: str, data: bytes, metadata: Mapping[str, str]) -> Any:
    """Raw bytes, or the unpickled object when ``binary_format:<name>`` is ``pickle``."""
    if metadata and str(metadata.get(BINARY_FORMAT_PREFIX + name, "")).lower() == "pickle":
        import pickle

        try:
            return pickle.loads(data)
        except Exception as exc:  # noqa: BLE001
            raise InvalidArgumentError(
                f"binary parameter {name!r} is flagged pickle but does not unpickle: {exc}"
            ) from None
    return bytes(data)


def stacktrace(exc: BaseException) -> List[str]:
    """``File "x", line n, in f`` per frame of *exc*'s traceback, innermost last."""
    return [f'File "{f.filename}", line {f.lineno}, in {f.name}'
            for f in traceback.extract_tb(exc.__traceback__)]


def describe_error(exc: BaseException) -> Dict[str, Any]:
    """``{type, message, traceback, stacktrace}`` of a failed call. ``type`` is our
    fixed name for the worker's own errors (``UnknownToolError``,
    ``InvalidArgumentError``, ...) and the exception's class name otherwise."""
    return {
        "type": error_type_name(exc),
        "message": str(exc),
        "stacktrace": stacktrace(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of *exc* (or of its cause), for one-line
    startup messages; empty when there is no traceback."""
    seen = exc.__cause__ or exc.__context__ or exc
    tb = seen.__traceback__ or exc.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
