// Worker lifecycle policy (upstream LifecycleManager, CrashBarrier, RetryPolicy and
// CircuitBreaker): the decisions the pool applies, as plain functions and one small
// state machine, so they are tested without actors or processes.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace snakepit::actors {

/// The cause of a worker process's exit: "segfault" (SIGSEGV, or shell code 139),
/// "abort" (SIGABRT, 134), "bus_error", "illegal_instruction", "fpe", "killed"
/// (SIGKILL, 137: the OOM killer or someone's kill -9), "terminated" (SIGTERM),
/// "signal_<n>" for other signals, "exit_<code>" for an exit status.
std::string classify_exit(int code, int signal);

/// Whether `cause` may appear in `pool_config::taint.causes`.
bool is_crash_cause(const std::string& cause);

/// Resident memory of a process in bytes (from /proc/<pid>/statm); none if it is gone.
std::optional<uint64_t> resident_bytes(int pid);

/// One worker's request limit: uniform in [max·(1−jitter), max] (at least 1) for
/// `random` in [0, 1); 0 (no limit) when `max` is 0.
uint64_t jittered_limit(uint64_t max, double jitter, double random);

/// Delay before retry `attempt` (1-based): that entry of `backoff` (the last one
/// repeats), scaled by 0.75 + 0.5·`random` for `random` in [0, 1).
std::chrono::milliseconds
retry_delay(const std::vector<std::chrono::milliseconds>& backoff, int attempt,
            double random);

/// A pool's circuit breaker over worker starts (upstream CircuitBreaker's states).
/// `threshold` failures in a row open it; `reset` later it lets one probe through
/// (half-open); the probe's success closes it, its failure opens it again.
class circuit_breaker {
 public:
  enum class state { closed, open, half_open };
  using time_point = std::chrono::steady_clock::time_point;

  circuit_breaker() = default;
  circuit_breaker(int threshold, std::chrono::milliseconds reset);

  /// A worker start failed. True if this opened the circuit.
  bool on_failure(time_point now);

  /// A worker became ready. True if this closed the circuit.
  bool on_success();

  /// Opens the circuit now, whatever its state (a caller that counts failures
  /// itself decided).
  void trip(time_point now);

  /// Open and `reset` has passed: moves to half-open and returns true.
  bool try_half_open(time_point now);

  state current() const { return state_; }
  bool enabled() const { return threshold_ > 0; }
  int failures() const { return failures_; }
  time_point opened_at() const { return opened_at_; }
  std::chrono::milliseconds reset() const { return reset_; }

 private:
  int threshold_ = 0;
  std::chrono::milliseconds reset_{30000};
  state state_ = state::closed;
  int failures_ = 0;
  time_point opened_at_{};
};

const char* to_string(circuit_breaker::state s);

} // namespace snakepit::actors
