"""JSON-in-Any both ways, type inference, binary parameters, the error payload."""

from __future__ import annotations

import json
import math
import pickle

import pytest
from google.protobuf import any_pb2, wrappers_pb2

from snakepit_bridge import serialization as ser
from snakepit_bridge.errors import InvalidArgumentError, UnknownToolError


@pytest.mark.parametrize("value", [1, 2.5, "héllo", True, None, [1, "a", None],
                                   {"a": {"b": [1, 2]}}, ""])
def test_param_round_trip_through_json_any(value):
    packed = ser.encode_param(value)
    assert packed.type_url == "type.googleapis.com/google.protobuf.StringValue"
    assert json.loads(packed.value.decode("utf-8")) == value
    assert ser.decode_any(packed) == value


def test_decode_ignores_type_url_apart_from_last_segment():
    raw = any_pb2.Any(type_url="type.googleapis.com/snakepit.map", value=b'{"k": 1}')
    assert ser.decode_any(raw) == {"k": 1}
    odd = any_pb2.Any(type_url="whatever/x.y.z", value=b"[1,2]")
    assert ser.decode_any(odd) == [1, 2]
    assert ser.type_name("type.googleapis.com/snakepit.float") == "float"


def test_empty_any_decodes_to_none():
    assert ser.decode_any(any_pb2.Any()) is None


def test_invalid_json_is_invalid_argument():
    bad = any_pb2.Any(type_url="type.googleapis.com/snakepit.map", value=b"{nope")
    with pytest.raises(InvalidArgumentError) as info:
        ser.decode_any(bad, "p")
    assert "'p'" in str(info.value)


def test_really_packed_wrapper_is_accepted():
    packed = any_pb2.Any()
    packed.Pack(wrappers_pb2.StringValue(value="plain text"))
    assert ser.decode_any(packed) == "plain text"


@pytest.mark.parametrize("value,expected", [
    (True, "boolean"), (False, "boolean"), ({"a": 1}, "map"), ("s", "string"),
    (3, "float"), (2.5, "float"), ([1], "list"), ((1, 2), "list"), (None, "null"),
    (object(), "string"),
])
def test_type_inference_matches_upstream(value, expected):
    assert ser.infer_type(value) == expected


def test_result_encoding_uses_snakepit_type_url_and_json():
    result, binary = ser.encode_result({"x": [1, 2.5, "y"]})
    assert result.type_url == "type.googleapis.com/snakepit.map"
    assert json.loads(result.value) == {"x": [1, 2.5, "y"]}
    assert binary == b""
    result, _ = ser.encode_result(7)
    assert result.type_url.endswith("snakepit.float") and result.value == b"7"


def test_bytes_result_goes_to_binary_result():
    result, binary = ser.encode_result(b"\x00\x01\x02")
    assert binary == b"\x00\x01\x02"
    assert result.type_url == "type.googleapis.com/snakepit.binary"
    assert json.loads(result.value) == {"size": 3}


def test_nan_is_rejected_rather_than_sent_as_invalid_json():
    with pytest.raises(ValueError):
        ser.encode_result(math.nan)


def test_unknown_objects_encode_as_strings_and_sets_as_lists():
    class Thing:
        def __str__(self):
            return "thing!"
    result, _ = ser.encode_result(Thing())
    assert result.type_url.endswith("snakepit.string")
    assert json.loads(result.value) == "thing!"
    assert sorted(json.loads(ser.to_json_bytes({1, 2}))) == [1, 2]


def test_binary_parameters_raw_by_default():
    args = ser.decode_parameters({"n": ser.encode_param(1)}, {"blob": b"\x80\x81"}, {})
    assert args == {"n": 1, "blob": b"\x80\x81"}


def test_binary_parameters_unpickled_only_when_flagged():
    data = pickle.dumps({"a": [1, 2]})
    flagged = ser.decode_parameters({}, {"obj": data}, {"binary_format:obj": "pickle"})
    assert flagged["obj"] == {"a": [1, 2]}
    unflagged = ser.decode_parameters({}, {"obj": data}, {"binary_format:other": "pickle"})
    assert unflagged["obj"] == data


def test_bad_pickle_is_invalid_argument():
    with pytest.raises(InvalidArgumentError):
        ser.decode_parameters({}, {"obj": b"not a pickle"}, {"binary_format:obj": "pickle"})


def test_chunk_data_encoding():
    assert ser.encode_chunk_data("text") == b"text"
    assert ser.encode_chunk_data(b"\x00") == b"\x00"
    assert json.loads(ser.encode_chunk_data({"step": 1})) == {"step": 1}


def _raise_value_error():
    raise ValueError("bad value")


def test_error_payload_shape():
    try:
        _raise_value_error()
    except ValueError as exc:
        text = ser.error_payload(exc, {"tool_name": "t", "call_type": "execute_tool"})
    payload = json.loads(text)
    assert set(payload) == {"type", "message", "stacktrace", "traceback", "context"}
    assert payload["type"] == "ValueError"
    assert payload["message"] == "bad value"
    assert any("_raise_value_error" in frame for frame in payload["stacktrace"])
    assert "Traceback" in payload["traceback"] and "bad value" in payload["traceback"]
    assert payload["context"] == {"tool_name": "t", "call_type": "execute_tool"}


def test_error_payload_uses_fixed_names_for_our_validation_errors():
    assert json.loads(ser.error_payload(UnknownToolError("x")))["type"] == "UnknownToolError"
    assert json.loads(ser.error_payload(InvalidArgumentError("x")))["type"] == \
        "InvalidArgumentError"
