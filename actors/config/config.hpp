// Configuration of a snakepit runtime and its pools: plain structs, one sub-struct per
// concern, with defaults next to each field (upstream Snakepit.Config and its :balanced
// timeout profile) and a validate() that names the offending key before anything is
// spawned. The keys and their checks are declared once, in config_keys.hpp.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/error.hpp>

#include "adapters/log.hpp"

namespace snakepit {

class adapter;

/// How the host talks to a pool's workers (docs/workers.md).
enum class worker_kind : uint8_t {
  /// BridgeService over gRPC (a unix socket the worker binds; ready file, Ping).
  grpc,
  /// Length-prefixed JSON frames over the worker's stdin and stdout.
  stdio,
};

/// How a gRPC worker is launched and found (docs/workers.md, "gRPC launch
/// conventions").
enum class launch_convention : uint8_t {
  /// Ours: `--socket <path> --ready-file <path> …` for the bundled bridge; a program of
  /// its own gets SNAKEPIT_SOCKET and SNAKEPIT_READY_FILE. It binds the unix socket, then
  /// writes the ready file.
  snakepit,
  /// Upstream Snakepit's: `--adapter <class> --port 0 --elixir-address <host bridge>
  /// --snakepit-run-id <id>`, SNAKEPIT_READY_FILE and SNAKEPIT_HEARTBEAT_CONFIG in the
  /// environment. The worker binds a loopback TCP port itself and writes the bare port
  /// number into the ready file; the host dials 127.0.0.1:<port>.
  upstream,
};

/// How the processes of a pool's workers are started (docs/workers.md, "Fast start").
enum class start_method : uint8_t {
  /// `forkserver` where it applies (the bundled Python bridge over gRPC, launched by
  /// a command the host adapter left as it was), else `spawn`.
  automatic,
  /// A fresh process per worker (posix_spawn of the command).
  spawn,
  /// A copy of the pool's template process, which imported grpc and the bridge once
  /// (python/snakepit_bridge/forkserver.py); falls back to `spawn` should the
  /// template fail.
  forkserver,
};

/// Worker profile (upstream WorkerProfile): `process` runs one request at a time per
/// worker; `thread` runs up to `threads_per_worker` at once (sync tools on a thread
/// pool of that size, async tools on the worker's event loop).
enum class worker_profile : uint8_t { process, thread };

/// Who schedules by capacity (seed 002).
enum class capacity_strategy : uint8_t {
  /// The pool tracks load and capacity and dispatches accordingly.
  pool,
  /// As `pool`, and the pool also reports each worker reaching its capacity
  /// (`snakepit.pool.capacity_reached`).
  hybrid,
  /// The pool dispatches one request per worker at a time and leaves any further
  /// concurrency to callers that use the profile directly.
  profile,
};

/// Session affinity (upstream :hint, :strict_queue, :strict_fail_fast). In the strict
/// modes a dead worker gives session_worker_unavailable.
enum class affinity_mode : uint8_t {
  /// Prefer the session's worker while it has headroom, else any.
  hint,
  /// Wait for the session's worker.
  strict_queue,
  /// Fail with worker_busy when the session's worker has no headroom.
  strict_fail_fast,
};

/// The name of a choice as a configuration file writes it ("thread", "hybrid", ...).
const char* to_string(worker_profile x);
/// The name of a choice as a configuration file writes it ("grpc", "stdio").
const char* to_string(worker_kind x);
/// The name of a choice as a configuration file writes it ("snakepit", "upstream").
const char* to_string(launch_convention x);
/// The name of a choice as a configuration file writes it ("auto", "spawn", ...).
const char* to_string(start_method x);
/// The name of a choice as a configuration file writes it.
const char* to_string(capacity_strategy x);
/// The name of a choice as a configuration file writes it.
const char* to_string(affinity_mode x);

/// Parses "grpc" or "stdio"; nullopt for anything else.
std::optional<worker_kind> parse_worker_kind(std::string_view name);
/// Parses "snakepit" or "upstream"; nullopt for anything else.
std::optional<launch_convention> parse_launch_convention(std::string_view name);
/// Parses "auto", "spawn" or "forkserver"; nullopt for anything else.
std::optional<start_method> parse_start_method(std::string_view name);
/// Parses "process" or "thread"; nullopt for anything else.
std::optional<worker_profile> parse_worker_profile(std::string_view name);
/// Parses "pool", "hybrid" or "profile"; nullopt for anything else.
std::optional<capacity_strategy> parse_capacity_strategy(std::string_view name);
/// Parses "hint", "strict_queue" or "strict_fail_fast"; nullopt for anything else.
std::optional<affinity_mode> parse_affinity_mode(std::string_view name);

/// Heartbeat (upstream HeartbeatMonitor): the worker pings its process every
/// interval; a ping unanswered within the timeout counts as missed, and after
/// `max_missed` misses in a row a dependent worker's process is killed (its starter
/// then restarts it). Independent workers only report the misses.
struct pool_heartbeat {
  /// Ping at all.
  bool enabled = true;
  /// Time between pings.
  std::chrono::milliseconds interval{2000};
  /// A ping unanswered this long is missed.
  std::chrono::milliseconds timeout{10000};
  /// Misses in a row that make a dependent worker's process be killed.
  int max_missed = 3;
  /// Kill the process after `max_missed` misses (false: only report them).
  bool dependent = true;
};

/// Recycling (upstream LifecycleManager; docs/reliability.md). Recycling drains: the
/// worker takes no new work, a replacement starts first, and the old one stops once
/// its calls finished.
struct pool_recycling {
  /// A worker is replaced this long after it became ready; 0: never.
  std::chrono::milliseconds ttl{0};
  /// A worker is replaced after this many requests; 0: never.
  uint64_t max_requests = 0;
  /// Each worker's request limit is drawn from [max·(1−jitter), max], so a pool does
  /// not recycle all its workers at once.
  double requests_jitter = 0.1;
  /// A worker is replaced when its Python process's resident memory exceeds this
  /// many MiB; 0: never.
  uint64_t max_memory_mb = 0;
  /// How often TTL and memory are checked.
  std::chrono::milliseconds check_interval{5000};
};

/// Crash barrier: a worker whose process died of one of the `causes` is not offered
/// new requests for `duration` after its restart while an untainted worker is ready.
struct pool_taint {
  /// Causes that taint (segfault, abort, bus_error, illegal_instruction, fpe, killed,
  /// exit_<code>); empty: no tainting.
  std::vector<std::string> causes = {"segfault", "abort", "bus_error",
                                     "illegal_instruction", "fpe"};
  /// How long a restarted worker stays tainted.
  std::chrono::milliseconds duration{30000};
};

/// Idempotent calls (`execute_options::idempotent`) whose worker crashed run again on
/// another worker, within their original deadline.
struct pool_retry {
  /// Further attempts after the first; 0: never retried.
  int max_attempts = 2;
  /// Delay before each attempt (the last entry repeats; ±25 % jitter).
  std::vector<std::chrono::milliseconds> backoff = {std::chrono::milliseconds{50},
                                                    std::chrono::milliseconds{100},
                                                    std::chrono::milliseconds{200}};
};

/// Circuit breaker: after `threshold` worker starts in a row failed the pool stops
/// restarting them and fails calls that find no ready worker with `circuit_open`;
/// after `reset` one probe worker is started (half-open) and its success closes the
/// circuit again.
struct pool_circuit {
  /// Failed starts in a row that open the circuit; 0: no breaker.
  int threshold = 5;
  /// Time until the half-open probe.
  std::chrono::milliseconds reset{30000};
  /// Calls in a row that ended in `worker_crashed` or `timeout` and open the
  /// circuit for calls (new calls get `circuit_open` until, after `reset`, one
  /// trial call succeeds); 0: calls never open it.
  int call_failures = 0;
};

/// Restart intensity of a supervisor (OTP `intensity`/`period`; upstream 3 in 5 s):
/// more restarts than this within the period and the supervisor gives up.
struct restart_intensity {
  /// Restarts allowed within `max_seconds`.
  int max_restarts = 3;
  /// The period.
  std::chrono::seconds max_seconds{5};
};

/// The pool's request queue (upstream's `:queue` with `queue_timeout`).
struct pool_queue {
  /// Maximum number of queued requests; beyond it calls fail with `pool_saturated`.
  size_t max_size = 1000;
  /// How long a request may wait in the queue.
  std::chrono::milliseconds timeout{10000};
};

/// How the pool starts its workers.
struct pool_startup {
  /// Workers started concurrently (upstream `startup_batch_size`).
  size_t concurrency = 10;
  /// Budget for one worker to become ready (ready file + Ping).
  std::chrono::milliseconds ready_timeout{30000};
};

/// Bounds on what a caller may send (upstream `Snakepit.Validation`): checked before
/// a request is queued or dispatched, on every path into the pool; a request outside
/// them fails with `invalid_argument` naming the rule (docs/errors.md).
struct pool_input_limits {
  /// Longest command (tool) name in bytes (upstream: under 1000). Names must also be
  /// printable: valid UTF-8 without control characters, and not empty.
  size_t max_command_bytes = 999;
  /// Most keys at the top level of the argument object (upstream: under 100).
  size_t max_arg_keys = 100;
  /// Deepest nesting of objects and arrays in the arguments (a flat object is 1).
  size_t max_arg_depth = 32;
  /// Most JSON values in the arguments, counted through every level; 0: no limit
  /// (the byte size is bounded by `max_message_bytes` in any case).
  size_t max_arg_values = 1000000;
};

/// One pool of identical workers.
struct pool_config {
  /// Pool name used for routing (`execute_options::pool`).
  std::string name = "default";
  /// Number of worker processes (upstream `pool_size`).
  size_t pool_size = 4;
  /// How the host talks to the workers.
  worker_kind kind = worker_kind::grpc;
  /// How a gRPC worker is launched and found; the stdio kind has only one way.
  launch_convention launch = launch_convention::snakepit;
  /// How the worker processes are started (a template process for the bundled Python
  /// gRPC bridge by default).
  snakepit::start_method start_method = snakepit::start_method::automatic;
  /// The worker program and its arguments (`["node", "node/bridge.js"]`); empty: the
  /// bundled Python bridge of `kind`, running `adapter`.
  std::vector<std::string> command;
  /// Working directory of the workers; empty: the host's.
  std::string cwd;
  /// Adapter class of the bundled Python bridge, `pkg.module.Class`.
  std::string adapter = "snakepit_bridge.adapters.showcase.ShowcaseAdapter";
  /// The adapter's own settings, a JSON object every worker process gets once
  /// (`SNAKEPIT_ADAPTER_CONFIG`; the Python hook `on_worker_start(config)`).
  std::string adapter_config = "{}";
  /// The host-side adapter: hooks around every call of this pool (validation,
  /// arguments, responses, timeouts; docs/workers.md). Null: configuration only.
  std::shared_ptr<snakepit::adapter> host_adapter;
  /// How many requests one worker runs at once.
  snakepit::worker_profile worker_profile = snakepit::worker_profile::process;
  /// Concurrent requests per worker under the `thread` profile.
  size_t threads_per_worker = 4;
  /// Who schedules by capacity.
  snakepit::capacity_strategy capacity_strategy = snakepit::capacity_strategy::pool;
  /// Session affinity of calls that name no mode of their own.
  affinity_mode affinity = affinity_mode::hint;
  /// Extra command-line arguments for the worker.
  std::vector<std::string> adapter_args;
  /// Extra environment for the worker; wins over the thread-limit defaults.
  std::vector<std::pair<std::string, std::string>> adapter_env;
  /// Blocking `runtime::execute` callers may run their call on their own thread
  /// when the pool would dispatch it at once (the direct lane, docs/architecture.md);
  /// false sends every call through the pool and worker actors.
  bool direct_dispatch = true;
  /// The request queue.
  pool_queue queue;
  /// Largest request payload (arguments plus binary parameters); larger ones fail
  /// with `payload_too_large` before they take a worker. Upstream's 100 MiB.
  size_t max_message_bytes = 100u << 20;
  /// What a request's command name and arguments may be.
  pool_input_limits input;
  /// Default end-to-end budget of a call when the caller gives none.
  std::chrono::milliseconds request_timeout{300000};
  /// Worker startup.
  pool_startup startup;
  /// A sync tool cannot be interrupted: when its call was cancelled (deadline,
  /// caller gone) and it still runs this long after, its worker process exits
  /// (status 86) and is restarted, freeing the thread it held. 0: never.
  std::chrono::milliseconds cancel_grace{5000};
  /// SIGTERM grace period before SIGKILL when a worker stops.
  std::chrono::milliseconds graceful_shutdown_timeout{6000};
  /// Heartbeat between each worker actor and its process.
  pool_heartbeat heartbeat;
  /// When workers are replaced although healthy.
  pool_recycling recycling;
  /// Crash barrier.
  pool_taint taint;
  /// Retries of idempotent calls.
  pool_retry retry;
  /// Circuit breaker over worker starts.
  pool_circuit circuit;
  /// Restart intensity of each worker_starter.
  restart_intensity restart;

  /// Checks every field; the error message names the key and the pool.
  caf::error validate() const;

  /// Requests one worker may run at once under this profile.
  size_t capacity() const;

  /// Whether the workers are the bundled Python bridge (no `command`).
  bool bundled_python() const { return command.empty(); }
};

/// The runtime's log (docs/observability.md, "Logs"): the host's own lines and the
/// captured stderr of its workers.
struct log_config {
  /// Lowest level written. Workers log at the matching Python level (a pool's
  /// adapter_env SNAKEPIT_LOG_LEVEL wins).
  adapters::log_level level = adapters::log_level::warn;
  /// `text` (`<ts> <level> snakepit: <msg> key=value ...`) or `json` (one object per
  /// line: ts, level, logger, msg and the fields).
  adapters::log_format format = adapters::log_format::text;
  /// Write lines to the host's stderr.
  bool to_stderr = true;
  /// Also append lines to this file; empty = no file.
  std::string file;
  /// Read each worker's stderr through a pipe and log it line by line with the
  /// worker's id (false: workers inherit the host's stderr, untouched).
  bool capture_worker_stderr = true;
  /// Level of captured stderr lines that are not Python log records (print,
  /// tracebacks, warnings).
  adapters::log_level worker_stderr_level = adapters::log_level::warn;

  /// Checks the choices; the message names the key (`log.level: ...`).
  caf::error validate() const;
};

/// Limits and timers of the runtime's sessions (docs/sessions.md).
struct session_limits {
  /// Idle time after which a session is removed.
  std::chrono::seconds ttl{3600};
  /// How often expired sessions are swept.
  std::chrono::milliseconds sweep_interval{60000};
  /// The most sessions at once (beyond it: quota_exceeded; a warning event at 80 %).
  size_t max = 10000;
};

/// The Prometheus metrics endpoint (docs/observability.md).
struct metrics_endpoint {
  /// "host:port" to serve `GET /metrics` on; empty = off; port 0 = a free port (see
  /// `runtime::metrics_address`). Only loopback hosts unless `allow_remote`.
  std::string address;
  /// Allow `address` on a non-loopback interface (the endpoint has no
  /// authentication).
  bool allow_remote = false;
};

/// A worker node this runtime sends calls to (`snakepit node`; docs/distribution.md).
struct node_config {
  /// The node's name in stats, logs and errors; empty: its address.
  std::string name;
  /// "host:port" the node listens on.
  std::string address;

  /// `name`, else `address`.
  const std::string& display_name() const { return name.empty() ? address : name; }
};

/// Mutual TLS between hosts and nodes (CAF's openssl module; docs/distribution.md,
/// "Security"): each side presents `certificate` and accepts only a peer whose
/// certificate chains to `ca`. All three files are required once any key is set;
/// they are checked (readable, the key matching the certificate) before the actor
/// system starts.
struct tls_config {
  /// PEM certificate (a chain is fine) this process presents.
  std::string certificate;
  /// Its PEM private key.
  std::string key;
  /// PEM file of the CA(s) a peer's certificate must be signed by.
  std::string ca;
  /// Passphrase of an encrypted `key`; empty: none.
  std::string passphrase;

  /// Whether any key is set (TLS is then on, for every node connection).
  bool enabled() const {
    return !certificate.empty() || !key.empty() || !ca.empty() || !passphrase.empty();
  }
};

/// The whole runtime.
struct config {
  /// Interpreter that has grpcio and protobuf (Debian's, not the first on PATH).
  std::string python = "/usr/bin/python3";
  /// PYTHONPATH entries for the `snakepit_bridge` package and the generated
  /// protobuf modules; empty means found at run time: SNAKEPIT_PYTHON_PACKAGE_DIR,
  /// else <prefix>/share/snakepit/python of an installed snakepit, else the build
  /// tree's (actors/config/bundled_packages.hpp, docs/install.md).
  std::vector<std::string> python_path;
  /// The pools; at least one.
  std::vector<pool_config> pools = {pool_config{}};
  /// Restart intensity of the dynamic worker supervisor.
  restart_intensity worker_sup;
  /// Sessions (docs/sessions.md).
  session_limits sessions;
  /// Deadline for an orderly stop before remaining processes are killed.
  std::chrono::milliseconds shutdown_timeout{15000};
  /// Check that the interpreter can `import grpc` before starting (one short
  /// child process at start), when a pool runs the bundled Python bridge over gRPC.
  /// Tests of config errors rely on it.
  bool check_interpreter = true;
  /// Where the persisted process registry lives (`processes.db`); empty means
  /// `$XDG_STATE_HOME/snakepit`, else `~/.local/state/snakepit`, else
  /// `/tmp/snakepit-state-<uid>`. Runtimes sharing it never sweep each other.
  std::string data_dir;
  /// At start, kill what earlier (dead) runs left behind, matched by pid and start
  /// time, and drop their entries (docs/reliability.md).
  bool sweep_orphans_at_start = true;
  /// Prometheus metrics endpoint (docs/observability.md).
  metrics_endpoint metrics;
  /// Serve stats and workers as JSON on `<runtime dir>/control.sock` (mode 0600),
  /// where `snakepit stats` and `snakepit workers` find a running instance.
  bool control_socket = true;
  /// The log (`[log]` in a config file).
  log_config log;
  /// How often the runtime hands the allocator's free memory back to the system
  /// (glibc `malloc_trim`: gRPC's and CAF's threads each fragment an arena of their
  /// own, docs/reliability.md "Soak"); 0 = never. It affects the whole process.
  std::chrono::milliseconds release_memory_interval{10000};
  /// Cap on glibc's malloc arenas for the whole process, set when the runtime starts
  /// (`mallopt(M_ARENA_MAX)`); 0 = leave the allocator's default (8 per core). Each
  /// thread that allocates may otherwise get an arena of its own, which a long run
  /// fragments; 2 keeps a long-running host's memory flatter (docs/reliability.md
  /// "Soak") at the cost of more contention on the allocator between threads.
  int malloc_arena_max = 0;
  /// Worker nodes whose pools this runtime also uses (`[[nodes]]`; the actor
  /// system it owns then loads CAF's middleman; docs/distribution.md).
  std::vector<node_config> nodes;
  /// Budget of one connection attempt to a node (TCP, BASP and the handshake);
  /// failed attempts are retried with back-off from 100 ms to 5 s.
  std::chrono::milliseconds node_connect_timeout{2000};
  /// BASP heartbeat interval towards nodes (and of a node towards its hosts).
  std::chrono::milliseconds node_heartbeat{1000};
  /// A node connection silent this long is closed and the node counts as lost
  /// (a stopped or cut-off node); above `node_heartbeat`.
  std::chrono::milliseconds node_timeout{4000};
  /// TLS for node connections, both as a host and as a node (`[tls]`); off by
  /// default (plain BASP, loopback only unless a node allows otherwise).
  tls_config tls;
  /// As a node (`snakepit node`, `distribution::node`): listen on a non-loopback
  /// address without TLS (plain BASP authenticates nobody; a warning is logged).
  bool node_allow_insecure = false;

  /// Checks the fields and (if `check_interpreter`) the interpreter itself:
  /// missing, not executable, or without grpc. Runs no worker.
  caf::error validate() const;

  /// The PYTHONPATH this config gives workers.
  std::string effective_python_path() const;
};

} // namespace snakepit
