// The public facade (upstream `Snakepit` module + Snakepit.Application): starts the
// application tree and its services in an actor system it owns or joins, and offers
// blocking, asynchronous and streaming calls, sessions, host tools, stats and an
// orderly stop that returns only when every Python process is gone. Hosts include
// it through actors/snakepit.hpp:
//
//   auto rt = snakepit::runtime::start(cfg);          // validates, starts, waits ready
//   if (!rt) return fail(rt.error());
//   auto sum = (*rt)->execute("add", {{"a", 2}, {"b", 40}});
//   (*rt)->stop();                                     // every worker is gone
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "actors/config/config.hpp"
#include "actors/distribution/node_link.hpp"
#include "actors/sessions/session_store.hpp"
#include "actors/sessions/tool_registry.hpp"
#include "actors/types.hpp"
#include "adapters/bridge_client.hpp"
#include "adapters/process_registry.hpp"

namespace caf {
class actor_system;
class actor_system_config;
} // namespace caf

namespace snakepit::telemetry {
struct event;
class bus;
} // namespace snakepit::telemetry

namespace spdlog::sinks {
class sink;
} // namespace spdlog::sinks

namespace snakepit::adapters {
class logger;
} // namespace snakepit::adapters

namespace snakepit {

/// Registers the snakepit error category with a host's actor system config
/// (needed only when the runtime joins a host-owned actor system). A runtime with
/// `config::nodes` also needs CAF's middleman and the wire types:
/// `distribution::prepare_distributed_system` (docs/distribution.md).
void register_types(caf::actor_system_config& cfg);

/// `register_types` plus the scheduler settings of the actor system a runtime
/// owns (the sharing policy, one thread per core), for a host that creates the
/// system itself (as a worker node does).
void configure_system(caf::actor_system_config& cfg);

/// Start-up options of a runtime.
struct start_options {
  /// Wait until every pool finished starting its workers; a pool with no ready
  /// worker then fails the start (and everything started is stopped).
  bool wait_ready = true;
  /// Budget for the whole start (tree + workers).
  std::chrono::milliseconds timeout{60000};
  /// Telemetry handlers attached before anything starts (prefix, handler), so
  /// start-up events such as `snakepit.pool.init_started` reach them.
  std::vector<std::pair<std::string, std::function<void(const telemetry::event&)>>>
    telemetry_handlers;
  /// spdlog sinks of the host that receive the runtime's log lines besides
  /// `config::log`'s stderr and file (docs/observability.md, "Logs").
  std::vector<std::shared_ptr<spdlog::sinks::sink>> log_sinks;
};

/// A running snakepit: the supervision tree, its pools and their workers, and the
/// services around them (their order: actors/runtime/detail/services.hpp).
class runtime {
 public:
  // --- Lifecycle: start, readiness, stop ------------------------------------------

  /// Validates `cfg`, then starts a runtime that owns its actor system.
  static caf::expected<std::unique_ptr<runtime>> start(config cfg,
                                                       start_options opts = {});

  /// Starts a runtime inside the host's actor system (call register_types on its
  /// config first). The system must outlive the runtime.
  static caf::expected<std::unique_ptr<runtime>> start(caf::actor_system& sys, config cfg,
                                                       start_options opts = {});

  ~runtime();
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  /// Waits until every pool has finished starting; fails only if no pool has a
  /// ready worker (the error of the first failed pool).
  caf::error await_ready(std::chrono::milliseconds timeout = std::chrono::seconds{30});

  /// Waits until one pool has finished starting; its start error if it has no
  /// ready worker.
  caf::error await_ready(const std::string& pool,
                         std::chrono::milliseconds timeout = std::chrono::seconds{30});

  /// Orderly stop: pools reject new work, workers get SIGTERM, then SIGKILL after
  /// their grace period; returns once every Python process has exited and the
  /// runtime directory is removed. Idempotent.
  caf::error stop();

  /// The actor system the runtime lives in.
  caf::actor_system& system();

  /// The pool actor, for hosts that speak to it with messages (see actors/pool/pool.hpp).
  /// With `config::nodes` it is the pool's router instead: the same messages, each
  /// call placed on the local pool or a node as `execute` places it, and figures of
  /// a pool only nodes serve gathered from them (docs/distribution.md, "The actor
  /// API"). Null when no local pool and no node serves `name`.
  caf::actor pool(const std::string& name = {}) const;

  /// The private runtime directory (sockets, ready files).
  const std::string& runtime_dir() const;

  /// The run id tagged on every worker command line.
  const std::string& run_id() const;

  /// The host's bridge server address workers call back to ("unix:<dir>/host.sock").
  const std::string& bridge_address() const;

  /// A token the bridge server admits (send it as gRPC metadata "x-snakepit-token"),
  /// for a host component that calls `bridge_address()` itself; it stays valid until
  /// the runtime stops. Workers get their own at launch (docs/security.md). Errors:
  /// unavailable when no bridge runs, internal when no random bytes can be had.
  caf::expected<std::string> issue_bridge_token();

  // --- Calls: run a tool on a worker (calls.cpp) --------------------------------

  /// Runs `command` with `args` on a worker and waits for the result or a typed error.
  execute_result execute(const std::string& command, json args = json::object(),
                         execute_options opts = {});

  /// Asynchronous form: `done` runs exactly once, on a runtime thread, or on the
  /// calling thread before this returns when the call is refused at once (no such
  /// pool; the pool's queue is full: pool_saturated). Do not hold a lock `done`
  /// takes while calling this.
  void execute_async(const std::string& command, json args, execute_options opts,
                     execute_callback done);

  /// Runs a streaming tool (a Python generator). `on_chunk` runs on the calling
  /// thread, in order, and returns false to halt (the RPC is cancelled, the Python
  /// generator closed, and the call returns none). Streams queue and take pool
  /// capacity like any call; a slow `on_chunk` holds the worker back through gRPC
  /// flow control instead of buffering without bound. Returns the typed error of
  /// a failed stream (a Python exception mid-stream arrives after the chunks
  /// already delivered, as tool_error).
  caf::error
  execute_stream(const std::string& command, json args,
                 const std::function<bool(const json& chunk, bool is_final)>& on_chunk,
                 execute_options opts = {});

  /// `execute` within a session: routed by the pool's (or `opts.affinity`'s)
  /// affinity mode to the session's worker; the session id reaches Python.
  execute_result execute_in_session(const std::string& session_id,
                                    const std::string& command,
                                    json args = json::object(),
                                    execute_options opts = {});

  /// `execute_stream` within a session.
  caf::error execute_in_session_stream(
    const std::string& session_id, const std::string& command, json args,
    const std::function<bool(const json& chunk, bool is_final)>& on_chunk,
    execute_options opts = {});

  // --- Sessions (sessions.cpp) ----------------------------------------------------

  /// Creates a session (idempotent for an existing id) and returns its id; without
  /// an id a random one is generated. Errors: invalid_session_id, quota_exceeded.
  caf::expected<std::string> create_session(std::optional<std::string> id = std::nullopt,
                                            std::map<std::string, std::string> meta = {});

  /// Created / last accessed times, last worker, state keys and request count.
  /// Error: session_not_found.
  caf::expected<actors::session_info> get_session_info(const std::string& session_id);

  /// Removes a session, its state and its tools; returns how many entries went
  /// (state keys + session-scoped tools + 1 for the session record; 0 if unknown).
  caf::expected<int> cleanup_session(const std::string& session_id);

  /// The session_store actor (see actors/sessions/session_store.hpp for its messages).
  caf::actor session_store() const;

  // --- Tools (tools.cpp) ----------------------------------------------------------

  /// Registers a host tool: `fn` takes the JSON object of arguments and returns the
  /// result; it runs on a bridge-server thread and a throw becomes a tool error for
  /// the Python caller. `exposed` tools are listed to and callable from Python.
  caf::error register_host_tool(const std::string& name,
                                std::function<json(const json&)> fn,
                                const std::string& description = {}, bool exposed = true);

  /// Host tools and the tools Python workers registered (plus `session_id`'s own).
  caf::expected<std::vector<actors::tool_info>>
  list_tools(const std::string& session_id = {});

  // --- Stats, workers and introspection (introspection.cpp) -----------------------

  /// The names of the running pools, in configuration order (pools added at run
  /// time last).
  std::vector<std::string> pool_names() const;

  /// Statistics of one pool (empty name: the first pool). For a pool only nodes
  /// serve: the sum over the connected nodes serving it (histograms merged
  /// exactly); node_down when none is connected.
  caf::expected<pool_stats> get_stats(const std::string& pool = {});

  /// Statistics of every running pool (in configuration order) and their sum
  /// (`total`, quantiles from the merged histograms). A pool that is restarting
  /// at that moment is left out; shutting_down once stopped.
  caf::expected<runtime_stats> get_all_stats();

  /// The workers of one pool: ready, busy, draining, and those starting or
  /// restarting (see `worker_info::state`). For a pool only nodes serve: every
  /// connected node's workers, their ids prefixed "<node>/".
  caf::expected<std::vector<worker_info>> list_workers(const std::string& pool = {});

  /// How a worker's initialisation stands: initializing, ready, failed (with the
  /// reason) or not_found (upstream WorkerStarterRegistry.get_init_status).
  caf::expected<worker_init_status> get_init_status(const std::string& worker_id,
                                                    const std::string& pool = {});

  /// The configured worker nodes: state (connected, connecting, down since …),
  /// their pools' latest load, calls sent and lost (docs/distribution.md).
  std::vector<distribution::node_view> nodes() const;

  /// The workers of every running pool, by pool name.
  caf::expected<std::map<std::string, std::vector<worker_info>>> list_all_workers();

  /// Recycles a worker now (docs/reliability.md): a replacement starts, then the
  /// worker drains and stops. Error: invalid_argument for an unknown worker.
  caf::error recycle_worker(const std::string& worker_id, const std::string& pool = {});

  /// Changes a running pool's number of workers (docs/pool.md "Resizing"). Growing
  /// starts the missing workers in the start-up's batches; shrinking drains the
  /// chosen workers first (they finish their calls, none fails because of the
  /// resize). Returns once the change is under way; a restarted pool keeps the new
  /// size. Errors: invalid_argument (outside 1..1024), pool_not_found,
  /// shutting_down.
  caf::error resize_pool(const std::string& pool, size_t n);

  /// Adds a pool to the running runtime and waits until it is ready (or `timeout`):
  /// it is checked against the whole configuration first (invalid_config naming the
  /// key; a duplicate name), its host adapter is initialised, it starts under the
  /// runtime's supervisor like the configured pools. A pool whose workers cannot
  /// start is removed again and its error returned (start_failed, not_ready).
  caf::error add_pool(pool_config pool,
                      std::chrono::milliseconds timeout = std::chrono::milliseconds{
                        60000});

  /// Removes a pool from the running runtime: new calls to it fail with
  /// shutting_down, calls in flight get up to its graceful_shutdown_timeout to
  /// finish, then the pool and its workers stop and its name is free again
  /// (pool_not_found afterwards). Errors: pool_not_found, invalid_argument for the
  /// runtime's only pool, shutting_down.
  caf::error remove_pool(const std::string& name);

  /// Every OS pid the runtime started and has not seen exit: its workers and their
  /// templates (`pool_config::start_method`).
  std::vector<int> live_processes() const;

  /// The bound address of the metrics endpoint ("127.0.0.1:PORT", the real port
  /// when configured with port 0); empty when `config::metrics.address` is empty.
  std::string metrics_address() const;

  /// The control socket's path (`<runtime dir>/control.sock`); empty when
  /// `config::control_socket` is off.
  std::string control_socket() const;

  /// The runtime's telemetry bus: attach handlers here (docs/telemetry.md).
  telemetry::bus& telemetry();

  /// Attaches the default request logger (telemetry::attach_default_logger) to the
  /// bus: one line per finished request in the runtime's log at `level`. Returns the
  /// handler id, for `telemetry().detach`.
  uint64_t attach_default_logger(adapters::log_level level = adapters::log_level::debug);

  /// Tells every worker's Python process, now and after any restart, which of its
  /// telemetry events to relay (upstream TelemetryControl: on/off, sampling, name
  /// filters). Error: invalid_argument for a sampling rate outside [0, 1].
  caf::error set_python_telemetry(adapters::telemetry_control ctl);

  /// The runtime's log (level adjustable at run time; see adapters/log.hpp).
  adapters::logger& log();

  /// The private state (actors/runtime/detail/runtime_impl.hpp).
  struct impl;

 private:
  explicit runtime(std::unique_ptr<impl> ptr);
  static caf::expected<std::unique_ptr<runtime>> launch(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// The boot sweep on demand (upstream `mix snakepit.cleanup`): in the registry of
/// `cfg.data_dir`, kills the processes of dead runs whose pid and start time still
/// match their record and removes every stale entry. Live runtimes are left alone.
caf::expected<adapters::sweep_report> cleanup_orphans(const config& cfg);

/// Starts a runtime, runs `fn`, and stops it whatever happens (upstream
/// run_as_script). Returns the start error, or the stop error.
caf::error run_as_script(config cfg, const std::function<void(runtime&)>& fn,
                         start_options opts = {});

} // namespace snakepit
