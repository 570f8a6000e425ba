// Message atoms of the snakepit actors (pool, worker, worker_starter, runtime).
// Each mirrors one Elixir message of upstream Snakepit: GenServer calls became CAF
// requests, casts became sends, Process.send_after became delayed_send.
#pragma once

#include <caf/atom.hpp>

namespace snakepit::actors {

/// {:execute, cmd, args, opts} — a caller asks the pool (and the pool a worker) to run a
/// tool.
using execute_atom = caf::atom_constant<caf::atom("execute")>;
/// The same, with a callback sink instead of a response promise (facade fast path).
using execute_cb_atom = caf::atom_constant<caf::atom("executecb")>;
/// Worker -> pool: the outcome of one request.
using result_atom = caf::atom_constant<caf::atom("result")>;
/// {:worker_ready, id} — a worker finished its handshake (ready file + Ping).
using worker_ready_atom = caf::atom_constant<caf::atom("wrkready")>;
/// Pool-internal: one of the pool core's timers fired (queue timeout, retry
/// backoff, circuit probe, taint expiry, lifecycle check; see pool_timer).
using pool_timer_atom = caf::atom_constant<caf::atom("pooltimer")>;
/// Pool readiness: replies once the pool has at least one ready worker.
using await_ready_atom = caf::atom_constant<caf::atom("awaitready")>;
/// Statistics of a pool.
using get_stats_atom = caf::atom_constant<caf::atom("getstats")>;
/// Worker listing of a pool.
using list_workers_atom = caf::atom_constant<caf::atom("listwrk")>;
/// Pool-internal: start the next batch of workers.
using spawn_workers_atom = caf::atom_constant<caf::atom("spawnwrk")>;
/// A streaming call (upstream execute_stream): host -> pool -> worker.
using stream_atom = caf::atom_constant<caf::atom("stream")>;
/// Actor API: one chunk of a stream (json chunk, bool is_final).
using stream_chunk_atom = caf::atom_constant<caf::atom("strchunk")>;
/// Actor API: the end of a stream (caf::error, none when clean).
using stream_end_atom = caf::atom_constant<caf::atom("strend")>;
/// Actor API, windowed streams: host -> pool, `n` chunks of stream `id` consumed
/// (stream_ack_atom, uint64_t id, uint32_t n); the pool lets that many more through.
using stream_ack_atom = caf::atom_constant<caf::atom("strack")>;
/// Actor API, windowed streams: host -> pool, stop stream `id` now (its end follows
/// with no error); pool-internal with `true` when the stream's deadline passed.
using stream_halt_atom = caf::atom_constant<caf::atom("strhalt")>;
/// Pool-internal: ask the tool registry for the tools its workers registered.
using refresh_tools_atom = caf::atom_constant<caf::atom("refrtools")>;
/// Worker -> pool: its process exited unexpectedly (worker id, exit code, signal),
/// sent just before the worker quits, for crash classification.
using worker_exit_atom = caf::atom_constant<caf::atom("wrkexit")>;
/// Worker -> pool: a start (or restart) failed (worker id, reason).
using worker_start_failed_atom = caf::atom_constant<caf::atom("wrkstfail")>;
/// Pool: recycle a worker now (worker id) -> ok_atom | error(invalid_argument).
using recycle_atom = caf::atom_constant<caf::atom("recycle")>;
/// Runtime -> pool -> worker: the Python telemetry settings changed (worker_env);
/// each worker sends them on its StreamTelemetry.
using python_telemetry_atom = caf::atom_constant<caf::atom("pytelem")>;
/// Pool: enter shutdown; reject new work with shutting_down.
using drain_atom = caf::atom_constant<caf::atom("drain")>;
/// A blocking caller freed a worker's slot in the checkout table while the pool
/// must hear of it (table closed, slot withdrawn, request limit reached).
using lane_done_atom = caf::atom_constant<caf::atom("lanedone")>;
/// Session store -> pool: a session expired or was cleaned up; forget its worker.
using session_forget_atom = caf::atom_constant<caf::atom("sessforg")>;
/// Pool: change the number of workers (size_t) -> ok_atom | error(invalid_argument,
/// shutting_down).
using resize_atom = caf::atom_constant<caf::atom("resize")>;
/// Pool: how a worker's initialisation stands (worker id) -> worker_init_status.
using init_status_atom = caf::atom_constant<caf::atom("initstat")>;

} // namespace snakepit::actors
