#include "actors/runtime/detail/tree.hpp"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include <caf/all.hpp>

#include "actors/atoms.hpp"
#include "actors/observability/telemetry.hpp"
#include "actors/pool/pool.hpp"
#include "actors/runtime/detail/memory_release.hpp"
#include "actors/sessions/session_store.hpp"
#include "actors/sessions/tool_registry.hpp"
#include "supervision/dynamic_supervisor.hpp"
#include "supervision/supervisor.hpp"

namespace snakepit::detail {

using namespace std::chrono_literals;

namespace {

using names_ptr = std::shared_ptr<actors::name_table>;

/// Wraps a child spec so the started actor is recorded under `name` (a restarted
/// child replaces its entry).
supervision::child_spec named(supervision::child_spec spec, names_ptr names,
                              std::string name) {
  auto inner = std::move(spec.start);
  spec.start = [inner, names, name](caf::local_actor* parent, supervision::start_ack ack,
                                    const caf::message& extra) {
    auto hdl = inner(parent, std::move(ack), extra);
    names->put(name, hdl);
    return hdl;
  };
  return spec;
}

/// runtime_sup: worker_sup first, then one pool per configured pool, so that
/// rest_for_one restarts the pools when worker_sup dies.
supervision::child_spec runtime_sup(const config& cfg,
                                    const std::shared_ptr<actors::worker_env>& env) {
  supervision::dynamic_supervisor_flags wflags;
  wflags.max_restarts = cfg.worker_sup.max_restarts;
  wflags.max_seconds = cfg.worker_sup.max_seconds;
  // A pool's startup batch (startup_concurrency) boots in parallel.
  wflags.concurrent_starts = true;
  std::vector<supervision::child_spec> children;
  children.push_back(named(supervision::dynamic_supervisor_child("worker_sup", wflags),
                           env->names, "worker_sup"));
  for (auto& pool : cfg.pools)
    children.push_back(actors::pool_spec(pool, env));
  supervision::supervisor_flags flags;
  flags.strat = supervision::strategy::rest_for_one;
  flags.intensity = 3;
  flags.period = 5s;
  return supervision::supervisor_child("runtime_sup", flags, std::move(children));
}

/// The session store's settings and its hooks into telemetry, the tool registry and
/// the pools' affinity caches.
actors::session_store_config session_store_settings(const config& cfg,
                                                    const actors::worker_env& env) {
  actors::session_store_config scfg;
  scfg.ttl = cfg.sessions.ttl;
  scfg.sweep_interval = cfg.sessions.sweep_interval;
  scfg.max_sessions = cfg.sessions.max;
  scfg.on_warning = [bus = env.telemetry](size_t count, size_t max) {
    bus->emit("snakepit.session.accumulation_warning", {{"count", count}, {"max", max}});
  };
  scfg.on_create = [bus = env.telemetry](const std::string& id) {
    if (bus->active())
      bus->emit("snakepit.session.created", json::object(), {{"session_id", id}});
  };
  // A session that is gone is forgotten by every pool's affinity cache too (pools
  // added at run time included).
  auto forget = [names = env.names](const std::string& id) {
    for (auto& pool : names->with_prefix("pool:"))
      actors::forget_session(pool, id);
  };
  scfg.on_cleanup = [bus = env.telemetry, forget](const std::string& id,
                                                  int32_t removed) {
    forget(id);
    if (bus->active())
      bus->emit("snakepit.session.cleanup", {{"removed", removed}}, {{"session_id", id}});
  };
  scfg.on_expire = [names = env.names, bus = env.telemetry,
                    forget](const std::string& id) {
    bus->emit("snakepit.session.expired", json::object(), {{"session_id", id}});
    actors::drop_session_tools(
      actors::as_tool_registry(names->get(actors::tool_registry_name)), id);
    forget(id);
  };
  return scfg;
}

} // namespace

caf::expected<caf::actor> start_tree(caf::actor_system& sys, const config& cfg,
                                     const std::shared_ptr<actors::worker_env>& env,
                                     std::chrono::milliseconds timeout) {
  std::vector<supervision::child_spec> children;
  children.push_back(named(actors::session_store_child(actors::session_store_name,
                                                       session_store_settings(cfg, *env)),
                           env->names, actors::session_store_name));
  children.push_back(named(actors::tool_registry_child(actors::tool_registry_name),
                           env->names, actors::tool_registry_name));
  children.push_back(named(runtime_sup(cfg, env), env->names, "runtime_sup"));
  if (cfg.release_memory_interval.count() > 0)
    children.push_back(memory_release_child(cfg.release_memory_interval));
  supervision::supervisor_flags flags;
  flags.strat = supervision::strategy::one_for_one;
  flags.intensity = 3;
  flags.period = 5s;
  auto top = supervision::start_supervisor(sys, flags, std::move(children), timeout);
  if (!top)
    env->names->clear();
  return top;
}

caf::error stop_tree(caf::actor_system& sys, const caf::actor& top, const config& cfg,
                     const actors::worker_env& env) {
  {
    caf::scoped_actor self{sys};
    for (auto& p : cfg.pools)
      if (auto hdl = env.names->get("pool:" + p.name))
        actors::drain(self, actors::pool_handle(hdl), 2s)
          .receive([](caf::ok_atom) {}, [](caf::error&) {});
  }
  auto grace = std::chrono::milliseconds{0};
  for (auto& p : cfg.pools)
    grace = std::max(grace, p.graceful_shutdown_timeout);
  auto result = supervision::stop(sys, top, cfg.shutdown_timeout + grace);
  env.names->clear();
  return result;
}

} // namespace snakepit::detail
