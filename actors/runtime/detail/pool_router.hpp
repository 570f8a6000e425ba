// The actor-level handle of a pool in a runtime with nodes (docs/distribution.md,
// "The actor API"): an actor that speaks the pool's messages (actors/pool/pool.hpp)
// and places each call the way the facade does, on the local pool or on a node's
// link. `runtime::pool(name)` returns it when `config::nodes` is not empty.
#pragma once

#include <memory>
#include <shared_mutex>
#include <string>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include "actors/runtime/runtime.hpp"

namespace snakepit::detail {

/// What the routers of a runtime read of it. A host may keep a router's handle
/// past the runtime's stop: the stop clears `rt` (under the exclusive lock)
/// before the runtime goes, and a router then answers shutting_down.
struct router_hub {
  std::shared_mutex mtx;
  runtime::impl* rt = nullptr;
};

/// Spawns the router of pool `pool`. Calls (execute, execute_cb, the three stream
/// forms) are placed per call; the other messages go to the local pool when there
/// is one, else: await_ready -> ok while a connected node serves the pool;
/// get_stats and list_workers -> the figures of every connected node serving it
/// (counters summed, histograms merged, worker ids prefixed "<node>/"); resize,
/// recycle, drain and init_status -> invalid_argument (a node's pool is sized
/// and recycled by that node's configuration). On an exit message it answers its
/// calls in flight with shutting_down and quits.
caf::actor spawn_pool_router(caf::actor_system& sys, std::string pool,
                             std::shared_ptr<router_hub> hub);

} // namespace snakepit::detail
