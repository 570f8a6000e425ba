// The telemetry bus of a runtime (Elixir's `:telemetry`): components emit named events
// with measurements and metadata; hosts attach handlers by dotted-name prefix. Handlers
// never run on the emitting thread: one dispatcher thread per bus delivers events from
// a bounded queue, so a slow or throwing handler cannot stall or crash a pool.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapters/log.hpp"

namespace snakepit::telemetry {

using json = nlohmann::json;

/// One emitted event (`:telemetry.execute(name, measurements, metadata)`).
struct event {
  /// Dotted name, e.g. `snakepit.request.stop`.
  std::string name;
  /// Numbers that describe the event (durations in ms, counts, sizes).
  json measurements = json::object();
  /// Context: pool, worker id, command, error, ...
  json metadata = json::object();
  /// When `emit` was called.
  std::chrono::system_clock::time_point time;
};

/// Identifies an attached handler; 0 is never a valid id.
using handler_id = uint64_t;

/// A handler; runs on the bus's dispatcher thread, one event at a time.
using handler = std::function<void(const event&)>;

/// True if `name` equals `prefix` or starts with `prefix` followed by a dot; the empty
/// prefix matches every name. `snakepit.pool` matches `snakepit.pool.init_started`,
/// not `snakepit.pools.x`.
bool matches(const std::string& prefix, const std::string& name) noexcept;

/// Counters of a bus (all since construction).
struct bus_stats {
  uint64_t emitted = 0;          ///< events accepted into the queue
  uint64_t delivered = 0;        ///< handler invocations that returned normally
  uint64_t dropped = 0;          ///< events refused because the queue was full or stopped
  uint64_t handler_failures = 0; ///< handlers that threw and were detached
  size_t handlers = 0;           ///< handlers attached now
  size_t queue_depth = 0;        ///< events waiting now
};

/// A thread-safe event bus with one dispatcher thread and a bounded queue.
class bus {
 public:
  /// Default bound of the event queue.
  static constexpr size_t default_capacity = 4096;

  /// Starts the dispatcher thread; at most `capacity` events wait at once.
  explicit bus(size_t capacity = default_capacity);

  /// Stops the bus (see `stop`).
  ~bus();

  bus(const bus&) = delete;
  bus& operator=(const bus&) = delete;

  /// Attaches `fn` for every event whose name matches `prefix` (dotted segments).
  /// Returns the id to detach it with; 0 if `fn` is empty or the bus is stopped.
  handler_id attach(std::string prefix, handler fn);

  /// Attaches `fn` once for every event whose name matches any of `prefixes`
  /// (`:telemetry.attach_many`): an event matching several is delivered once, and one
  /// `detach` removes it from all. Returns 0 if `fn` or `prefixes` is empty or the bus
  /// is stopped.
  handler_id attach_many(std::vector<std::string> prefixes, handler fn);

  /// Detaches a handler. Once it returns, the handler is not running and will not run
  /// again (except when called from the handler itself). Unknown ids are ignored.
  void detach(handler_id id);

  /// Queues an event for the attached handlers. Costs one atomic load when no handler
  /// is attached; never blocks on handlers; a full queue drops the event (counted).
  void emit(std::string name, json measurements = json::object(),
            json metadata = json::object());

  /// Whether any handler is attached (callers may skip building an event otherwise).
  bool active() const noexcept;

  /// Waits until every queued event has been handled; false if `timeout` passed first.
  bool flush(std::chrono::milliseconds timeout = std::chrono::seconds{5});

  /// Delivers what is queued, then stops and joins the dispatcher and detaches every
  /// handler; later `emit`s are dropped. Idempotent; must not be called from a handler.
  void stop();

  /// Current counters.
  bus_stats stats() const;

 private:
  struct entry {
    handler_id id;
    std::vector<std::string> prefixes;
    handler fn;

    bool wants(const std::string& name) const;
  };
  using handler_list = std::vector<std::shared_ptr<const entry>>;

  void run();
  void remove_handler(handler_id id);

  const size_t capacity_;
  std::atomic<size_t> handler_count_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> failures_{0};

  mutable std::mutex mtx_;
  std::condition_variable work_cv_;
  std::condition_variable idle_cv_;
  std::deque<event> queue_;
  std::shared_ptr<const handler_list> handlers_ = std::make_shared<handler_list>();
  handler_id next_id_ = 1;
  handler_id running_ = 0;
  bool busy_ = false;
  bool stopping_ = false;
  uint64_t emitted_ = 0;
  std::thread::id dispatcher_id_;
  std::thread thread_;
};

/// Attaches the default request logger (upstream's `handle_event` for
/// `[:snakepit, :pool, :request]`): one line per finished request at `level`, from
/// `snakepit.request.stop` and `snakepit.request.exception`, with the pool, command,
/// worker id, correlation id, duration (ms) and, for a failure, the error:
///
///   debug snakepit: snakepit.request.stop pool=default command=echo
///     worker_id=default_worker_1 correlation_id=default-1a2b-7 duration_ms=0.84
///
/// Returns the id to detach it with (0 if `log` is null or the bus is stopped). The
/// line is built only when `level` is enabled on `log` at the time of the event.
handler_id attach_default_logger(bus& b, std::shared_ptr<adapters::logger> log,
                                 adapters::log_level level = adapters::log_level::debug);

} // namespace snakepit::telemetry
