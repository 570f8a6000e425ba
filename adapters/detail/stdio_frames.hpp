// The stdio kind's wire format from the worker's side, free of I/O: splitting the
// worker's output into length-prefixed JSON frames and reading what a frame says (a
// reply, a failure, a chunk, a ping's capabilities). stdio_client.cpp's connection
// feeds it bytes; the fuzz target `stdio_frames` feeds it anything (tests/fuzz).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <nlohmann/json.hpp>

#include "adapters/connection.hpp"
#include "adapters/stdio_client.hpp"

namespace snakepit::adapters::detail {

/// The first frame of the bytes read so far.
struct frame_step {
  /// Bytes the frame takes, the 4-byte length included: consumed when `value` is
  /// set, the bytes to wait for otherwise (0 while the length itself is incomplete).
  size_t size = 0;
  /// The frame, once the buffer holds it whole.
  std::optional<nlohmann::json> value;
};

/// Decodes the frame at the start of `buffered`. Errors (protocol_error): a length
/// above `max_message_bytes`, a body that is not JSON.
caf::expected<frame_step> decode_frame(std::string_view buffered,
                                       size_t max_message_bytes);

/// What every frame from a worker must carry.
struct frame_head {
  /// The call it answers.
  uint64_t id = 0;
  /// A stream's chunk (else a final frame: `success` is present).
  bool chunk = false;
};

/// The head of `frame`. Errors (protocol_error): not an object, no unsigned integer
/// `id`, neither `success` nor `chunk`.
caf::expected<frame_head> head_of(const nlohmann::json& frame);

/// Whether a final frame reports success (`"success": true`, nothing else does).
bool succeeded(const nlohmann::json& frame);

/// A chunk frame's value as a gRPC worker's chunk would arrive (wire.cpp's
/// decode_chunk): objects as they are, bytes (`"chunk_encoding": "base64"`) as
/// {"raw_data_base64": …}, any other JSON value as {"data": …}. Takes the chunk.
nlohmann::json chunk_value(nlohmann::json& frame);

/// A failure frame as our error (the same mapping as the gRPC kind's in-band errors).
caf::error error_of(const nlohmann::json& frame);

/// A success frame as a tool reply (takes `result`). Errors (protocol_error): a
/// `binary_result` that is not base64.
caf::expected<tool_reply> reply_of(nlohmann::json& frame);

/// What a ping's `result` declares.
stdio_capabilities capabilities_of(const nlohmann::json& result);

/// `j` as compact JSON text; invalid UTF-8 is replaced, never thrown on.
std::string dump(const nlohmann::json& j);

} // namespace snakepit::adapters::detail
