// The pool actor (upstream Snakepit.Pool): checkout/checkin of ready workers, a FIFO
// queue bounded by max_queue_size with per-request queue timeouts, crash handling
// for in-flight requests, concurrent worker startup and await_ready.
//
// Actor API (what a host actor sends; replies as given):
//   execute_atom, execute_request      -> execute_reply | error (snakepit::errc)
//   execute_cb_atom, execute_request, callback_sink   (reply through the callback)
//   await_ready_atom                   -> ok_atom | error(start_failed)
//   get_stats_atom                     -> pool_stats
//   list_workers_atom                  -> std::vector<worker_info>
//   recycle_atom, std::string id       -> ok_atom | error(invalid_argument)
//   drain_atom                         -> ok_atom (new work fails with shutting_down)
//   stream_atom, execute_request       (sender gets stream_chunk_atom, json, bool
//                                       is_final ... then stream_end_atom, error)
//   stream_atom, execute_request, uint32_t window
//                                      (chunks and end carry the stream id first; at
//                                       most `window` unacknowledged chunks)
//   stream_ack_atom, uint64_t id, uint32_t n    (n chunks of stream id consumed)
//   stream_halt_atom, uint64_t id               (stop it; a clean end follows)
#pragma once

#include <caf/actor.hpp>

#include "actors/config/config.hpp"
#include "actors/worker/worker_env.hpp"
#include "supervision/child_spec.hpp"

namespace snakepit::actors {

/// Child spec of one pool. It finds the worker supervisor under the process name
/// "worker_sup" in `env->names` and is registered as "pool:<name>" when spawned.
supervision::child_spec pool_spec(pool_config cfg, std::shared_ptr<const worker_env> env);

} // namespace snakepit::actors
