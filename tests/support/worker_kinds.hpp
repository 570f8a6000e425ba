// The kinds of worker the integration suites run their scenarios against: the bundled
// Python bridge over gRPC (launched by our convention and by upstream Snakepit's), the
// same bridge over stdio, and the Node.js bridge over stdio (docs/workers.md).
#pragma once

#include <string>
#include <vector>

#include "actors/config/config.hpp"

namespace snakepit::testing {

/// One kind of worker, as a pool configures it.
struct worker_kind_case {
  /// "grpc-python", "grpc-python-upstream", "stdio-python" or "stdio-node".
  std::string name;
  worker_kind kind = worker_kind::grpc;
  /// Empty: the bundled Python bridge.
  std::vector<std::string> command;
  /// Whether the bridge answers the `ping` tool with "pong" (the stdio bridges
  /// answer the protocol's ping with their capabilities).
  bool ping_is_pong = true;
  /// How a gRPC worker is launched (ours, or upstream Snakepit's TCP convention).
  launch_convention launch = launch_convention::snakepit;
};

/// The repository's Node.js bridge with the showcase tools.
inline std::string node_bridge() {
  return std::string{SNAKEPIT_TEST_REPO_DIR} + "/node/bridge.js";
}

/// Every kind the pool scenarios run against.
inline std::vector<worker_kind_case> all_worker_kinds() {
  return {
    {"grpc-python", worker_kind::grpc, {}, true},
    {"grpc-python-upstream", worker_kind::grpc, {}, true, launch_convention::upstream},
    {"stdio-python", worker_kind::stdio, {}, false},
    {"stdio-node", worker_kind::stdio, {"node", node_bridge()}, false},
  };
}

/// Makes `pool` run workers of kind `k`.
inline void use_kind(pool_config& pool, const worker_kind_case& k) {
  pool.kind = k.kind;
  pool.command = k.command;
  pool.launch = k.launch;
}

} // namespace snakepit::testing
