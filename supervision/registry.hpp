// A name registry with unique keys whose entries vanish when their actor dies.
// Mirrors Elixir's Registry (keys: :unique); CAF's own registry only takes atom
// keys and has no metadata.
#pragma once

#include <string>

#include "caf/actor.hpp"
#include "caf/actor_system.hpp"
#include "caf/local_actor.hpp"

#include "supervision/atoms.hpp"
#include "supervision/child_spec.hpp"
#include "supervision/errors.hpp"
#include "supervision/start_ack.hpp"

namespace snakepit::supervision {

/// Spawns a registry. Requests:
/// - `(register_atom, std::string name, caf::actor, caf::message meta)` ->
///   `caf::ok_atom` | error(already_registered)
/// - `(lookup_atom, std::string name)` -> `(caf::actor, caf::message meta)` |
///   error(not_found)
/// - `(unregister_atom, std::string name)` -> `caf::ok_atom`
/// - `(list_atom)` -> `std::vector<std::string>` (sorted)
/// Each registered actor is monitored; its entries are erased when its
/// down_msg is processed, so a later lookup never returns it.
caf::actor spawn_registry(caf::actor_system& sys);

/// Spawns a registry from `parent` and acknowledges at once.
caf::actor spawn_registry(caf::local_actor* parent, start_ack ack);

/// A child spec for a registry (permanent worker).
child_spec registry_child(std::string id);

} // namespace snakepit::supervision
