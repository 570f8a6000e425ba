// Standard base64 (RFC 4648, with padding): binary payloads inside JSON, on the gRPC
// kind's undecodable values and on the stdio kind's `binary_args` / `binary_result`.
#pragma once

#include <optional>
#include <string>

namespace snakepit::adapters {

/// Standard base64 with padding.
std::string base64_encode(const std::string& bytes);

/// The bytes of standard base64 text (padding optional, no whitespace); nullopt when
/// `text` is not base64.
std::optional<std::string> base64_decode(const std::string& text);

} // namespace snakepit::adapters
