#include "actors/config/config.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>

#include <caf/sec.hpp>
#include <fmt/format.h>

#include "actors/pool/lifecycle.hpp"
#include "adapters/errors.hpp"
#include "adapters/log.hpp"
#include "adapters/process.hpp"

namespace snakepit {

namespace {

caf::error invalid(std::string what) {
  return caf::make_error(errc::invalid_config, std::move(what));
}

bool is_valid_pool_name(const std::string& name) {
  if (name.empty() || name.size() > 64)
    return false;
  for (char c : name)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'))
      return false;
  return true;
}

} // namespace

caf::error pool_config::validate() const {
  auto field = [&](const char* f, const std::string& why) {
    return invalid(fmt::format("pools[{}].{}: {}", name, f, why));
  };
  if (!is_valid_pool_name(name))
    return invalid(fmt::format("pools[].name: '{}' must be 1-64 characters of "
                               "[A-Za-z0-9_.-]", name));
  if (pool_size == 0)
    return field("pool_size", "must be at least 1");
  if (pool_size > 1024)
    return field("pool_size", "must be at most 1024");
  if (adapter.empty() || adapter.find('.') == std::string::npos)
    return field("adapter", fmt::format("'{}' is not of the form pkg.module.Class", adapter));
  if (worker_profile != "process" && worker_profile != "thread")
    return field("worker_profile", fmt::format("'{}' is neither \"process\" nor \"thread\"",
                                               worker_profile));
  if (capacity_strategy != "pool" && capacity_strategy != "hybrid"
      && capacity_strategy != "profile")
    return field("capacity_strategy", fmt::format("'{}' is not pool, hybrid or profile",
                                                  capacity_strategy));
  if (worker_profile == "thread" && (threads_per_worker == 0 || threads_per_worker > 1024))
    return field("threads_per_worker", "must be between 1 and 1024");
  if (affinity != "hint" && affinity != "strict_queue" && affinity != "strict_fail_fast")
    return field("affinity", fmt::format("'{}' is not hint, strict_queue or strict_fail_fast",
                                         affinity));
  if (heartbeat_enabled) {
    if (heartbeat_interval.count() <= 0)
      return field("heartbeat_interval", "must be positive");
    if (heartbeat_timeout.count() <= 0)
      return field("heartbeat_timeout", "must be positive");
    if (heartbeat_max_missed < 1)
      return field("heartbeat_max_missed", "must be at least 1");
  }
  if (max_message_bytes < 1024)
    return field("max_message_bytes", "must be at least 1024");
  if (queue_timeout.count() <= 0)
    return field("queue_timeout", "must be positive");
  if (request_timeout.count() <= 0)
    return field("request_timeout", "must be positive");
  if (startup_concurrency == 0)
    return field("startup_concurrency", "must be at least 1");
  if (worker_ready_timeout.count() <= 0)
    return field("worker_ready_timeout", "must be positive");
  if (graceful_shutdown_timeout.count() < 0)
    return field("graceful_shutdown_timeout", "must not be negative");
  if (worker_max_restarts < 0)
    return field("worker_max_restarts", "must not be negative");
  if (worker_max_seconds.count() <= 0)
    return field("worker_max_seconds", "must be positive");
  if (cancel_grace.count() < 0)
    return field("cancel_grace", "must not be negative (0: never restart)");
  if (worker_ttl.count() < 0)
    return field("worker_ttl", "must not be negative (0: no TTL)");
  if (!(max_requests_jitter >= 0 && max_requests_jitter < 1))
    return field("max_requests_jitter", "must be in [0, 1)");
  if (lifecycle_check_interval.count() <= 0)
    return field("lifecycle_check_interval", "must be positive");
  for (auto& cause : taint_on)
    if (!actors::is_crash_cause(cause))
      return field("taint_on",
                   fmt::format("'{}' is not segfault, abort, bus_error, illegal_instruction, "
                               "fpe, killed or exit_<code>",
                               cause));
  if (taint_duration.count() < 0)
    return field("taint_duration", "must not be negative");
  if (retry_max_attempts < 0 || retry_max_attempts > 10)
    return field("retry_max_attempts", "must be between 0 and 10");
  if (retry_max_attempts > 0 && retry_backoff.empty())
    return field("retry_backoff", "needs at least one delay when retries are on");
  for (auto& d : retry_backoff)
    if (d.count() < 0)
      return field("retry_backoff", "delays must not be negative");
  if (circuit_threshold < 0)
    return field("circuit_threshold", "must not be negative (0: no breaker)");
  if (circuit_reset.count() <= 0)
    return field("circuit_reset", "must be positive");
  for (auto& [k, v] : adapter_env)
    if (k.empty() || k.find('=') != std::string::npos)
      return field("adapter_env", fmt::format("'{}' is not a valid variable name", k));
  return caf::none;
}

size_t pool_config::capacity() const {
  if (capacity_strategy == "profile")
    return 1;
  return worker_profile == "thread" ? threads_per_worker : 1;
}

std::string config::effective_python_path() const {
  std::vector<std::string> entries = python_path;
  if (entries.empty()) {
    entries.emplace_back(SNAKEPIT_PYTHON_SOURCE_DIR);
    entries.emplace_back(SNAKEPIT_PYTHON_GEN_DIR);
  }
  std::string out;
  for (auto& e : entries) {
    if (!out.empty())
      out += ':';
    out += e;
  }
  return out;
}

namespace {

/// "host:port" with a loopback host unless remote exposure is asked for.
caf::error validate_metrics_address(const std::string& address, bool allow_remote) {
  if (address.empty())
    return caf::none;
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size())
    return invalid(fmt::format("metrics_address: '{}' is not host:port", address));
  auto host = address.substr(0, colon);
  auto port = address.substr(colon + 1);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos
      || std::stoul(port) > 65535)
    return invalid(fmt::format("metrics_address: '{}' has no valid port (0..65535)", address));
  if (host.front() == '[') {
    if (host.back() != ']' || host.size() < 3)
      return invalid(fmt::format("metrics_address: '{}': unbalanced [ ]", address));
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return invalid(fmt::format("metrics_address: '{}': write IPv6 hosts as [addr]:port",
                               address));
  }
  bool loopback = host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
  if (!loopback && !allow_remote)
    return invalid(fmt::format("metrics_address: '{}' is not a loopback address; set "
                               "metrics_allow_remote = true to serve metrics on it",
                               host));
  return caf::none;
}

} // namespace

caf::error log_config::validate() const {
  if (!adapters::parse_log_level(level))
    return invalid(fmt::format("log.level: '{}' is not trace, debug, info, warn, error, "
                               "critical or off", level));
  if (!adapters::parse_log_format(format))
    return invalid(fmt::format("log.format: '{}' is neither \"text\" nor \"json\"", format));
  if (!adapters::parse_log_level(worker_stderr_level))
    return invalid(fmt::format("log.worker_stderr_level: '{}' is not trace, debug, info, "
                               "warn, error, critical or off", worker_stderr_level));
  return caf::none;
}

caf::error config::validate() const {
  if (auto err = log.validate())
    return err;
  if (pools.empty())
    return invalid("pools: at least one pool is required");
  std::set<std::string> names;
  for (auto& p : pools) {
    if (auto err = p.validate())
      return err;
    if (!names.insert(p.name).second)
      return invalid(fmt::format("pools[{}].name: duplicate pool name", p.name));
  }
  if (worker_sup_max_restarts < 0)
    return invalid("worker_sup_max_restarts: must not be negative");
  if (worker_sup_max_seconds.count() <= 0)
    return invalid("worker_sup_max_seconds: must be positive");
  if (session_ttl.count() <= 0)
    return invalid("session_ttl: must be positive");
  if (session_sweep_interval.count() <= 0)
    return invalid("session_sweep_interval: must be positive");
  if (max_sessions == 0)
    return invalid("max_sessions: must be at least 1");
  if (shutdown_timeout.count() <= 0)
    return invalid("shutdown_timeout: must be positive");
  if (auto err = validate_metrics_address(metrics_address, metrics_allow_remote))
    return err;
  if (python.empty())
    return invalid("python: no interpreter given");
  struct stat st;
  if (::stat(python.c_str(), &st) != 0)
    return invalid(fmt::format("python: interpreter '{}' does not exist", python));
  if (!S_ISREG(st.st_mode) || ::access(python.c_str(), X_OK) != 0)
    return invalid(fmt::format("python: '{}' is not an executable file", python));
  if (!check_interpreter)
    return caf::none;
  // One short child process: can this interpreter import what workers need?
  adapters::process_spec spec;
  spec.executable = python;
  spec.args = {"-c", "import grpc, google.protobuf"};
  spec.env = adapters::build_environment({{"PYTHONPATH", effective_python_path()}});
  spec.pass_lifeline = false;
  int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  spec.stderr_fd = devnull;
  spec.stdout_fd = devnull;
  auto proc = adapters::spawn_process(spec);
  if (devnull >= 0)
    ::close(devnull);
  if (!proc)
    return invalid(fmt::format("python: cannot run '{}': {}", python,
                               describe(proc.error())));
  auto status = adapters::wait_for_exit(proc->pid(), std::chrono::seconds(30));
  if (!status) {
    proc->signal_group(SIGKILL);
    adapters::wait_for_exit(proc->pid(), std::chrono::seconds(5));
    return invalid(fmt::format("python: '{}' did not answer within 30 s", python));
  }
  if (!status->exited() || status->code != 0)
    return invalid(fmt::format("python: '{}' cannot import grpc and google.protobuf "
                               "(install python3-grpcio and python3-protobuf, or "
                               "point config.python at an interpreter that has "
                               "them)", python));
  return caf::none;
}

} // namespace snakepit
