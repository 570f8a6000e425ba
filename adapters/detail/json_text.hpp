// Parsing JSON text that arrives from outside (a worker's payloads and frames) with
// nlohmann::json, minus one trap: its lexer takes a NUL byte for the end of the input,
// so "1\0<any bytes>" would parse as 1 and the bytes after it would vanish (found by
// the fuzz target `wire`). JSON text never holds a raw NUL, so such text is not JSON.
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

namespace snakepit::adapters::detail {

/// `text` as one JSON document, or a discarded value (`is_discarded()`) when it is not
/// JSON; never throws.
inline nlohmann::json parse_json_text(std::string_view text) {
  if (text.find('\0') != std::string_view::npos)
    return nlohmann::json(nlohmann::json::value_t::discarded);
  return nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
}

} // namespace snakepit::adapters::detail
