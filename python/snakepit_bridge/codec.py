"""JSON values, binary parameters and error descriptions, shared by both transports.

Nothing here imports protobuf or grpc: the stdio bridge uses this module directly and
``serialization`` (the gRPC wire conventions) builds on it, so a tool's result and a
tool's failure look the same whichever transport carried the call.
"""

from __future__ import annotations

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
    if hasattr(type(obj), "__dataclass_fields__"):  # a dataclass instance
        import dataclasses  # loaded already: the class was made by it

        return dataclasses.asdict(obj)
    tolist = getattr(obj, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return tolist()
    return str(obj)


# The C encoder, made once: json.dumps (and JSONEncoder.encode) build a new one per
# call, which costs more than encoding a small result. No circular-reference check (a
# cycle ends in RecursionError, reported like any other encoding failure);
# allow_nan=False because the host's parser rejects NaN/Infinity.
try:
    from _json import (encode_basestring as _c_str, encode_basestring_ascii as _c_ascii,
                       make_encoder as _c_make_encoder)
except ImportError:  # pragma: no cover - interpreters without the C accelerator
    _c_make_encoder = None

if _c_make_encoder is not None:
    _encode = _c_make_encoder(None, json_default, _c_str, None, ":", ",", False, False,
                              False)
    _encode_ascii = _c_make_encoder(None, json_default, _c_ascii, None, ":", ",", False,
                                    False, False)

    def to_json_text(value: Any) -> str:
        """Compact, strict JSON text (``ValueError`` on NaN/Infinity)."""
        return "".join(_encode(value, 0))

    def _to_ascii_json(value: Any) -> str:
        return "".join(_encode_ascii(value, 0))
else:  # pragma: no cover
    to_json_text = json.JSONEncoder(default=json_default, allow_nan=False,
                                    separators=(",", ":"), ensure_ascii=False).encode
    _to_ascii_json = json.JSONEncoder(default=json_default, allow_nan=False,
                                      separators=(",", ":"), ensure_ascii=True).encode


def to_json_bytes(value: Any) -> bytes:
    """Compact, strict UTF-8 JSON. Strings holding lone surrogates (possible after
    decoding ``"\\ud800"``) cannot be UTF-8: those are sent as ``\\u`` escapes."""
    try:
        return to_json_text(value).encode("utf-8")
    except UnicodeEncodeError:
        return _to_ascii_json(value).encode("ascii")


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


def _frames(exc: BaseException) -> List[Any]:
    """``(filename, lineno, name)`` per frame of *exc*'s traceback, innermost last."""
    out = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        out.append((code.co_filename, tb.tb_lineno, code.co_name))
        tb = tb.tb_next
    return out


def stacktrace(exc: BaseException) -> List[str]:
    """``File "x", line n, in f`` per frame of *exc*'s traceback, innermost last."""
    return [f'File "{f}", line {n}, in {name}' for f, n, name in _frames(exc)]


def format_traceback(exc: BaseException) -> str:
    """The text Python prints for an uncaught *exc* — chained causes and contexts
    included — without the ``^^^^`` position markers, whose computation (parsing each
    source line) costs 3.11 several hundred microseconds per failure."""
    import linecache

    parts: List[str] = []
    seen = set()

    def walk(e: BaseException) -> None:
        seen.add(id(e))
        cause, context = e.__cause__, e.__context__
        if cause is not None and id(cause) not in seen:
            walk(cause)
            parts.append("\nThe above exception was the direct cause of the following "
                         "exception:\n\n")
        elif (context is not None and not e.__suppress_context__
              and id(context) not in seen):
            walk(context)
            parts.append("\nDuring handling of the above exception, another exception "
                         "occurred:\n\n")
        frames = _frames(e)
        if frames:
            parts.append("Traceback (most recent call last):\n")
            for filename, lineno, name in frames:
                parts.append(f'  File "{filename}", line {lineno}, in {name}\n')
                line = linecache.getline(filename, lineno).strip()
                if line:
                    parts.append(f"    {line}\n")
        parts.extend(traceback.format_exception_only(type(e), e))

    walk(exc)
    return "".join(parts)


def describe_error(exc: BaseException) -> Dict[str, Any]:
    """``{type, message, traceback, stacktrace}`` of a failed call. ``type`` is our
    fixed name for the worker's own errors (``UnknownToolError``,
    ``InvalidArgumentError``, ...) and the exception's class name otherwise."""
    return {
        "type": error_type_name(exc),
        "message": str(exc),
        "stacktrace": stacktrace(exc),
        "traceback": format_traceback(exc),
    }


def where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of *exc* (or of its cause) that is the
    user's code — not the import machinery, not this package — for one-line startup
    messages; empty when there is none."""
    seen = exc.__cause__ or exc.__context__ or exc
    tb = seen.__traceback__ or exc.__traceback__
    found = ""
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if not (name.startswith("<") or name.startswith(_PACKAGE_DIR)
                or "/importlib/" in name):
            found = f"{name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found


_PACKAGE_DIR = __file__.rsplit("/", 1)[0] + "/"
