#include "actors/worker/worker_rpc.hpp"

#include <chrono>
#include <utility>

#include <caf/send.hpp>

#include "actors/atoms.hpp"
#include "actors/observability/telemetry.hpp"
#include "actors/pool/adapter.hpp"
#include "actors/worker/request_trace.hpp"

namespace snakepit::actors {

namespace {

/// The prologue every call shares, unary or streaming: the wire call and its log.
struct prepared_call {
  adapters::tool_call call;
  request_log log;
};

prepared_call prepare(const worker_channel& ch, execute_request req, bool streaming) {
  auto call = to_tool_call(std::move(req));
  request_log rlog{ch.log,
                   ch.pool_name,
                   ch.worker_id,
                   call.tool_name,
                   call.correlation_id,
                   call.session_id,
                   streaming,
                   std::chrono::steady_clock::now()};
  rlog.dispatched();
  return prepared_call{std::move(call), std::move(rlog)};
}

/// The gRPC deadline of a call: its remaining budget (tools see it as `timeout_ms`).
std::chrono::milliseconds deadline_of(caf::timespan budget) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(budget);
}

/// Where a call's completion reports, copied into it.
struct call_reporter {
  caf::actor pool;
  worker_actor worker;
  std::string worker_id;
  uint64_t req_id = 0;

  void to_pool(execute_result res) const {
    caf::anon_send(pool, result_atom::value, worker_id, req_id, std::move(res));
  }

  /// A broken connection goes through the worker actor, which tells a crash from
  /// a hiccup (is its process gone?).
  void to_worker(execute_result res) const {
    caf::anon_send(worker, rpc_failed_atom::value, req_id, std::move(res));
  }
};

call_reporter reporter_of(const worker_channel& ch, uint64_t req_id) {
  return call_reporter{ch.pool, ch.worker, ch.worker_id, req_id};
}

/// The end of a unary call, on the gRPC thread.
void finish_execute(const call_reporter& rep, const reply_slot_ptr& slot,
                    execute_result out) {
  if (!out && transport_failure(out.error())) {
    rep.to_worker(std::move(out));
    return;
  }
  if (!slot) {
    rep.to_pool(std::move(out));
    return;
  }
  // Fast path: answer the caller from this thread, the pool's books first: the
  // caller's next request cannot overtake this checkin (it is sent after the reply
  // below), so the worker is free again when that request arrives, which affinity
  // relies on.
  auto summary = out ? execute_result{execute_reply{}} : execute_result{out.error()};
  auto mine = slot->claim(); // before the pool can: it must not answer first
  if (mine)
    slot->release_lane(); // the worker is free before the caller runs again
  rep.to_pool(std::move(summary));
  if (mine && slot->fn)
    slot->fn(std::move(out));
}

/// The end of a stream, on the gRPC thread (as `finish_execute`, with the sink).
void finish_stream(const call_reporter& rep, const stream_sink_ptr& sink,
                   caf::error err) {
  execute_result summary = err ? execute_result{err} : execute_result{execute_reply{}};
  if (err && transport_failure(err)) {
    rep.to_worker(std::move(summary));
    return;
  }
  auto mine = sink->claim_end(); // before the pool can (see finish_execute)
  rep.to_pool(std::move(summary));
  if (mine)
    sink->on_end(std::move(err));
}

/// Feeds a stream's chunks into its sink, with `snakepit.stream.chunk` per chunk
/// while someone listens (one load when nobody does).
struct chunk_relay {
  stream_sink_ptr sink;
  std::shared_ptr<telemetry::bus> bus;
  json metadata;
  uint64_t n = 0;

  adapters::stream_step operator()(json chunk, bool is_final) {
    ++n;
    if (bus && bus->active()) {
      auto meta = metadata;
      meta["is_final"] = is_final;
      bus->emit("snakepit.stream.chunk", {{"index", n}}, std::move(meta));
    }
    return sink->on_chunk(std::move(chunk), is_final);
  }
};

} // namespace

void issue_execute(const worker_channel& ch, uint64_t req_id, execute_request req,
                   caf::timespan budget, reply_slot_ptr slot) {
  auto p = prepare(ch, std::move(req), false);
  auto command = p.call.tool_name;
  ch.client->execute(
    std::move(p.call), deadline_of(budget),
    [rep = reporter_of(ch, req_id), slot = std::move(slot), rlog = std::move(p.log),
     hooks = ch.host_adapter,
     command = std::move(command)](caf::expected<adapters::tool_reply> res) {
      rlog.done(res ? caf::error{} : res.error());
      execute_result out{caf::no_error};
      if (res)
        out = to_reply(std::move(*res), rep.worker_id);
      else
        out = with_correlation_id(std::move(res.error()), rlog.correlation_id);
      if (out && hooks)
        out->result = hooks->process_response(command, std::move(out->result));
      finish_execute(rep, slot, std::move(out));
    });
}

void issue_stream(const worker_channel& ch, uint64_t req_id, execute_request req,
                  caf::timespan budget, stream_sink_ptr sink) {
  auto p = prepare(ch, std::move(req), true);
  chunk_relay relay{sink, ch.telemetry,
                    json{{"pool", ch.pool_name},
                         {"worker_id", ch.worker_id},
                         {"correlation_id", p.call.correlation_id}}};
  auto ctl = ch.client->execute_stream(
    std::move(p.call), deadline_of(budget), std::move(relay),
    [rep = reporter_of(ch, req_id), sink, rlog = std::move(p.log)](caf::error err) {
      rlog.done(err);
      finish_stream(rep, sink, with_correlation_id(std::move(err), rlog.correlation_id));
    });
  sink->attach(std::move(ctl));
}

} // namespace snakepit::actors
