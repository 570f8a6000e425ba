// A supervisor whose children are added at run time and are all alike in
// standing: one_for_one, no start order. Mirrors Elixir's DynamicSupervisor
// (OTP's simple_one_for_one), including max_children and extra start arguments.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/local_actor.hpp>

#include "supervision/atoms.hpp"
#include "supervision/child_spec.hpp"
#include "supervision/errors.hpp"
#include "supervision/start_ack.hpp"

namespace snakepit::supervision {

/// DynamicSupervisor options with Elixir's defaults.
struct dynamic_supervisor_flags {
  /// Restarts allowed within `max_seconds`.
  int max_restarts = 3;
  /// Length of the sliding restart window.
  std::chrono::seconds max_seconds{5};
  /// Upper bound on children (running, restarting or starting); none if empty.
  std::optional<size_t> max_children;
  /// Start requests do not wait for each other: while one child initialises (until
  /// its start_ack), the next request is served. OTP's DynamicSupervisor serves one
  /// request at a time and stays so by default; a pool's workers, which ack only once
  /// their external process answered, start this way so that a batch of them boots
  /// in parallel (upstream Snakepit's workers get the same effect by returning from
  /// init at once). Restarts still run one at a time. A stop while starts are pending
  /// kills those children and fails their requests with failed_to_start_child.
  bool concurrent_starts = false;
};

/// Checks the flags.
caf::error validate(const dynamic_supervisor_flags& flags);

/// Spawns a dynamic supervisor from `parent`; it acks at once (it has no
/// initial children). Requests:
/// - `(start_child_atom, child_spec[, caf::message extra])` -> `caf::actor` |
///   error(max_children | failed_to_start_child | invalid_child_spec)
/// - `(terminate_child_atom, caf::actor)` -> `caf::ok_atom` | error(not_found)
/// - `(which_children_atom)` -> `std::vector<child_info>`
/// - `(count_children_atom)` -> `child_counts`
/// On an exit message all children are stopped concurrently (one kill timer per
/// distinct shutdown timeout), then it quits with the exit reason.
caf::actor spawn_dynamic_supervisor(caf::local_actor* parent,
                                    dynamic_supervisor_flags flags, start_ack ack);

/// Spawns a top-level dynamic supervisor (keep the returned handle).
caf::actor spawn_dynamic_supervisor(caf::actor_system& sys,
                                    dynamic_supervisor_flags flags);

/// A child spec for a dynamic supervisor (shutdown infinity, type supervisor).
child_spec dynamic_supervisor_child(std::string id, dynamic_supervisor_flags flags,
                                    restart_type restart = restart_type::permanent);

} // namespace snakepit::supervision
