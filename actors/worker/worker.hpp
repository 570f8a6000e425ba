// The worker actor (upstream Snakepit.GRPCWorker) and its worker_starter (upstream
// Snakepit.Pool.Worker.Starter): a worker owns exactly one Python process and its
// gRPC channel; its starter is a one_for_one supervisor that restarts it under the
// same id when the process dies. Its typed interface and the functions that send it
// messages (upstream's GRPCWorker.execute/4) are here; nobody builds them by hand.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_cast.hpp>
#include <caf/atom.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/atoms.hpp"
#include "actors/config/config.hpp"
#include "actors/pool/reply_slot.hpp"
#include "actors/pool/stream_sink.hpp"
#include "actors/types.hpp"
#include "actors/worker/worker_env.hpp"
#include "supervision/child_spec.hpp"

namespace snakepit::actors {

/// gRPC thread -> worker: a call on the worker's channel ended in a transport
/// failure (`transport_failure`); the worker tells a crash from a hiccup and
/// reports the call to the pool (see worker_rpc.hpp).
using rpc_failed_atom = caf::atom_constant<caf::atom("rpcfailed")>;

/// What others send a worker. Every message is a cast: a call's outcome reaches the
/// pool as `result_atom` and the caller through its reply slot or stream sink, and
/// the worker's announcements (`worker_ready_atom`, `worker_exit_atom`,
/// `worker_start_failed_atom`) go to the pool it was started for. Its own timers
/// and the exit watcher's notice are private (`extend`ed in detail/protocol.hpp).
using worker_actor = caf::typed_actor<
  // Pool: run one unary call (request id, request, remaining budget, reply slot).
  caf::reacts_to<execute_atom, uint64_t, execute_request, caf::timespan, reply_slot_ptr>,
  // Pool: run one streaming call, its chunks going into the sink.
  caf::reacts_to<stream_atom, uint64_t, execute_request, caf::timespan, stream_sink_ptr>,
  // Pool (for the runtime): send the current Python telemetry settings again.
  caf::reacts_to<python_telemetry_atom>,
  // gRPC thread: a call failed in transport (request id, the failure).
  caf::reacts_to<rpc_failed_atom, uint64_t, execute_result>>;

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
/// The supervision layer gets the worker as a plain `caf::actor`; callers that
/// hold one reach it through the functions below.
supervision::child_spec worker_spec(worker_args args);

/// Child spec of the worker_starter: a permanent supervisor (one_for_one, the
/// pool's worker_max_restarts / worker_max_seconds) with the worker as only child.
supervision::child_spec worker_starter_spec(worker_args args);

/// The typed handle of a worker known as a `caf::actor` (as the supervision layer
/// and `worker_ready_atom` hand it out).
inline worker_actor worker_handle(const caf::actor& worker) {
  return caf::actor_cast<worker_actor>(worker);
}

/// Pool -> worker: run one unary call. `slot` (may be null) answers the caller;
/// the outcome also reaches the pool as `result_atom` (worker_rpc.hpp has the
/// completion's contract; the pool may issue the call itself with `issue_execute`).
template<class Self>
void send_execute(Self* self, const caf::actor& worker, uint64_t req_id,
                  execute_request req, caf::timespan budget, reply_slot_ptr slot) {
  self->send(worker_handle(worker), execute_atom::value, req_id, std::move(req), budget,
             std::move(slot));
}

/// Pool -> worker: run one streaming call whose chunks and end go into `sink`.
template<class Self>
void send_stream(Self* self, const caf::actor& worker, uint64_t req_id,
                 execute_request req, caf::timespan budget, stream_sink_ptr sink) {
  self->send(worker_handle(worker), stream_atom::value, req_id, std::move(req), budget,
             std::move(sink));
}

/// Pool -> worker: the Python telemetry settings in `worker_env` changed; the
/// worker writes them on its StreamTelemetry.
template<class Self>
void send_python_telemetry(Self* self, const caf::actor& worker) {
  self->send(worker_handle(worker), python_telemetry_atom::value);
}

} // namespace snakepit::actors
