// The host side of a pool's workers: the seed's Adapter behaviour (`Snakepit.Adapter`)
// as a C++ interface. Configuration alone (kind, command, env, cwd) covers the common
// cases; a host that needs more implements these hooks and sets
// `pool_config::host_adapter`. docs/workers.md shows an example.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <caf/error.hpp>
#include <nlohmann/json.hpp>

#include "actors/config/config.hpp"

namespace snakepit {

/// How one worker process is launched; `adapter::configure_launch` may change it.
struct worker_launch {
  /// The worker's id (`<pool>_worker_<n>_<generation>`); read-only by convention.
  std::string worker_id;
  /// How the host talks to it (the seed's `uses_grpc?`).
  worker_kind kind = worker_kind::grpc;
  /// Program and arguments; for the bundled Python bridge the host's own command.
  std::vector<std::string> command;
  /// Extra environment (wins over the host's defaults).
  std::vector<std::pair<std::string, std::string>> env;
  /// Working directory; empty: the host's.
  std::string cwd;
};

/// Hooks around every call of one pool. One instance serves one pool (or several,
/// if the host shares it); the const hooks run on any thread, also concurrently, so
/// they must be thread-safe. Every hook has a default that does nothing special.
class adapter {
 public:
  virtual ~adapter() = default;

  /// Once per pool start, before its first worker is spawned; an error fails the
  /// pool's start with it.
  virtual caf::error init(const pool_config& cfg);

  /// Once per pool stop (or restart), after the pool stopped taking calls.
  virtual void terminate(const caf::error& reason);

  /// Per worker start: how the worker is launched (defaults from the pool's keys).
  virtual void configure_launch(worker_launch& launch) const;

  /// The commands the workers serve; nullopt (the default): whatever they serve
  /// (a stdio bridge may declare them in its ping answer, gRPC workers register
  /// them with the host).
  virtual std::optional<std::vector<std::string>> supported_commands() const;

  /// Whether streaming calls are allowed; nullopt (the default): as the workers
  /// declare. False refuses every stream with `invalid_argument` before dispatch.
  virtual std::optional<bool> supports_streaming() const;

  /// Checks a call before dispatch; an error (`invalid_argument`, `unknown_tool`, or
  /// any of ours) refuses it with that error. Default: `unknown_tool` for a command
  /// outside `supported_commands()`.
  virtual caf::error validate_command(const std::string& command,
                                      const nlohmann::json& args) const;

  /// The arguments the worker gets for `command` (after validation). Default: as
  /// given.
  virtual nlohmann::json prepare_args(const std::string& command,
                                      nlohmann::json args) const;

  /// The result the caller gets for `command`. Default: as the worker sent it.
  virtual nlohmann::json process_response(const std::string& command,
                                          nlohmann::json result) const;

  /// The budget of a call of `command` whose caller gave none; zero (the default):
  /// the pool's `request_timeout`.
  virtual std::chrono::milliseconds command_timeout(const std::string& command,
                                                    const nlohmann::json& args) const;
};

} // namespace snakepit
