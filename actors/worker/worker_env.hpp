// What every worker of one runtime shares: interpreter, runtime directory, gRPC
// runtime, run id, the process table (every OS process we started and not yet
// reaped) and the process names of the tree (Erlang's register/2, e.g. worker_sup).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include <caf/actor.hpp>

#include "actors/pool/direct_lane.hpp"
#include "actors/sessions/token_registry.hpp"
#include "adapters/bridge_client.hpp"
#include "adapters/log.hpp"

namespace snakepit::adapters {
class grpc_runtime;
class orphan_guard;
class stdio_runtime;
class process_registry;
class stderr_pump;
} // namespace snakepit::adapters

namespace snakepit::actors {
class worker_templates;
} // namespace snakepit::actors

namespace snakepit::telemetry {
class bus;
} // namespace snakepit::telemetry

namespace snakepit::actors {

/// Every OS process the runtime started and has not yet seen exit. Thread-safe:
/// the exit watcher thread removes entries, stop() waits for it to become empty.
class process_table {
 public:
  void add(pid_t pid);
  void remove(pid_t pid);
  std::set<pid_t> snapshot() const;
  /// Whether `pid` was started and has not been seen exit yet.
  bool contains(pid_t pid) const;
  /// Blocks until the table is empty or `timeout` passed; true when empty.
  bool wait_empty(std::chrono::milliseconds timeout) const;
  /// From now on, `add` also records the pid (group, start time) under `run_id` in
  /// the persisted registry and `remove` deletes it, so a later boot can sweep what a
  /// dead host left. Called once, before the first spawn.
  void attach(std::shared_ptr<adapters::process_registry> registry, std::string run_id);

 private:
  mutable std::mutex mtx_;
  mutable std::condition_variable cv_;
  std::set<pid_t> pids_;
  std::shared_ptr<adapters::process_registry> registry_;
  std::string run_id_;
};

/// What every worker tells its Python process's StreamTelemetry
/// (`runtime::set_python_telemetry`); read when a worker's stream opens.
class python_telemetry_settings {
 public:
  void set(adapters::telemetry_control ctl);
  /// The settings, and whether any were set (none: the workers' defaults stand).
  std::optional<adapters::telemetry_control> get() const;

 private:
  mutable std::mutex mtx_;
  std::optional<adapters::telemetry_control> ctl_;
};

/// Registered process names of one runtime (worker_sup, registry, pools).
class name_table {
 public:
  void put(const std::string& name, caf::actor hdl);
  caf::actor get(const std::string& name) const;
  /// The live entries whose name starts with `prefix` (e.g. every "pool:").
  std::vector<caf::actor> with_prefix(const std::string& prefix) const;
  void clear();

 private:
  mutable std::mutex mtx_;
  std::map<std::string, caf::actor> names_;
};

/// Shared, immutable-after-start context of one runtime.
struct worker_env {
  std::string python;
  std::string python_path;
  std::string run_id;
  std::string runtime_dir;
  /// Address of the host's bridge server ("unix:<path>"); empty when not running.
  /// Workers get it as `--elixir-address` and call back into the host through it.
  std::string bridge_address;
  /// The bridge server's live tokens: each worker process takes one at its launch
  /// (env SNAKEPIT_BRIDGE_TOKEN) and gives it back once it is gone. Null when no
  /// bridge runs (runtimes built by hand in tests).
  std::shared_ptr<token_registry> bridge_tokens;
  std::shared_ptr<adapters::grpc_runtime> grpc;
  /// The I/O thread of the stdio workers' connections.
  std::shared_ptr<adapters::stdio_runtime> stdio;
  /// The runtime's telemetry bus (docs/telemetry.md); never null in a started runtime.
  std::shared_ptr<telemetry::bus> telemetry;
  /// The runtime's log (docs/observability.md); never null.
  adapters::logger_ptr log = adapters::logger::null();
  /// Drains the workers' stderr pipes into `log`; null when workers inherit the
  /// host's stderr (`log_config::capture_worker_stderr = false`).
  std::shared_ptr<adapters::stderr_pump> stderr_pump;
  std::shared_ptr<process_table> processes = std::make_shared<process_table>();
  /// The reaper that kills every worker's process group if the host dies, even by
  /// SIGKILL (adapters/orphan_guard.hpp); null only in runtimes built by hand in tests.
  std::shared_ptr<adapters::orphan_guard> guard;
  /// Template processes that start gRPC Python workers as copies of themselves
  /// (`pool_config::start_method`); null: every worker is spawned.
  std::shared_ptr<worker_templates> templates;
  std::shared_ptr<name_table> names = std::make_shared<name_table>();
  /// Each pool's checkout table, for the direct lane of blocking callers.
  std::shared_ptr<lane_table> lanes = std::make_shared<lane_table>();
  std::shared_ptr<python_telemetry_settings> python_telemetry =
    std::make_shared<python_telemetry_settings>();
};

/// A 7-character base36 run id (upstream Snakepit.RunId's format, all random), tagged on
/// every worker command line so a later boot can recognise our processes.
std::string make_run_id();

} // namespace snakepit::actors
