#include "actors/distribution/gateway.hpp"

#include <map>
#include <set>
#include <utility>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/atoms.hpp"
#include "actors/distribution/wire.hpp"
#include "actors/pool/pool.hpp"
#include "adapters/errors.hpp"

namespace snakepit::distribution {

namespace {

/// Gateway-internal: the load timer fired.
using load_tick_atom = caf::atom_constant<caf::atom("loadtick")>;

/// How long past a call's own budget the gateway waits for its pool: the pool
/// always answers by the deadline (timeout), this only guards against a pool
/// that died with the call.
constexpr auto pool_reply_margin = std::chrono::seconds{2};

struct gateway_state {
  gateway_options opts;
  /// Connected hosts (their node links), monitored.
  std::set<caf::actor> hosts;
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

caf::behavior gateway(gateway_actor* self, gateway_options opts) {
  self->state.opts = std::move(opts);
  self->set_down_handler([self](caf::down_msg& dm) {
    self->state.hosts.erase(caf::actor_cast<caf::actor>(dm.source));
  });
  refresh_loads(self);
  self->delayed_send(self, self->state.opts.load_interval, load_tick_atom::value);
  return {
    [self](node_hello_atom, node_hello& theirs) -> caf::result<node_hello> {
      if (auto err = check_hello(theirs))
        return err;
      auto host = caf::actor_cast<caf::actor>(self->current_sender());
      if (host && self->state.hosts.insert(host).second)
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
        return failed(with_correlation_id(
          make_error(errc::pool_not_found, fmt::format("{} on node {}", call.pool,
                                                       self->state.opts.node_name())),
          call.correlation_id));
      auto rp = self->make_response_promise<remote_result>();
      auto budget = req->opts.timeout;
      auto cid = call.correlation_id;
      actors::execute(self, actors::pool_handle(hdl), std::move(*req),
                      budget + pool_reply_margin)
        .then(
          [rp](execute_reply& reply) mutable {
            rp.deliver(to_remote(execute_result{std::move(reply)}));
          },
          [rp, cid](caf::error& err) mutable {
            if (err == caf::sec::request_timeout)
              err = make_error(errc::timeout, "the node's pool did not answer in time");
            rp.deliver(failed(with_correlation_id(std::move(err), cid)));
          });
      return rp;
    },
    [self](load_tick_atom) {
      auto loads = current_loads(self);
      for (auto& host : self->state.hosts)
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
