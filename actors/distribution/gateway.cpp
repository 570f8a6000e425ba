#include "actors/distribution/gateway.hpp"

#include <map>
#include <memory>
#include <set>
#include <utility>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/atoms.hpp"
#include "actors/distribution/wire.hpp"
#include "actors/pool/pool.hpp"
#include "actors/pool/stream_sink.hpp"
#include "adapters/errors.hpp"

namespace snakepit::distribution {

namespace {

/// Gateway-internal: the load timer fired.
using load_tick_atom = caf::atom_constant<caf::atom("loadtick")>;
/// Gateway-internal: a stream's budget is spent (host, id).
using stream_expiry_atom = caf::atom_constant<caf::atom("gwexpire")>;
/// Gateway-internal: a call of a host ended (host, call number).
using call_done_atom = caf::atom_constant<caf::atom("gwcalldone")>;
/// Gateway-internal: a call's budget and margin are spent (host, call number).
using call_guard_atom = caf::atom_constant<caf::atom("gwcallgrd")>;

/// A stream run for a host: chunks go to the host's link as JSON text, at most
/// the host's window of them unacknowledged.
class remote_stream_sink final : public actors::windowed_stream_sink {
 public:
  remote_stream_sink(caf::actor host, uint64_t id, uint32_t window)
    : windowed_stream_sink(window), host_(std::move(host)), id_(id) {}

 protected:
  void emit_chunk(json chunk, bool is_final) override {
    caf::anon_send(host_, node_chunk_atom::value, id_, chunk.dump(), is_final);
  }

  void emit_end(caf::error err) override {
    caf::anon_send(host_, node_end_atom::value, id_, std::move(err));
  }

 private:
  caf::actor host_;
  uint64_t id_;
};

/// A host's call running on a local pool.
struct pending_call {
  caf::typed_response_promise<remote_result> rp;
  /// Set when the host goes away: a call still queued is dropped, never run.
  std::shared_ptr<std::atomic<bool>> abandoned;
  std::string correlation_id;
};

/// What the gateway runs for one connected host.
struct host_work {
  /// Streams by the host's id (weak: the worker running one holds it).
  std::map<uint64_t, std::weak_ptr<remote_stream_sink>> streams;
  /// Calls by the gateway's number.
  std::map<uint64_t, pending_call> calls;
};

/// How long past a call's own budget the gateway waits for its pool: the pool
/// always answers by the deadline (timeout), this only guards against a pool
/// that died with the call.
constexpr auto pool_reply_margin = std::chrono::seconds{2};

struct gateway_state {
  gateway_options opts;
  /// Connected hosts (their node links), monitored, and what runs for each.
  std::map<caf::actor, host_work> hosts;
  uint64_t next_call = 0;
  /// The latest load of each local pool.
  std::map<std::string, pool_load> loads;
  static inline const char* name = "snakepit.node_gateway";
};

using gateway_actor = caf::stateful_actor<gateway_state>;

pool_load load_of(const pool_stats& s, int64_t request_timeout_ms) {
  pool_load out;
  out.pool = s.pool;
  out.capacity = static_cast<uint32_t>(s.capacity);
  out.load = static_cast<uint32_t>(s.in_flight);
  out.queued = static_cast<uint32_t>(s.queue_depth);
  out.request_timeout_ms = request_timeout_ms;
  return out;
}

std::vector<pool_load> current_loads(gateway_actor* self) {
  std::vector<pool_load> out;
  for (auto& name : self->state.opts.pool_names()) {
    auto i = self->state.loads.find(name);
    if (i != self->state.loads.end())
      out.push_back(i->second);
    else
      out.push_back(
        pool_load{name, 0, 0, 0, self->state.opts.request_timeout(name).count()});
  }
  return out;
}

/// Asks every local pool for its figures; each answer updates `loads`.
void refresh_loads(gateway_actor* self) {
  for (auto& name : self->state.opts.pool_names()) {
    auto hdl = self->state.opts.find_pool(name);
    if (!hdl)
      continue;
    auto timeout_ms = self->state.opts.request_timeout(name).count();
    actors::get_stats(self, actors::pool_handle(hdl), std::chrono::seconds{1})
      .then([self, timeout_ms](
              pool_stats& s) { self->state.loads[s.pool] = load_of(s, timeout_ms); },
            [](caf::error&) {
              // A pool restarting now: its next report comes with the next tick.
            });
  }
}

remote_result failed(caf::error err) {
  remote_result out;
  out.error = std::move(err);
  return out;
}

/// Answers call `n` of `host` with `res` (the first answer counts: the pool's, or
/// the guard's when the pool never answered).
void answer(gateway_actor* self, const caf::actor& host, uint64_t n, remote_result res) {
  auto i = self->state.hosts.find(host);
  if (i == self->state.hosts.end())
    return;
  auto j = i->second.calls.find(n);
  if (j == i->second.calls.end())
    return;
  if (res.error)
    res.error = with_correlation_id(std::move(res.error), j->second.correlation_id);
  j->second.rp.deliver(std::move(res));
  i->second.calls.erase(j);
}

caf::error not_here(gateway_actor* self, const remote_call& call) {
  return with_correlation_id(
    make_error(errc::pool_not_found,
               fmt::format("{} on node {}", call.pool, self->state.opts.node_name())),
    call.correlation_id);
}

/// The sender's stream `id`, if it still runs.
std::shared_ptr<remote_stream_sink> find_stream(gateway_actor* self, uint64_t id) {
  auto host = caf::actor_cast<caf::actor>(self->current_sender());
  auto i = self->state.hosts.find(host);
  if (i == self->state.hosts.end())
    return nullptr;
  return actors::find_live(i->second.streams, id);
}

/// Runs stream `id` of the sender (a connected host) on the local pool; its
/// chunks and end go back to the sender, its budget counts from now.
void open_stream(gateway_actor* self, uint64_t id, const remote_call& call,
                 uint32_t window) {
  auto host = caf::actor_cast<caf::actor>(self->current_sender());
  auto i = self->state.hosts.find(host);
  if (i == self->state.hosts.end())
    return; // no handshake: nobody to stream to
  auto end_now = [&](caf::error err) {
    self->send(host, node_end_atom::value, id, std::move(err));
  };
  auto req = from_remote(call);
  if (!req)
    return end_now(std::move(req.error()));
  auto hdl = self->state.opts.find_pool(call.pool);
  if (!hdl)
    return end_now(not_here(self, call));
  auto& streams = i->second.streams;
  actors::forget_ended(streams);
  auto sink = std::make_shared<remote_stream_sink>(host, id, window);
  streams[id] = sink;
  // The deadline holds even while the host sends no acks.
  self->delayed_send(self, req->opts.timeout, stream_expiry_atom::value, host, id);
  actors::stream_to(actors::pool_handle(hdl), std::move(*req),
                    actors::stream_sink_ptr{std::move(sink)});
}

caf::behavior gateway(gateway_actor* self, gateway_options opts) {
  self->state.opts = std::move(opts);
  // A host that went away: its streams stop and its queued calls are dropped, so
  // that nothing of it keeps a worker busy (a running call ends by its deadline).
  self->set_down_handler([self](caf::down_msg& dm) {
    auto i = self->state.hosts.find(caf::actor_cast<caf::actor>(dm.source));
    if (i == self->state.hosts.end())
      return;
    for (auto& [id, weak] : i->second.streams)
      if (auto sink = weak.lock())
        sink->halt(false);
    for (auto& [n, call] : i->second.calls)
      call.abandoned->store(true);
    self->state.hosts.erase(i);
  });
  refresh_loads(self);
  self->delayed_send(self, self->state.opts.load_interval, load_tick_atom::value);
  return {
    [self](node_hello_atom, node_hello& theirs) -> caf::result<node_hello> {
      if (auto err = check_hello(theirs))
        return err;
      auto host = caf::actor_cast<caf::actor>(self->current_sender());
      if (host && self->state.hosts.emplace(host, host_work{}).second)
        self->monitor(host);
      node_hello mine;
      mine.node = self->state.opts.node_name();
      mine.pools = current_loads(self);
      return mine;
    },
    [self](node_call_atom, remote_call& call) -> caf::result<remote_result> {
      auto req = from_remote(call);
      if (!req)
        return failed(std::move(req.error()));
      auto hdl = self->state.opts.find_pool(call.pool);
      if (!hdl)
        return failed(not_here(self, call));
      auto host = caf::actor_cast<caf::actor>(self->current_sender());
      auto i = self->state.hosts.find(host);
      if (i == self->state.hosts.end())
        return failed(with_correlation_id(
          make_error(errc::protocol_error, "a call before the handshake"),
          call.correlation_id));
      auto n = ++self->state.next_call;
      callback_sink sink;
      i->second.calls.emplace(n,
                              pending_call{self->make_response_promise<remote_result>(),
                                           sink.abandoned, call.correlation_id});
      // The result comes back through the gateway (the callback runs on the pool's
      // or the transport's thread): one place answers, also after a guard fired.
      sink.fn = [gw = caf::actor_cast<caf::actor>(self), host, n](execute_result res) {
        caf::anon_send(gw, call_done_atom::value, host, n,
                       res ? to_remote(res) : failed(std::move(res.error())));
      };
      // The pool answers by the deadline; this guards against one that died with it
      // (its error is built only if it fires).
      self->delayed_send(self, req->opts.timeout + pool_reply_margin,
                         call_guard_atom::value, host, n);
      actors::execute_async(actors::pool_handle(hdl), std::move(*req), std::move(sink));
      return i->second.calls.at(n).rp;
    },
    [self](call_done_atom, const caf::actor& host, uint64_t n, remote_result& res) {
      answer(self, host, n, std::move(res));
    },
    [self](call_guard_atom, const caf::actor& host, uint64_t n) {
      answer(self, host, n,
             failed(make_error(errc::timeout, "the node's pool did not answer in time")));
    },
    [self](node_stats_atom, const std::string& pool) -> caf::result<remote_pool_figures> {
      auto hdl = self->state.opts.find_pool(pool);
      if (!hdl)
        return make_error(
          errc::pool_not_found,
          fmt::format("{} on node {}", pool, self->state.opts.node_name()));
      auto rp = self->make_response_promise<remote_pool_figures>();
      auto pa = actors::pool_handle(hdl);
      actors::get_stats(self, pa, std::chrono::seconds{2})
        .then(
          [self, rp, pa](pool_stats& stats) mutable {
            actors::list_workers(self, pa, std::chrono::seconds{2})
              .then(
                [rp, stats](std::vector<worker_info>& ws) mutable {
                  rp.deliver(to_remote(stats, ws));
                },
                [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
          },
          [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
      return rp;
    },
    [self](node_stream_atom, uint64_t id, remote_call& call, uint32_t window) {
      open_stream(self, id, call, window);
    },
    [self](node_ack_atom, uint64_t id, uint32_t n) {
      if (auto sink = find_stream(self, id))
        sink->ack(n);
    },
    [self](node_halt_atom, uint64_t id) {
      if (auto sink = find_stream(self, id))
        sink->halt(false);
    },
    [self](stream_expiry_atom, const caf::actor& host, uint64_t id) {
      auto i = self->state.hosts.find(host);
      if (i == self->state.hosts.end())
        return;
      if (auto j = i->second.streams.find(id); j != i->second.streams.end()) {
        if (auto sink = j->second.lock(); sink && !sink->ended())
          sink->halt(true);
        i->second.streams.erase(j);
      }
    },
    [self](load_tick_atom) {
      auto loads = current_loads(self);
      for (auto& [host, work] : self->state.hosts)
        self->send(host, node_load_atom::value, loads);
      refresh_loads(self);
      self->delayed_send(self, self->state.opts.load_interval, load_tick_atom::value);
    },
  };
}

} // namespace

caf::actor spawn_gateway(caf::actor_system& sys, gateway_options opts) {
  return sys.spawn(gateway, std::move(opts));
}

} // namespace snakepit::distribution
