// What the worker actor's units share: the messages the worker sends itself (its
// timers, the answers of its own pings, the exit watcher's notice), the actor type
// that handles them beside the public interface, and the fields of its log lines.
// Upstream's GRPCWorker handles the same as handle_info clauses.
#pragma once

#include <cstdint>

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/types.hpp"
#include "actors/worker/worker.hpp"
#include "adapters/log.hpp"

namespace snakepit::actors::detail {

/// Poll the ready file again (delayed, 2 -> 10 ms backoff).
using check_ready_atom = caf::atom_constant<caf::atom("chkready")>;
/// The readiness Ping answered (none on success).
using ping_result_atom = caf::atom_constant<caf::atom("pingres")>;
/// The Python process exited (exit code, signal), posted by the exit watcher thread.
using process_exited_atom = caf::atom_constant<caf::atom("procexit")>;
/// The graceful stop's grace period of generation `gen` elapsed: SIGKILL.
using escalate_atom = caf::atom_constant<caf::atom("escalate")>;
/// Time for the next heartbeat ping.
using heartbeat_atom = caf::atom_constant<caf::atom("heartbeat")>;
/// The heartbeat ping answered (none on success).
using heartbeat_result_atom = caf::atom_constant<caf::atom("hbresult")>;
/// Look again whether the process of a call that failed in transport is gone.
using rpc_recheck_atom = caf::atom_constant<caf::atom("rpcrecheck")>;
/// The stdio connection broke (the reason), from its I/O thread.
using conn_broken_atom = caf::atom_constant<caf::atom("connbroken")>;
/// A broken connection's grace is over: kill the process if it still runs.
using kill_broken_atom = caf::atom_constant<caf::atom("killbroken")>;

/// The worker actor as it sees itself: its interface plus its private messages.
using worker_private = worker_actor::extend<
  caf::reacts_to<check_ready_atom>, caf::reacts_to<ping_result_atom, caf::error>,
  caf::reacts_to<process_exited_atom, int, int>, caf::reacts_to<escalate_atom, uint64_t>,
  caf::reacts_to<heartbeat_atom>, caf::reacts_to<heartbeat_result_atom, caf::error>,
  caf::reacts_to<rpc_recheck_atom, uint64_t, execute_result>,
  caf::reacts_to<conn_broken_atom, caf::error>, caf::reacts_to<kill_broken_atom>>;

/// The fields every log line of a worker carries.
inline adapters::log_fields worker_fields(const worker_args& args) {
  return adapters::log_fields{{"pool", args.pool_cfg.name}, {"worker_id", args.id}};
}

} // namespace snakepit::actors::detail
