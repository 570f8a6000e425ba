// Issuing one call on a worker's gRPC channel and reporting its outcome, from
// whichever actor holds the channel: the worker actor for the calls it is sent, or
// the pool for calls it issues itself without a hop through the worker actor.
// Mirrors the task upstream's GRPCWorker starts per execute (reply, then checkin).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <caf/actor.hpp>

#include "actors/pool/reply_slot.hpp"
#include "actors/pool/stream_sink.hpp"
#include "actors/types.hpp"
#include "actors/worker/worker.hpp"
#include "adapters/connection.hpp"
#include "adapters/log.hpp"

namespace snakepit {
class adapter;
} // namespace snakepit

namespace snakepit::telemetry {
class bus;
} // namespace snakepit::telemetry

namespace snakepit::actors {

/// One ready worker as the issuer of a call sees it. Cheap to copy; built by the
/// worker actor when it is ready, and by the pool from `worker_ready_atom` (id,
/// handle, channel) plus its own name, handle, log and telemetry bus.
struct worker_channel {
  /// The worker's id: the reply's `worker_id`, log lines, `result_atom`.
  std::string worker_id;
  /// The pool's name, for log lines and events.
  std::string pool_name;
  /// Gets `result_atom, worker_id, req_id, outcome` for every call.
  caf::actor pool;
  /// Gets `rpc_failed_atom` for a call that failed in transport.
  worker_actor worker;
  /// The worker's connection (lent in `worker_ready_atom`).
  adapters::connection_ptr client;
  /// The runtime's log (never null).
  adapters::logger_ptr log = adapters::logger::null();
  /// The runtime's telemetry bus (`snakepit.stream.chunk`); may be null.
  std::shared_ptr<telemetry::bus> telemetry;
  /// The pool's host adapter: `process_response` shapes every result; may be null.
  std::shared_ptr<const adapter> host_adapter;
};

/// Issues one ExecuteTool call for request `req_id` on `ch` and reports it.
///
/// Threads: call it from any thread but a gRPC runtime thread; it returns at once.
/// The completion runs on a gRPC runtime thread (at once on the calling thread when
/// the gRPC runtime has shut down).
///
/// Reporting, the same for every issuer: `request dispatched` now and `request
/// completed` / `request failed` at the end (request_trace.hpp); the reply carries
/// `worker_id`, an error the call's correlation id. Then, unless the call failed in
/// transport:
/// - with `slot`: the completion claims the slot, gives the worker's lane slot back,
///   sends the pool `result_atom` with a summary (the outcome without its payload)
///   and only then answers the caller, so the caller's next call finds the worker
///   free; if the pool claimed the slot first (the worker died), it answers instead;
/// - without `slot`: the pool gets `result_atom` with the outcome and answers.
///
/// A transport failure (`transport_failure`) goes to `ch.worker` as
/// `rpc_failed_atom`, whoever issued the call: the worker looks whether its process
/// is gone (at once, and again after 100 ms) and sends the pool `result_atom` with
/// `worker_crashed` or with the failure. If the worker is gone by then, the message
/// is dropped and the pool fails the call on the worker's `down_msg`, as it does for
/// every call it still holds; so the pool must keep the call in its books until
/// `result_atom` or that `down_msg`, exactly as for calls it sends the worker.
///
/// The worker needs to hear nothing per call: stop and crash reach every call on
/// the channel (a crash cancels them with `worker_connection::cancel_all`; a graceful
/// stop lets them finish within the grace period, after which the process exits and
/// they fail in transport).
///
/// What the issuer checks first: the worker actor issues only while it is ready
/// (else the pool gets `not_ready`); the pool issues only on a worker it holds as
/// ready and has not retired. A call the pool issues while the worker has begun a
/// stop the pool has not seen yet runs like a call in flight at that moment.
void issue_execute(const worker_channel& ch, uint64_t req_id, execute_request req,
                   caf::timespan budget, reply_slot_ptr slot);

/// Issues one ExecuteStreamingTool call: the same contract as `issue_execute`,
/// with `sink` in place of the slot (chunks go into it on the gRPC thread, with a
/// `snakepit.stream.chunk` event each while the bus has listeners; the end claims
/// it), and the stream's control attached to the sink before this returns.
void issue_stream(const worker_channel& ch, uint64_t req_id, execute_request req,
                  caf::timespan budget, stream_sink_ptr sink);

} // namespace snakepit::actors
