// What a pool tells the outside world: its `snakepit.*` telemetry events and its
// host log lines, one function per event (docs/telemetry.md lists them), so the
// pool core's decisions read as decisions. Each event costs one atomic load when
// nobody listens; each log line is built only when its level is enabled.
//
//   pool_events ev{"default", bus, log};
//   ev.enqueued(p, queue_size);
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <caf/error.hpp>

#include "actors/pool/detail/request_queue.hpp"
#include "actors/types.hpp"
#include "adapters/log.hpp"

namespace snakepit::telemetry {
class bus;
} // namespace snakepit::telemetry

namespace snakepit::actors::detail {

class pool_events {
 public:
  /// `saturation_log` limits the "pool saturated" warning (shared with the direct
  /// lane, which refuses calls too); null: a throttle of its own.
  pool_events(std::string pool, std::shared_ptr<telemetry::bus> bus,
              adapters::logger_ptr log,
              std::shared_ptr<adapters::log_throttle> saturation_log = nullptr);

  const std::string& pool() const { return pool_; }

  // --- requests ------------------------------------------------------------------
  void request_start(const pending_request& p, const std::string& worker_id,
                     pool_time now);
  void stream_start(const pending_request& p, const std::string& worker_id);
  /// `snakepit.request.stop` or `.exception` (and `snakepit.stream.stop`).
  void request_stop(const execute_result& res, const request_ident& who,
                    std::chrono::microseconds took, bool stream);
  void enqueued(const pending_request& p, size_t queue_size);
  void dequeued(const pending_request& p, const std::string& worker_id, pool_time now);
  void saturated(const pending_request& p, size_t queue_size, size_t max_queue_size);
  void queue_timeout(const pending_request& p, bool deadline_passed);
  void retried(const pending_request& p, const std::string& dead_worker,
               std::chrono::milliseconds delay);
  void capacity_reached(const std::string& worker_id, size_t capacity, uint32_t load);

  // --- the pool and its workers --------------------------------------------------
  void init_started(size_t total_workers);
  void init_complete(std::chrono::milliseconds took, size_t ready, size_t total,
                     const caf::error& first_error);
  void worker_ready(const std::string& id, int pid, bool restarted, size_t workers);
  void worker_terminated(const std::string& id, uint64_t requests,
                         const caf::error& reason);
  void worker_crash(const std::string& id, const std::string& cause);
  void worker_tainted(const std::string& id, const std::string& cause,
                      std::chrono::milliseconds duration);
  void recycle_started(const std::string& id, const std::string& reason);
  void worker_recycled(const std::string& id, const recycle_info& info, uint64_t requests,
                       std::chrono::milliseconds uptime);

  // --- the circuit breaker -------------------------------------------------------
  void circuit_opened(const std::string& worker_id, int failures, const caf::error& err,
                      std::chrono::milliseconds reset);
  void circuit_half_open();
  /// `worker_id` empty: closed without a new worker (nothing was missing).
  void circuit_closed(const std::string& worker_id);
  // the breaker on calls
  void call_circuit_opened(uint32_t run, std::chrono::milliseconds reset);
  void call_circuit_half_open();
  void call_circuit_closed(bool trial_ok);
  // resizing
  void resized(size_t from, size_t to);
  void worker_draining(const std::string& id, const char* reason);

 private:
  bool listening() const;
  void emit(const char* name, json measurements, json metadata);
  void log(adapters::log_level level, const char* msg, adapters::log_fields fields);

  std::string pool_;
  std::shared_ptr<telemetry::bus> bus_;
  adapters::logger_ptr log_;
  std::shared_ptr<adapters::log_throttle> saturation_log_;
  std::shared_ptr<adapters::log_throttle> queue_timeout_log_;
};

} // namespace snakepit::actors::detail
