// The worker actor (upstream Snakepit.GRPCWorker) and its worker_starter (upstream
// Snakepit.Pool.Worker.Starter): a worker owns exactly one Python process and its
// gRPC channel; its starter is a one_for_one supervisor that restarts it under the
// same id when the process dies.
#pragma once

#include <memory>
#include <string>

#include <caf/actor.hpp>

#include "actors/config/config.hpp"
#include "actors/worker/worker_env.hpp"
#include "supervision/child_spec.hpp"

namespace snakepit::actors {

/// Everything one worker needs; copied into the child spec so a restart reuses it.
struct worker_args {
  std::string id;
  caf::actor pool;
  pool_config pool_cfg;
  std::shared_ptr<const worker_env> env;
};

/// Child spec of the worker actor: transient (a normal stop is final, a crash is
/// restarted), shutdown = graceful period plus a margin for the SIGKILL path.
/// The start is acknowledged only after the ready file appeared and a Ping
/// answered, so a worker that cannot start (e.g. its adapter does not import)
/// fails the start with the worker's own error instead of entering the pool.
supervision::child_spec worker_spec(worker_args args);

/// Child spec of the worker_starter: a permanent supervisor (one_for_one, the
/// pool's worker_max_restarts / worker_max_seconds) with the worker as only child.
supervision::child_spec worker_starter_spec(worker_args args);

} // namespace snakepit::actors
