// Pools facet of the facade: a running runtime's pools change — a pool is resized,
// added or removed (seed "Runtime Configuration"; docs/pool.md "Resizing" and
// "Adding and removing pools").
#include "actors/pool/pool.hpp"
#include "actors/runtime/runtime.hpp"

#include <algorithm>
#include <thread>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/pool/adapter.hpp"
#include "actors/runtime/detail/runtime_impl.hpp"
#include "supervision/atoms.hpp"
#include "supervision/child_spec.hpp"

namespace snakepit {

using namespace std::chrono_literals;

namespace {

/// Takes `name` out of the configuration (nothing if it is not there).
void forget_pool_config(runtime::impl& p, const std::string& name) {
  std::lock_guard<std::mutex> guard{p.pools_mtx};
  auto& pools = p.cfg.pools;
  pools.erase(std::remove_if(pools.begin(), pools.end(),
                             [&](const pool_config& pc) { return pc.name == name; }),
              pools.end());
}

/// Waits up to `budget` until the drained pool runs nothing and queues nothing.
void wait_until_idle(runtime& rt, const std::string& name,
                     std::chrono::milliseconds budget) {
  auto deadline = std::chrono::steady_clock::now() + budget;
  while (std::chrono::steady_clock::now() < deadline) {
    auto s = rt.get_stats(name);
    if (!s || (s->in_flight == 0 && s->queue_depth == 0))
      return;
    std::this_thread::sleep_for(20ms);
  }
}

/// Stops the pool's child of runtime_sup and removes its spec.
caf::error stop_pool_child(caf::actor_system& sys, const caf::actor& sup,
                           const std::string& name, std::chrono::milliseconds budget) {
  caf::scoped_actor self{sys};
  caf::error out;
  auto id = "pool:" + name;
  self->request(sup, budget, supervision::terminate_child_atom::value, id)
    .receive([](caf::ok_atom) {}, [&](caf::error& err) { out = std::move(err); });
  if (out)
    return out;
  self->request(sup, 5s, supervision::delete_child_atom::value, id)
    .receive([](caf::ok_atom) {}, [&](caf::error& err) { out = std::move(err); });
  return out;
}

/// Stops the pool's workers, which live under worker_sup (their pool is gone: no
/// successor will replace them).
void stop_pool_workers(caf::actor_system& sys, const caf::actor& worker_sup,
                       const std::string& name, std::chrono::milliseconds budget) {
  if (!worker_sup)
    return;
  caf::scoped_actor self{sys};
  std::vector<caf::actor> mine;
  auto prefix = name + "_worker_";
  self->request(worker_sup, 5s, supervision::which_children_atom::value)
    .receive(
      [&](std::vector<supervision::child_info>& kids) {
        for (auto& kid : kids)
          if (kid.id.rfind(prefix, 0) == 0 && kid.pid)
            mine.push_back(kid.pid);
      },
      [](caf::error&) {});
  for (auto& pid : mine)
    self->request(worker_sup, budget, supervision::terminate_child_atom::value, pid)
      .receive([](caf::ok_atom) {}, [](caf::error&) {});
}

} // namespace

caf::error runtime::resize_pool(const std::string& pool, size_t n) {
  auto hdl = impl_->find_pool(pool);
  if (!hdl)
    return impl_->pool_missing(pool);
  caf::scoped_actor self{*impl_->sys};
  caf::error out = caf::make_error(errc::timeout, "resize_pool");
  actors::resize(self, actors::pool_handle(hdl), n, 5s)
    .receive([&](caf::ok_atom) { out = caf::none; },
             [&](caf::error& err) { out = std::move(err); });
  return out;
}

caf::error runtime::add_pool(pool_config pool, std::chrono::milliseconds timeout) {
  auto& p = *impl_;
  if (p.stopped)
    return caf::make_error(errc::shutting_down, "the runtime is stopped");
  {
    // Checked against every pool the runtime has (a duplicate name is an error).
    std::lock_guard<std::mutex> guard{p.pools_mtx};
    auto candidate = p.cfg;
    candidate.pools.push_back(pool);
    if (auto err = candidate.validate())
      return err;
    p.cfg.pools.push_back(pool);
  }
  auto undo = [&](caf::error err) {
    forget_pool_config(p, pool.name);
    if (pool.host_adapter)
      pool.host_adapter->terminate(caf::make_error(errc::shutting_down, pool.name));
    return err;
  };
  if (pool.host_adapter)
    if (auto err = pool.host_adapter->init(pool)) {
      forget_pool_config(p, pool.name);
      return err;
    }
  auto sup = p.env->names->get("runtime_sup");
  if (!sup)
    return undo(caf::make_error(errc::shutting_down, "the runtime is stopped"));
  caf::error started;
  {
    caf::scoped_actor self{*p.sys};
    self
      ->request(sup, timeout, supervision::start_child_atom::value,
                actors::pool_spec(pool, p.env))
      .receive([](caf::actor&) {}, [&](caf::error& err) { started = std::move(err); });
  }
  if (started)
    return undo(caf::make_error(
      errc::start_failed, fmt::format("pool {}: {}", pool.name, describe(started))));
  if (auto err = await_ready(pool.name, timeout)) {
    // No worker became ready: the pool goes again, nothing of it stays.
    remove_pool(pool.name);
    return err;
  }
  return caf::none;
}

caf::error runtime::remove_pool(const std::string& name) {
  auto& p = *impl_;
  if (p.stopped)
    return caf::make_error(errc::shutting_down, "the runtime is stopped");
  std::chrono::milliseconds grace{0};
  std::shared_ptr<snakepit::adapter> adapter;
  {
    std::lock_guard<std::mutex> guard{p.pools_mtx};
    auto& pools = p.cfg.pools;
    auto i = std::find_if(pools.begin(), pools.end(),
                          [&](const pool_config& pc) { return pc.name == name; });
    if (i == pools.end())
      return caf::make_error(errc::pool_not_found, name);
    if (pools.size() == 1)
      return caf::make_error(
        errc::invalid_argument,
        fmt::format("pool {} is the runtime's only pool: stop the runtime instead",
                    name));
    grace = i->graceful_shutdown_timeout;
    adapter = i->host_adapter;
  }
  if (auto hdl = p.find_pool(name)) {
    caf::scoped_actor self{*p.sys};
    actors::drain(self, actors::pool_handle(hdl), 5s)
      .receive([](caf::ok_atom) {}, [](caf::error&) {});
  }
  wait_until_idle(*this, name, grace); // calls in flight finish first
  auto sup = p.env->names->get("runtime_sup");
  if (!sup)
    return caf::make_error(errc::shutting_down, "the runtime is stopped");
  if (auto err = stop_pool_child(*p.sys, sup, name, grace + 10s))
    return err;
  p.env->names->put("pool:" + name, caf::actor{});
  stop_pool_workers(*p.sys, p.env->names->get("worker_sup"), name, grace + 10s);
  forget_pool_config(p, name);
  if (adapter)
    adapter->terminate(caf::make_error(errc::shutting_down, name));
  return caf::none;
}

} // namespace snakepit
