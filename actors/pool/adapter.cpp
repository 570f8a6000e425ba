#include "actors/pool/adapter.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "adapters/errors.hpp"

namespace snakepit {

caf::error adapter::init(const pool_config&) {
  return caf::none;
}

void adapter::terminate(const caf::error&) {
  // Nothing to release by default.
}

void adapter::configure_launch(worker_launch&) const {
  // The pool's keys decide.
}

std::optional<std::vector<std::string>> adapter::supported_commands() const {
  return std::nullopt;
}

std::optional<bool> adapter::supports_streaming() const {
  return std::nullopt;
}

caf::error adapter::validate_command(const std::string& command,
                                     const nlohmann::json&) const {
  auto known = supported_commands();
  if (!known || std::find(known->begin(), known->end(), command) != known->end())
    return caf::none;
  return make_error(errc::unknown_tool,
                    fmt::format("the pool's adapter does not support '{}'", command));
}

nlohmann::json adapter::prepare_args(const std::string&, nlohmann::json args) const {
  return args;
}

nlohmann::json adapter::process_response(const std::string&,
                                         nlohmann::json result) const {
  return result;
}

std::chrono::milliseconds adapter::command_timeout(const std::string&,
                                                   const nlohmann::json&) const {
  return std::chrono::milliseconds{0};
}

} // namespace snakepit
