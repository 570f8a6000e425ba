// The worker's heartbeat toward its process (upstream Snakepit.HeartbeatMonitor,
// run inside the worker): a ping every interval with one in flight at a time, misses
// counted in a row, and for a dependent worker the verdict that the process hangs
// and must be killed. The counting is plain C++; the actor owns the timer.
#pragma once

#include <chrono>

#include <caf/error.hpp>

#include "actors/worker/detail/protocol.hpp"
#include "actors/worker/worker.hpp"
#include "adapters/connection.hpp"

namespace snakepit::actors::detail {

/// The pool settings the heartbeat follows.
struct heartbeat_settings {
  bool enabled = true;
  std::chrono::milliseconds interval{2000};
  std::chrono::milliseconds timeout{10000};
  int max_missed = 3;
  /// Kill the process after `max_missed` misses (else only report them).
  bool dependent = true;

  static heartbeat_settings of(const pool_config& cfg);
};

/// Misses in a row and what they mean.
class heartbeat_counter {
 public:
  /// What a ping's answer means.
  enum class verdict {
    /// Answered: the count starts over.
    healthy,
    /// Not answered; keep pinging.
    missed,
    /// Not answered `max_missed` times in a row by a dependent worker: kill it.
    dead,
  };

  explicit heartbeat_counter(heartbeat_settings cfg = {}) : cfg_(cfg) {}

  const heartbeat_settings& settings() const { return cfg_; }

  /// Counts a ping sent.
  void sent() { pending_ = true; }

  /// Counts its answer (none when the process answered).
  verdict on_result(const caf::error& err);

  /// Misses in a row so far.
  int missed() const { return missed_; }

  /// Whether a ping is in flight.
  bool pending() const { return pending_; }

 private:
  heartbeat_settings cfg_;
  int missed_ = 0;
  bool pending_ = false;
};

/// Sends the heartbeat ping on `client`; its answer comes back to `self` as
/// `heartbeat_result_atom`.
void send_heartbeat(heartbeat_counter& hb, adapters::worker_connection& client,
                    const worker_private& self);

/// The log line and event of a miss, and of the verdict `dead`.
void report_heartbeat(const worker_args& args, const heartbeat_counter& hb,
                      heartbeat_counter::verdict v, const caf::error& err);

} // namespace snakepit::actors::detail
