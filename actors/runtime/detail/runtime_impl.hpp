// The runtime's private state (`runtime::impl`), shared by the facade's facets
// (runtime.cpp, calls.cpp, sessions.cpp, tools.cpp, introspection.cpp): the
// configuration, the actor system, the context every worker shares, what each
// service owns, and the service stack that starts and stops them in order.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/scoped_actor.hpp>
#include <fmt/format.h>

#include "actors/observability/control.hpp"
#include "actors/pool/direct_lane.hpp"
#include "actors/runtime/detail/service_stack.hpp"
#include "actors/runtime/runtime.hpp"
#include "actors/sessions/bridge_server.hpp"
#include "actors/worker/worker_env.hpp"
#include "adapters/errors.hpp"
#include "adapters/process.hpp"
#include "adapters/process_registry.hpp"

namespace snakepit {

namespace detail {
struct router_hub;
} // namespace detail

struct runtime::impl {
  config cfg;
  start_options opts;
  std::unique_ptr<caf::actor_system_config> own_cfg;
  std::unique_ptr<caf::actor_system> own_sys;
  caf::actor_system* sys = nullptr;
  std::shared_ptr<actors::worker_env> env = std::make_shared<actors::worker_env>();

  /// What the services own (detail/services.hpp fills and empties these).
  std::optional<adapters::runtime_dir> dir;
  std::shared_ptr<adapters::process_registry> registry;
  std::unique_ptr<actors::bridge_server> bridge;
  caf::actor top;
  /// The node links' supervisor (null without `config::nodes`).
  caf::actor node_sup;
  actors::control_servers servers;

  /// In start order; `shutdown` stops them in reverse.
  detail::service_stack services;
  std::mutex stop_mtx;
  /// Set once the supervision tree begins to stop: calls then fail with shutting_down.
  std::atomic<bool> stopped{false};

  /// Guards `cfg.pools` once the runtime runs (pools are added and removed at run
  /// time: runtime::add_pool / remove_pool).
  mutable std::mutex pools_mtx;

  /// The pools' names, in configuration order (added ones last).
  std::vector<std::string> pool_names() const {
    std::lock_guard<std::mutex> guard{pools_mtx};
    std::vector<std::string> out;
    for (auto& p : cfg.pools)
      out.push_back(p.name);
    return out;
  }

  /// The first pool's name when `name` is empty.
  std::string pool_name(const std::string& name) const {
    if (!name.empty())
      return name;
    std::lock_guard<std::mutex> guard{pools_mtx};
    return cfg.pools.empty() ? std::string{} : cfg.pools.front().name;
  }

  bool has_pool(const std::string& name) const {
    std::lock_guard<std::mutex> guard{pools_mtx};
    for (auto& p : cfg.pools)
      if (p.name == name)
        return true;
    return false;
  }

  caf::actor find_pool(const std::string& name) const {
    return env->names->get("pool:" + pool_name(name));
  }

  /// The configured nodes and their loads (null without `config::nodes`, and
  /// once stopped); read and replaced with std::atomic_load / atomic_store.
  std::shared_ptr<distribution::node_directory> nodes;

  std::shared_ptr<distribution::node_directory> node_dir() const {
    return std::atomic_load(&nodes);
  }

  /// The pool routers `runtime::pool` handed out (with `config::nodes` only), and
  /// what they read of this runtime (detail/pool_router.hpp).
  std::shared_ptr<detail::router_hub> routers_hub;
  mutable std::mutex routers_mtx;
  mutable std::map<std::string, caf::actor> routers;

  /// The router of pool `name` (spawned on first use): null without nodes, once
  /// stopped, or when neither a local pool nor a node serves `name`.
  caf::actor router(const std::string& name) const;

  /// Stops the routers (their calls in flight fail with shutting_down) and cuts
  /// them off from this runtime.
  void stop_routers();

  /// Where a call goes.
  struct call_target {
    caf::actor hdl;    ///< the local pool or a node link; null: nowhere
    bool local = true; ///< `hdl` is the local pool
    std::chrono::milliseconds node_budget{0}; ///< the node pool's default budget
    std::string node;                         ///< the node's name when not local
    caf::error error; ///< why the call cannot go anywhere (with `hdl` null)
  };

  /// Placement (docs/distribution.md): the local pool while it has free capacity,
  /// else the node with the most (ties: the local pool, then configuration order);
  /// a pool only nodes serve goes to one of them. A session stays where its first
  /// call went; when that node is lost, `hint` places it afresh and the strict
  /// modes fail with session_worker_unavailable.
  call_target route(const execute_options& opts) const {
    auto name = pool_name(opts.pool);
    auto local = env->names->get("pool:" + name);
    // `cfg.nodes` never changes once started: a runtime without nodes pays no
    // shared_ptr atomic_load (a lock in libstdc++) per call.
    auto dir = cfg.nodes.empty() ? nullptr : node_dir();
    if (!dir)
      return {std::move(local), true, {}, {}, {}};
    if (opts.session_id.empty())
      return place(*dir, name, std::move(local));
    if (auto placed = dir->session_place(opts.session_id)) {
      if (placed->empty() && local)
        return {std::move(local), true, {}, {}, {}};
      if (!placed->empty()) {
        if (auto r = dir->pick_node(*placed, name))
          return {std::move(r->link), false, r->request_timeout, r->node, {}};
        if (session_affinity(opts, name) != affinity_mode::hint)
          return {nullptr,
                  false,
                  {},
                  *placed,
                  with_correlation_id(
                    caf::make_error(errc::session_worker_unavailable,
                                    fmt::format("session {} runs on node {}, which is "
                                                "not connected (affinity {})",
                                                opts.session_id, *placed,
                                                to_string(session_affinity(opts, name)))),
                    opts.correlation_id)};
      }
    }
    auto target = place(*dir, name, std::move(local));
    if (target.hdl)
      dir->place_session(opts.session_id, target.node, cfg.sessions.max);
    return target;
  }

  /// A call's affinity mode: its own, else its pool's (hint for a pool that is
  /// not local).
  affinity_mode session_affinity(const execute_options& opts,
                                 const std::string& pool) const {
    if (auto mode = parse_affinity_mode(opts.affinity))
      return *mode;
    std::lock_guard<std::mutex> guard{pools_mtx};
    for (auto& p : cfg.pools)
      if (p.name == pool)
        return p.affinity;
    return affinity_mode::hint;
  }

  /// Placement of a call without a session (see `route`).
  call_target place(distribution::node_directory& dir, const std::string& pool,
                    caf::actor local) const {
    uint32_t local_free = 0;
    if (local)
      if (auto lane = env->lanes->get(pool))
        local_free = lane->free_capacity();
    if (local && local_free > 0)
      return {std::move(local), true, {}, {}, {}};
    // Reserved at once: calls placed at the same moment spread over the nodes.
    auto remote = dir.pick(pool, {}, true, local != nullptr);
    if (!remote || (local && remote->free == 0))
      return {std::move(local), true, {}, {}, {}};
    return {std::move(remote->link), false, remote->request_timeout, remote->node, {}};
  }

  /// A call to a node: its pool named (the node has no "first pool" of ours) and
  /// its budget fixed here (its own, else the node pool's request_timeout), which
  /// the call carries to the node.
  std::chrono::milliseconds remote_budget(execute_options& opts,
                                          const call_target& target) const {
    opts.pool = pool_name(opts.pool);
    if (opts.timeout.count() <= 0)
      opts.timeout = target.node_budget.count() > 0 ? target.node_budget
                                                    : std::chrono::milliseconds{60000};
    return opts.timeout;
  }

  /// Why `route` found nothing: the runtime stopped, or no such pool.
  caf::error pool_missing(const std::string& name) const {
    if (stopped)
      return caf::make_error(errc::shutting_down, "the runtime is stopped");
    // Not local: perhaps served by a node that is not connected now.
    if (auto dir = node_dir()) {
      std::string lost;
      for (auto& v : dir->nodes())
        if (v.state != distribution::node_state::connected)
          lost += fmt::format("{}{} ({}{}{})", lost.empty() ? "" : ", ", v.name,
                              distribution::to_string(v.state),
                              v.last_error.empty() ? "" : ": ", v.last_error);
      if (!lost.empty())
        return caf::make_error(
          errc::node_down,
          fmt::format("pool {} is not local and no connected node serves it; not "
                      "connected: {}",
                      pool_name(name), lost));
    }
    return caf::make_error(errc::pool_not_found, pool_name(name));
  }

  /// The call's budget: its own timeout, else its pool's request_timeout.
  std::chrono::milliseconds request_budget(const execute_options& opts) const {
    if (opts.timeout.count() > 0)
      return opts.timeout;
    std::lock_guard<std::mutex> guard{pools_mtx};
    auto budget = cfg.pools.front().request_timeout;
    for (auto& p : cfg.pools)
      if (p.name == opts.pool)
        budget = p.request_timeout;
    return budget;
  }

  /// Stops every started service in reverse order. Idempotent.
  caf::error shutdown() {
    std::lock_guard<std::mutex> guard{stop_mtx};
    return services.stop();
  }
};

namespace detail {

/// One blocking request from a host thread (never a CAF thread), 5 s budget.
/// `issue(self)` sends it through an actor's wrapper function (e.g.
/// `actors::create_session(self, store, ...)`); a null `hdl` means the runtime stopped.
template<class R, class Handle, class Issue>
caf::expected<R> ask(caf::actor_system& sys, const Handle& hdl, Issue issue) {
  if (!hdl)
    return caf::make_error(errc::shutting_down, "the runtime is stopped");
  caf::scoped_actor self{sys};
  caf::expected<R> out{caf::make_error(errc::timeout, "no reply within 5 s")};
  issue(self).receive([&](R& x) { out = std::move(x); },
                      [&](caf::error& err) {
                        if (err != caf::sec::request_timeout)
                          out = std::move(err);
                      });
  return out;
}

} // namespace detail

} // namespace snakepit
