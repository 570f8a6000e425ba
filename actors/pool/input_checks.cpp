#include "actors/pool/input_checks.hpp"

#include <cstdint>

#include <fmt/format.h>

#include "adapters/errors.hpp"

namespace snakepit::actors {

namespace {

/// Length of the UTF-8 sequence that starts at `s[i]` if it is valid and encodes
/// no control character, else 0.
size_t printable_sequence(std::string_view s, size_t i) noexcept {
  auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80)
    return b >= 0x20 && b != 0x7f ? 1 : 0;
  size_t len = b >= 0xf0 && b <= 0xf4 ? 4 : b >= 0xe0 ? 3 : b >= 0xc2 && b < 0xe0 ? 2 : 0;
  if (len == 0 || i + len > s.size())
    return 0;
  uint32_t cp = b & (0xff >> (len + 1));
  for (size_t k = 1; k < len; ++k) {
    auto c = static_cast<unsigned char>(s[i + k]);
    if ((c & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (c & 0x3f);
  }
  bool overlong = (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
  bool invalid = cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff);
  bool c1_control = cp >= 0x80 && cp <= 0x9f;
  return overlong || invalid || c1_control ? 0 : len;
}

/// Depth and number of values of `j`, stopping once either exceeds its bound.
struct arg_walk {
  size_t max_depth;
  size_t max_values; // 0: unbounded
  size_t values = 0;
  size_t depth = 0;

  bool over() const {
    return depth > max_depth || (max_values > 0 && values > max_values);
  }

  void visit(const json& j, size_t level) {
    ++values;
    if (!j.is_structured())
      return;
    depth = std::max(depth, level);
    for (auto& child : j) {
      if (over())
        return;
      visit(child, level + 1);
    }
  }
};

caf::error refuse(std::string what) {
  return caf::make_error(errc::invalid_argument, std::move(what));
}

} // namespace

bool printable_command(std::string_view name) noexcept {
  if (name.empty())
    return false;
  for (size_t i = 0; i < name.size();) {
    auto n = printable_sequence(name, i);
    if (n == 0)
      return false;
    i += n;
  }
  return true;
}

std::string printable_name(std::string_view name) {
  constexpr size_t shown = 64;
  std::string out;
  size_t i = 0;
  while (i < name.size() && i < shown) {
    if (auto n = printable_sequence(name, i); n > 0 && i + n <= shown) {
      out.append(name.substr(i, n));
      i += n;
    } else if (n > 0) {
      break; // a character that would straddle the cut
    } else {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(name[i]));
      ++i;
    }
  }
  if (i < name.size())
    out += fmt::format("... ({} bytes)", name.size());
  return out;
}

namespace {

caf::error check_name(const pool_input_limits& limits, const std::string& name) {
  if (name.empty())
    return refuse("command name is empty");
  if (name.size() > limits.max_command_bytes)
    return refuse(
      fmt::format("command name of {} bytes exceeds max_command_bytes ({}): '{}'",
                  name.size(), limits.max_command_bytes, printable_name(name)));
  if (!printable_command(name))
    return refuse(
      fmt::format("command name is not printable UTF-8: '{}'", printable_name(name)));
  return caf::none;
}

caf::error check_args(const pool_input_limits& limits, const std::string& name,
                      const json& args) {
  if (args.is_object() && args.size() > limits.max_arg_keys)
    return refuse(
      fmt::format("arguments of '{}' have {} top-level keys; max_arg_keys is {}",
                  printable_name(name), args.size(), limits.max_arg_keys));
  if (!args.is_structured())
    return caf::none;
  arg_walk walk{limits.max_arg_depth, limits.max_arg_values};
  walk.visit(args, 1);
  if (walk.depth > limits.max_arg_depth)
    return refuse(fmt::format("arguments of '{}' nest deeper than max_arg_depth ({})",
                              printable_name(name), limits.max_arg_depth));
  if (limits.max_arg_values > 0 && walk.values > limits.max_arg_values)
    return refuse(
      fmt::format("arguments of '{}' hold more than max_arg_values ({}) values",
                  printable_name(name), limits.max_arg_values));
  return caf::none;
}

} // namespace

caf::error check_input(const pool_input_limits& limits, const execute_request& req) {
  if (auto err = check_name(limits, req.command))
    return err;
  return check_args(limits, req.command, req.args);
}

} // namespace snakepit::actors
