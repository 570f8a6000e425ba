// What the static and the dynamic supervisor answer alike: the check of their restart
// limit, the record of one child with its which_children / count_children rows, and the
// refusals of restart_child / delete_child (OTP supervisor.erl's `#child{}` record and
// its handle_call clauses for which_children, count_children, restart and delete).
#pragma once

#include <chrono>
#include <string>

#include <caf/actor.hpp>
#include <caf/error.hpp>

#include "supervision/child_spec.hpp"

namespace snakepit::supervision::detail {

/// Checks a restart limit: `max_restarts` must not be negative and `period` must be
/// positive. The errors name the fields as the caller spells them ("negative
/// <max_name>", "<period_name> must be positive").
caf::error validate_restart_limit(int max_restarts, std::chrono::seconds period,
                                  const char* max_name, const char* period_name);

/// One child as a supervisor keeps it (OTP's `#child{}`).
struct child_record {
  /// How to start and stop it.
  child_spec spec;
  /// The running actor; invalid while the child is not running.
  caf::actor pid;
  /// A failed restart is being retried.
  bool restarting = false;
};

/// The child's row in a `which_children` reply.
child_info info_of(const child_record& rec);

/// Adds the child to a `count_children` reply.
void count_into(child_counts& counts, const child_record& rec);

/// Why `restart_child` or `delete_child` refuses the child with id `id` (`rec` null
/// when there is none): not_found, restarting or running; none when it may proceed.
caf::error refuse_restart_or_delete(const std::string& id, const child_record* rec);

} // namespace snakepit::supervision::detail
