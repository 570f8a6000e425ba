// The pool's protocol core (upstream Snakepit.Pool's decisions, without the
// GenServer): admission, checkout/checkin, the queue and its timeouts, session
// affinity, crash handling of calls in flight, retries with backoff, the crash
// barrier (taint), recycling with drain, startup batching and the circuit
// breaker. It knows nothing of CAF scheduling: the actor shell (pool.cpp) feeds it
// one call per message and carries out what it asks through `pool_callee` — the
// way CAF's io/basp/instance is driven by its broker. Time comes from the callee,
// so tests run it on virtual time with plain calls.
//
//   pool_core core{cfg, lane, events, callee};
//   core.begin_startup();                                  // asks callee.start_worker
//   core.on_start_result("default_worker_1", caf::none);
//   core.on_worker_ready("default_worker_1", hdl, pid, client);
//   core.accept(std::move(req), std::move(sink), caller); // dispatch, queue or refuse
//   core.sync_lane();                                      // once per message
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/error.hpp>
#include <caf/timespan.hpp>

#include "actors/config/config.hpp"
#include "actors/pool/detail/pool_events.hpp"
#include "actors/pool/detail/reply.hpp"
#include "actors/pool/detail/request_queue.hpp"
#include "actors/pool/detail/worker_table.hpp"
#include "actors/pool/direct_lane.hpp"
#include "actors/pool/lifecycle.hpp"
#include "actors/types.hpp"

namespace snakepit::actors::detail {

/// Parses a per-call affinity name (`execute_options::affinity`); `fallback` for an
/// empty or unknown one. The modes are `snakepit::affinity_mode` (config.hpp).
affinity_mode parse_affinity(const std::string& name, affinity_mode fallback);

/// A timer the core asks for; the shell delivers it back through `on_timer`.
struct pool_timer {
  enum class kind : uint8_t {
    queue_timeout,      ///< `request`'s time in the queue is up
    retry,              ///< `request`'s retry backoff elapsed
    circuit_probe,      ///< the circuit breaker's reset period elapsed
    call_circuit_probe, ///< the reset period of the circuit on calls elapsed
    taint_expired,      ///< `worker`'s taint ran out
    lifecycle_tick,     ///< the periodic TTL / request-count / memory check
    lifecycle_check,    ///< the same check once (a recycle completed: start the next)
  };
  kind what = kind::lifecycle_tick;
  uint64_t request = 0;
  std::string worker;
};

/// What the core asks of its shell. Every call returns at once; results come
/// back as further core calls (`on_start_result`, `on_worker_ready`, `on_result`,
/// `on_timer`, ...).
class pool_callee {
 public:
  virtual ~pool_callee() = default;
  /// The pool's clock (virtual in tests).
  virtual pool_time now() = 0;
  /// A number in [0, 1) (jitter of request limits and retry backoffs).
  virtual double uniform() = 0;
  /// Start a worker under this id; answer with `on_start_result(id, err)`.
  virtual void start_worker(const std::string& id) = 0;
  /// Stop a worker for good (its starter leaves worker_sup).
  virtual void retire_worker(const std::string& id) = 0;
  /// Run a unary call on `w`, whose capacity the core claimed for it. `slot` is the
  /// facade caller's reply slot, if the call has one (it may be answered from the
  /// gRPC thread); the outcome always comes back as `on_result`.
  virtual void run(const worker_incarnation& w, const std::string& worker_id,
                   uint64_t req_id, execute_request req, caf::timespan budget,
                   reply_slot_ptr slot) = 0;
  /// Run a streaming call on `w`; its chunks go to `sink`, its end comes back as
  /// `on_result` (the sink may have been ended already).
  virtual void run_stream(const worker_incarnation& w, const std::string& worker_id,
                          uint64_t req_id, execute_request req, caf::timespan budget,
                          stream_sink_ptr sink) = 0;
  /// Deliver `t` back to `on_timer` after `delay`.
  virtual void schedule(caf::timespan delay, pool_timer t) = 0;
  /// Tell `on_caller_down` when this actor terminates (once per caller).
  virtual void monitor_caller(const caf::actor_addr& caller) = 0;
  /// The session store learns the session ran on this worker.
  virtual void touch_session(const std::string& session_id,
                             const std::string& worker_id) = 0;
  /// Ask the tool registry for the pool's tools (answer: `set_tools`).
  virtual void refresh_tools() = 0;
  /// Resident memory of a process (recycling by memory).
  virtual std::optional<uint64_t> resident_bytes(int pid) = 0;
};

/// One pool's decisions and bookkeeping. Not thread-safe: one caller at a time
/// (the pool actor); blocking callers only touch the checkout table.
class pool_core {
 public:
  pool_core(pool_config cfg, std::shared_ptr<direct_lane> lane, pool_events events,
            pool_callee& callee, uint64_t generation = 1);
  ~pool_core();

  pool_core(const pool_core&) = delete;
  pool_core& operator=(const pool_core&) = delete;

  // --- callers ---------------------------------------------------------------------

  /// A request from the actor API or the facade: run, queue or refuse it.
  void accept(execute_request req, reply_sink out, caf::actor_addr caller);
  /// Answers `fn` once the initial start is over: none with a ready worker, else
  /// the start error.
  void await_ready(std::function<void(caf::error)> fn);
  /// A monitored caller terminated: its queued requests never run.
  void on_caller_down(const caf::actor_addr& caller);
  /// Recycles a ready worker now (manual).
  caf::error recycle(const std::string& worker_id);
  /// Changes the number of workers: growing starts the missing ones
  /// (startup_concurrency at a time); shrinking takes workers that are not ready
  /// first, then drains the least loaded ready ones (no new work; each retires
  /// once its calls finished). Errors: invalid_argument (outside 1..1024),
  /// shutting_down.
  caf::error resize(size_t n);
  /// Enters shutdown: new work fails with shutting_down, so does what waits.
  void drain();
  /// The pool stops: everything waiting or running fails with `reason`.
  void shutdown(const caf::error& reason);

  // --- workers ---------------------------------------------------------------------

  /// Starts the initial workers (startup_concurrency at a time).
  void begin_startup();
  /// A worker start (initial, refill, replacement or probe) finished.
  void on_start_result(const std::string& id, const caf::error& err);
  /// A worker finished its handshake; returns its incarnation's serial (the shell
  /// passes it back with the worker's down).
  uint64_t on_worker_ready(const std::string& id, caf::actor handle, int pid,
                           adapters::connection_ptr client);
  /// The worker's process exited (code, signal), before its actor goes down.
  void on_worker_exit(const std::string& id, int code, int signal);
  /// A (re)start of the worker failed inside its starter.
  void on_worker_start_failed(const std::string& id, const caf::error& err);
  /// Whether a worker_ready of `id` would be taken (not draining, still a member).
  bool accepts_ready(const std::string& id) const;
  /// The worker actor of incarnation `serial` terminated.
  void on_worker_down(const std::string& id, uint64_t serial, const caf::error& reason);
  /// The outcome of request `req_id` on `worker_id`.
  void on_result(const std::string& worker_id, uint64_t req_id, execute_result res);
  /// A blocking caller freed `worker_id`'s slot while the pool must know.
  void on_lane_done(const std::string& worker_id);
  /// A timer the core asked for.
  void on_timer(const pool_timer& t);

  // --- tools and sessions ----------------------------------------------------------

  /// The tools the pool's workers registered (empty: unknown) and whether the
  /// adapter dispatches any name itself.
  void set_tools(std::unordered_set<std::string> tools, bool open_dispatch);
  bool tools_known() const { return !tools_.empty(); }
  /// The session is gone: forget its binding.
  void forget_session(const std::string& session_id);

  // --- the checkout table ----------------------------------------------------------

  /// Restores the lane invariant: the table is open exactly when the pool would
  /// dispatch a new request at once, each slot offered exactly when its worker
  /// takes new work; a close hands freed slots to the queue. The shell calls it
  /// once after every message.
  void sync_lane();

  // --- introspection ---------------------------------------------------------------

  pool_stats stats() const;
  std::vector<worker_info> workers() const;
  /// How worker `id`'s initialisation stands (upstream `get_init_status`).
  worker_init_status init_status(const std::string& id) const;
  /// Every live worker actor (to forward settings).
  std::vector<caf::actor> live_handles() const;
  const pool_config& config() const { return cfg_; }
  const worker_table& table() const { return table_; }
  size_t queue_depth() const { return queue_.size(); }
  size_t inflight() const { return inflight_.size(); }
  size_t parked() const { return parked_.size(); }
  bool draining() const { return draining_; }
  bool startup_done() const { return startup_done_; }
  const circuit_breaker& breaker() const { return breaker_; }
  const circuit_breaker& call_breaker() const { return call_breaker_; }

 private:
  // admission
  caf::error admit(execute_request& req, bool stream) const;
  caf::error refuse_early(const execute_request& req) const;
  bool route_session(pending_request& p);
  void enqueue(pending_request p);
  // dispatch and completion
  std::string checkout();
  void dispatch(const std::string& worker_id, pending_request p);
  void bind_session(const std::string& session_id, const std::string& worker_id,
                    const worker_incarnation& w);
  void checkin(const std::string& worker_id);
  void checkin_all(const std::string& except = {});
  bool offers_new_work(const worker_record& rec, pool_time now) const;
  void finish(reply_sink& out, execute_result res, pool_time accepted,
              const request_ident& who);
  void fail_request(pending_request& p, caf::error err);
  void release(const std::string& worker_id);
  // crashes and retries
  bool retry_elsewhere(inflight_request& f, const std::string& dead_worker);
  void fail_inflight_of(const std::string& id, uint64_t serial, const caf::error& reason);
  void fail_pinned_to(const std::string& id);
  void note_crash(worker_record& rec, bool retired, pool_time now);
  void on_queue_timeout(uint64_t req_id);
  void on_retry(uint64_t req_id);
  void on_taint_expired(const std::string& id);
  // startup and the breaker
  std::string next_worker_id();
  void start_more_workers();
  void start_worker(const std::string& replaces = {});
  void maybe_finish_startup();
  void answer_ready_waiters();
  void open_circuit(const std::string& worker_id, const caf::error& err);
  void on_circuit_probe();
  size_t worker_deficit() const;
  void note_start_failure(const std::string& id, const caf::error& err);
  // the breaker on calls
  caf::error refuse_by_call_circuit() const;
  void note_call_outcome(const execute_result& res);
  bool request_pending(const std::string& correlation_id);
  void check_failure_run();
  void open_call_circuit();
  void on_call_circuit_probe();
  // resizing
  void grow();
  void shrink();
  std::vector<std::string> shrink_order() const;
  // recycling
  bool begin_recycle(const std::string& id, const std::string& reason, uint64_t rss = 0);
  void cancel_recycle(const std::string& old);
  void replacement_ready(const std::string& old);
  void recycle_finished(worker_record& rec, bool retired, pool_time now);
  void maybe_retire(const std::string& id);
  void retire(const std::string& id);
  void lifecycle_check();
  void check_request_limit(const std::string& id, const worker_incarnation& w);

  pool_config cfg_;
  std::shared_ptr<direct_lane> lane_;
  pool_events events_;
  pool_callee& callee_;
  affinity_mode default_affinity_;

  worker_table table_;
  request_queue queue_;
  std::unordered_map<uint64_t, pending_request> parked_;
  std::unordered_map<uint64_t, inflight_request> inflight_;
  std::unordered_set<caf::actor_addr> monitored_callers_;
  std::vector<std::function<void(caf::error)>> ready_waiters_;
  uint64_t next_id_ = 1;

  /// The worker a session last ran on, and which incarnation (a restarted worker
  /// with the same id has lost the session's Python state).
  struct session_binding {
    std::string worker_id;
    uint64_t serial = 0;
  };
  std::unordered_map<std::string, session_binding> sessions_;
  std::unordered_set<std::string> tools_;
  bool open_dispatch_ = false;

  // startup (upstream Initializer): bounded concurrent starts
  uint64_t generation_;
  size_t next_worker_index_ = 0;
  size_t starting_ = 0;
  size_t start_attempts_left_ = 0;
  size_t started_ok_ = 0;
  size_t ready_once_ = 0;
  std::unordered_set<std::string> initial_;
  bool startup_done_ = false;
  pool_time init_started_{};
  caf::error first_start_error_;
  circuit_breaker breaker_;
  /// The breaker on calls (`pool_circuit::call_failures`): open, it refuses new
  /// calls; half-open, it lets the one call in `trial_` through.
  circuit_breaker call_breaker_;
  std::string trial_;
  bool draining_ = false;
  /// The last workers whose start failed for good, oldest first (init status).
  std::deque<std::pair<std::string, std::string>> failed_starts_;

  pool_stats stats_;
  latency_histogram latencies_;
  uint64_t recycles_ = 0;
};

} // namespace snakepit::actors::detail
