#include "actors/worker/detail/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <sstream>
#include <utility>
#include <vector>

#include <caf/send.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "actors/observability/telemetry.hpp"
#include "actors/worker/detail/protocol.hpp"
#include "actors/worker/worker_templates.hpp"
#include "adapters/errors.hpp"
#include "adapters/orphan_guard.hpp"
#include "adapters/stderr_pump.hpp"

namespace snakepit::actors::detail {

namespace {

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

/// A small file's content without trailing blanks and newlines.
std::string read_text(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  auto s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
    s.pop_back();
  return s;
}

/// Flags the worker's own heartbeat toward the host takes from the pool's settings.
std::vector<std::string> heartbeat_flags(const pool_config& cfg) {
  return {"--heartbeat-enabled",
          cfg.heartbeat.enabled ? "true" : "false",
          "--heartbeat-interval-ms",
          std::to_string(cfg.heartbeat.interval.count()),
          "--heartbeat-timeout-ms",
          std::to_string(cfg.heartbeat.timeout.count()),
          "--heartbeat-max-missed",
          std::to_string(cfg.heartbeat.max_missed),
          cfg.heartbeat.dependent ? "--heartbeat-dependent" : "--heartbeat-independent"};
}

/// SNAKEPIT_HEARTBEAT_CONFIG of upstream's convention: the pool's heartbeat as JSON.
std::string upstream_heartbeat_config(const pool_config& cfg) {
  return nlohmann::json{{"enabled", cfg.heartbeat.enabled},
                        {"interval_ms", cfg.heartbeat.interval.count()},
                        {"timeout_ms", cfg.heartbeat.timeout.count()},
                        {"max_missed_heartbeats", cfg.heartbeat.max_missed},
                        {"dependent", cfg.heartbeat.dependent}}
    .dump();
}

/// The bundled Python gRPC bridge's arguments after the interpreter.
std::vector<std::string> grpc_bridge_args(const worker_args& args,
                                          const std::string& socket_path,
                                          const std::string& ready_path) {
  auto& env = *args.env;
  auto& cfg = args.pool_cfg;
  // The Python side finishes its own shutdown a little before the host's SIGKILL.
  auto grace = std::max<int64_t>(cfg.graceful_shutdown_timeout.count() - 500, 100);
  std::vector<std::string> out{"-m",
                               "snakepit_bridge",
                               "--adapter",
                               cfg.adapter,
                               "--socket",
                               socket_path,
                               "--ready-file",
                               ready_path,
                               "--worker-id",
                               args.id,
                               "--parent-fd",
                               std::to_string(adapters::lifeline_child_fd()),
                               "--snakepit-run-id",
                               env.run_id,
                               "--grace-period-ms",
                               std::to_string(grace),
                               "--cancel-grace-ms",
                               std::to_string(cfg.cancel_grace.count())};
  if (!env.bridge_address.empty()) {
    out.emplace_back("--elixir-address");
    out.push_back(env.bridge_address);
    auto hb = heartbeat_flags(cfg);
    out.insert(out.end(), hb.begin(), hb.end());
  }
  if (cfg.worker_profile == snakepit::worker_profile::thread) {
    out.emplace_back("--max-workers");
    out.push_back(std::to_string(cfg.threads_per_worker));
  }
  return out;
}

/// What every worker of any kind finds in its environment (docs/workers.md).
std::vector<std::pair<std::string, std::string>> process_env(const worker_args& args) {
  auto& env = *args.env;
  auto& cfg = args.pool_cfg;
  auto grace = std::max<int64_t>(cfg.graceful_shutdown_timeout.count() - 500, 100);
  return {
    {"PYTHONPATH", env.python_path},
    {"SNAKEPIT_WORKER_ID", args.id},
    {"SNAKEPIT_POOL", cfg.name},
    {"SNAKEPIT_RUN_ID", env.run_id},
    {"SNAKEPIT_ADAPTER_CONFIG", cfg.adapter_config},
    {"SNAKEPIT_MAX_MESSAGE_BYTES", std::to_string(cfg.max_message_bytes)},
    {"SNAKEPIT_GRACE_MS", std::to_string(grace)},
    {"SNAKEPIT_THREADS", std::to_string(cfg.capacity())},
    // Python logs at the host's level; captured stderr is parsed as JSON records.
    {"SNAKEPIT_LOG_LEVEL", python_log_level(env.log->level())},
    {"SNAKEPIT_LOG_FORMAT",
     env.stderr_pump || env.log->format() == adapters::log_format::json ? "json"
                                                                        : "text"},
  };
}

void unlink_quietly(const std::string& path) {
  if (!path.empty())
    ::unlink(path.c_str());
}

caf::error start_failed(const worker_args& args, const caf::error& err) {
  return caf::make_error(errc::start_failed,
                         fmt::format("worker {}: {}", args.id, describe(err)));
}

void announce_spawn(const worker_args& args, pid_t pid) {
  auto& env = *args.env;
  if (env.log->enabled(adapters::log_level::debug)) {
    auto f = worker_fields(args);
    f["pid"] = pid;
    env.log->debug("worker spawned", f);
  }
  if (auto& bus = env.telemetry; bus && bus->active())
    bus->emit("snakepit.worker.spawned", {{"pid", pid}},
              {{"pool", args.pool_cfg.name}, {"worker_id", args.id}});
}

/// Whether the worker can be a copy of a template (python/snakepit_bridge/
/// forkserver.py): the bundled bridge over gRPC, its command as we made it.
bool templated(const worker_args& args, const adapters::process_spec& spec) {
  auto& cfg = args.pool_cfg;
  return args.env->templates && cfg.kind == worker_kind::grpc && cfg.bundled_python() &&
         cfg.start_method != start_method::spawn && spec.executable == args.env->python &&
         spec.args.size() >= 2 && spec.args[0] == "-m" &&
         spec.args[1] == "snakepit_bridge";
}

/// The worker's process: a copy of its template where it can be one, else spawned.
caf::expected<adapters::child_process> spawn_worker(const worker_args& args,
                                                    const adapters::process_spec& spec) {
  if (templated(args, spec)) {
    auto timeout = std::min<std::chrono::milliseconds>(
      args.pool_cfg.startup.ready_timeout, std::chrono::seconds{10});
    auto proc = args.env->templates->spawn(spec, timeout);
    if (proc)
      return proc;
    // A failed template was logged once; this worker starts the usual way.
    if (args.env->log->enabled(adapters::log_level::debug)) {
      auto f = worker_fields(args);
      f["error"] = describe(proc.error());
      args.env->log->debug("worker not started from its template", f);
    }
  }
  return adapters::spawn_process(spec);
}

} // namespace

const char* python_log_level(adapters::log_level lvl) {
  switch (lvl) {
  case adapters::log_level::trace:
  case adapters::log_level::debug:
    return "debug";
  case adapters::log_level::info:
    return "info";
  case adapters::log_level::warn:
    return "warning";
  case adapters::log_level::error:
    return "error";
  case adapters::log_level::critical:
    return "critical";
  case adapters::log_level::off:
    break;
  }
  return "none";
}

worker_launch make_launch(const worker_args& args, const std::string& socket_path,
                          const std::string& ready_path) {
  auto& cfg = args.pool_cfg;
  worker_launch l;
  l.worker_id = args.id;
  l.kind = cfg.kind;
  l.cwd = cfg.cwd;
  bool upstream =
    cfg.kind == worker_kind::grpc && cfg.launch == launch_convention::upstream;
  if (upstream) {
    // Upstream Snakepit's convention (docs/workers.md): the worker binds a loopback
    // port itself and writes the bare port number into the ready file.
    if (cfg.bundled_python())
      l.command = {args.env->python, "-m", "snakepit_bridge"};
    else
      l.command = cfg.command;
    if (!cfg.adapter.empty())
      l.command.insert(l.command.end(), {"--adapter", cfg.adapter});
    l.command.insert(l.command.end(),
                     {"--port", "0", "--elixir-address", args.env->bridge_address,
                      "--snakepit-run-id", args.env->run_id});
    l.command.insert(l.command.end(), cfg.adapter_args.begin(), cfg.adapter_args.end());
    l.env.emplace_back("SNAKEPIT_READY_FILE", ready_path);
    l.env.emplace_back("SNAKEPIT_HEARTBEAT_CONFIG", upstream_heartbeat_config(cfg));
  } else if (cfg.bundled_python()) {
    l.command.push_back(args.env->python);
    if (cfg.kind == worker_kind::grpc) {
      auto rest = grpc_bridge_args(args, socket_path, ready_path);
      l.command.insert(l.command.end(), rest.begin(), rest.end());
    } else {
      l.command.insert(l.command.end(), {"-m", "snakepit_bridge.stdio", "--adapter",
                                         cfg.adapter, "--worker-id", args.id});
    }
    l.command.insert(l.command.end(), cfg.adapter_args.begin(), cfg.adapter_args.end());
  } else {
    l.command = cfg.command;
    l.command.insert(l.command.end(), cfg.adapter_args.begin(), cfg.adapter_args.end());
  }
  if (cfg.kind == worker_kind::grpc && !cfg.bundled_python() && !upstream) {
    // A gRPC program of the host's choosing learns where to listen from its
    // environment (docs/workers.md): bind the socket, then write the ready file.
    l.env.emplace_back("SNAKEPIT_SOCKET", socket_path);
    l.env.emplace_back("SNAKEPIT_READY_FILE", ready_path);
    if (!args.env->bridge_address.empty())
      l.env.emplace_back("SNAKEPIT_HOST_ADDRESS", args.env->bridge_address);
  }
  if (cfg.worker_profile == snakepit::worker_profile::thread) {
    // A thread worker runs `threads_per_worker` requests at once: its numeric
    // libraries may use as many threads (the pool's adapter_env still wins).
    auto n = std::to_string(cfg.threads_per_worker);
    for (const char* key : {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                            "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"})
      l.env.emplace_back(key, n);
  }
  l.env.insert(l.env.end(), cfg.adapter_env.begin(), cfg.adapter_env.end());
  if (cfg.host_adapter)
    cfg.host_adapter->configure_launch(l);
  return l;
}

adapters::process_spec make_process_spec(const worker_args& args,
                                         const std::string& socket_path,
                                         const std::string& ready_path,
                                         const std::string& bridge_token) {
  auto l = make_launch(args, socket_path, ready_path);
  adapters::process_spec spec;
  if (!l.command.empty()) {
    spec.executable = l.command.front();
    spec.args.assign(l.command.begin() + 1, l.command.end());
  }
  auto overrides = process_env(args);
  overrides.insert(overrides.end(), l.env.begin(), l.env.end());
  // Last, so no pool setting replaces it; never on the command line (/proc/<pid>/
  // cmdline is world-readable, /proc/<pid>/environ only for our uid).
  if (!bridge_token.empty())
    overrides.emplace_back(bridge_token_env, bridge_token);
  spec.env = adapters::build_environment(overrides);
  spec.cwd = l.cwd;
  spec.new_process_group = true;
  spec.pass_lifeline = true;
  return spec;
}

// -- stderr_tail ------------------------------------------------------------------

void stderr_tail::add(std::string_view line) {
  constexpr size_t max_lines = 12;
  constexpr size_t max_chars = 400;
  while (!line.empty() && (line.back() == '\r' || line.back() == ' '))
    line.remove_suffix(1);
  if (line.empty())
    return;
  std::lock_guard<std::mutex> guard{mtx_};
  lines_.emplace_back(line.substr(0, max_chars));
  if (lines_.size() > max_lines)
    lines_.pop_front();
}

std::string stderr_tail::text() const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::string out;
  for (auto& l : lines_) {
    if (!out.empty())
      out += " | ";
    out += l;
  }
  return out;
}

std::string startup_error_text(const std::string& ready_path) {
  auto path = ready_path + ".error";
  if (!file_exists(path))
    return {};
  auto text = read_text(path);
  auto doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_object()) {
    auto type = doc.value("type", std::string{"Error"});
    auto msg = doc.value("message", std::string{});
    return fmt::format("{}: {}", type, msg);
  }
  return text;
}

// -- worker_process -------------------------------------------------------------

worker_process::~worker_process() {
  if (running())
    proc_->signal_group(SIGKILL);
  give_back_token();
  for (int fd : {stdin_fd_, stdout_fd_})
    if (fd >= 0)
      ::close(fd);
  unlink_quietly(socket_path_);
  if (!ready_path_.empty()) {
    ::unlink(ready_path_.c_str());
    ::unlink((ready_path_ + ".error").c_str());
    ::unlink((ready_path_ + ".tmp").c_str());
  }
}

caf::error worker_process::start(const worker_args& args,
                                 std::function<void(adapters::process_exit)> on_exit) {
  auto& env = *args.env;
  socket_path_ = env.runtime_dir + "/" + args.id + ".sock";
  ready_path_ = env.runtime_dir + "/" + args.id + ".ready";
  // A restarted worker reuses its id: clear whatever its predecessor left.
  ::unlink(socket_path_.c_str());
  ::unlink(ready_path_.c_str());
  ::unlink((ready_path_ + ".error").c_str());
  launch_ = make_launch(args, socket_path_, ready_path_);
  if (auto err = take_token(args))
    return start_failed(args, err);
  auto spec = make_process_spec(args, socket_path_, ready_path_, token_);
  if (env.stderr_pump) {
    auto fd = env.stderr_pump->open(
      worker_fields(args), [tail = tail_](std::string_view l) { tail->add(l); },
      adapters::pipe_options{args.pool_cfg.name, starting_});
    if (!fd)
      return start_failed(args, fd.error());
    spec.stderr_fd = *fd;
  }
  // The stdio kind: requests into a socket (the host writes with MSG_NOSIGNAL, so a
  // worker gone cannot raise SIGPIPE in the host), responses out of a pipe.
  int child_in = -1;
  int child_out = -1;
  if (launch_.kind == worker_kind::stdio) {
    int sv[2];
    int pp[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
      return start_failed(
        args, caf::make_error(errc::start_failed, "cannot create the request socket"));
    if (::pipe2(pp, O_CLOEXEC) != 0) {
      ::close(sv[0]);
      ::close(sv[1]);
      return start_failed(
        args, caf::make_error(errc::start_failed, "cannot create the response pipe"));
    }
    stdin_fd_ = sv[0];
    child_in = sv[1];
    stdout_fd_ = pp[0];
    child_out = pp[1];
    spec.stdin_fd = child_in;
    spec.stdout_fd = child_out;
  }
  auto proc = spawn_worker(args, spec);
  // The child has its copies: EOF comes when it is gone.
  for (int fd : {spec.stderr_fd, child_in, child_out})
    if (fd >= 0)
      ::close(fd);
  if (!proc)
    return start_failed(args, proc.error());
  proc_.emplace(std::move(*proc));
  auto pid = proc_->pid();
  announce_spawn(args, pid);
  auto procs = env.processes;
  procs->add(pid);
  // The worker leads its own process group: whatever it started dies with it, killed
  // by the watcher before the reap (the group id is still reserved then).
  auto group = proc_->own_group() ? proc_->pgid() : 0;
  // Should the host die without stopping us (even by SIGKILL), the reaper kills the
  // group: a worker program that ignores EOF, SIGTERM and the lifeline goes too.
  // (One snapshot: a runtime whose start failed late resets the guard while a worker
  // actor may still be starting.)
  std::weak_ptr<adapters::orphan_guard> guard;
  if (auto current = std::atomic_load(&env.guard); group > 0 && current) {
    if (auto err = current->watch(group)) {
      if (env.log->enabled(adapters::log_level::warn))
        env.log->warn("the orphan guard cannot watch this worker; it may outlive a host "
                      "killed by SIGKILL",
                      {{"worker_id", args.id}, {"pid", pid}, {"error", describe(err)}});
    } else {
      guard = current;
    }
  }
  adapters::exit_watcher::instance().watch(
    pid,
    [procs, pid, group, guard, tokens = tokens_, token = token_,
     on_exit = std::move(on_exit)](adapters::process_exit e) {
      if (auto g = guard.lock())
        g->unwatch(group);
      if (auto t = tokens.lock()) // the worker is gone: so is its way into the host
        t->revoke(token);
      procs->remove(pid);
      on_exit(e);
    },
    group);
  return caf::none;
}

caf::error worker_process::take_token(const worker_args& args) {
  give_back_token(); // a predecessor's, should start be called again
  auto& env = *args.env;
  // Only the gRPC kind is told where the bridge is; a stdio worker gets no token.
  if (!env.bridge_tokens || env.bridge_address.empty() ||
      args.pool_cfg.kind != worker_kind::grpc)
    return caf::none;
  auto token = env.bridge_tokens->issue();
  if (!token)
    return token.error();
  tokens_ = env.bridge_tokens;
  token_ = std::move(*token);
  return caf::none;
}

void worker_process::give_back_token() {
  if (auto t = tokens_.lock(); t && !token_.empty())
    t->revoke(token_);
  tokens_.reset();
  token_.clear();
}

bool worker_process::running() const {
  return proc_ && proc_->alive();
}

pid_t worker_process::pid() const {
  return proc_ ? proc_->pid() : 0;
}

void worker_process::signal(int sig) {
  if (running())
    proc_->signal_group(sig);
}

void worker_process::exited() {
  // The exit watcher killed the process group before reaping (see start).
  proc_.reset();
}

std::optional<std::string> worker_process::ready_target() const {
  if (!file_exists(ready_path_))
    return std::nullopt;
  auto target = read_text(ready_path_);
  if (target.empty())
    target = "unix:" + socket_path_;
  else if (std::all_of(target.begin(), target.end(),
                       [](char c) { return c >= '0' && c <= '9'; }))
    target = "127.0.0.1:" + target; // upstream's convention: the bare port number
  return target;
}

std::string worker_process::startup_error() const {
  auto own = startup_error_text(ready_path_);
  if (!own.empty())
    return own;
  auto tail = tail_->text();
  return tail.empty() ? tail : "stderr: " + tail;
}

std::pair<int, int> worker_process::take_stdio() {
  std::pair<int, int> fds{stdin_fd_, stdout_fd_};
  stdin_fd_ = -1;
  stdout_fd_ = -1;
  return fds;
}

// -- worker_readiness -----------------------------------------------------------

std::chrono::milliseconds worker_readiness::next_poll() {
  auto delay = poll_;
  poll_ = std::min(poll_ * 2, std::chrono::milliseconds{10});
  return delay;
}

std::optional<std::chrono::milliseconds>
worker_readiness::retry_after_failed_ping() const {
  if (ping_attempts_ >= 5)
    return std::nullopt;
  return std::chrono::milliseconds{std::min(50 << ping_attempts_, 500)};
}

void send_ready_ping(worker_readiness& readiness, adapters::worker_connection& client,
                     const worker_private& self) {
  readiness.pinging();
  client.ping("connection_test", std::chrono::seconds{2},
              [self](caf::expected<std::string> res) {
                caf::anon_send(self, ping_result_atom::value,
                               res ? caf::error{} : std::move(res.error()));
              });
}

// -- stop_escalation ------------------------------------------------------------

bool stop_escalation::begin(caf::error reason) {
  if (begun_)
    return false;
  begun_ = true;
  reason_ = std::move(reason);
  return true;
}

} // namespace snakepit::actors::detail
