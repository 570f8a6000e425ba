#include "actors/runtime/detail/services.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <thread>
#include <utility>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/distribution/node_link.hpp"
#include "actors/distribution/wire.hpp"
#include "actors/observability/telemetry.hpp"
#include "actors/pool/adapter.hpp"
#include "actors/runtime/detail/pool_router.hpp"
#include "actors/runtime/detail/runtime_dirs.hpp"
#include "actors/runtime/detail/tree.hpp"
#include "actors/worker/worker_templates.hpp"
#include "adapters/bridge_client.hpp"
#include "adapters/errors.hpp"
#include "adapters/log.hpp"
#include "adapters/orphan_guard.hpp"
#include "adapters/stderr_pump.hpp"
#include "adapters/stdio_client.hpp"
#include "supervision/supervisor.hpp"

namespace snakepit::detail {

using namespace std::chrono_literals;

namespace {

using impl = runtime::impl;

/// The log every other service writes to; its stop writes the run's last line.
service log_service(impl& p) {
  auto start = [&p]() -> caf::error {
    adapters::log_options lopts;
    lopts.level = p.cfg.log.level;
    lopts.format = p.cfg.log.format;
    lopts.to_stderr = p.cfg.log.to_stderr;
    lopts.file = p.cfg.log.file;
    lopts.sinks = p.opts.log_sinks;
    auto log = adapters::logger::create(std::move(lopts));
    if (!log)
      return log.error();
    p.env->log = std::move(*log);
    return caf::none;
  };
  auto stop = [&p]() -> caf::error {
    auto& log = *p.env->log;
    if (log.enabled(adapters::log_level::info))
      log.info("runtime stopped", {{"run_id", p.env->run_id}});
    log.flush();
    return caf::none;
  };
  return {"log", start, stop};
}

/// The private 0700 directory of sockets and ready files, marked as ours; the
/// directories of dead hosts beside it are removed.
service runtime_dir_service(impl& p) {
  auto start = [&p]() -> caf::error {
    auto dir = adapters::runtime_dir::create("snakepit");
    if (!dir)
      return dir.error();
    p.dir.emplace(std::move(*dir));
    claim_and_sweep_runtime_dirs(p.dir->path());
    p.env->runtime_dir = p.dir->path();
    return caf::none;
  };
  auto stop = [&p]() -> caf::error {
    p.dir->remove();
    return caf::none;
  };
  return {"runtime_dir", start, stop};
}

/// The event bus (one dispatcher thread); the host's handlers are attached before
/// anything else starts, so start-up events reach them.
service telemetry_service(impl& p) {
  auto start = [&p]() -> caf::error {
    p.env->telemetry = std::make_shared<telemetry::bus>();
    for (auto& [prefix, fn] : p.opts.telemetry_handlers)
      p.env->telemetry->attach(prefix, fn);
    return caf::none;
  };
  auto stop = [&p]() -> caf::error {
    p.env->telemetry->stop();
    return caf::none;
  };
  return {"telemetry_bus", start, stop};
}

/// The reaper process (adapters/orphan_guard.hpp) that kills every worker's process
/// group should the host die without stopping, even by SIGKILL, whatever program the
/// worker runs. Started early, while the host is small (the reaper is forked). Stopped
/// after every worker has exited: it then has nothing left to kill and exits. The
/// runtime's `guard` is set and reset with std::atomic_store and read with
/// std::atomic_load: after a late failed start a worker actor may still be starting
/// while the services below it stop (found by ThreadSanitizer).
service orphan_guard_service(impl& p) {
  auto start = [&p]() -> caf::error {
    auto guard = adapters::orphan_guard::create();
    if (!guard)
      return guard.error();
    std::atomic_store(&p.env->guard,
                      std::make_shared<adapters::orphan_guard>(std::move(*guard)));
    return caf::none;
  };
  auto stop = [&p]() -> caf::error {
    std::atomic_store(&p.env->guard, std::shared_ptr<adapters::orphan_guard>{});
    return caf::none;
  };
  return {"orphan_guard", start, stop};
}

/// The completion-queue thread of the worker clients; its shutdown cancels what is
/// still in flight.
service grpc_service(impl& p) {
  auto start = [&p]() -> caf::error {
    p.env->grpc = std::make_shared<adapters::grpc_runtime>(1);
    return caf::none;
  };
  auto stop = [&p]() -> caf::error {
    p.env->grpc->shutdown();
    return caf::none;
  };
  return {"grpc_runtime", start, stop};
}

/// The I/O thread of the stdio workers' connections (stdio_client.hpp); its shutdown
/// fails what is still in flight.
service stdio_service(impl& p) {
  auto start = [&p]() -> caf::error {
    p.env->stdio = std::make_shared<adapters::stdio_runtime>();
    return caf::none;
  };
  auto stop = [&p]() -> caf::error {
    p.env->stdio->shutdown();
    return caf::none;
  };
  return {"stdio_runtime", start, stop};
}

/// Each pool's host adapter (actors/pool/adapter.hpp): `init` before any worker is
/// spawned, `terminate` after the tree has stopped.
service host_adapter_service(impl& p) {
  auto start = [&p]() -> caf::error {
    for (auto& pool : p.cfg.pools)
      if (pool.host_adapter)
        if (auto err = pool.host_adapter->init(pool))
          return err;
    return caf::none;
  };
  auto stop = [&p]() -> caf::error {
    std::vector<pool_config> pools;
    {
      std::lock_guard<std::mutex> guard{p.pools_mtx};
      pools = p.cfg.pools;
    }
    for (auto& pool : pools)
      if (pool.host_adapter)
        pool.host_adapter->terminate(caf::make_error(errc::shutting_down, pool.name));
    return caf::none;
  };
  return {"host_adapters", start, stop};
}

/// The persisted process registry (docs/reliability.md): the run is recorded before
/// the sweep (a concurrent sweeper then sees it alive), and the sweep runs before
/// anything is spawned. Stop deletes the run's row when it left no entry.
service registry_service(impl& p) {
  auto start = [&p]() -> caf::error {
    auto registry = adapters::process_registry::open(
      p.cfg.data_dir.empty() ? adapters::default_data_dir() : p.cfg.data_dir);
    if (!registry)
      return registry.error();
    // A run id already in the registry would make this host and that run one (its
    // exit would let a boot sweep kill our workers): draw another.
    auto taken = (*registry)->runs();
    auto& run_id = p.env->run_id;
    for (int i = 0;
         i < 16 && std::find(taken.begin(), taken.end(), run_id) != taken.end(); ++i)
      run_id = actors::make_run_id();
    if (auto err = (*registry)->begin_run(run_id))
      return err;
    if (p.cfg.sweep_orphans_at_start)
      (*registry)->sweep(run_id);
    p.registry = std::move(*registry);
    return caf::none;
  };
  auto stop = [&p]() -> caf::error {
    p.registry->end_run(p.env->run_id);
    return caf::none;
  };
  return {"process_registry", start, stop};
}

/// Drains the workers' stderr pipes into the log. Stopped once every worker is
/// gone: their pipes are at EOF and the last lines are logged.
service stderr_pump_service(impl& p) {
  auto start = [&p]() -> caf::error {
    if (p.cfg.log.capture_worker_stderr)
      p.env->stderr_pump = std::make_shared<adapters::stderr_pump>(
        p.env->log, p.cfg.log.worker_stderr_level);
    return caf::none;
  };
  auto stop = [&p]() -> caf::error {
    if (p.env->stderr_pump)
      p.env->stderr_pump->stop();
    return caf::none;
  };
  return {"stderr_pump", start, stop};
}

/// The table of every process the runtime started: from here on each spawn is
/// recorded in the registry. Stop waits until the table is empty, killing any
/// survivor, so that no Python process outlives `runtime::stop`.
service process_table_service(impl& p) {
  auto start = [&p]() -> caf::error {
    p.env->processes->attach(p.registry, p.env->run_id);
    return caf::none;
  };
  auto stop = [&p]() -> caf::error {
    auto& processes = *p.env->processes;
    if (processes.wait_empty(p.cfg.shutdown_timeout))
      return caf::none;
    for (auto pid : processes.snapshot()) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
    }
    processes.wait_empty(5s);
    return caf::none;
  };
  return {"process_table", start, stop};
}

/// The template processes of the gRPC Python workers
/// (actors/worker/worker_templates.hpp), launched on first use. Stopped after the pools,
/// before the process table waits for every process of ours to be gone.
service templates_service(impl& p) {
  auto start = [&p]() -> caf::error {
    p.env->templates = std::make_shared<actors::worker_templates>(
      p.env->processes, std::atomic_load(&p.env->guard), p.env->stderr_pump, p.env->log);
    return caf::none;
  };
  auto stop = [&p]() -> caf::error {
    if (p.env->templates)
      p.env->templates->stop();
    p.env->templates.reset();
    return caf::none;
  };
  return {"worker_templates", start, stop};
}

/// The host's gRPC server that workers call back (sessions, state, host tools). It
/// runs before any worker: workers get its address at spawn.
service bridge_service(impl& p) {
  auto start = [&p]() -> caf::error {
    actors::bridge_server_options bopts;
    bopts.socket_path = p.dir->file("host.sock");
    bopts.system = p.sys;
    bopts.session_store = [names = p.env->names] {
      return names->get(actors::session_store_name);
    };
    bopts.tool_registry = [names = p.env->names] {
      return names->get(actors::tool_registry_name);
    };
    auto bridge = actors::bridge_server::start(std::move(bopts));
    if (!bridge)
      return bridge.error();
    p.bridge = std::move(*bridge);
    p.env->bridge_address = p.bridge->address();
    p.env->bridge_tokens = p.bridge->tokens();
    return caf::none;
  };
  auto stop = [&p]() -> caf::error {
    p.bridge->stop();
    return caf::none;
  };
  return {"bridge_server", start, stop};
}

/// snakepit_sup and everything under it (detail/tree.hpp). From the moment its stop
/// begins, calls fail with shutting_down; its error is `runtime::stop`'s.
service tree_service(impl& p) {
  auto start = [&p]() -> caf::error {
    auto top = start_tree(*p.sys, p.cfg, p.env, p.opts.timeout);
    if (!top)
      return top.error();
    p.top = std::move(*top);
    if (p.env->log->enabled(adapters::log_level::info)) {
      auto names = adapters::log_fields::array();
      for (auto& pool : p.cfg.pools)
        names.push_back(pool.name);
      p.env->log->info("runtime started", {{"run_id", p.env->run_id}, {"pools", names}});
    }
    return caf::none;
  };
  auto stop = [&p]() -> caf::error {
    p.stopped = true;
    auto top = std::move(p.top);
    p.top = nullptr;
    config now; // (pools may have been added or removed since the start)
    {
      std::lock_guard<std::mutex> guard{p.pools_mtx};
      now = p.cfg;
    }
    return stop_tree(*p.sys, top, now, *p.env);
  };
  return {"supervision_tree", start, stop};
}

/// The node links of `config::nodes` (docs/distribution.md), after the local pools
/// (an idempotent call of a lost node may be retried on them), under a one_for_one
/// supervisor of their own (`node_sup`): a link that crashes is restarted and
/// registers itself in the directory again. The start waits
/// for each link's first connection attempt, so that the first calls already see
/// the nodes that are up; a node that is not up is logged and retried, never a
/// failed start.
service nodes_service(impl& p) {
  auto start = [&p]() -> caf::error {
    if (p.cfg.nodes.empty())
      return caf::none;
    auto dir = std::make_shared<distribution::node_directory>();
    auto names = p.env->names;
    std::vector<supervision::child_spec> links;
    for (auto& node : p.cfg.nodes) {
      auto addr = distribution::parse_address(node.address);
      if (!addr)
        return addr.error();
      distribution::link_options o;
      o.name = node.display_name();
      o.host = addr->first;
      o.port = addr->second;
      o.self_name = fmt::format("host {} (run {})", ::getpid(), p.env->run_id);
      o.connect_timeout = p.cfg.node_connect_timeout;
      o.directory = dir;
      o.log = p.env->log;
      o.telemetry = p.env->telemetry;
      o.local_pool = [names](const std::string& pool) {
        return names->get("pool:" + pool);
      };
      // In the directory before the link runs, so that its first state change
      // finds its entry (each start of the link registers its handle; no call is
      // placed before the start returns).
      dir->add(node.display_name(), node.address, caf::actor{});
      links.push_back(distribution::node_link_child(std::move(o)));
    }
    // A link handles every failure of its node itself; a crash is a bug, so a
    // few restarts are allowed before the supervisor gives up (its links then
    // mark their nodes down and calls go elsewhere or fail with node_down).
    supervision::supervisor_flags flags;
    flags.strat = supervision::strategy::one_for_one;
    flags.intensity = 10;
    flags.period = std::chrono::seconds{10};
    auto sup = supervision::start_supervisor(*p.sys, flags, std::move(links),
                                             std::chrono::seconds{10});
    if (!sup)
      return sup.error();
    p.node_sup = std::move(*sup);
    auto deadline = std::chrono::steady_clock::now() + p.cfg.node_connect_timeout +
                    std::chrono::milliseconds{200};
    auto settled = [&dir] {
      for (auto& v : dir->nodes())
        if (v.state == distribution::node_state::connecting)
          return false;
      return true;
    };
    while (!settled() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
    for (auto& v : dir->nodes())
      if (v.state == distribution::node_state::connected)
        p.env->log->info("node connected", {{"node", v.name}, {"address", v.address}});
      else
        p.env->log->warn("node not connected at start; it is retried in the background",
                         {{"node", v.name},
                          {"address", v.address},
                          {"state", distribution::to_string(v.state)},
                          {"error", v.last_error.empty() ? std::string{"still connecting"}
                                                         : v.last_error}});
    std::atomic_store(&p.nodes, std::move(dir));
    p.routers_hub = std::make_shared<detail::router_hub>();
    p.routers_hub->rt = &p;
    return caf::none;
  };
  auto stop = [&p]() -> caf::error {
    auto dir =
      std::atomic_exchange(&p.nodes, std::shared_ptr<distribution::node_directory>{});
    // Routers first: their node calls in flight answer shutting_down now.
    p.stop_routers();
    if (!dir)
      return caf::none;
    // Each link fails its calls in flight with shutting_down and quits.
    auto sup = std::move(p.node_sup);
    p.node_sup = nullptr;
    auto err = supervision::stop(*p.sys, sup, std::chrono::seconds{10});
    dir->clear();
    return err;
  };
  return {"node_links", start, stop};
}

/// `cfg` with only one of the two endpoints switched on.
config endpoint_only(const config& cfg, bool control) {
  auto out = cfg;
  if (control)
    out.metrics.address.clear();
  else
    out.control_socket = false;
  return out;
}

/// An HTTP endpoint thread that asks the pools like `get_stats`; both endpoints stop
/// before anything they ask does (docs/observability.md).
service endpoint_service(runtime& rt, impl& p, bool control) {
  auto start = [&rt, &p, control]() -> caf::error {
    auto servers = actors::start_control_servers(rt, endpoint_only(p.cfg, control));
    if (!servers)
      return servers.error();
    if (control)
      p.servers.control = std::move(servers->control);
    else
      p.servers.metrics = std::move(servers->metrics);
    return caf::none;
  };
  auto stop = [&p, control]() -> caf::error {
    auto& srv = control ? p.servers.control : p.servers.metrics;
    if (srv)
      srv->stop();
    return caf::none;
  };
  return {control ? "control_endpoint" : "metrics_endpoint", start, stop};
}

} // namespace

void add_runtime_services(runtime& rt, runtime::impl& p) {
  auto& stack = p.services;
  stack.add(log_service(p));
  stack.add(runtime_dir_service(p));
  stack.add(telemetry_service(p));
  stack.add(orphan_guard_service(p));
  stack.add(grpc_service(p));
  stack.add(stdio_service(p));
  stack.add(registry_service(p));
  stack.add(stderr_pump_service(p));
  stack.add(process_table_service(p));
  stack.add(templates_service(p));
  stack.add(bridge_service(p));
  stack.add(host_adapter_service(p));
  stack.add(tree_service(p));
  stack.add(nodes_service(p));
  stack.add(endpoint_service(rt, p, false));
  stack.add(endpoint_service(rt, p, true));
}

} // namespace snakepit::detail
