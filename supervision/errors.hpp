// Error codes of the supervision area and the mapping of CAF exit reasons onto
// OTP's exit-reason classes (normal, shutdown, killed, anything else).
// Mirrors the {error, Reason} tuples of supervisor.erl and Registry.
#pragma once

#include <cstdint>
#include <string>

#include <caf/actor_system_config.hpp>
#include <caf/error.hpp>

namespace snakepit::supervision {

/// Errors returned by supervisors, dynamic supervisors and the registry.
enum class sup_errc : uint8_t {
  /// A child failed to start; context: (std::string id, caf::error reason).
  failed_to_start_child = 1,
  /// The child is running, so it cannot be restarted or deleted.
  running,
  /// The child's restart failed and is being retried.
  restarting,
  /// No child (or registry name) with that id.
  not_found,
  /// A child with that id already exists (running or not).
  already_present,
  /// The registry name is taken by a live actor.
  already_registered,
  /// The dynamic supervisor has reached `max_children`.
  max_children,
  /// A child spec is malformed; context: (std::string id, std::string what).
  invalid_child_spec,
  /// A child did not acknowledge its start within `start_timeout`.
  start_timeout,
  /// Exit reason of a supervisor that exceeded its restart intensity. Treated
  /// exactly like OTP's `shutdown` (and like caf::exit_reason::user_shutdown).
  shutdown,
  /// A blocking `stop` did not see the supervisor terminate within its deadline.
  stop_timeout,
};

/// Returns the enumerator's name, e.g. "not_found".
std::string to_string(sup_errc x);

/// Error category atom used for `sup_errc` (at most 10 characters).
constexpr caf::atom_value sup_errc_category = caf::atom("snake_sup");

/// Registers a renderer so `actor_system::render(err)` prints `sup_errc` names.
void add_error_category(caf::actor_system_config& cfg);

/// OTP's classes of exit reasons; they drive restart decisions.
enum class exit_kind {
  /// OTP `normal`: no error or caf::exit_reason::normal.
  normal,
  /// OTP `shutdown` / `{shutdown, _}`: exit_reason::user_shutdown or sup_errc::shutdown.
  shutdown,
  /// OTP `killed`: exit_reason::kill.
  killed,
  /// Anything else.
  abnormal,
};

/// Classifies a termination reason the way supervisor.erl does.
exit_kind classify_exit(const caf::error& reason);

/// Returns true if `err` is the given `sup_errc` code.
bool is(const caf::error& err, sup_errc code);

} // namespace snakepit::supervision

CAF_ERROR_CODE_ENUM(snakepit::supervision::sup_errc, "snake_sup")
