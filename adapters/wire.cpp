#include "adapters/wire.hpp"

#include <utility>

#include <fmt/format.h>
#include <google/protobuf/wrappers.pb.h>

#include "adapters/detail/json_text.hpp"

namespace snakepit::adapters {

namespace {

using nlohmann::json;

// Never throws: invalid UTF-8 in strings is replaced rather than aborting a reply.
std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool valid_utf8(const std::string& text) {
  size_t i = 0;
  const auto n = text.size();
  while (i < n) {
    auto c = static_cast<unsigned char>(text[i]);
    size_t len = 0;
    if (c < 0x80)
      len = 1;
    else if ((c >> 5) == 0x6)
      len = 2;
    else if ((c >> 4) == 0xE)
      len = 3;
    else if ((c >> 3) == 0x1E)
      len = 4;
    else
      return false;
    if (i + len > n)
      return false;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(text[i + k]) >> 6) != 0x2)
        return false;
    i += len;
  }
  return true;
}

std::string string_field(const json& obj, const char* key) {
  auto i = obj.find(key);
  if (i == obj.end() || i->is_null())
    return {};
  if (i->is_string())
    return i->get<std::string>();
  return dump(*i);
}

} // namespace

void encode_params(const json& args,
                   google::protobuf::Map<std::string, google::protobuf::Any>* out) {
  auto put = [out](const std::string& key, const json& value) {
    google::protobuf::Any any;
    any.set_type_url(json_type_url);
    any.set_value(dump(value));
    (*out)[key] = std::move(any);
  };
  if (args.is_null())
    return;
  if (!args.is_object()) {
    put("value", args);
    return;
  }
  for (const auto& [key, value] : args.items())
    put(key, value);
}

void encode_request(const tool_call& call, bool stream, bridge::ExecuteToolRequest* out) {
  out->set_session_id(call.session_id);
  out->set_tool_name(call.tool_name);
  encode_params(call.args, out->mutable_parameters());
  auto& meta = *out->mutable_metadata();
  for (const auto& [k, v] : call.metadata)
    meta[k] = v;
  if (!call.correlation_id.empty())
    meta["correlation_id"] = call.correlation_id;
  out->set_stream(stream);
  auto& bin = *out->mutable_binary_parameters();
  for (const auto& [k, v] : call.binary_args)
    bin[k] = v;
}

std::string any_type(const std::string& type_url) {
  auto pos = type_url.rfind('.');
  if (pos == std::string::npos) {
    auto slash = type_url.rfind('/');
    return slash == std::string::npos ? type_url : type_url.substr(slash + 1);
  }
  return type_url.substr(pos + 1);
}

json decode_any(const google::protobuf::Any& any) {
  const auto& value = any.value();
  if (value.empty())
    return nullptr;
  // Our convention (and upstream's): UTF-8 JSON, whatever the type_url says.
  auto parsed = detail::parse_json_text(value);
  if (!parsed.is_discarded())
    return parsed;
  // Otherwise a real well-known wrapper, as some upstream workers pack parameters.
  if (any.Is<google::protobuf::StringValue>()) {
    google::protobuf::StringValue v;
    if (any.UnpackTo(&v))
      return v.value();
  } else if (any.Is<google::protobuf::BoolValue>()) {
    google::protobuf::BoolValue v;
    if (any.UnpackTo(&v))
      return v.value();
  } else if (any.Is<google::protobuf::Int64Value>()) {
    google::protobuf::Int64Value v;
    if (any.UnpackTo(&v))
      return v.value();
  } else if (any.Is<google::protobuf::DoubleValue>()) {
    google::protobuf::DoubleValue v;
    if (any.UnpackTo(&v))
      return v.value();
  }
  if (valid_utf8(value))
    return value;
  return json{{"raw_data_base64", base64_encode(value)}};
}

python_error parse_error_payload(const std::string& error_message) {
  python_error result;
  auto parsed = detail::parse_json_text(error_message);
  if (parsed.is_discarded() || !parsed.is_object() ||
      (!parsed.contains("type") && !parsed.contains("message"))) {
    result.type = "Error";
    result.message = error_message;
    return result;
  }
  result.type = string_field(parsed, "type");
  if (result.type.empty())
    result.type = "Error";
  result.message = string_field(parsed, "message");
  result.traceback = string_field(parsed, "traceback");
  if (auto i = parsed.find("stacktrace"); i != parsed.end()) {
    if (i->is_array()) {
      for (const auto& frame : *i)
        result.stacktrace.push_back(frame.is_string() ? frame.get<std::string>()
                                                      : dump(frame));
    } else if (i->is_string()) {
      result.stacktrace.push_back(i->get<std::string>());
    }
  }
  if (auto i = parsed.find("context"); i != parsed.end() && !i->is_null())
    result.context_json = dump(*i);
  return result;
}

caf::error error_from_payload(const std::string& error_message) {
  return error_from_python(parse_error_payload(error_message));
}

caf::expected<tool_reply> decode_response(const bridge::ExecuteToolResponse& response) {
  if (!response.success())
    return error_from_payload(response.error_message());
  tool_reply reply;
  if (response.has_result()) {
    reply.result = decode_any(response.result());
    reply.result_type = any_type(response.result().type_url());
  }
  reply.binary_result = response.binary_result();
  for (const auto& [k, v] : response.metadata())
    reply.metadata.emplace(k, v);
  reply.execution_time_ms = response.execution_time_ms();
  return reply;
}

json decode_chunk(const std::string& data) {
  if (data.empty())
    return json::object();
  auto parsed = detail::parse_json_text(data);
  if (parsed.is_discarded())
    return json{{"raw_data_base64", base64_encode(data)}};
  if (parsed.is_object())
    return parsed;
  return json{{"data", std::move(parsed)}};
}

caf::error error_from_status(const grpc::Status& status) {
  auto msg = status.error_message();
  switch (status.error_code()) {
  case grpc::StatusCode::OK:
    return caf::none;
  case grpc::StatusCode::DEADLINE_EXCEEDED:
    return make_error(errc::timeout, std::move(msg));
  case grpc::StatusCode::UNAVAILABLE:
    return make_error(errc::unavailable, std::move(msg));
  case grpc::StatusCode::CANCELLED:
    return make_error(errc::cancelled, std::move(msg));
  case grpc::StatusCode::INVALID_ARGUMENT:
    return make_error(errc::invalid_argument, std::move(msg));
  case grpc::StatusCode::NOT_FOUND:
  case grpc::StatusCode::UNIMPLEMENTED:
    return make_error(errc::unknown_tool, std::move(msg));
  case grpc::StatusCode::INTERNAL:
  case grpc::StatusCode::UNKNOWN: {
    // Python aborts failed streams with INTERNAL and the in-band JSON payload.
    auto parsed = detail::parse_json_text(msg);
    if (!parsed.is_discarded() && parsed.is_object() && parsed.contains("type"))
      return error_from_payload(msg);
    return make_error(
      errc::internal,
      fmt::format("grpc status {}: {}", static_cast<int>(status.error_code()), msg));
  }
  default:
    return make_error(
      errc::internal,
      fmt::format("grpc status {}: {}", static_cast<int>(status.error_code()), msg));
  }
}

} // namespace snakepit::adapters
