// Stats, workers and introspection facet of the facade: what the pools report
// (stats, ready workers), worker recycling, the live processes, the endpoints'
// addresses, and the telemetry and log handles.
#include "actors/pool/pool.hpp"
#include "actors/runtime/runtime.hpp"

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/atoms.hpp"
#include "actors/observability/metrics.hpp"
#include "actors/observability/telemetry.hpp"
#include "actors/runtime/detail/runtime_impl.hpp"

namespace snakepit {

using namespace std::chrono_literals;

std::vector<distribution::node_view> runtime::nodes() const {
  auto dir = impl_->node_dir();
  return dir ? dir->nodes() : std::vector<distribution::node_view>{};
}

std::vector<std::string> runtime::pool_names() const {
  return impl_->pool_names();
}

caf::expected<pool_stats> runtime::get_stats(const std::string& pool) {
  // A pool only nodes serve: their figures, gathered by the pool's router.
  auto hdl = impl_->find_pool(pool);
  auto timeout = 5s;
  if (!hdl && (hdl = impl_->router(pool)))
    timeout = 10s;
  if (!hdl)
    return impl_->pool_missing(pool);
  caf::scoped_actor self{*impl_->sys};
  caf::expected<pool_stats> out{caf::make_error(errc::timeout, "get_stats")};
  actors::get_stats(self, actors::pool_handle(hdl), timeout)
    .receive([&](pool_stats& s) { out = std::move(s); },
             [&](caf::error& err) { out = std::move(err); });
  return out;
}

caf::expected<runtime_stats> runtime::get_all_stats() {
  runtime_stats out;
  for (auto& name : impl_->pool_names()) {
    if (!impl_->find_pool(name))
      continue;
    auto s = get_stats(name);
    if (s)
      out.pools.push_back(std::move(*s));
    else if (s.error() == errc::shutting_down)
      return s.error();
  }
  if (impl_->stopped)
    return caf::make_error(errc::shutting_down, "the runtime is stopped");
  out.total = sum_stats(out.pools);
  return out;
}

caf::expected<std::vector<worker_info>> runtime::list_workers(const std::string& pool) {
  auto hdl = impl_->find_pool(pool);
  auto timeout = 5s;
  if (!hdl && (hdl = impl_->router(pool)))
    timeout = 10s;
  if (!hdl)
    return impl_->pool_missing(pool);
  caf::scoped_actor self{*impl_->sys};
  caf::expected<std::vector<worker_info>> out{
    caf::make_error(errc::timeout, "list_workers")};
  actors::list_workers(self, actors::pool_handle(hdl), timeout)
    .receive([&](std::vector<worker_info>& ws) { out = std::move(ws); },
             [&](caf::error& err) { out = std::move(err); });
  return out;
}

caf::expected<std::map<std::string, std::vector<worker_info>>>
runtime::list_all_workers() {
  std::map<std::string, std::vector<worker_info>> out;
  for (auto& name : impl_->pool_names()) {
    if (!impl_->find_pool(name))
      continue;
    auto ws = list_workers(name);
    if (ws)
      out.emplace(name, std::move(*ws));
    else if (ws.error() == errc::shutting_down)
      return ws.error();
  }
  if (impl_->stopped)
    return caf::make_error(errc::shutting_down, "the runtime is stopped");
  return out;
}

caf::error runtime::recycle_worker(const std::string& worker_id,
                                   const std::string& pool) {
  auto hdl = impl_->find_pool(pool);
  if (!hdl)
    return impl_->pool_missing(pool);
  caf::scoped_actor self{*impl_->sys};
  caf::error out = caf::make_error(errc::timeout, "recycle_worker");
  actors::recycle_worker(self, actors::pool_handle(hdl), worker_id, 5s)
    .receive([&](caf::ok_atom) { out = caf::none; },
             [&](caf::error& err) { out = std::move(err); });
  return out;
}

caf::expected<worker_init_status> runtime::get_init_status(const std::string& worker_id,
                                                           const std::string& pool) {
  auto hdl = impl_->find_pool(pool);
  if (!hdl)
    return impl_->pool_missing(pool);
  return detail::ask<worker_init_status>(*impl_->sys, hdl, [&](auto& self) {
    return actors::init_status(self, actors::pool_handle(hdl), worker_id, 5s);
  });
}

std::vector<int> runtime::live_processes() const {
  auto pids = impl_->env->processes->snapshot();
  return {pids.begin(), pids.end()};
}

std::string runtime::metrics_address() const {
  return impl_->servers.metrics ? impl_->servers.metrics->address() : std::string{};
}

std::string runtime::control_socket() const {
  return impl_->servers.control ? impl_->servers.control->address() : std::string{};
}

telemetry::bus& runtime::telemetry() {
  return *impl_->env->telemetry;
}

uint64_t runtime::attach_default_logger(adapters::log_level level) {
  return telemetry::attach_default_logger(*impl_->env->telemetry, impl_->env->log, level);
}

caf::error runtime::set_python_telemetry(adapters::telemetry_control ctl) {
  if (!(ctl.sampling_rate >= 0.0 && ctl.sampling_rate <= 1.0))
    return caf::make_error(
      errc::invalid_argument,
      fmt::format("sampling_rate {} is not in [0, 1]", ctl.sampling_rate));
  if (impl_->stopped)
    return caf::make_error(errc::shutting_down, "the runtime is stopped");
  impl_->env->python_telemetry->set(std::move(ctl));
  for (auto& name : impl_->pool_names())
    if (auto hdl = impl_->find_pool(name))
      actors::push_python_telemetry(actors::pool_handle(hdl));
  return caf::none;
}

adapters::logger& runtime::log() {
  return *impl_->env->log;
}

} // namespace snakepit
