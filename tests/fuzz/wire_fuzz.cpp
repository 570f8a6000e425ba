// Fuzz target `wire`: the JSON <-> protobuf conversion of the gRPC kind on any bytes.
// The input is, at once, an ExecuteToolResponse in protobuf encoding, an Any payload
// under each type_url a worker may send, a chunk, an in-band error payload, JSON
// arguments to encode and binary parameters. Besides not crashing, it checks the
// round trips the bridge relies on: arguments encoded as parameters decode to the
// same JSON, binary parameters and base64 come back byte for byte.
#include <array>
#include <string>

#include <google/protobuf/wrappers.pb.h>

#include "adapters/base64.hpp"
#include "adapters/wire.hpp"
#include "tests/fuzz/fuzz_target.hpp"

namespace {

namespace sa = snakepit::adapters;
using nlohmann::json;
using snakepit::fuzz::require;

void response(const std::string& bytes) {
  snakepit::bridge::ExecuteToolResponse resp;
  if (!resp.ParseFromString(bytes))
    return;
  auto reply = sa::decode_response(resp);
  require(reply || !resp.success(), "a successful response decodes to a reply");
  if (reply)
    require(reply->binary_result == resp.binary_result(), "binary_result kept as is");
}

void any_payloads(const std::string& bytes) {
  static const std::array<const char*, 6> type_urls = {
    sa::json_type_url,
    "type.googleapis.com/google.protobuf.BoolValue",
    "type.googleapis.com/google.protobuf.Int64Value",
    "type.googleapis.com/google.protobuf.DoubleValue",
    "type.googleapis.com/snakepit.tensor.binary",
    ""};
  for (const auto* url : type_urls) {
    google::protobuf::Any any;
    any.set_type_url(url);
    any.set_value(bytes);
    auto value = sa::decode_any(any);
    require(bytes.empty() == value.is_null(), "only an empty payload decodes to null");
    value.dump(-1, ' ', false, json::error_handler_t::replace);
  }
  sa::any_type(bytes);
}

void text_payloads(const std::string& bytes) {
  auto chunk = sa::decode_chunk(bytes);
  require(chunk.is_object(), "a chunk decodes to an object");
  auto details = sa::parse_error_payload(bytes);
  require(!details.type.empty(), "an error payload always has a type");
  require(static_cast<bool>(sa::error_from_payload(bytes)),
          "an error payload is an error");
}

/// Parameters encoded from JSON arguments decode to the same values.
void argument_round_trip(const std::string& bytes) {
  auto args = json::parse(bytes, nullptr, false);
  if (args.is_discarded())
    return;
  snakepit::bridge::ExecuteToolRequest req;
  sa::encode_params(args, req.mutable_parameters());
  if (args.is_null()) {
    require(req.parameters().empty(), "null arguments send no parameter");
    return;
  }
  if (!args.is_object()) {
    require(sa::decode_any(req.parameters().at("value")) == args, "value round trip");
    return;
  }
  require(req.parameters().size() == args.size(), "one parameter per member");
  for (const auto& [key, value] : args.items())
    require(sa::decode_any(req.parameters().at(key)) == value, "parameter round trip");
}

/// Binary parameters and base64 come back byte for byte.
void binary_round_trip(const std::string& bytes) {
  sa::tool_call call;
  call.tool_name = "fuzz";
  call.binary_args["blob"] = bytes;
  snakepit::bridge::ExecuteToolRequest req;
  sa::encode_request(call, false, &req);
  snakepit::bridge::ExecuteToolRequest back;
  require(back.ParseFromString(req.SerializeAsString()), "a request parses back");
  require(back.binary_parameters().at("blob") == bytes, "binary parameter round trip");
  auto decoded = sa::base64_decode(sa::base64_encode(bytes));
  require(decoded && *decoded == bytes, "base64 round trip");
  if (auto raw = sa::base64_decode(bytes))
    require(raw->size() <= bytes.size(), "decoded base64 is shorter than its text");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes{snakepit::fuzz::text_of(data, size)};
  response(bytes);
  any_payloads(bytes);
  text_payloads(bytes);
  argument_round_trip(bytes);
  binary_round_trip(bytes);
  return 0;
}
