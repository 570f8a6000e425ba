// The pool's checkout table and the direct lane of blocking callers.
//
// The pool actor owns the table, as an Erlang pool process owns an ETS table that
// callers read: one slot per ready worker (its load, capacity, request count, the
// channel its worker actor opened) and whether the table is open. The pool writes
// membership and openness; everyone claims a slot with one compare-and-swap, the
// pool for the requests it dispatches and a blocking caller (`runtime::execute`)
// for its own call, which it then makes on its own thread over the worker's
// channel — no message to the pool or the worker, no completion-thread hop. A
// blocking caller gets the lane only when the pool would have dispatched at once:
// nothing queued or parked, not draining, a worker free that takes new work (for
// a session call: the worker the session is bound to), no retry, no binary or
// large payload, a known tool. Everything else, and every caller that finds the
// lane closed or full, takes the actor path.
//
// Whoever frees a slot while the table is closed (or the slot withdrawn) tells the
// pool (`lane_done_atom`), so queued work, retirements and recycles never wait for
// a slot the pool cannot see being freed: the pool closes first and reads loads
// after, a caller releases first and reads openness after (both sequentially
// consistent), so at least one of them notices.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>

#include "actors/config/config.hpp"
#include "actors/observability/histogram.hpp"
#include "actors/types.hpp"
#include "adapters/connection.hpp"
#include "adapters/log.hpp"

namespace snakepit::telemetry {
class bus;
} // namespace snakepit::telemetry

namespace snakepit::actors {

class process_table;

/// One ready worker in the checkout table.
struct lane_slot {
  lane_slot(std::string worker_id, int pid, adapters::connection_ptr client,
            uint32_t capacity)
    : worker_id(std::move(worker_id)), pid(pid), client(std::move(client)),
      capacity(capacity) {}

  const std::string worker_id;
  const int pid;
  /// The worker actor's channel to its Python process (shared, thread-safe).
  adapters::connection_ptr client;
  const uint32_t capacity;
  /// Requests running on the worker now, through either path.
  std::atomic<uint32_t> load{0};
  /// Requests the worker was given since it became ready, through either path.
  std::atomic<uint64_t> requests{0};
  /// Stamp of its last dispatch (warm-worker preference among equals).
  std::atomic<uint64_t> last_used{0};
  /// Whether blocking callers may claim it (the pool's offers_new_work).
  std::atomic<bool> offered{false};
  /// A lane call saw its process gone: nobody claims it again, even before the
  /// pool has seen the worker go down.
  std::atomic<bool> dead{false};

  /// Whether a blocking caller may claim it now.
  bool claimable() const noexcept { return offered.load() && !dead.load(); }
  /// Recycle once `requests` reaches this (0: never); set before it is published.
  uint64_t request_limit = 0;

  /// Takes one unit of capacity if there is one.
  bool try_claim() noexcept {
    auto cur = load.load();
    while (cur < capacity)
      if (load.compare_exchange_weak(cur, cur + 1))
        return true;
    return false;
  }

  /// Gives one unit back.
  void release() noexcept { load.fetch_sub(1); }
};

using lane_slot_ptr = std::shared_ptr<lane_slot>;

/// What the lane's calls added to the pool's counters since the pool started.
struct lane_counters {
  uint64_t requests = 0;
  uint64_t completed = 0;
  uint64_t errors = 0;
  /// Calls refused with pool_saturated on the caller's thread (also in `errors`).
  uint64_t saturations = 0;
  latency_histogram latency;
};

/// Where a blocking caller's lane call reports (set once by the pool).
struct lane_context {
  std::string pool;
  std::shared_ptr<telemetry::bus> telemetry;
  adapters::logger_ptr log;
  std::shared_ptr<const process_table> processes;
  /// Emit `snakepit.pool.capacity_reached` (capacity_strategy "hybrid").
  bool capacity_events = false;
  /// The pool has a host adapter (adapter.hpp): its hooks run in the pool, so every
  /// call takes the pool's path.
  bool host_adapter = false;
  /// Largest request (bytes) a small JSON argument object may make, see `eligible`.
  size_t max_message_bytes = 0;
  /// Tells the session store a session was used on a worker (as a dispatch does).
  std::function<void(const std::string& session_id, const std::string& worker_id)>
    touch_session;
  /// What a caller may send (input_checks.hpp); a request outside takes the pool's
  /// path, which refuses it.
  pool_input_limits input;
  /// The pool's `max_queue_size` (named in the pool_saturated refusals).
  size_t max_queue_size = 0;
  /// Limits the "pool saturated" warning; shared with the pool's own refusals.
  std::shared_ptr<adapters::log_throttle> saturation_log;
};

/// Whether a call's outcome says its worker failed it: worker_crashed or timeout
/// (what the circuit breaker on calls counts).
bool worker_failed(const execute_result& res);

/// The checkout table of one pool. Thread-safe.
class direct_lane {
 public:
  /// `notify(worker_id)` tells the pool a slot was freed (or claimed and given
  /// back) while the table was closed or the slot withdrawn; it must not block.
  direct_lane(lane_context ctx, std::function<void(const std::string&)> notify);

  // --- the pool's side --------------------------------------------------------------

  /// Replaces the slots (ready workers, in the pool's order).
  void publish(std::vector<lane_slot_ptr> slots);
  /// Opens or closes the table for blocking callers. Sequentially consistent: after
  /// closing, the pool reads loads (see the header comment).
  void set_open(bool open) noexcept { open_.store(open); }
  bool is_open() const noexcept { return open_.load(); }
  /// The tools the pool's workers registered (empty: not known yet) and whether the
  /// adapter dispatches any name itself.
  void set_tools(std::unordered_set<std::string> tools, bool open_dispatch);
  /// Session affinity: `session_id` runs on `slot`'s worker (the pool binds a
  /// session when it dispatches a call of it; the lane only follows bindings).
  void bind_session(const std::string& session_id, const lane_slot_ptr& slot);
  /// The session is gone (expired or cleaned up): its next call starts afresh.
  void forget_session(const std::string& session_id);
  /// The next dispatch stamp (shared with the pool's own dispatches).
  uint64_t next_use() noexcept { return use_seq_.fetch_add(1) + 1; }
  /// Whether the pool's queue is full (set once per pool message, like `set_open`):
  /// while it is, the facade's callers are refused on their own thread, at once,
  /// without a message to the busy pool (`refuse_if_saturated`).
  void set_saturated(bool full, size_t queue_size) noexcept {
    queue_size_.store(queue_size, std::memory_order_relaxed);
    saturated_.store(full, std::memory_order_release);
  }
  /// Closed for good: the pool is gone. Calls in progress finish; `notify` is dropped.
  void retire();
  /// What lane calls added to the pool's counters.
  lane_counters counters() const;
  /// Calls the pool's offered workers could start now (0 while calls wait in its
  /// queue or the pool is gone); placement across nodes compares it with theirs.
  uint32_t free_capacity() const;
  /// The pool's run of calls that ended in worker_crashed or timeout (either path):
  /// `note_outcome` adds one call's outcome and returns the run's length. With a
  /// threshold set, a lane call that makes the run reach it tells the pool.
  uint32_t note_outcome(bool failed) noexcept;
  uint32_t failure_run() const noexcept { return failure_run_.load(); }
  void set_failure_threshold(uint32_t n) noexcept { failure_threshold_.store(n); }

  // --- the caller's side ------------------------------------------------------------

  /// pool_saturated for `req` (with its correlation id, the pool's telemetry event
  /// and throttled warning, counted in the pool's stats) when the queue is full;
  /// nullopt otherwise, and for requests the pool must judge itself (invalid input,
  /// a host adapter's hooks).
  std::optional<execute_result> refuse_if_saturated(execute_request& req);

  /// Runs `req` on the caller's thread if the lane takes it (see the header
  /// comment); nullopt when the caller must take the actor path. `budget` is the
  /// whole deadline of the call.
  std::optional<execute_result> execute(execute_request& req,
                                        std::chrono::milliseconds budget);

 private:
  bool eligible(const execute_request& req) const;
  lane_slot_ptr claim();
  lane_slot_ptr claim_bound(const std::string& session_id);
  void notify(const std::string& worker_id);
  void record(const execute_result& res, int64_t us);

  lane_context ctx_;
  std::atomic<bool> open_{false};
  std::atomic<bool> retired_{false};
  std::atomic<bool> saturated_{false};
  std::atomic<size_t> queue_size_{0};
  std::atomic<uint32_t> failure_run_{0};
  std::atomic<uint32_t> failure_threshold_{0};
  std::atomic<uint64_t> use_seq_{0};
  std::atomic<uint64_t> next_call_{0};

  mutable std::mutex mtx_;
  std::shared_ptr<const std::vector<lane_slot_ptr>> slots_ =
    std::make_shared<const std::vector<lane_slot_ptr>>();
  std::shared_ptr<const std::unordered_set<std::string>> tools_ =
    std::make_shared<const std::unordered_set<std::string>>();
  bool open_dispatch_ = false;
  std::unordered_map<std::string, std::weak_ptr<lane_slot>> sessions_;
  std::function<void(const std::string&)> notify_;
  lane_counters counters_;
};

/// The lanes of a runtime's pools, by pool name (a restarted pool replaces its
/// predecessor's). Thread-safe.
class lane_table {
 public:
  void put(const std::string& pool, std::shared_ptr<direct_lane> lane);
  /// Removes `lane` if it is still the one registered for `pool`.
  void remove(const std::string& pool, const std::shared_ptr<direct_lane>& lane);
  std::shared_ptr<direct_lane> get(const std::string& pool) const;

 private:
  mutable std::mutex mtx_;
  std::map<std::string, std::shared_ptr<direct_lane>> lanes_;
};

/// A correlation id for a request that came without one: pool, counter and
/// randomness, so ids are unique across runs and readable in logs.
std::string make_correlation_id(const std::string& pool, uint64_t n);

} // namespace snakepit::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::adapters::connection_ptr)
