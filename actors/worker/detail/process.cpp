#include "actors/worker/detail/process.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include <caf/send.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "actors/observability/telemetry.hpp"
#include "actors/worker/detail/protocol.hpp"
#include "adapters/errors.hpp"
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

std::vector<std::string> process_args(const worker_args& args,
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
  out.insert(out.end(), cfg.adapter_args.begin(), cfg.adapter_args.end());
  return out;
}

std::vector<std::pair<std::string, std::string>> process_env(const worker_args& args) {
  auto& env = *args.env;
  auto& cfg = args.pool_cfg;
  return {
    {"PYTHONPATH", env.python_path},
    {"SNAKEPIT_WORKER_ID", args.id},
    {"SNAKEPIT_POOL", cfg.name},
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

adapters::process_spec make_process_spec(const worker_args& args,
                                         const std::string& socket_path,
                                         const std::string& ready_path) {
  auto& cfg = args.pool_cfg;
  adapters::process_spec spec;
  spec.executable = args.env->python;
  spec.args = process_args(args, socket_path, ready_path);
  auto overrides = process_env(args);
  if (cfg.worker_profile == snakepit::worker_profile::thread) {
    // A thread worker runs `threads_per_worker` requests at once: its numeric
    // libraries may use as many threads (the pool's adapter_env still wins).
    auto n = std::to_string(cfg.threads_per_worker);
    spec.args.emplace_back("--max-workers");
    spec.args.push_back(n);
    for (const char* key : {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                            "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"})
      overrides.emplace_back(key, n);
  }
  overrides.insert(overrides.end(), cfg.adapter_env.begin(), cfg.adapter_env.end());
  spec.env = adapters::build_environment(overrides);
  spec.new_process_group = true;
  spec.pass_lifeline = true;
  return spec;
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
  auto spec = make_process_spec(args, socket_path_, ready_path_);
  if (env.stderr_pump) {
    auto fd = env.stderr_pump->open(worker_fields(args));
    if (!fd)
      return start_failed(args, fd.error());
    spec.stderr_fd = *fd;
  }
  auto proc = adapters::spawn_process(spec);
  if (spec.stderr_fd >= 0)
    ::close(spec.stderr_fd); // the child has its copy; EOF comes when it is gone
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
  adapters::exit_watcher::instance().watch(
    pid,
    [procs, pid, on_exit = std::move(on_exit)](adapters::process_exit e) {
      procs->remove(pid);
      on_exit(e);
    },
    group);
  return caf::none;
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
  return target;
}

std::string worker_process::startup_error() const {
  return startup_error_text(ready_path_);
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

void send_ready_ping(worker_readiness& readiness, adapters::bridge_client& client,
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
