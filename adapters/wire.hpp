// Conversion between the BridgeService protobuf messages and JSON values / our errors,
// following upstream Snakepit's JSON-in-Any convention and in-band tool errors
// (`client_impl.ex infer_and_encode_any`, `serialization.py`, `python_translation.ex`).
// Pulls in protobuf and gRPC headers: include it from .cpp files and tests only.
#pragma once

#include <string>

#include <google/protobuf/any.pb.h>
#include <google/protobuf/map.h>
#include <grpcpp/support/status.h>
#include <nlohmann/json.hpp>

#include "adapters/base64.hpp"
#include "adapters/bridge_client.hpp"
#include "adapters/errors.hpp"
#include "snakepit_bridge.pb.h"
#include <caf/error.hpp>
#include <caf/expected.hpp>

namespace snakepit::adapters {

/// type_url used for every parameter we send (the value is raw JSON, not a packed
/// message).
inline constexpr const char* json_type_url =
  "type.googleapis.com/google.protobuf.StringValue";

/// Encodes each member of the JSON object `args` as one Any (JSON text in `value`).
/// A non-object `args` (other than null) is sent as the single parameter "value".
void encode_params(const nlohmann::json& args,
                   google::protobuf::Map<std::string, google::protobuf::Any>* out);

/// Fills an ExecuteToolRequest from a tool_call (parameters, binary parameters,
/// metadata including "correlation_id", `stream` flag).
void encode_request(const tool_call& call, bool stream, bridge::ExecuteToolRequest* out);

/// JSON-decodes `any.value`; empty value -> null; non-JSON UTF-8 text -> JSON string;
/// non-JSON bytes -> {"raw_data_base64": ...}.
nlohmann::json decode_any(const google::protobuf::Any& any);

/// Last dotted segment of a type_url: ".../snakepit.map" -> "map",
/// ".../snakepit.tensor.binary" -> "binary".
std::string any_type(const std::string& type_url);

/// Parses an in-band error_message: JSON {type, message, traceback, stacktrace, context};
/// non-JSON (or JSON without a type/message) becomes type "Error" with the text as
/// message.
python_error parse_error_payload(const std::string& error_message);

/// Maps an in-band failure to our error: UnknownToolError -> unknown_tool,
/// InvalidArgumentError -> invalid_argument, anything else -> tool_error.
caf::error error_from_payload(const std::string& error_message);

/// Decodes an ExecuteToolResponse into a reply or an error.
caf::expected<tool_reply> decode_response(const bridge::ExecuteToolResponse& response);

/// Decodes ToolChunk.data: JSON object as-is; other JSON value -> {"data": v};
/// undecodable -> {"raw_data_base64": b64}; empty -> {}.
nlohmann::json decode_chunk(const std::string& data);

/// The ONE place that turns a grpc::Status into our error (OK -> none):
/// DEADLINE_EXCEEDED -> timeout, UNAVAILABLE -> unavailable, CANCELLED -> cancelled,
/// INVALID_ARGUMENT -> invalid_argument, NOT_FOUND / UNIMPLEMENTED -> unknown_tool,
/// others -> internal, except INTERNAL / UNKNOWN whose message is an error payload
/// (Python's streaming `context.abort(INTERNAL, json)`) -> as error_from_payload.
caf::error error_from_status(const grpc::Status& status);

} // namespace snakepit::adapters
