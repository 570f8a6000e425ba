#include "adapters/detail/stdio_frames.hpp"

#include <limits>

#include <fmt/format.h>

#include "adapters/base64.hpp"
#include "adapters/detail/json_text.hpp"
#include "adapters/errors.hpp"

namespace snakepit::adapters::detail {

namespace {

using json = nlohmann::json;

/// Bytes of the length prefix.
constexpr size_t prefix_bytes = 4;

std::string string_or(const json& j, const char* key, std::string fallback = {}) {
  auto i = j.find(key);
  if (i == j.end())
    return fallback;
  if (i->is_string())
    return i->get<std::string>();
  if (i->is_null())
    return fallback;
  return dump(*i);
}

/// A worker's `execution_time_ms`: a number within int64_t (a fraction cut off), else
/// 0. A plain get<int64_t>() converts 1e300 with undefined behaviour (found by the
/// fuzz target stdio_frames).
int64_t millis_of(const json& v) {
  constexpr auto max = std::numeric_limits<int64_t>::max();
  if (v.is_number_unsigned()) {
    auto u = v.get<uint64_t>();
    return u <= static_cast<uint64_t>(max) ? static_cast<int64_t>(u) : 0;
  }
  if (v.is_number_integer())
    return v.get<int64_t>();
  if (v.is_number_float()) {
    auto d = v.get<double>();
    // -2^63 and 2^63 exactly; NaN fails both comparisons.
    return d >= -9223372036854775808.0 && d < 9223372036854775808.0
             ? static_cast<int64_t>(d)
             : 0;
  }
  return 0;
}

} // namespace

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

caf::expected<frame_step> decode_frame(std::string_view buffered,
                                       size_t max_message_bytes) {
  if (buffered.size() < prefix_bytes)
    return frame_step{};
  auto* p = reinterpret_cast<const unsigned char*>(buffered.data());
  size_t len =
    (size_t{p[0]} << 24) | (size_t{p[1]} << 16) | (size_t{p[2]} << 8) | size_t{p[3]};
  if (len > max_message_bytes)
    return make_error(errc::protocol_error,
                      fmt::format("a frame of {} bytes exceeds max_message_bytes ({})",
                                  len, max_message_bytes));
  frame_step step;
  step.size = prefix_bytes + len;
  if (buffered.size() < step.size)
    return step;
  auto body = buffered.substr(prefix_bytes, len);
  auto value = parse_json_text(body);
  if (value.is_discarded())
    return make_error(errc::protocol_error, "a frame is not valid JSON");
  step.value = std::move(value);
  return step;
}

caf::expected<frame_head> head_of(const json& frame) {
  if (!frame.is_object())
    return make_error(errc::protocol_error, "a frame is not a JSON object");
  auto idv = frame.find("id");
  if (idv == frame.end() || !idv->is_number_unsigned())
    return make_error(errc::protocol_error, "a frame has no unsigned integer id");
  frame_head head;
  head.id = idv->get<uint64_t>();
  head.chunk = frame.contains("chunk");
  if (!head.chunk && !frame.contains("success"))
    return make_error(errc::protocol_error,
                      fmt::format("frame {} has neither success nor chunk", head.id));
  return head;
}

bool succeeded(const json& frame) {
  auto i = frame.find("success");
  return i != frame.end() && i->is_boolean() && i->get<bool>();
}

json chunk_value(json& frame) {
  auto& chunk = frame["chunk"];
  if (chunk.is_string()) {
    auto enc = frame.find("chunk_encoding");
    if (enc != frame.end() && *enc == "base64")
      return json{{"raw_data_base64", std::move(chunk)}};
  }
  if (chunk.is_object())
    return std::move(chunk);
  return json{{"data", std::move(chunk)}};
}

caf::error error_of(const json& frame) {
  python_error details;
  auto err = frame.find("error");
  if (err != frame.end() && err->is_object()) {
    details.type = string_or(*err, "type", "Error");
    details.message = string_or(*err, "message");
    details.traceback = string_or(*err, "traceback");
  } else {
    details.type = "Error";
    details.message = string_or(frame, "error", "the worker reported a failure");
  }
  details.type = string_or(frame, "error_type", details.type);
  if (auto tb = string_or(frame, "traceback"); !tb.empty())
    details.traceback = std::move(tb);
  return error_from_python(std::move(details));
}

caf::expected<tool_reply> reply_of(json& frame) {
  tool_reply reply;
  if (auto i = frame.find("result"); i != frame.end())
    reply.result = std::move(*i);
  reply.result_type = "json";
  if (auto i = frame.find("binary_result"); i != frame.end() && i->is_string()) {
    auto bytes = base64_decode(i->get<std::string>());
    if (!bytes)
      return make_error(errc::protocol_error, "binary_result is not base64");
    reply.binary_result = std::move(*bytes);
  }
  if (auto i = frame.find("execution_time_ms"); i != frame.end())
    reply.execution_time_ms = millis_of(*i);
  if (auto i = frame.find("metadata"); i != frame.end() && i->is_object())
    for (auto& [k, v] : i->items())
      reply.metadata[k] = v.is_string() ? v.get<std::string>() : dump(v);
  return reply;
}

stdio_capabilities capabilities_of(const json& result) {
  stdio_capabilities caps;
  caps.raw = result;
  if (!result.is_object())
    return caps;
  if (auto i = result.find("streaming"); i != result.end() && i->is_boolean())
    caps.streaming = i->get<bool>();
  if (auto i = result.find("tools"); i != result.end() && i->is_array()) {
    caps.tools_known = true;
    for (auto& t : *i) {
      if (t.is_string())
        caps.tools.push_back(t.get<std::string>());
      else if (t.is_object() && t.contains("name") && t["name"].is_string())
        caps.tools.push_back(t["name"].get<std::string>());
    }
  }
  return caps;
}

} // namespace snakepit::adapters::detail
