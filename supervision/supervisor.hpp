// A static supervisor: starts a list of children, restarts them by strategy and
// gives up after too many restarts. Mirrors OTP's supervisor behaviour
// (one_for_one / one_for_all / rest_for_one, intensity/period, orderly shutdown).
#pragma once

#include <chrono>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>
#include <caf/local_actor.hpp>

#include "supervision/atoms.hpp"
#include "supervision/child_spec.hpp"
#include "supervision/errors.hpp"
#include "supervision/start_ack.hpp"

namespace snakepit::supervision {

/// Restart strategies of supervisor.erl (simple_one_for_one lives in
/// dynamic_supervisor.hpp).
enum class strategy { one_for_one, one_for_all, rest_for_one };

/// Supervisor flags with OTP's defaults: at most `intensity` restarts within
/// any `period`; one more makes the supervisor give up.
struct supervisor_flags {
  /// Which children are restarted when one terminates.
  strategy strat = strategy::one_for_one;
  /// Restarts allowed within `period`; 0 means the first restart exceeds.
  int intensity = 1;
  /// Length of the sliding restart window.
  std::chrono::seconds period{5};
};

/// Checks the flags (non-negative intensity, positive period).
caf::error validate(const supervisor_flags& flags);

/// Spawns a supervisor from `parent`. It starts `children` left to right and then
/// calls `ack.ok`; if a child fails, it stops the started ones in reverse order,
/// calls `ack.fail(failed_to_start_child(id, reason))` and quits with that error.
caf::actor spawn_supervisor(caf::local_actor* parent, supervisor_flags flags,
                            std::vector<child_spec> children, start_ack ack);

/// Spawns a top-level supervisor nobody waits for (keep the returned handle:
/// an actor without strong handles dies with exit_reason::unreachable).
caf::actor spawn_supervisor(caf::actor_system& sys, supervisor_flags flags,
                            std::vector<child_spec> children);

/// A child spec for a nested supervisor (shutdown infinity, type supervisor).
child_spec supervisor_child(std::string id, supervisor_flags flags,
                            std::vector<child_spec> children,
                            restart_type restart = restart_type::permanent);

/// Blocking start for hosts and tests (never call it inside an actor): returns
/// once all children have started, or the start error
/// (`failed_to_start_child`, `invalid_child_spec`, `start_timeout`).
caf::expected<caf::actor> start_supervisor(caf::actor_system& sys, supervisor_flags flags,
                                           std::vector<child_spec> children,
                                           std::chrono::milliseconds timeout);

/// Blocking orderly stop (never call it inside an actor): sends
/// exit_reason::user_shutdown and returns once `sup` and, therefore, all of its
/// children have terminated; `stop_timeout` if that takes longer than `timeout`.
/// Works for static and dynamic supervisors and for the registry.
caf::error stop(caf::actor_system& sys, const caf::actor& sup,
                std::chrono::milliseconds timeout);

} // namespace snakepit::supervision
