// The node gateway (docs/distribution.md): the one actor a worker node publishes.
// It answers a host's handshake, runs each `remote_call` on its local pool through
// the pool's own request path (so queueing, deadlines and affinity hold as for a
// local caller) and pushes each connected host its pools' load every interval.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

namespace snakepit::distribution {

struct gateway_options {
  /// The node's name in its handshake (its listen address, known once bound).
  std::function<std::string()> node_name;
  /// The local pool actor of a name; null when there is none.
  std::function<caf::actor(const std::string&)> find_pool;
  /// The local pools' names.
  std::function<std::vector<std::string>()> pool_names;
  /// A local pool's default budget of a call (hosts use it for calls without one).
  std::function<std::chrono::milliseconds(const std::string&)> request_timeout;
  /// How often each connected host gets the pools' load.
  std::chrono::milliseconds load_interval{250};
};

/// Spawns the gateway. It runs until it gets an exit message (a published actor
/// left running holds the actor system's shutdown: `node_server` stops it).
caf::actor spawn_gateway(caf::actor_system& sys, gateway_options opts);

} // namespace snakepit::distribution
