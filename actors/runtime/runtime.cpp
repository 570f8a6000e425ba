// Lifecycle facet of the facade: start (the service stack of detail/services.hpp,
// then the wait for ready pools), stop (the same stack in reverse), readiness and
// the runtime's identity; plus cleanup_orphans and run_as_script.
#include "actors/runtime/runtime.hpp"
#include "actors/pool/pool.hpp"

#include <stdlib.h>

#include <algorithm>
#include <thread>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/atoms.hpp"
#include "actors/distribution/wire.hpp"
#include "actors/runtime/detail/memory_release.hpp"
#include "actors/runtime/detail/runtime_dirs.hpp"
#include "actors/runtime/detail/runtime_impl.hpp"
#include "actors/runtime/detail/services.hpp"

namespace snakepit {

void register_types(caf::actor_system_config& cfg) {
  register_error_category(cfg);
}

void configure_system(caf::actor_system_config& cfg) {
  register_types(cfg);
  // Most messages here arrive from foreign threads (gRPC completion queue, exit
  // watcher, blocking callers). The work-stealing scheduler's idle workers poll
  // with back-off sleeps, which adds a wake-up delay to each such hand-off; the
  // sharing scheduler wakes a worker through a condition variable at once.
  cfg.set("scheduler.policy", caf::atom("sharing"));
  // One scheduler thread per core: more only adds hand-offs between threads.
  cfg.set("scheduler.max-threads",
          static_cast<size_t>(std::max(2u, std::thread::hardware_concurrency())));
}

namespace {

/// The actor system a runtime owns; with nodes configured it talks BASP.
std::unique_ptr<caf::actor_system_config> owned_system_config(const config& cfg) {
  auto out = std::make_unique<caf::actor_system_config>();
  configure_system(*out);
  if (!cfg.nodes.empty())
    distribution::prepare_distributed_system(*out, cfg.node_heartbeat, cfg.node_timeout,
                                             cfg.tls);
  return out;
}

/// The state of a runtime about to start: what every worker shares is filled in
/// here, what a service owns is filled in by its start.
std::unique_ptr<runtime::impl> make_impl(caf::actor_system* sys, config cfg,
                                         start_options opts) {
  auto p = std::make_unique<runtime::impl>();
  // Before the runtime's threads exist, so that they share the capped arenas.
  if (cfg.malloc_arena_max > 0)
    detail::limit_malloc_arenas(cfg.malloc_arena_max);
  if (!sys) {
    p->own_cfg = owned_system_config(cfg);
    p->own_sys = std::make_unique<caf::actor_system>(*p->own_cfg);
    sys = p->own_sys.get();
  }
  p->sys = sys;
  p->cfg = std::move(cfg);
  p->opts = std::move(opts);
  auto& env = *p->env;
  env.python = p->cfg.python;
  env.python_path = p->cfg.effective_python_path();
  env.run_id = actors::make_run_id();
  return p;
}

} // namespace

// --- Start and stop -----------------------------------------------------------------

runtime::runtime(std::unique_ptr<impl> ptr) : impl_(std::move(ptr)) {}

runtime::~runtime() {
  if (!impl_)
    return;
  impl_->shutdown();
  // The owned system goes last: ~actor_system waits for every actor, including
  // a host's scoped actors, so it must not run inside stop().
  impl_->own_sys.reset();
  impl_->own_cfg.reset();
}

caf::expected<std::unique_ptr<runtime>> runtime::start(config cfg, start_options opts) {
  if (auto err = cfg.validate())
    return err;
  // Before the actor system exists: CAF reads the files only at the first
  // connection, and a bad key aborts the process there.
  if (!cfg.nodes.empty())
    if (auto err = distribution::check_tls(cfg.tls))
      return err;
  return launch(make_impl(nullptr, std::move(cfg), std::move(opts)));
}

caf::expected<std::unique_ptr<runtime>> runtime::start(caf::actor_system& sys, config cfg,
                                                       start_options opts) {
  if (auto err = cfg.validate())
    return err;
  // Nodes need the host's actor system prepared for them (nothing starts without).
  if (!cfg.nodes.empty() && !sys.has_middleman())
    return caf::make_error(
      errc::invalid_config,
      "nodes: the actor system has no middleman; call "
      "distribution::prepare_distributed_system on its config before creating it "
      "(docs/distribution.md)");
  if (!cfg.nodes.empty() && cfg.tls.enabled() && !distribution::uses_tls(sys))
    return caf::make_error(
      errc::invalid_config,
      "tls: the actor system has no openssl module with a certificate; pass the tls "
      "settings to distribution::prepare_distributed_system (docs/distribution.md)");
  return launch(make_impl(&sys, std::move(cfg), std::move(opts)));
}

caf::expected<std::unique_ptr<runtime>> runtime::launch(std::unique_ptr<impl> p) {
  auto deadline = std::chrono::steady_clock::now() + p->opts.timeout;
  auto wait_ready = p->opts.wait_ready;
  std::unique_ptr<runtime> rt{new runtime(std::move(p))};
  detail::add_runtime_services(*rt, *rt->impl_);
  // A failed start has stopped the services started before it.
  if (auto err = rt->impl_->services.start())
    return err;
  if (wait_ready) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (auto err = rt->await_ready(std::max(left, std::chrono::milliseconds{1}))) {
      rt->stop();
      return err;
    }
  }
  return rt;
}

caf::error runtime::stop() {
  return impl_->shutdown();
}

// --- Readiness ----------------------------------------------------------------------

caf::error runtime::await_ready(std::chrono::milliseconds timeout) {
  // Every pool must have finished starting; a start fails only when no pool can
  // serve (one broken pool does not stop the healthy ones).
  size_t ready = 0;
  caf::error first;
  for (auto& name : impl_->pool_names()) {
    auto err = await_ready(name, timeout);
    if (!err)
      ++ready;
    else if (!first)
      first = std::move(err);
  }
  return ready > 0 ? caf::error{} : first;
}

caf::error runtime::await_ready(const std::string& pool,
                                std::chrono::milliseconds timeout) {
  caf::scoped_actor self{*impl_->sys};
  caf::error result = caf::make_error(errc::pool_not_found, pool);
  if (impl_->has_pool(pool)) {
    result = caf::none;
    auto hdl = impl_->find_pool(pool);
    if (!hdl)
      return impl_->pool_missing(pool);
    actors::await_ready(self, actors::pool_handle(hdl), timeout)
      .receive([](caf::ok_atom) {},
               [&](caf::error& err) {
                 if (!result)
                   result =
                     err == caf::sec::request_timeout
                       ? caf::make_error(errc::not_ready,
                                         fmt::format("pool {} not ready within {} ms",
                                                     pool, timeout.count()))
                       : std::move(err);
               });
  }
  return result;
}

// --- Identity -----------------------------------------------------------------------

caf::actor_system& runtime::system() {
  return *impl_->sys;
}

caf::actor runtime::pool(const std::string& name) const {
  if (auto router = impl_->router(name))
    return router;
  return impl_->find_pool(name);
}

const std::string& runtime::runtime_dir() const {
  return impl_->env->runtime_dir;
}

const std::string& runtime::run_id() const {
  return impl_->env->run_id;
}

const std::string& runtime::bridge_address() const {
  return impl_->env->bridge_address;
}

caf::expected<std::string> runtime::issue_bridge_token() {
  auto& tokens = impl_->env->bridge_tokens;
  if (!tokens)
    return make_error(errc::unavailable, "the runtime runs no bridge server");
  return tokens->issue();
}

// --- Free functions -----------------------------------------------------------------

caf::expected<adapters::sweep_report> cleanup_orphans(const config& cfg) {
  auto registry = adapters::process_registry::open(
    cfg.data_dir.empty() ? adapters::default_data_dir() : cfg.data_dir);
  if (!registry)
    return registry.error();
  // Runtime directories of dead hosts go too (where runtime_dir::create puts them).
  detail::sweep_runtime_dirs("/tmp", {});
  if (auto* xdg = ::getenv("XDG_RUNTIME_DIR"); xdg && *xdg)
    detail::sweep_runtime_dirs(xdg, {});
  return (*registry)->sweep();
}

caf::error run_as_script(config cfg, const std::function<void(runtime&)>& fn,
                         start_options opts) {
  auto rt = runtime::start(std::move(cfg), opts);
  if (!rt)
    return rt.error();
  try {
    fn(**rt);
  } catch (...) {
    (*rt)->stop();
    throw;
  }
  return (*rt)->stop();
}

} // namespace snakepit
