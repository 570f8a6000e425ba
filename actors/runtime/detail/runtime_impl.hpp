// The runtime's private state (`runtime::impl`), shared by the facade's facets
// (runtime.cpp, calls.cpp, sessions.cpp, tools.cpp, introspection.cpp): the
// configuration, the actor system, the context every worker shares, what each
// service owns, and the service stack that starts and stops them in order.
#pragma once

#include <atomic>
#include <chrono>
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

#include "actors/observability/control.hpp"
#include "actors/runtime/detail/service_stack.hpp"
#include "actors/runtime/runtime.hpp"
#include "actors/sessions/bridge_server.hpp"
#include "actors/worker/worker_env.hpp"
#include "adapters/errors.hpp"
#include "adapters/process.hpp"
#include "adapters/process_registry.hpp"

namespace snakepit {

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

  /// Why `find_pool(name)` found nothing: the runtime stopped, or no such pool.
  caf::error pool_missing(const std::string& name) const {
    if (stopped)
      return caf::make_error(errc::shutting_down, "the runtime is stopped");
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
