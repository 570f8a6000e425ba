#include "actors/runtime/detail/pool_router.hpp"

#include <algorithm>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/atoms.hpp"
#include "actors/distribution/node_link.hpp"
#include "actors/distribution/wire.hpp"
#include "actors/observability/metrics.hpp"
#include "actors/pool/detail/stream_sinks.hpp"
#include "actors/pool/pool.hpp"
#include "actors/runtime/detail/runtime_impl.hpp"
#include "adapters/errors.hpp"

namespace snakepit::detail {

namespace {

/// Router-internal: the reply of call `n` placed on a node.
using router_reply_atom = caf::atom_constant<caf::atom("rtreply")>;
/// Router-internal: windowed stream `id`'s budget is spent.
using router_expire_atom = caf::atom_constant<caf::atom("rtexpire")>;

/// How long the nodes have to send a pool's figures (each link gives its node
/// 5 s and then answers node_down itself).
constexpr auto figures_timeout = std::chrono::seconds{6};

using windowed_sink = actors::detail::windowed_actor_stream_sink;

struct router_state {
  std::string pool;
  std::shared_ptr<router_hub> hub;
  uint64_t next_call = 0;
  /// Requests placed on a node, answered when its link calls back.
  std::unordered_map<uint64_t, caf::typed_response_promise<execute_reply>> calls;
  uint64_t next_stream = 0;
  /// Windowed streams by the id their caller acknowledges (weak: the pool or
  /// link running one holds it).
  std::unordered_map<uint64_t, std::weak_ptr<windowed_sink>> streams;
  static inline const char* name = "snakepit.pool_router";
};

using router_actor = caf::stateful_actor<router_state>;

/// Where a call goes, with its budget; or why nowhere.
struct placement {
  caf::actor hdl;
  bool local = true;
  std::chrono::milliseconds budget{0};
  caf::error error;
};

caf::error stopped_error(const std::string& correlation_id = {}) {
  return with_correlation_id(make_error(errc::shutting_down, "the runtime is stopped"),
                             correlation_id);
}

/// Places `req` as `runtime::execute` does; names its pool, and fixes a node
/// call's budget (which travels with it).
placement place(router_actor* self, execute_request& req) {
  auto& st = self->state;
  std::shared_lock<std::shared_mutex> guard{st.hub->mtx};
  auto* rt = st.hub->rt;
  if (!rt || rt->stopped)
    return {nullptr, true, {}, stopped_error(req.opts.correlation_id)};
  req.opts.pool = st.pool;
  auto target = rt->route(req.opts);
  if (target.error)
    return {nullptr, true, {}, std::move(target.error)};
  if (!target.hdl)
    return {nullptr,
            true,
            {},
            with_correlation_id(rt->pool_missing(st.pool), req.opts.correlation_id)};
  auto budget =
    target.local ? rt->request_budget(req.opts) : rt->remote_budget(req.opts, target);
  return {std::move(target.hdl), target.local, budget, {}};
}

/// The local pool of the router's name (null: none, or the runtime stopped).
caf::actor local_pool(router_actor* self) {
  auto& st = self->state;
  std::shared_lock<std::shared_mutex> guard{st.hub->mtx};
  return st.hub->rt && !st.hub->rt->stopped ? st.hub->rt->find_pool(st.pool)
                                            : caf::actor{};
}

/// Why a pool with no local part cannot be asked: the runtime stopped, or no
/// connected node serves it.
caf::error missing(router_actor* self) {
  auto& st = self->state;
  std::shared_lock<std::shared_mutex> guard{st.hub->mtx};
  return st.hub->rt && !st.hub->rt->stopped ? st.hub->rt->pool_missing(st.pool)
                                            : stopped_error();
}

/// The connected nodes serving the pool, with their links.
std::vector<std::pair<std::string, caf::actor>> serving(router_actor* self) {
  auto& st = self->state;
  std::shared_lock<std::shared_mutex> guard{st.hub->mtx};
  if (!st.hub->rt || st.hub->rt->stopped)
    return {};
  auto dir = st.hub->rt->node_dir();
  if (!dir)
    return {};
  return dir->serving(st.pool);
}

caf::error node_only(router_actor* self, const char* what) {
  return make_error(errc::invalid_argument,
                    fmt::format("pool {} runs on nodes only: {} it on its nodes (their "
                                "configuration sizes and recycles their workers)",
                                self->state.pool, what));
}

/// Asks every connected node serving the pool for its figures and answers with
/// `combine(figures by node, in configuration order)` once all answered; the
/// nodes that fail are left out, and when none answers the first error is the
/// answer.
template<class T, class Combine>
caf::result<T> gather(router_actor* self, Combine combine) {
  auto links = serving(self);
  if (links.empty())
    return missing(self);
  struct pending {
    caf::typed_response_promise<T> rp;
    size_t left;
    std::vector<
      std::pair<size_t, std::pair<std::string, distribution::remote_pool_figures>>>
      got;
    caf::error first_error;
  };
  auto g = std::make_shared<pending>(
    pending{self->make_response_promise<T>(), links.size(), {}, {}});
  auto done = [g, combine]() mutable {
    if (--g->left > 0)
      return;
    if (g->got.empty()) {
      g->rp.deliver(std::move(g->first_error));
      return;
    }
    std::sort(g->got.begin(), g->got.end(),
              [](auto& x, auto& y) { return x.first < y.first; });
    std::vector<std::pair<std::string, distribution::remote_pool_figures>> figures;
    for (auto& entry : g->got)
      figures.push_back(std::move(entry.second));
    caf::expected<T> out = combine(figures);
    if (out)
      g->rp.deliver(std::move(*out));
    else
      g->rp.deliver(std::move(out.error()));
  };
  for (size_t i = 0; i < links.size(); ++i) {
    auto node = links[i].first;
    self
      ->request(links[i].second, figures_timeout, distribution::node_stats_atom::value,
                self->state.pool)
      .then(
        [g, i, node, done](distribution::remote_pool_figures& x) mutable {
          g->got.emplace_back(i, std::make_pair(node, std::move(x)));
          done();
        },
        [g, done](caf::error& err) mutable {
          if (!g->first_error)
            g->first_error = std::move(err);
          done();
        });
  }
  return g->rp;
}

caf::expected<pool_stats> sum_figures(
  const std::string& pool,
  const std::vector<std::pair<std::string, distribution::remote_pool_figures>>& xs) {
  std::vector<pool_stats> each;
  for (auto& [node, x] : xs) {
    auto s = distribution::stats_of(x);
    if (!s)
      return s.error();
    each.push_back(std::move(*s));
  }
  auto out = sum_stats(each);
  out.pool = pool;
  return out;
}

std::vector<worker_info> all_workers(
  const std::vector<std::pair<std::string, distribution::remote_pool_figures>>& xs) {
  std::vector<worker_info> out;
  for (auto& [node, x] : xs) {
    auto ws = distribution::workers_of(x, node);
    out.insert(out.end(), std::make_move_iterator(ws.begin()),
               std::make_move_iterator(ws.end()));
  }
  return out;
}

/// Windowed stream `id` if it still runs.
std::shared_ptr<windowed_sink> find_stream(router_actor* self, uint64_t id) {
  return actors::find_live(self->state.streams, id);
}

caf::behavior pool_router(router_actor* self, std::string pool,
                          std::shared_ptr<router_hub> hub) {
  self->state.pool = std::move(pool);
  self->state.hub = std::move(hub);
  self->set_exit_handler([self](caf::exit_msg& em) {
    for (auto& [n, rp] : self->state.calls)
      rp.deliver(stopped_error());
    self->state.calls.clear();
    self->quit(em.reason);
  });
  return {
    [self](actors::execute_atom, execute_request& req) -> caf::result<execute_reply> {
      auto to = place(self, req);
      if (to.error)
        return std::move(to.error);
      if (to.local)
        return self->delegate(actors::pool_handle(to.hdl), actors::execute_atom::value,
                              std::move(req));
      auto n = ++self->state.next_call;
      auto rp = self->make_response_promise<execute_reply>();
      self->state.calls.emplace(n, rp);
      callback_sink sink;
      sink.fn = [me = caf::actor_cast<caf::actor>(self), n](execute_result res) {
        caf::anon_send(me, router_reply_atom::value, n, std::move(res));
      };
      caf::anon_send(to.hdl, actors::execute_cb_atom::value, std::move(req),
                     std::move(sink));
      return rp;
    },
    [self](router_reply_atom, uint64_t n, execute_result& res) {
      auto i = self->state.calls.find(n);
      if (i == self->state.calls.end())
        return;
      if (res)
        i->second.deliver(std::move(*res));
      else
        i->second.deliver(std::move(res.error()));
      self->state.calls.erase(i);
    },
    [self](actors::execute_cb_atom, execute_request& req, callback_sink& sink) {
      auto to = place(self, req);
      if (to.error) {
        if (sink.fn)
          sink.fn(std::move(to.error));
        return;
      }
      caf::anon_send(to.hdl, actors::execute_cb_atom::value, std::move(req),
                     std::move(sink));
    },
    [self](actors::stream_atom, execute_request& req, actors::stream_sink_ptr& sink) {
      auto to = place(self, req);
      if (to.error) {
        sink->end(std::move(to.error));
        return;
      }
      caf::anon_send(to.hdl, actors::stream_atom::value, std::move(req), std::move(sink));
    },
    [self](actors::stream_atom, execute_request& req) {
      auto sender = caf::actor_cast<caf::actor>(self->current_sender());
      if (!sender)
        return;
      auto to = place(self, req);
      if (to.error) {
        caf::anon_send(sender, actors::stream_end_atom::value, std::move(to.error));
        return;
      }
      caf::anon_send(to.hdl, actors::stream_atom::value, std::move(req),
                     actors::stream_sink_ptr{
                       std::make_shared<actors::detail::actor_stream_sink>(sender)});
    },
    [self](actors::stream_atom, execute_request& req, uint32_t window) {
      auto sender = caf::actor_cast<caf::actor>(self->current_sender());
      if (!sender)
        return;
      auto& streams = self->state.streams;
      actors::forget_ended(streams);
      // The router numbers the stream whichever pool runs it: acknowledgements
      // come here, and ids of different pools or nodes never meet.
      auto id = self->state.next_stream++;
      auto sink =
        std::make_shared<windowed_sink>(sender, id, std::max<uint32_t>(window, 1));
      auto to = place(self, req);
      if (to.error) {
        sink->end(std::move(to.error));
        return;
      }
      streams.emplace(id, sink);
      // The deadline holds even while the caller sends no acks.
      self->delayed_send(self, to.budget, router_expire_atom::value, id);
      caf::anon_send(to.hdl, actors::stream_atom::value, std::move(req),
                     actors::stream_sink_ptr{std::move(sink)});
    },
    [self](actors::stream_ack_atom, uint64_t id, uint32_t n) {
      if (auto sink = find_stream(self, id))
        sink->ack(n);
    },
    [self](actors::stream_halt_atom, uint64_t id) {
      if (auto sink = find_stream(self, id))
        sink->halt(false);
    },
    [self](router_expire_atom, uint64_t id) {
      if (auto sink = find_stream(self, id); sink && !sink->ended())
        sink->halt(true);
      self->state.streams.erase(id);
    },
    [self](actors::await_ready_atom) -> caf::result<caf::ok_atom> {
      if (auto local = local_pool(self))
        return self->delegate(actors::pool_handle(local),
                              actors::await_ready_atom::value);
      if (!serving(self).empty())
        return caf::ok_atom::value;
      return missing(self);
    },
    [self](actors::get_stats_atom) -> caf::result<pool_stats> {
      if (auto local = local_pool(self))
        return self->delegate(actors::pool_handle(local), actors::get_stats_atom::value);
      return gather<pool_stats>(
        self, [pool = self->state.pool](auto& xs) { return sum_figures(pool, xs); });
    },
    [self](actors::list_workers_atom) -> caf::result<std::vector<worker_info>> {
      if (auto local = local_pool(self))
        return self->delegate(actors::pool_handle(local),
                              actors::list_workers_atom::value);
      return gather<std::vector<worker_info>>(self, [](auto& xs) {
        return caf::expected<std::vector<worker_info>>{all_workers(xs)};
      });
    },
    [self](actors::init_status_atom, std::string& id) -> caf::result<worker_init_status> {
      if (auto local = local_pool(self))
        return self->delegate(actors::pool_handle(local), actors::init_status_atom::value,
                              std::move(id));
      return node_only(self, "ask for a worker's start");
    },
    [self](actors::resize_atom, size_t n) -> caf::result<caf::ok_atom> {
      if (auto local = local_pool(self))
        return self->delegate(actors::pool_handle(local), actors::resize_atom::value, n);
      return node_only(self, "resize");
    },
    [self](actors::recycle_atom, std::string& id) -> caf::result<caf::ok_atom> {
      if (auto local = local_pool(self))
        return self->delegate(actors::pool_handle(local), actors::recycle_atom::value,
                              std::move(id));
      return node_only(self, "recycle workers of");
    },
    [self](actors::drain_atom) -> caf::result<caf::ok_atom> {
      if (auto local = local_pool(self))
        return self->delegate(actors::pool_handle(local), actors::drain_atom::value);
      return node_only(self, "drain");
    },
    [self](actors::python_telemetry_atom) {
      if (auto local = local_pool(self))
        actors::push_python_telemetry(actors::pool_handle(local));
    },
  };
}

} // namespace

caf::actor spawn_pool_router(caf::actor_system& sys, std::string pool,
                             std::shared_ptr<router_hub> hub) {
  return sys.spawn(pool_router, std::move(pool), std::move(hub));
}

} // namespace snakepit::detail

namespace snakepit {

caf::actor runtime::impl::router(const std::string& name) const {
  auto pool = pool_name(name);
  if (stopped || cfg.nodes.empty() || !routers_hub)
    return nullptr;
  auto dir = node_dir();
  if (!dir || (!find_pool(pool) && !dir->serves(pool)))
    return nullptr;
  std::lock_guard<std::mutex> guard{routers_mtx};
  auto& hdl = routers[pool];
  if (!hdl)
    hdl = detail::spawn_pool_router(*sys, pool, routers_hub);
  return hdl;
}

void runtime::impl::stop_routers() {
  if (routers_hub) {
    std::unique_lock<std::shared_mutex> guard{routers_hub->mtx};
    routers_hub->rt = nullptr;
  }
  std::map<std::string, caf::actor> gone;
  {
    std::lock_guard<std::mutex> guard{routers_mtx};
    gone.swap(routers);
  }
  for (auto& [name, hdl] : gone)
    caf::anon_send_exit(hdl, caf::exit_reason::user_shutdown);
}

} // namespace snakepit
