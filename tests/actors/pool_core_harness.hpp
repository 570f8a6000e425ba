// A test bench for the pool's protocol core (actors/pool/detail/pool_core.hpp): a
// fake `pool_callee` that records every effect the core asks for on a virtual
// clock, plus the shell's part (forwarding results, timers, lane_done) as plain
// calls — what CAF's test coordinator is to an actor, without the actor.
//
//   pool_harness h{config()};
//   auto ids = h.boot();               // every initial worker started and ready
//   auto a = h.call("echo");           // accept + sync_lane, as the shell does
//   h.complete(a);                     // the worker's result arrives
//   h.advance(1s);                     // due timers fire in due order
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/error.hpp>
#include <caf/none.hpp>
#include <doctest/doctest.h>

#include "actors/config/config.hpp"
#include "actors/observability/telemetry.hpp"
#include "actors/pool/detail/pool_core.hpp"
#include "actors/pool/detail/pool_events.hpp"
#include "actors/pool/direct_lane.hpp"
#include "actors/pool/reply_slot.hpp"
#include "actors/pool/stream_sink.hpp"
#include "actors/types.hpp"
#include "adapters/bridge_client.hpp"
#include "adapters/errors.hpp"
#include "adapters/log.hpp"

namespace snakepit::actors::test {

using namespace std::chrono_literals;
using detail::pool_core;
using detail::pool_time;
using detail::pool_timer;

/// What a reply slot received (exactly one answer is the contract).
struct reply_box {
  std::vector<execute_result> results;
};

/// One call the test made through `accept`.
struct call_handle {
  std::string cid;
  std::shared_ptr<reply_box> box;
  reply_slot_ptr slot;

  size_t answers() const { return box->results.size(); }
  bool answered() const { return !box->results.empty(); }
  bool ok() const { return answered() && static_cast<bool>(box->results.front()); }
  /// The error code of the first answer (none: unanswered or a success).
  std::optional<errc> code() const {
    if (!answered() || box->results.front())
      return std::nullopt;
    return errc_of(box->results.front().error());
  }
  const caf::error& error() const { return box->results.front().error(); }
  /// The worker that served the call (empty unless it succeeded).
  std::string worker() const {
    return ok() ? box->results.front()->worker_id : std::string{};
  }
  /// The caller stops waiting (a facade call whose future was dropped).
  void abandon() const { slot->abandoned->store(true); }
};

/// A stream sink that records its chunks and its end.
class recording_stream final : public stream_sink {
 public:
  adapters::stream_step on_chunk(json chunk, bool) override {
    chunks.push_back(std::move(chunk));
    return adapters::stream_step::more;
  }
  void on_end(caf::error err) override { ends.push_back(std::move(err)); }
  void attach(adapters::stream_control) override {}

  std::vector<json> chunks;
  std::vector<caf::error> ends;
};

/// A run (unary or stream) the core asked for.
struct run_record {
  std::string worker_id;
  uint64_t serial = 0;
  uint64_t req_id = 0;
  execute_request req;
  caf::timespan budget{};
  reply_slot_ptr slot;
  stream_sink_ptr sink;
  lane_slot_ptr lane_slot;
  pool_time at{};
  /// The test delivered its outcome.
  bool done = false;
};

/// A timer the core asked for, due on the virtual clock.
struct timer_record {
  pool_time due;
  uint64_t seq = 0;
  pool_timer t;
};

/// Records every effect; answers `now()` from a clock the test moves.
class fake_callee final : public detail::pool_callee {
 public:
  pool_time clock{std::chrono::hours{1}};
  /// What `uniform()` returns (jitter of limits and backoffs).
  double random = 0.5;
  std::vector<std::string> starts;
  std::vector<std::string> retires;
  /// A deque: tests keep pointers to earlier runs while the core records more.
  std::deque<run_record> runs;
  std::vector<timer_record> timers;
  std::vector<caf::actor_addr> monitored;
  std::vector<std::pair<std::string, std::string>> touches;
  int tool_refreshes = 0;
  /// Resident memory by pid (absent: unknown).
  std::map<int, uint64_t> rss;

  pool_time now() override { return clock; }
  double uniform() override { return random; }
  void start_worker(const std::string& id) override { starts.push_back(id); }
  void retire_worker(const std::string& id) override { retires.push_back(id); }
  void run(const detail::worker_incarnation& w, const std::string& worker_id,
           uint64_t req_id, execute_request req, caf::timespan budget,
           reply_slot_ptr slot) override {
    runs.push_back(run_record{worker_id, w.serial, req_id, std::move(req), budget,
                              std::move(slot), nullptr, w.slot, clock, false});
  }
  void run_stream(const detail::worker_incarnation& w, const std::string& worker_id,
                  uint64_t req_id, execute_request req, caf::timespan budget,
                  stream_sink_ptr sink) override {
    runs.push_back(run_record{worker_id, w.serial, req_id, std::move(req), budget,
                              nullptr, std::move(sink), w.slot, clock, false});
  }
  void schedule(caf::timespan delay, pool_timer t) override {
    timers.push_back(timer_record{
      clock + std::chrono::duration_cast<std::chrono::steady_clock::duration>(delay),
      next_seq_++, std::move(t)});
  }
  void monitor_caller(const caf::actor_addr& caller) override {
    monitored.push_back(caller);
  }
  void touch_session(const std::string& session_id,
                     const std::string& worker_id) override {
    touches.emplace_back(session_id, worker_id);
  }
  void refresh_tools() override { ++tool_refreshes; }
  std::optional<uint64_t> resident_bytes(int pid) override {
    auto i = rss.find(pid);
    if (i == rss.end())
      return std::nullopt;
    return i->second;
  }

  /// Timers of kind `k` not fired yet.
  size_t pending(pool_timer::kind k) const {
    return static_cast<size_t>(
      std::count_if(timers.begin(), timers.end(),
                    [k](const timer_record& r) { return r.t.what == k; }));
  }

 private:
  uint64_t next_seq_ = 1;
};

/// Every `snakepit.*` event of a telemetry bus, for assertions. Declare it before
/// the harness that emits into it.
class event_log {
 public:
  event_log() : bus(std::make_shared<telemetry::bus>()) {
    bus->attach("snakepit", [this](const telemetry::event& e) {
      std::lock_guard<std::mutex> guard{mtx_};
      seen_.push_back(e);
    });
  }
  ~event_log() { bus->stop(); }

  event_log(const event_log&) = delete;
  event_log& operator=(const event_log&) = delete;

  /// The events named `name` emitted so far (waits for the dispatcher).
  std::vector<telemetry::event> named(const std::string& name) {
    bus->flush();
    std::lock_guard<std::mutex> guard{mtx_};
    std::vector<telemetry::event> out;
    for (auto& e : seen_)
      if (e.name == name)
        out.push_back(e);
    return out;
  }

  std::shared_ptr<telemetry::bus> bus;

 private:
  std::mutex mtx_;
  std::vector<telemetry::event> seen_;
};

/// A pool configuration small enough to reason about: two process workers, short
/// timeouts, no recycling.
inline pool_config small_pool(size_t workers = 2) {
  pool_config cfg;
  cfg.name = "p";
  cfg.pool_size = workers;
  cfg.startup.concurrency = 10;
  cfg.queue.timeout = 1000ms;
  cfg.request_timeout = 10000ms;
  cfg.queue.max_size = 100;
  cfg.circuit.threshold = 3;
  cfg.circuit.reset = 1000ms;
  cfg.taint.duration = 1000ms;
  cfg.recycling.check_interval = 500ms;
  return cfg;
}

/// The core, its lane and a fake callee, driven the way the pool actor drives them.
class pool_harness {
 public:
  /// `bus`: where the pool's events go (null: nowhere); `generation`: how many
  /// times a pool of this name was started in the runtime.
  explicit pool_harness(pool_config config = small_pool(),
                        std::shared_ptr<telemetry::bus> bus = nullptr,
                        uint64_t generation = 1)
    : cfg(std::move(config)) {
    lane_context ctx;
    ctx.pool = cfg.name;
    ctx.telemetry = bus;
    ctx.log = adapters::logger::null();
    ctx.processes = nullptr;
    ctx.capacity_events = cfg.capacity_strategy == snakepit::capacity_strategy::hybrid;
    ctx.max_message_bytes = cfg.max_message_bytes;
    ctx.touch_session = [this](const std::string& sid, const std::string& wid) {
      lane_touches.emplace_back(sid, wid);
    };
    lane = std::make_shared<direct_lane>(
      std::move(ctx), [this](const std::string& id) { lane_notes.push_back(id); });
    core = std::make_unique<pool_core>(
      cfg, lane, detail::pool_events{cfg.name, bus, adapters::logger::null()}, callee,
      generation);
  }

  ~pool_harness() { lane->retire(); }

  pool_harness(const pool_harness&) = delete;
  pool_harness& operator=(const pool_harness&) = delete;

  pool_config cfg;
  fake_callee callee;
  /// Worker ids the lane's `notify` reported (the shell's lane_done messages).
  std::vector<std::string> lane_notes;
  std::vector<std::pair<std::string, std::string>> lane_touches;
  std::shared_ptr<direct_lane> lane;
  std::unique_ptr<pool_core> core;
  /// The serial `on_worker_ready` returned for each worker's latest incarnation.
  std::map<std::string, uint64_t> serials;
  std::map<std::string, int> pids;

  void sync() { core->sync_lane(); }

  // --- workers -------------------------------------------------------------------

  /// Starts the pool and brings every start it asks for to a ready worker.
  std::vector<std::string> boot() {
    core->begin_startup();
    sync();
    std::vector<std::string> ids;
    for (size_t i = 0; i < callee.starts.size(); ++i) {
      auto id = callee.starts[i];
      start_ok(id);
      ready(id);
      ids.push_back(id);
    }
    return ids;
  }

  void start_ok(const std::string& id) {
    core->on_start_result(id, caf::none);
    sync();
  }

  void start_failed(const std::string& id, const std::string& why = "no module named x") {
    core->on_start_result(id, caf::make_error(errc::start_failed, why));
    sync();
  }

  /// The worker finished its handshake (a new incarnation with a new pid).
  uint64_t ready(const std::string& id) {
    auto pid = next_pid_++;
    pids[id] = pid;
    auto serial =
      core->on_worker_ready(id, caf::actor{}, pid, adapters::connection_ptr{});
    serials[id] = serial;
    sync();
    return serial;
  }

  /// The worker's process died (`code`, `signal`) and its actor went down.
  void crash(const std::string& id, int code = 0, int signal = 9) {
    core->on_worker_exit(id, code, signal);
    sync();
    down(id, caf::make_error(errc::worker_crashed, "python exited"));
  }

  /// The worker actor of its latest incarnation terminated.
  void down(const std::string& id, caf::error reason = caf::none) {
    core->on_worker_down(id, serials.at(id), reason);
    sync();
  }

  /// A (re)start of the worker failed inside its starter.
  void start_failed_inside(const std::string& id) {
    core->on_worker_start_failed(id,
                                 caf::make_error(errc::start_failed, "import failed"));
    sync();
  }

  lane_slot_ptr slot(const std::string& id) {
    auto* w = core->table().find(id);
    if (w == nullptr || !w->live)
      return nullptr;
    return w->live->slot;
  }

  std::optional<worker_info> info(const std::string& id) const {
    for (auto& w : core->workers())
      if (w.id == id)
        return w;
    return std::nullopt;
  }

  // --- calls ---------------------------------------------------------------------

  call_handle call(const std::string& command = "echo", execute_options opts = {},
                   caf::actor_addr caller = {}) {
    if (opts.correlation_id.empty())
      opts.correlation_id = "c" + std::to_string(next_cid_++);
    call_handle h{opts.correlation_id, std::make_shared<reply_box>(),
                  std::make_shared<reply_slot>()};
    h.slot->fn = [box = h.box](execute_result res) {
      box->results.push_back(std::move(res));
    };
    h.slot->abandoned = std::make_shared<std::atomic<bool>>(false);
    core->accept(execute_request{command, json::object(), std::move(opts)}, h.slot,
                 std::move(caller));
    sync();
    return h;
  }

  call_handle call_with(execute_options opts) { return call("echo", std::move(opts)); }

  /// A call with these arguments (payload limits).
  call_handle call_args(json args, execute_options opts = {}) {
    if (opts.correlation_id.empty())
      opts.correlation_id = "c" + std::to_string(next_cid_++);
    call_handle h{opts.correlation_id, std::make_shared<reply_box>(),
                  std::make_shared<reply_slot>()};
    h.slot->fn = [box = h.box](execute_result res) {
      box->results.push_back(std::move(res));
    };
    h.slot->abandoned = std::make_shared<std::atomic<bool>>(false);
    core->accept(execute_request{"echo", std::move(args), std::move(opts)}, h.slot,
                 caf::actor_addr{});
    sync();
    return h;
  }

  call_handle session_call(const std::string& session, const std::string& affinity = {}) {
    execute_options opts;
    opts.session_id = session;
    opts.affinity = affinity;
    return call("echo", std::move(opts));
  }

  call_handle idempotent_call(std::chrono::milliseconds timeout = 0ms) {
    execute_options opts;
    opts.idempotent = true;
    opts.timeout = timeout;
    return call("echo", std::move(opts));
  }

  std::shared_ptr<recording_stream> stream(const std::string& command = "count",
                                           execute_options opts = {}) {
    if (opts.correlation_id.empty())
      opts.correlation_id = "s" + std::to_string(next_cid_++);
    auto sink = std::make_shared<recording_stream>();
    core->accept(execute_request{command, json::object(), std::move(opts)},
                 stream_sink_ptr{sink}, caf::actor_addr{});
    sync();
    return sink;
  }

  /// The latest run of the call with this correlation id, or null.
  run_record* run_of(const std::string& cid) {
    for (auto i = callee.runs.rbegin(); i != callee.runs.rend(); ++i)
      if (i->req.opts.correlation_id == cid)
        return &*i;
    return nullptr;
  }
  run_record* run_of(const call_handle& c) { return run_of(c.cid); }

  /// How many times the call was run.
  size_t runs_of(const call_handle& c) const {
    return static_cast<size_t>(
      std::count_if(callee.runs.begin(), callee.runs.end(), [&](const run_record& r) {
        return r.req.opts.correlation_id == c.cid;
      }));
  }

  /// Where the call runs now (empty: it does not run, or finished).
  std::string running_on(const call_handle& c) {
    auto* r = run_of(c);
    return r != nullptr && !r->done ? r->worker_id : std::string{};
  }

  /// The worker answers the call's latest run with a result.
  void complete(const std::string& cid, json result = json{{"ok", true}}) {
    auto* r = run_of(cid);
    REQUIRE(r != nullptr);
    REQUIRE_FALSE(r->done);
    r->done = true;
    auto wid = r->worker_id;
    auto id = r->req_id;
    core->on_result(wid, id, execute_reply{std::move(result), {}, wid, 1});
    sync();
  }
  void complete(const call_handle& c, json result = json{{"ok", true}}) {
    complete(c.cid, std::move(result));
  }

  /// The worker answers the call's latest run with an error.
  void fail(const call_handle& c, caf::error err) {
    auto* r = run_of(c);
    REQUIRE(r != nullptr);
    REQUIRE_FALSE(r->done);
    r->done = true;
    auto wid = r->worker_id;
    auto id = r->req_id;
    core->on_result(wid, id, execute_result{std::move(err)});
    sync();
  }

  // --- the direct lane -------------------------------------------------------------

  /// A blocking caller tries the lane (its empty channel answers `internal`); the
  /// lane_done notes it leaves are forwarded to the core, as the shell would.
  std::optional<execute_result> blocking_call(const std::string& command = "echo",
                                              execute_options opts = {}) {
    execute_request req{command, json::object(), std::move(opts)};
    auto res = lane->execute(req, 1000ms);
    forward_lane_notes();
    return res;
  }

  void forward_lane_notes() {
    auto notes = std::move(lane_notes);
    lane_notes.clear();
    for (auto& id : notes) {
      core->on_lane_done(id);
      sync();
    }
  }

  // --- time ------------------------------------------------------------------------

  /// Moves the clock by `d`, firing every timer that falls due on the way in due
  /// order (ties in the order they were asked for), one message each.
  void advance(std::chrono::steady_clock::duration d) {
    auto target = callee.clock + d;
    for (;;) {
      auto next =
        std::min_element(callee.timers.begin(), callee.timers.end(),
                         [](const timer_record& a, const timer_record& b) {
                           return a.due < b.due || (a.due == b.due && a.seq < b.seq);
                         });
      if (next == callee.timers.end() || next->due > target)
        break;
      auto t = next->t;
      callee.clock = std::max(callee.clock, next->due);
      callee.timers.erase(next);
      core->on_timer(t);
      sync();
    }
    callee.clock = target;
  }

  /// Fires what is due now (timers asked for with no delay).
  void settle() { advance(0ms); }

  /// Moves the clock without delivering timers (their messages are still on the way).
  void jump(std::chrono::steady_clock::duration d) { callee.clock += d; }

 private:
  int next_pid_ = 1000;
  int next_cid_ = 1;
};

} // namespace snakepit::actors::test
