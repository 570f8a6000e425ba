// The supervision tree a runtime builds (upstream Snakepit.Application's children):
//
//   snakepit_sup (one_for_one, 3 / 5 s)
//   ├─ session_store, tool_registry
//   └─ runtime_sup (rest_for_one, 3 / 5 s) -> worker_sup (dynamic), pool:<name> …
//
// Started children are recorded in the runtime's name table (Erlang's register/2),
// the one lookup of siblings by name.
#pragma once

#include <chrono>
#include <memory>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "actors/config/config.hpp"
#include "actors/worker/worker_env.hpp"

namespace snakepit::detail {

/// Starts the tree for `cfg` within `timeout` (the pools start their workers as
/// part of it). On failure nothing of it is left running and the name table is empty.
caf::expected<caf::actor> start_tree(caf::actor_system& sys, const config& cfg,
                                     const std::shared_ptr<actors::worker_env>& env,
                                     std::chrono::milliseconds timeout);

/// Drains the pools (new calls fail with shutting_down), then stops the tree:
/// supervisors stop their children in reverse order, each worker SIGTERMs its
/// process group and SIGKILLs it after its grace period. Empties the name table.
caf::error stop_tree(caf::actor_system& sys, const caf::actor& top, const config& cfg,
                     const actors::worker_env& env);

} // namespace snakepit::detail
