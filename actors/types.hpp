// Public value types of the snakepit API: what a host sends to a pool and gets back.
// They travel inside CAF messages between local actors only (they hold JSON values
// and callbacks), hence CAF_ALLOW_UNSAFE_MESSAGE_TYPE rather than serialization.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <nlohmann/json.hpp>

#include "actors/observability/histogram.hpp"

namespace snakepit {

using json = nlohmann::json;

/// Per-call options (upstream's `opts` keyword list).
struct execute_options {
  /// End-to-end budget of the call; zero means the pool's `request_timeout`.
  std::chrono::milliseconds timeout{0};
  /// Target pool; empty means the first configured pool.
  std::string pool;
  /// Correlation id sent to Python (metadata and `x-snakepit-correlation-id`);
  /// generated when empty.
  std::string correlation_id;
  /// Named binary parameters (`binary_parameters` on the wire).
  std::map<std::string, std::string> binary_args;
  /// Session of the call (execute_in_session): routes by affinity and reaches
  /// Python as `ExecuteToolRequest.session_id`.
  std::string session_id;
  /// Affinity mode for this call: "hint", "strict_queue", "strict_fail_fast";
  /// empty means the pool's setting.
  std::string affinity;
  /// Safe to run twice: if its worker crashes mid-call, the call is retried on
  /// another worker (up to the pool's `retry_max_attempts`, after its backoff,
  /// within the same deadline) instead of failing with worker_crashed.
  bool idempotent = false;
  /// Extra request metadata (e.g. `thread_sensitive`).
  std::map<std::string, std::string> metadata;
};

/// What a pool needs to run one tool call.
struct execute_request {
  std::string command;
  json args = json::object();
  execute_options opts;
};

/// A successful tool call.
struct execute_reply {
  /// The decoded JSON result.
  json result;
  /// Raw `binary_result` bytes, if the tool returned bytes.
  std::string binary_result;
  /// The worker that served the call.
  std::string worker_id;
  /// Python-side execution time as reported by the worker.
  int64_t execution_time_ms = 0;
};

/// Outcome of a call: a reply or a typed error (`snakepit::errc`).
using execute_result = caf::expected<execute_reply>;

/// Callback sink of the asynchronous API. Runs on a CAF thread: keep it short.
using execute_callback = std::function<void(execute_result)>;

/// A callback plus a flag the caller sets when it stops waiting (so a queued
/// request of a caller that went away is dropped, never executed).
struct callback_sink {
  execute_callback fn;
  std::shared_ptr<std::atomic<bool>> abandoned =
    std::make_shared<std::atomic<bool>>(false);
};

/// Counters and gauges of one pool (upstream `get_stats`), or of all pools added up
/// (`runtime::get_all_stats`).
struct pool_stats {
  std::string pool;
  size_t workers = 0;     ///< workers that completed the handshake ("ready")
  size_t starting = 0;    ///< workers of the initial start not ready yet
  size_t available = 0;   ///< ready with headroom (load below capacity)
  size_t busy = 0;        ///< ready and running at least one request
  size_t in_flight = 0;   ///< requests running on workers now
  size_t capacity = 0;    ///< sum of the workers' capacities
  uint64_t requests = 0;  ///< requests accepted (dispatched or queued)
  uint64_t direct = 0;    ///< of those, run by blocking callers on the direct lane
  uint64_t completed = 0; ///< requests answered with a result
  uint64_t errors = 0;    ///< requests answered with an error
  double error_rate = 0;  ///< errors / (completed + errors); 0 before any answer
  uint64_t queued = 0;    ///< requests that ever waited in the queue
  size_t queue_depth = 0; ///< requests waiting now
  uint64_t queue_timeouts = 0;
  uint64_t saturations = 0;    ///< rejections with pool_saturated
  uint64_t worker_crashes = 0; ///< ready workers the pool saw go down
  uint64_t restarts = 0;       ///< workers that became ready again after going down
  uint64_t recycles =
    0; ///< workers replaced on purpose (TTL, max requests, memory, manual)
  /// Latency of completed requests (accepted to answered, queue time included),
  /// over every request since start, from `latency`.
  double latency_p50_ms = 0;
  double latency_p95_ms = 0;
  double latency_p99_ms = 0;
  /// Mean latency of completed requests (upstream `avg_response_time_ms`).
  double avg_response_time_ms = 0;
  /// The streaming histogram the quantiles come from (merges exactly across pools).
  latency_histogram latency;
};

/// Every pool's stats and their sum (`pool` = "total", quantiles of the merged
/// histogram).
struct runtime_stats {
  std::vector<pool_stats> pools;
  pool_stats total;
};

/// One worker of a pool (upstream `list_workers`, with details): every worker the
/// pool has asked for and not yet seen go for good, ready or not.
struct worker_info {
  std::string id;
  int pid = 0; ///< 0 while starting or restarting
  /// "starting" (never ready yet), "ready" (has headroom), "busy" (at capacity),
  /// "draining" (takes no new work: recycled, resized away or the pool stops;
  /// retires once idle), "restarting" (was ready, its process is being replaced).
  std::string state;
  uint64_t requests = 0;
  std::chrono::milliseconds uptime{0}; ///< since it became ready (0 if it is not)
  size_t load = 0;                     ///< requests running now
  size_t capacity = 1;                 ///< requests it may run at once
  bool tainted = false; ///< crash barrier: offered new work only if no other can take it
};

/// How a worker's initialisation stands (upstream WorkerStarterRegistry's
/// `get_init_status`): "initializing" (asked for, not ready: starting or
/// restarting), "ready", "failed" (its start failed and the pool gave it up;
/// `reason` says why), or "not_found" (no such worker in the pool now, nor among its
/// last failures).
struct worker_init_status {
  std::string state;
  std::string reason;
};

} // namespace snakepit

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(nlohmann::json)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::execute_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::execute_reply)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::execute_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::callback_sink)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::pool_stats)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<snakepit::worker_info>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::worker_init_status)
