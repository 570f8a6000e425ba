// Configuration of a snakepit runtime and its pools: plain structs with defaults next
// to each field (upstream Snakepit.Config and its :balanced timeout profile) and a
// validate() that names the offending field before anything is spawned.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <caf/error.hpp>

namespace snakepit {

/// One pool of identical Python workers.
struct pool_config {
  /// Pool name used for routing (`execute_options::pool`).
  std::string name = "default";
  /// Number of worker processes (upstream `pool_size`).
  size_t pool_size = 4;
  /// Adapter class, `pkg.module.Class`.
  std::string adapter = "snakepit_bridge.adapters.showcase.ShowcaseAdapter";
  /// Worker profile (upstream WorkerProfile): "process" runs one request at a
  /// time per worker; "thread" runs up to `threads_per_worker` at once (sync tools
  /// on a thread pool of that size, async tools on the worker's event loop).
  std::string worker_profile = "process";
  /// Concurrent requests per worker under the "thread" profile.
  size_t threads_per_worker = 4;
  /// Who schedules by capacity (seed 002): "pool" (default) — the pool tracks
  /// load/capacity and dispatches accordingly; "hybrid" — the same, and the pool
  /// also reports each worker reaching its capacity (`snakepit.pool.capacity_reached`);
  /// "profile" — the pool dispatches one request per worker at a time and leaves
  /// any further concurrency to callers that use the profile directly.
  std::string capacity_strategy = "pool";
  /// Session affinity (upstream): "hint" prefers the session's worker while it
  /// has headroom, else any; "strict_queue" waits for it; "strict_fail_fast"
  /// fails with worker_busy. In strict modes a dead worker gives
  /// session_worker_unavailable.
  std::string affinity = "hint";
  /// Extra command-line arguments for the worker.
  std::vector<std::string> adapter_args;
  /// Extra environment for the worker; wins over the thread-limit defaults.
  std::vector<std::pair<std::string, std::string>> adapter_env;
  /// Blocking `runtime::execute` callers may run their call on their own thread
  /// when the pool would dispatch it at once (the direct lane, docs/architecture.md);
  /// false sends every call through the pool and worker actors.
  bool direct_dispatch = true;
  /// Maximum number of queued requests; beyond it calls fail with `pool_saturated`.
  size_t max_queue_size = 1000;
  /// How long a request may wait in the queue (`queue_timeout`).
  std::chrono::milliseconds queue_timeout{10000};
  /// Largest request payload (arguments plus binary parameters); larger ones fail
  /// with `payload_too_large` before they take a worker. Upstream's 100 MiB.
  size_t max_message_bytes = 100u << 20;
  /// Default end-to-end budget of a call when the caller gives none.
  std::chrono::milliseconds request_timeout{300000};
  /// Workers started concurrently during startup (upstream `startup_batch_size`).
  size_t startup_concurrency = 10;
  /// Budget for one worker to become ready (ready file + Ping).
  std::chrono::milliseconds worker_ready_timeout{30000};
  /// A sync tool cannot be interrupted: when its call was cancelled (deadline,
  /// caller gone) and it still runs this long after, its worker process exits
  /// (status 86) and is restarted, freeing the thread it held. 0: never.
  std::chrono::milliseconds cancel_grace{5000};
  /// SIGTERM grace period before SIGKILL when a worker stops.
  std::chrono::milliseconds graceful_shutdown_timeout{6000};
  /// Heartbeat (upstream HeartbeatMonitor): the worker pings its process every
  /// interval; a ping unanswered within the timeout counts as missed, and after
  /// `heartbeat_max_missed` misses in a row a dependent worker's process is killed
  /// (its starter then restarts it). Independent workers only report the misses.
  bool heartbeat_enabled = true;
  std::chrono::milliseconds heartbeat_interval{2000};
  std::chrono::milliseconds heartbeat_timeout{10000};
  int heartbeat_max_missed = 3;
  bool heartbeat_dependent = true;
  /// Recycling (upstream LifecycleManager; docs/reliability.md): a worker is
  /// replaced after `worker_ttl` (0: never), after `worker_max_requests` requests
  /// (0: never; each worker's limit is drawn from [max·(1−jitter), max] so a pool
  /// does not recycle all at once), or when its Python process's resident memory
  /// exceeds `memory_threshold_mb` (0: never), checked every
  /// `lifecycle_check_interval`. Recycling drains: the worker takes no new work,
  /// a replacement starts first, and the old one stops once its calls finished.
  std::chrono::milliseconds worker_ttl{0};
  uint64_t worker_max_requests = 0;
  double max_requests_jitter = 0.1;
  uint64_t memory_threshold_mb = 0;
  std::chrono::milliseconds lifecycle_check_interval{5000};
  /// Crash barrier: a worker whose process died of one of the `taint_on` causes
  /// (segfault, abort, bus_error, illegal_instruction, fpe, killed, exit_<code>)
  /// is not offered new requests for `taint_duration` after its restart while an
  /// untainted worker is ready. Empty `taint_on`: no tainting.
  std::vector<std::string> taint_on = {"segfault", "abort", "bus_error",
                                       "illegal_instruction", "fpe"};
  std::chrono::milliseconds taint_duration{30000};
  /// Idempotent calls (`execute_options::idempotent`) whose worker crashed run
  /// again on another worker up to `retry_max_attempts` more times, after the
  /// backoff of that attempt (the last entry repeats; ±25 % jitter), within
  /// their original deadline. 0: never retried.
  int retry_max_attempts = 2;
  std::vector<std::chrono::milliseconds> retry_backoff = {std::chrono::milliseconds{50},
                                                          std::chrono::milliseconds{100},
                                                          std::chrono::milliseconds{200}};
  /// Circuit breaker: after `circuit_threshold` worker starts in a row failed
  /// (0: no breaker) the pool stops restarting them and fails calls that find no
  /// ready worker with `circuit_open`; after `circuit_reset` one probe worker is
  /// started (half-open) and its success closes the circuit again.
  int circuit_threshold = 5;
  std::chrono::milliseconds circuit_reset{30000};
  /// Restart intensity of each worker_starter (upstream 3 restarts in 5 s).
  int worker_max_restarts = 3;
  /// Restart period of each worker_starter.
  std::chrono::seconds worker_max_seconds{5};

  /// Checks every field; the error message names the field and the pool.
  caf::error validate() const;

  /// Requests one worker may run at once under this profile.
  size_t capacity() const;
};

/// The runtime's log (docs/observability.md, "Logs"): the host's own lines and the
/// captured stderr of its workers.
struct log_config {
  /// Lowest level written: trace, debug, info, warn, error, critical or off. Workers
  /// log at the matching Python level (a pool's adapter_env SNAKEPIT_LOG_LEVEL wins).
  std::string level = "warn";
  /// "text" (`<ts> <level> snakepit: <msg> key=value ...`) or "json" (one object per
  /// line: ts, level, logger, msg and the fields).
  std::string format = "text";
  /// Write lines to the host's stderr.
  bool to_stderr = true;
  /// Also append lines to this file; empty = no file.
  std::string file;
  /// Read each worker's stderr through a pipe and log it line by line with the
  /// worker's id (false: workers inherit the host's stderr, untouched).
  bool capture_worker_stderr = true;
  /// Level of captured stderr lines that are not Python log records (print,
  /// tracebacks, warnings).
  std::string worker_stderr_level = "warn";

  /// Checks the names; the message names the field (`log.level: ...`).
  caf::error validate() const;
};

/// The whole runtime.
struct config {
  /// Interpreter that has grpcio and protobuf (Debian's, not the first on PATH).
  std::string python = "/usr/bin/python3";
  /// PYTHONPATH entries for the `snakepit_bridge` package and the generated
  /// protobuf modules; empty means the ones of this build.
  std::vector<std::string> python_path;
  /// The pools; at least one.
  std::vector<pool_config> pools = {pool_config{}};
  /// Restart intensity of the dynamic worker supervisor (upstream 3 in 5 s).
  int worker_sup_max_restarts = 3;
  /// Restart period of the dynamic worker supervisor.
  std::chrono::seconds worker_sup_max_seconds{5};
  /// Sessions (docs/sessions.md): idle time after which a session is removed,
  /// how often expired sessions are swept, and the most sessions at once
  /// (beyond it: quota_exceeded; a warning event at 80 %).
  std::chrono::seconds session_ttl{3600};
  std::chrono::milliseconds session_sweep_interval{60000};
  size_t max_sessions = 10000;
  /// Deadline for an orderly stop before remaining processes are killed.
  std::chrono::milliseconds shutdown_timeout{15000};
  /// Check that the interpreter can `import grpc` before starting (one short
  /// child process at start). Tests of config errors rely on it.
  bool check_interpreter = true;
  /// Where the persisted process registry lives (`processes.db`); empty means
  /// `$XDG_STATE_HOME/snakepit`, else `~/.local/state/snakepit`, else
  /// `/tmp/snakepit-state-<uid>`. Runtimes sharing it never sweep each other.
  std::string data_dir;
  /// At start, kill what earlier (dead) runs left behind, matched by pid and start
  /// time, and drop their entries (docs/reliability.md).
  bool sweep_orphans_at_start = true;
  /// Prometheus metrics endpoint (docs/observability.md): "host:port" to serve
  /// `GET /metrics` on; empty = off; port 0 = a free port (see
  /// `runtime::metrics_address`). Only loopback hosts unless `metrics_allow_remote`.
  std::string metrics_address;
  /// Allow `metrics_address` on a non-loopback interface (the endpoint has no
  /// authentication).
  bool metrics_allow_remote = false;
  /// Serve stats and workers as JSON on `<runtime dir>/control.sock` (mode 0600),
  /// where `snakepit stats` and `snakepit workers` find a running instance.
  bool control_socket = true;
  /// The log (`[log]` in a config file).
  log_config log;

  /// Checks the fields and (if `check_interpreter`) the interpreter itself:
  /// missing, not executable, or without grpc. Runs no worker.
  caf::error validate() const;

  /// The PYTHONPATH this config gives workers.
  std::string effective_python_path() const;
};

} // namespace snakepit
