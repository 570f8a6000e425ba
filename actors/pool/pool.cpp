#include "actors/pool/pool.hpp"

#include <algorithm>
#include <deque>
#include <random>
#include <list>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <variant>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/atoms.hpp"
#include "actors/pool/direct_lane.hpp"
#include "actors/pool/lifecycle.hpp"
#include "actors/observability/metrics.hpp"
#include "actors/observability/telemetry.hpp"
#include "actors/pool/reply_slot.hpp"
#include "actors/worker/request_trace.hpp"
#include "actors/sessions/session_store.hpp"
#include "actors/sessions/tool_registry.hpp"
#include "actors/pool/stream_sink.hpp"
#include "actors/types.hpp"
#include "actors/worker/worker.hpp"
#include "adapters/errors.hpp"
#include "supervision/atoms.hpp"
#include "supervision/dynamic_supervisor.hpp"

namespace snakepit::actors {

namespace {

using clock_type = caf::actor_clock;
using time_point = clock_type::time_point;

/// Where a reply goes: a CAF response promise (actor callers) or a reply slot
/// (the facade's callback path, which the gRPC thread may answer directly).
using sink = std::variant<caf::response_promise, reply_slot_ptr, stream_sink_ptr>;

void deliver(sink& s, execute_result res) {
  if (auto* rp = std::get_if<caf::response_promise>(&s)) {
    if (res)
      rp->deliver(std::move(*res));
    else
      rp->deliver(std::move(res.error()));
  } else if (auto* slot = std::get_if<reply_slot_ptr>(&s)) {
    (*slot)->deliver(std::move(res));
  } else {
    std::get<stream_sink_ptr>(s)->end(res ? caf::error{} : std::move(res.error()));
  }
}

/// Sends the chunks of a stream to a host actor (the actor API of execute_stream).
class actor_stream_sink final : public stream_sink {
public:
  explicit actor_stream_sink(caf::actor dest) : dest_(std::move(dest)) {}

  adapters::stream_step on_chunk(json chunk, bool is_final) override {
    caf::anon_send(dest_, stream_chunk_atom::value, std::move(chunk), is_final);
    return adapters::stream_step::more;
  }

  void on_end(caf::error err) override {
    caf::anon_send(dest_, stream_end_atom::value, std::move(err));
  }

  void attach(adapters::stream_control) override {}

private:
  caf::actor dest_;
};

/// The actor API with flow control: at most `window` chunks are sent to the host
/// actor and not yet acknowledged (stream_ack_atom); at the limit no further chunk
/// is read from the worker, so HTTP/2 flow control holds the Python producer back
/// instead of the host actor's mailbox growing.
class windowed_actor_stream_sink final : public stream_sink {
public:
  windowed_actor_stream_sink(caf::actor dest, uint64_t id, uint32_t window)
    : dest_(std::move(dest)), id_(id), window_(window) {}

  adapters::stream_step on_chunk(json chunk, bool is_final) override {
    std::lock_guard<std::mutex> guard{mtx_};
    if (halted_)
      return adapters::stream_step::halt;
    caf::anon_send(dest_, stream_chunk_atom::value, id_, std::move(chunk), is_final);
    if (++outstanding_ >= window_) {
      paused_ = true;
      return adapters::stream_step::pause;
    }
    return adapters::stream_step::more;
  }

  void on_end(caf::error err) override {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      // A halt cancels the RPC on purpose: a clean end for the host, unless it
      // was the deadline.
      if (halted_ && err == errc::cancelled)
        err = expired_ ? caf::make_error(errc::timeout, "stream did not end within its budget")
                       : caf::error{};
    }
    caf::anon_send(dest_, stream_end_atom::value, id_, std::move(err));
  }

  void attach(adapters::stream_control ctl) override {
    std::lock_guard<std::mutex> guard{mtx_};
    control_ = std::move(ctl);
    if (halted_)
      stop_locked();
  }

  /// The host consumed `n` chunks.
  void ack(uint32_t n) {
    std::lock_guard<std::mutex> guard{mtx_};
    outstanding_ -= std::min(n, outstanding_);
    if (paused_ && outstanding_ < window_) {
      paused_ = false;
      control_.resume();
    }
  }

  /// Cancels the RPC (`expired`: because its deadline passed).
  void halt(bool expired) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (halted_)
      return;
    halted_ = true;
    expired_ = expired;
    stop_locked();
  }

private:
  void stop_locked() {
    control_.cancel();
    if (paused_) {
      paused_ = false;
      control_.resume(); // the pending read fails after the cancel; the stream ends
    }
  }

  caf::actor dest_;
  uint64_t id_;
  uint32_t window_;
  std::mutex mtx_;
  adapters::stream_control control_;
  uint32_t outstanding_ = 0;
  bool paused_ = false;
  bool halted_ = false;
  bool expired_ = false;
};

struct pending_request {
  uint64_t id = 0;
  execute_request req;
  sink out;
  time_point deadline;
  time_point accepted;
  caf::actor_addr caller;
  /// strict_queue: only this worker may run it (empty: any worker).
  std::string pinned_worker;
  /// Retries so far (idempotent requests whose worker crashed).
  int attempt = 0;
};

/// Affinity modes (upstream :hint, :strict_queue, :strict_fail_fast).
enum class affinity_mode { hint, strict_queue, strict_fail_fast };

affinity_mode parse_affinity(const std::string& x, affinity_mode fallback) {
  if (x == "hint")
    return affinity_mode::hint;
  if (x == "strict_queue")
    return affinity_mode::strict_queue;
  if (x == "strict_fail_fast")
    return affinity_mode::strict_fail_fast;
  return fallback;
}

/// The worker a session last ran on. The worker's actor address tells a live
/// worker from a restarted one with the same id (whose Python state is gone).
struct session_binding {
  std::string worker_id;
  caf::actor_addr worker;
};

struct inflight_request {
  std::string worker_id;
  sink out;
  time_point started;
  /// For idempotent calls: what to run again if the worker crashes (its `out` is
  /// a placeholder; the live sink is the one above).
  std::shared_ptr<pending_request> retry;
  /// The request's correlation id, attached to the error if it fails.
  std::string correlation_id;
};

struct worker_entry {
  caf::actor handle;
  int pid = 0;
  /// Its row in the checkout table: load (requests in flight, through either
  /// path), requests served, last use; claimed by compare-and-swap.
  lane_slot_ptr slot;
  size_t capacity = 1;  ///< requests it may run at once (worker profile)
  time_point ready_at;
  /// Recycle after this many requests (0: never); drawn with jitter per worker.
  uint64_t request_limit = 0;
  /// Crash barrier: not offered new work before this (while untainted workers exist).
  time_point tainted_until{};
};

uint32_t load_of(const worker_entry& w) {
  return w.slot->load.load();
}

/// Why a worker is recycled ("ttl", "max_requests", "memory", "manual").
struct recycle_info {
  std::string reason;
  uint64_t rss_bytes = 0;
};

struct pool_state {
  static inline const char* name = "snakepit.pool";

  pool_config cfg;
  std::shared_ptr<const worker_env> env;
  caf::actor worker_sup;
  std::unordered_map<std::string, worker_entry> workers;
  std::unordered_map<caf::actor_addr, std::string> worker_ids;
  std::vector<std::string> order;  ///< ready workers, for round-robin among equals
  std::unordered_map<std::string, session_binding> sessions;  ///< affinity cache
  affinity_mode default_affinity = affinity_mode::hint;
  /// Tools the pool's workers registered with the host (tool_registry); calls to
  /// other names are rejected before dispatch once the set is known.
  std::unordered_set<std::string> tools;
  /// The adapter dispatches any name itself (upstream `execute_tool`): no check.
  bool open_dispatch = false;
  /// The checkout table (docs/architecture.md, "direct lane"); its dispatch
  /// counter stamps each worker's last use (warm-worker preference).
  std::shared_ptr<direct_lane> lane;
  /// The set of ready workers changed since the table last saw it.
  bool slots_dirty = false;
  std::list<pending_request> queue;
  std::unordered_map<uint64_t, std::list<pending_request>::iterator> queued;
  std::unordered_map<uint64_t, inflight_request> inflight;
  std::unordered_set<caf::actor_addr> monitored_callers;
  std::vector<caf::response_promise> ready_waiters;
  uint64_t next_id = 1;
  /// Windowed actor-API streams by the id their chunks carry (acks, halts).
  std::unordered_map<uint64_t, std::weak_ptr<windowed_actor_stream_sink>> windowed;
  uint64_t next_stream_id = 1;
  // Startup bookkeeping (upstream Initializer): bounded concurrent starts.
  size_t next_worker_index = 0;
  uint64_t generation = 0;
  size_t starting = 0;
  size_t start_attempts_left = 0;
  size_t started_ok = 0;
  std::unordered_set<std::string> ever_ready;
  bool startup_done = false;
  time_point init_started;
  caf::error first_start_error;
  bool draining = false;
  pool_stats stats;
  latency_histogram latencies;  ///< completed requests, fixed memory
  // Lifecycle (docs/reliability.md).
  /// Workers whose starter runs under worker_sup on this pool's behalf.
  std::unordered_set<std::string> members;
  /// Workers being recycled: they serve until their replacement is ready, then
  /// take no new work and are retired once their calls finished.
  std::unordered_map<std::string, recycle_info> recycling;
  /// Replacements starting (new id -> recycled id).
  std::unordered_map<std::string, std::string> replacing;
  /// Recycled workers whose replacement is ready.
  std::unordered_set<std::string> replaced;
  uint64_t recycles = 0;
  /// How each worker's process last died (code, signal), until its down arrives.
  std::unordered_map<std::string, std::pair<int, int>> exits;
  /// Crash barrier: worker id -> tainted until.
  std::unordered_map<std::string, time_point> taints;
  /// Idempotent calls waiting out their retry backoff.
  std::unordered_map<uint64_t, pending_request> parked;
  circuit_breaker breaker;
  std::mt19937_64 rng{std::random_device{}()};

  double uniform() { return std::uniform_real_distribution<double>{0.0, 1.0}(rng); }

  pool_state() = default;
  pool_state(const pool_state&) = delete;
  pool_state& operator=(const pool_state&) = delete;

  ~pool_state() {
    // Blocking callers stop finding this pool's workers; their calls in progress
    // finish on their own.
    if (lane) {
      lane->retire();
      env->lanes->remove(cfg.name, lane);
    }
  }
};

using pool_actor = caf::stateful_actor<pool_state>;

/// Emits `snakepit.<name>` when anyone listens (one atomic load otherwise).
template <class MakeMeasurements, class MakeMetadata>
void emit(pool_actor* self, const char* name, MakeMeasurements&& m, MakeMetadata&& md) {
  auto& bus = self->state.env->telemetry;
  if (bus && bus->active())
    bus->emit(name, m(), md());
}

bool begin_recycle(pool_actor* self, const std::string& id, const std::string& reason,
                   uint64_t rss_bytes = 0);

/// One host log line of this pool (fields get the pool's name).
void log_line(pool_actor* self, adapters::log_level level, const char* msg, json fields) {
  auto& log = self->state.env->log;
  if (!log->enabled(level))
    return;
  fields["pool"] = self->state.cfg.name;
  log->log(level, msg, fields);
}

/// Answers a request (stats, events), its error carrying the correlation id.
void finish(pool_actor* self, sink& out, execute_result res, time_point accepted,
            const std::string& correlation_id) {
  auto& st = self->state;
  if (!res)
    res = with_correlation_id(std::move(res.error()), correlation_id);
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(self->clock().now()
                                                                   - accepted);
  if (res) {
    ++st.stats.completed;
    st.latencies.record(us.count());
  } else {
    ++st.stats.errors;
  }
  auto measurements = [&] { return json{{"duration_us", us.count()}}; };
  auto metadata = [&] { return request_stop_metadata(st.cfg.name, res); };
  emit(self, res ? "snakepit.request.stop" : "snakepit.request.exception", measurements,
       metadata);
  if (std::holds_alternative<stream_sink_ptr>(out))
    emit(self, "snakepit.stream.stop", measurements, metadata);
  deliver(out, std::move(res));
}

bool caller_gone(const pending_request& p) {
  if (auto* slot = std::get_if<reply_slot_ptr>(&p.out))
    return (*slot)->abandoned && (*slot)->abandoned->load();
  if (auto* ss = std::get_if<stream_sink_ptr>(&p.out))
    return (*ss)->abandoned.load();
  return false;
}

/// Runs `p` on `worker_id`, whose slot the caller claimed for it.
void dispatch(pool_actor* self, const std::string& worker_id, pending_request p) {
  auto& st = self->state;
  auto& w = st.workers.at(worker_id);
  auto now = self->clock().now();
  emit(
    self, "snakepit.request.start",
    [&] {
      return json{{"queue_us", std::chrono::duration_cast<std::chrono::microseconds>(
                                 now - p.accepted)
                                 .count()}};
    },
    [&] {
      return request_start_metadata(st.cfg.name, worker_id, p.req,
                                    std::holds_alternative<stream_sink_ptr>(p.out));
    });
  if (auto& sid = p.req.opts.session_id; !sid.empty()) {
    auto& b = st.sessions[sid];
    if (b.worker_id != worker_id || b.worker != w.handle.address()) {
      b.worker_id = worker_id;
      b.worker = w.handle.address();
      st.lane->bind_session(sid, w.slot);
    }
    if (auto store = st.env->names->get("session_store"))
      self->send(store, session_touch_atom::value, sid, worker_id);
  }
  auto served = w.slot->requests.fetch_add(1) + 1;
  w.slot->last_used.store(st.lane->next_use());
  if (w.request_limit > 0 && served >= w.request_limit)
    begin_recycle(self, worker_id, "max_requests");
  if (load_of(w) >= w.capacity && st.cfg.capacity_strategy == "hybrid")
    emit(
      self, "snakepit.pool.capacity_reached",
      [&] { return json{{"capacity", w.capacity}, {"load", load_of(w)}}; },
      [&] { return json{{"pool", st.cfg.name}, {"worker_id", worker_id}}; });
  auto budget = p.deadline - now;
  auto span = std::chrono::duration_cast<caf::timespan>(budget);
  // The remaining budget travels as the gRPC deadline (`span` below); the worker
  // shows it to tools as metadata `timeout_ms`, upstream's key.
  if (auto* ss = std::get_if<stream_sink_ptr>(&p.out)) {
    auto sink = *ss;
    emit(
      self, "snakepit.stream.start", [] { return json::object(); },
      [&] {
        return json{{"pool", st.cfg.name}, {"worker_id", worker_id}, {"command", p.req.command},
                    {"correlation_id", p.req.opts.correlation_id}};
      });
    st.inflight.emplace(p.id, inflight_request{worker_id, std::move(p.out), p.accepted, {},
                                               p.req.opts.correlation_id});
    self->send(w.handle, stream_atom::value, p.id, std::move(p.req), span, std::move(sink));
    return;
  }
  reply_slot_ptr slot;
  if (auto* sp = std::get_if<reply_slot_ptr>(&p.out)) {
    slot = *sp;
    slot->lane = w.slot;
  }
  std::shared_ptr<pending_request> retry;
  if (p.req.opts.idempotent && p.attempt < st.cfg.retry_max_attempts)
    retry = std::make_shared<pending_request>(pending_request{
      p.id, p.req, sink{}, p.deadline, p.accepted, p.caller, std::string{}, p.attempt + 1});
  st.inflight.emplace(p.id, inflight_request{worker_id, std::move(p.out), p.accepted,
                                             std::move(retry), p.req.opts.correlation_id});
  self->send(w.handle, execute_atom::value, p.id, std::move(p.req), span, std::move(slot));
}

bool tainted(const worker_entry& w, time_point now) {
  return w.tainted_until > now;
}

/// Whether any ready worker is free of taint (then tainted ones get no new work).
bool untainted_ready(pool_actor* self, time_point now) {
  auto& st = self->state;
  return std::any_of(st.order.begin(), st.order.end(),
                     [&](const std::string& id) { return !tainted(st.workers.at(id), now); });
}

/// Whether a worker may take requests that are not pinned to it: not while it is
/// recycled, nor while tainted if an untainted worker is ready.
bool offers_new_work(pool_actor* self, const std::string& id, const worker_entry& w,
                     time_point now) {
  auto& st = self->state;
  if (st.replaced.count(id) > 0)
    return false;
  return !tainted(w, now) || !untainted_ready(self, now);
}

/// A worker has room again: give it the oldest runnable queued requests that fit.
void checkin(pool_actor* self, const std::string& worker_id) {
  auto& st = self->state;
  auto i = st.workers.find(worker_id);
  if (i == st.workers.end())
    return;
  auto now = self->clock().now();
  bool takes_new = offers_new_work(self, worker_id, i->second, now);
  auto q = st.queue.begin();
  while (q != st.queue.end() && load_of(i->second) < i->second.capacity) {
    if (!q->pinned_worker.empty() && q->pinned_worker != worker_id) {
      ++q; // pinned to another worker (strict_queue): leave it for that one
      continue;
    }
    if (q->pinned_worker.empty() && !takes_new) {
      ++q; // recycling or tainted: only what is pinned to it
      continue;
    }
    bool gone = caller_gone(*q);
    bool expired = q->deadline <= now;
    if (!gone && !expired && !i->second.slot->try_claim())
      break; // a blocking caller took the room meanwhile
    auto p = std::move(*q);
    q = st.queue.erase(q);
    st.queued.erase(p.id);
    if (gone)
      continue; // the caller stopped waiting: never execute its request
    if (expired) {
      // Its whole budget went by in the queue: it never runs.
      ++st.stats.queue_timeouts;
      finish(self, p.out,
             caf::make_error(errc::timeout, fmt::format("{}: deadline passed in the queue",
                                                        p.req.opts.correlation_id)),
             p.accepted, p.req.opts.correlation_id);
      continue;
    }
    emit(
      self, "snakepit.queue.dequeued",
      [&] {
        return json{{"wait_us", std::chrono::duration_cast<std::chrono::microseconds>(
                                  now - p.accepted)
                                  .count()}};
      },
      [&] {
        return json{{"pool", st.cfg.name}, {"worker_id", worker_id},
                    {"correlation_id", p.req.opts.correlation_id}};
      });
    dispatch(self, worker_id, std::move(p));
  }
}

/// Brings the checkout table in line with the pool. It is open to blocking callers
/// only when the pool would dispatch a new request at once (nothing queued or
/// waiting out a retry backoff, not draining); each worker's slot is offered when
/// the worker takes new work (not recycled, not tainted while untainted ones
/// serve). Closing reads every load afterwards, so a slot a blocking caller freed
/// just before the close still serves the queue (see direct_lane.hpp).
void sync_lane(pool_actor* self) {
  auto& st = self->state;
  if (st.slots_dirty) {
    st.slots_dirty = false;
    std::vector<lane_slot_ptr> slots;
    slots.reserve(st.order.size());
    for (auto& id : st.order)
      slots.push_back(st.workers.at(id).slot);
    st.lane->publish(std::move(slots));
  }
  auto now = self->clock().now();
  bool skip_tainted = !st.taints.empty() && untainted_ready(self, now);
  for (auto& [id, w] : st.workers)
    w.slot->offered.store(st.replaced.count(id) == 0 && !(skip_tainted && tainted(w, now)));
  bool open = st.cfg.direct_dispatch && !st.draining && st.queue.empty() && st.parked.empty();
  bool was_open = st.lane->is_open();
  st.lane->set_open(open);
  if (was_open && !open) {
    auto ids = st.order;
    for (auto& id : ids)
      checkin(self, id);
  }
}

/// Claims the least-loaded ready worker with headroom; among equals the one used
/// most recently (a warm process: its pages, caches and scheduler slot are hot,
/// which saves a sequential caller about as much as the whole pool hop costs).
/// Empty when every worker is at capacity.
std::string checkout(pool_actor* self) {
  auto& st = self->state;
  auto now = self->clock().now();
  bool skip_tainted = !st.taints.empty() && untainted_ready(self, now);
  // A blocking caller may claim the chosen worker first (direct lane): look again.
  for (int attempt = 0; attempt < 4; ++attempt) {
    const std::string* best = nullptr;
    uint32_t best_load = 0;
    uint64_t best_used = 0;
    for (auto& id : st.order) {
      auto& w = st.workers.at(id);
      auto load = load_of(w);
      if (load >= w.capacity || (skip_tainted && tainted(w, now)))
        continue;
      auto used = w.slot->last_used.load();
      if (best == nullptr || load < best_load || (load == best_load && used > best_used)) {
        best = &id;
        best_load = load;
        best_used = used;
      }
    }
    if (best == nullptr)
      return {};
    if (st.workers.at(*best).slot->try_claim())
      return *best;
  }
  return {};
}

bool valid_session_id(const std::string& id) {
  if (id.empty() || id.size() > 128)
    return false;
  for (char c : id)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'))
      return false;
  return true;
}

/// Rejects a request whose payload cannot be sent, before it takes a worker.
caf::error check_payload(const pool_config& cfg, const execute_request& req) {
  size_t size = 0;
  for (auto& [name, blob] : req.opts.binary_args)
    size += name.size() + blob.size();
  if (size > cfg.max_message_bytes)
    return caf::make_error(errc::payload_too_large,
                           fmt::format("{} bytes of binary parameters exceed the limit of {}",
                                       size, cfg.max_message_bytes));
  if (!req.args.empty() && !(req.args.is_object() && req.args.size() <= 8 && size == 0
                             && cfg.max_message_bytes >= (1u << 20))) {
    // Measuring means serialising: done for large or unusual arguments only.
    size += req.args.dump().size();
    if (size > cfg.max_message_bytes)
      return caf::make_error(errc::payload_too_large,
                             fmt::format("request of {} bytes exceeds the limit of {}", size,
                                         cfg.max_message_bytes));
  }
  return caf::none;
}

void admit(pool_actor* self, execute_request req, sink out, caf::actor_addr caller) {
  auto& st = self->state;
  if (req.opts.correlation_id.empty())
    req.opts.correlation_id = make_correlation_id(st.cfg.name, st.next_id);
  auto reject = [&](caf::error err) {
    deliver(out, with_correlation_id(std::move(err), req.opts.correlation_id));
  };
  if (st.draining) {
    reject(caf::make_error(errc::shutting_down, st.cfg.name));
    return;
  }
  if (st.startup_done && st.workers.empty() && st.first_start_error) {
    // A pool that could not start any worker fails fast instead of queueing.
    reject(st.first_start_error);
    return;
  }
  if (st.workers.empty() && st.breaker.current() != circuit_breaker::state::closed) {
    // No worker to wait for and starts keep failing: fail fast, no storm.
    reject(caf::make_error(errc::circuit_open,
                           fmt::format("pool {}: circuit open after {} failed worker starts",
                                       st.cfg.name, st.breaker.failures())));
    return;
  }
  if (auto err = check_payload(st.cfg, req)) {
    reject(std::move(err));
    return;
  }
  if (!st.tools.empty() && !st.open_dispatch && req.opts.session_id.empty()
      && st.tools.count(req.command) == 0) {
    // Known before dispatch: the pool's workers registered their tools. (Session
    // calls may use tools an adapter registers per session, so they go through.)
    reject(caf::make_error(errc::unknown_tool,
                           fmt::format("pool {} has no tool '{}'", st.cfg.name, req.command)));
    return;
  }
  auto now = self->clock().now();
  auto budget = req.opts.timeout.count() > 0 ? req.opts.timeout : st.cfg.request_timeout;
  pending_request p{st.next_id++, std::move(req), std::move(out), now + budget, now,
                    std::move(caller), std::string{}, 0};
  ++st.stats.requests;
  if (!p.req.opts.session_id.empty()) {
    if (!valid_session_id(p.req.opts.session_id)) {
      --st.stats.requests;
      finish(self, p.out,
             caf::make_error(errc::invalid_session_id,
                             "session ids are 1-128 characters of [A-Za-z0-9_-]"),
             p.accepted, p.req.opts.correlation_id);
      return;
    }
    auto mode = parse_affinity(p.req.opts.affinity, st.default_affinity);
    auto b = st.sessions.find(p.req.opts.session_id);
    if (b != st.sessions.end()) {
      auto w = st.workers.find(b->second.worker_id);
      bool live = w != st.workers.end() && w->second.handle.address() == b->second.worker;
      if (live && w->second.slot->try_claim()) {
        dispatch(self, w->first, std::move(p));
        return;
      }
      if (mode != affinity_mode::hint) {
        if (!live) {
          finish(self, p.out,
                 caf::make_error(errc::session_worker_unavailable,
                                 fmt::format("session {}: worker {} is gone",
                                             p.req.opts.session_id, b->second.worker_id)),
                 p.accepted, p.req.opts.correlation_id);
          return;
        }
        if (mode == affinity_mode::strict_fail_fast) {
          finish(self, p.out,
                 caf::make_error(errc::worker_busy,
                                 fmt::format("session {}: worker {} is busy",
                                             p.req.opts.session_id, b->second.worker_id)),
                 p.accepted, p.req.opts.correlation_id);
          return;
        }
        p.pinned_worker = b->second.worker_id; // strict_queue: wait for that worker
      }
    }
  }
  if (p.pinned_worker.empty()) {
    if (auto w = checkout(self); !w.empty()) {
      dispatch(self, w, std::move(p));
      return;
    }
  }
  if (st.queue.size() >= st.cfg.max_queue_size) {
    ++st.stats.saturations;
    --st.stats.requests;
    if (auto& log = st.env->log; log->enabled(adapters::log_level::warn))
      log->warn("pool saturated: request refused",
                {{"pool", st.cfg.name}, {"command", p.req.command},
                 {"correlation_id", p.req.opts.correlation_id},
                 {"queue_size", st.queue.size()}});
    emit(
      self, "snakepit.pool.saturated",
      [&] {
        return json{{"queue_size", st.queue.size()}, {"max_queue_size", st.cfg.max_queue_size}};
      },
      [&] {
        return json{{"pool", st.cfg.name}, {"correlation_id", p.req.opts.correlation_id}};
      });
    finish(self, p.out,
           caf::make_error(errc::pool_saturated,
                           fmt::format("pool {}: {} requests queued", st.cfg.name,
                                       st.queue.size())),
           p.accepted, p.req.opts.correlation_id);
    return;
  }
  ++st.stats.queued;
  emit(
    self, "snakepit.queue.enqueued", [&] { return json{{"queue_size", st.queue.size() + 1}}; },
    [&] {
      return json{{"pool", st.cfg.name},
                  {"command", p.req.command},
                  {"correlation_id", p.req.opts.correlation_id},
                  {"pinned_worker", p.pinned_worker}};
    });
  auto wait = std::min<caf::timespan>(st.cfg.queue_timeout, budget);
  auto id = p.id;
  if (p.caller && st.monitored_callers.insert(p.caller).second)
    self->monitor(p.caller);
  st.queue.push_back(std::move(p));
  st.queued.emplace(id, std::prev(st.queue.end()));
  self->delayed_send(self, wait, queue_timeout_atom::value, id);
}

/// Takes a request from the actor API or the facade: run, queue or refuse it.
void accept(pool_actor* self, execute_request req, sink out, caf::actor_addr caller) {
  admit(self, std::move(req), std::move(out), std::move(caller));
  sync_lane(self);
}

void fail_everything(pool_actor* self, caf::error reason) {
  auto& st = self->state;
  for (auto& p : st.queue)
    finish(self, p.out, reason, p.accepted, p.req.opts.correlation_id);
  st.queue.clear();
  st.queued.clear();
  for (auto& [id, f] : st.inflight)
    finish(self, f.out, reason, f.started, f.correlation_id);
  st.inflight.clear();
  for (auto& [id, p] : st.parked)
    finish(self, p.out, reason, p.accepted, p.req.opts.correlation_id);
  st.parked.clear();
  for (auto& rp : st.ready_waiters)
    rp.deliver(reason);
  st.ready_waiters.clear();
}

void answer_ready_waiters(pool_actor* self) {
  auto& st = self->state;
  if (!st.startup_done)
    return;
  for (auto& rp : st.ready_waiters) {
    if (!st.workers.empty())
      rp.deliver(caf::ok_atom::value);
    else
      rp.deliver(st.first_start_error
                   ? st.first_start_error
                   : caf::make_error(errc::start_failed, st.cfg.name, "no worker started"));
  }
  st.ready_waiters.clear();
}

/// Asks the tool registry which tools this pool's workers registered.
void refresh_tools(pool_actor* self) {
  auto reg = self->state.env->names->get("tool_registry");
  if (!reg)
    return;
  self->request(reg, std::chrono::seconds{5}, tool_list_atom::value, std::string{})
    .then(
      [self](std::vector<tool_info>& all) {
        auto& st = self->state;
        auto prefix = st.cfg.name + "_worker_";
        std::unordered_set<std::string> mine;
        bool open = false;
        for (auto& t : all) {
          if (t.kind != "python" || !t.session_id.empty())
            continue;
          bool ours = std::any_of(t.workers.begin(), t.workers.end(), [&](const auto& w) {
            return w.rfind(prefix, 0) == 0;
          });
          if (!ours)
            continue;
          if (t.name == "execute_tool")
            open = true;
          mine.insert(t.name);
        }
        if (!mine.empty()) {
          st.tools = std::move(mine);
          st.open_dispatch = open;
          st.lane->set_tools(st.tools, st.open_dispatch);
        }
      },
      [](caf::error&) {});
}

/// Startup is over once every start attempt finished and every started worker's
/// worker_ready arrived (it comes from the worker itself, the start reply from the
/// supervisor chain: the two may arrive in either order).
void maybe_finish_startup(pool_actor* self) {
  auto& st = self->state;
  if (st.startup_done || st.start_attempts_left > 0 || st.starting > 0
      || st.ever_ready.size() < st.started_ok)
    return;
  st.startup_done = true;
  emit(
    self, "snakepit.pool.init_complete",
    [&] {
      return json{{"duration_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                    self->clock().now() - st.init_started)
                                    .count()},
                  {"ready_workers", st.workers.size()},
                  {"total_workers", st.cfg.pool_size}};
    },
    [&] {
      json md{{"pool", st.cfg.name}};
      if (st.first_start_error)
        md["error"] = describe(st.first_start_error);
      return md;
    });
  answer_ready_waiters(self);
}

/// Arguments of the next new worker (fresh id; `<pool>_worker_<n>[_g<gen>]`).
worker_args next_worker(pool_actor* self) {
  auto& st = self->state;
  worker_args args;
  ++st.next_worker_index;
  args.id = st.generation <= 1 ? fmt::format("{}_worker_{}", st.cfg.name, st.next_worker_index)
                               : fmt::format("{}_worker_{}_g{}", st.cfg.name,
                                             st.next_worker_index, st.generation);
  args.pool = caf::actor_cast<caf::actor>(self);
  args.pool_cfg = st.cfg;
  args.env = st.env;
  st.members.insert(args.id);
  return args;
}

caf::timespan start_timeout(const pool_config& cfg) {
  return cfg.worker_ready_timeout + std::chrono::seconds{10};
}

void start_more_workers(pool_actor* self) {
  auto& st = self->state;
  while (st.start_attempts_left > 0 && st.starting < st.cfg.startup_concurrency) {
    --st.start_attempts_left;
    ++st.starting;
    auto args = next_worker(self);
    auto id = args.id;
    self
      ->request(st.worker_sup, start_timeout(st.cfg), supervision::start_child_atom::value,
                worker_starter_spec(std::move(args)))
      .then(
        [self](caf::actor&) {
          --self->state.starting;
          ++self->state.started_ok;
          start_more_workers(self);
        },
        [self, id](caf::error& err) {
          auto& st = self->state;
          st.members.erase(id);
          --st.starting;
          if (!st.first_start_error)
            st.first_start_error = caf::make_error(errc::start_failed,
                                                   fmt::format("pool {}: {}", st.cfg.name,
                                                               describe(err)));
          start_more_workers(self);
        });
  }
  maybe_finish_startup(self);
}

/// Parks an idempotent call whose worker crashed for its backoff, after which it
/// goes first in line for another worker; false if it cannot be retried (no
/// attempts left, a session call — its worker's state went with it — or no time
/// left for the backoff within its deadline).
bool retry_elsewhere(pool_actor* self, inflight_request& f, const std::string& dead_worker) {
  auto& st = self->state;
  auto now = self->clock().now();
  if (!f.retry || !f.retry->req.opts.session_id.empty())
    return false;
  auto delay = retry_delay(st.cfg.retry_backoff, f.retry->attempt, st.uniform());
  if (f.retry->deadline <= now + delay)
    return false;
  auto p = std::move(*f.retry);
  f.retry.reset();
  p.id = st.next_id++;
  p.out = std::move(f.out);
  emit(
    self, "snakepit.request.retried",
    [&] { return json{{"attempt", p.attempt}, {"delay_ms", delay.count()}}; },
    [&] {
      return json{{"pool", st.cfg.name}, {"worker_id", dead_worker},
                  {"correlation_id", p.req.opts.correlation_id}};
    });
  auto rid = p.id;
  st.parked.emplace(rid, std::move(p));
  self->delayed_send(self, delay, retry_atom::value, rid);
  return true;
}

/// Stops a worker for good: its starter leaves worker_sup. Found by id, since
/// worker_sup may have restarted the starter under a new handle.
void retire(pool_actor* self, const std::string& id) {
  auto& st = self->state;
  st.members.erase(id);
  auto sup = st.worker_sup;
  auto stop_budget = st.cfg.graceful_shutdown_timeout + std::chrono::seconds{10};
  self->request(sup, std::chrono::seconds{10}, supervision::which_children_atom::value)
    .then(
      [self, sup, id, stop_budget](std::vector<supervision::child_info>& kids) {
        for (auto& kid : kids)
          if (kid.id == id && kid.pid)
            self
              ->request(sup, stop_budget, supervision::terminate_child_atom::value, kid.pid)
              .then([](caf::ok_atom) {}, [](caf::error&) {});
      },
      [](caf::error&) {});
}

/// Retires a recycled worker once its replacement is ready and its calls finished.
void maybe_retire(pool_actor* self, const std::string& id) {
  auto& st = self->state;
  auto w = st.workers.find(id);
  if (st.replaced.count(id) == 0 || w == st.workers.end() || load_of(w->second) > 0
      || st.members.count(id) == 0)
    return;
  retire(self, id);
}

/// Workers the pool should have besides those on their way out.
size_t worker_deficit(pool_actor* self) {
  auto& st = self->state;
  auto target = st.cfg.pool_size + st.recycling.size();
  return target > st.members.size() ? target - st.members.size() : 0;
}

void cancel_recycle(pool_actor* self, const std::string& old);

/// Starts one worker outside the initial start-up: a recycle's replacement (when
/// `replaces` is set), a circuit-breaker probe, or a refill.
void start_worker(pool_actor* self, const std::string& replaces = {}) {
  auto& st = self->state;
  auto args = next_worker(self);
  auto id = args.id;
  if (!replaces.empty())
    st.replacing[id] = replaces;
  self
    ->request(st.worker_sup, start_timeout(st.cfg), supervision::start_child_atom::value,
              worker_starter_spec(std::move(args)))
    .then([](caf::actor&) {},
          [self, id](caf::error&) {
            auto& st = self->state;
            st.members.erase(id);
            if (auto r = st.replacing.find(id); r != st.replacing.end()) {
              auto old = r->second;
              st.replacing.erase(r);
              cancel_recycle(self, old);
            }
          });
}

/// A replacement did not start: the old worker keeps serving (a later check
/// tries again); if it is gone meanwhile, a new worker takes its place.
void cancel_recycle(pool_actor* self, const std::string& old) {
  auto& st = self->state;
  st.recycling.erase(old);
  st.replaced.erase(old);
  if (st.members.count(old) == 0) {
    if (!st.draining && worker_deficit(self) > 0)
      start_worker(self);
    return;
  }
  if (st.workers.count(old) > 0
      && std::find(st.order.begin(), st.order.end(), old) == st.order.end()) {
    st.order.push_back(old);
    st.slots_dirty = true;
    checkin(self, old);
    sync_lane(self);
  }
}

bool begin_recycle(pool_actor* self, const std::string& id, const std::string& reason,
                   uint64_t rss_bytes) {
  auto& st = self->state;
  if (st.draining || st.recycling.count(id) > 0 || st.workers.count(id) == 0
      || st.members.count(id) == 0)
    return false;
  // A few at a time, so a pool whose workers all reach their limit together
  // still serves (and manual recycles are not refused).
  auto limit = std::max<size_t>(1, st.cfg.pool_size / 4);
  if (reason != "manual" && st.recycling.size() >= limit)
    return false;
  st.recycling[id] = recycle_info{reason, rss_bytes};
  log_line(self, adapters::log_level::info, "recycling worker: starting its replacement",
           {{"worker_id", id}, {"reason", reason}});
  start_worker(self, id);
  return true;
}

/// The periodic TTL, request-count and memory check (upstream LifecycleManager's
/// check cycle); also run when a recycle completes, to start the next one.
void lifecycle_check(pool_actor* self) {
  auto& st = self->state;
  auto now = self->clock().now();
  auto ids = st.order;
  for (auto& id : ids) {
    auto& w = st.workers.at(id);
    if (st.recycling.count(id) > 0)
      continue;
    if (st.cfg.worker_ttl.count() > 0 && now - w.ready_at >= st.cfg.worker_ttl) {
      begin_recycle(self, id, "ttl");
      continue;
    }
    if (w.request_limit > 0 && w.slot->requests.load() >= w.request_limit) {
      // (Reached while other recycles were under way.)
      begin_recycle(self, id, "max_requests");
      continue;
    }
    if (st.cfg.memory_threshold_mb > 0)
      if (auto rss = resident_bytes(w.pid); rss && *rss > st.cfg.memory_threshold_mb << 20)
        begin_recycle(self, id, "memory", *rss);
  }
}

/// Too many worker starts failed in a row: stop restarting (retire every worker
/// that is not serving), fail calls that have no worker to wait for, and look
/// again after the reset period.
void open_circuit(pool_actor* self, const std::string& worker_id, const caf::error& err) {
  auto& st = self->state;
  log_line(self, adapters::log_level::error,
           "circuit open: worker starts keep failing; restarts stop until the probe",
           {{"worker_id", worker_id}, {"failures", st.breaker.failures()},
            {"error", describe(err)}, {"reset_ms", st.breaker.reset().count()}});
  emit(
    self, "snakepit.circuit_breaker.opened",
    [&] { return json{{"failures", st.breaker.failures()}}; },
    [&] {
      return json{{"pool", st.cfg.name}, {"worker_id", worker_id}, {"error", describe(err)}};
    });
  st.start_attempts_left = 0;
  std::vector<std::string> idle(st.members.begin(), st.members.end());
  for (auto& id : idle)
    if (st.workers.count(id) == 0)
      retire(self, id);
  if (st.workers.empty()) {
    for (auto& p : st.queue)
      finish(self, p.out,
             caf::make_error(errc::circuit_open,
                             fmt::format("pool {}: worker starts keep failing", st.cfg.name)),
             p.accepted, p.req.opts.correlation_id);
    st.queue.clear();
    st.queued.clear();
  }
  sync_lane(self);
  self->delayed_send(self, st.breaker.reset(), circuit_probe_atom::value);
}

caf::behavior pool_impl(pool_actor* self, pool_config cfg,
                        std::shared_ptr<const worker_env> env) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.env = std::move(env);
  st.stats.pool = st.cfg.name;
  st.default_affinity = parse_affinity(st.cfg.affinity, affinity_mode::hint);
  st.generation = ++st.env->pool_generations->at(st.cfg.name);
  st.worker_sup = st.env->names->get("worker_sup");
  if (!st.worker_sup) {
    self->quit(caf::make_error(errc::internal, "pool started without a worker_sup"));
    return {};
  }
  lane_context lctx;
  lctx.pool = st.cfg.name;
  lctx.telemetry = st.env->telemetry;
  lctx.log = st.env->log;
  lctx.processes = st.env->processes;
  lctx.capacity_events = st.cfg.capacity_strategy == "hybrid";
  lctx.max_message_bytes = st.cfg.max_message_bytes;
  lctx.touch_session = [names = st.env->names](const std::string& sid, const std::string& wid) {
    if (auto store = names->get("session_store"))
      caf::anon_send(store, session_touch_atom::value, sid, wid);
  };
  st.lane = std::make_shared<direct_lane>(
    std::move(lctx), [hdl = caf::actor_cast<caf::actor>(self)](const std::string& id) {
      caf::anon_send(hdl, lane_done_atom::value, id);
    });
  if (st.cfg.direct_dispatch)
    st.env->lanes->put(st.cfg.name, st.lane);
  st.start_attempts_left = st.cfg.pool_size;
  st.init_started = self->clock().now();
  st.breaker = circuit_breaker{st.cfg.circuit_threshold, st.cfg.circuit_reset};
  if (st.cfg.worker_ttl.count() > 0 || st.cfg.memory_threshold_mb > 0
      || st.cfg.worker_max_requests > 0)
    self->delayed_send(self, st.cfg.lifecycle_check_interval, lifecycle_tick_atom::value, true);
  emit(
    self, "snakepit.pool.init_started", [&] { return json{{"total_workers", st.cfg.pool_size}}; },
    [&] { return json{{"pool", st.cfg.name}}; });
  self->send(self, spawn_workers_atom::value);
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    auto i = st.worker_ids.find(msg.source);
    if (i == st.worker_ids.end()) {
      // A caller went away: drop its queued requests, they must never execute.
      st.monitored_callers.erase(msg.source);
      for (auto q = st.queue.begin(); q != st.queue.end();) {
        if (q->caller == msg.source) {
          st.queued.erase(q->id);
          q = st.queue.erase(q);
        } else {
          ++q;
        }
      }
      sync_lane(self);
      return;
    }
    auto id = std::move(i->second);
    st.worker_ids.erase(i);
    auto now = self->clock().now();
    // Retired on purpose (recycled) or gone on its own (crashed)?
    bool retired = st.members.count(id) == 0;
    std::string cause;
    if (auto e = st.exits.find(id); e != st.exits.end()) {
      cause = classify_exit(e->second.first, e->second.second);
      st.exits.erase(e);
    }
    emit(
      self, "snakepit.worker.terminated",
      [&] {
        auto w = st.workers.find(id);
        return json{{"requests", w != st.workers.end() ? w->second.slot->requests.load() : 0}};
      },
      [&] {
        return json{{"pool", st.cfg.name}, {"worker_id", id},
                    {"reason", caf::to_string(msg.reason)}};
      });
    if (auto r = st.recycling.find(id); r != st.recycling.end()) {
      auto info = r->second;
      st.recycling.erase(r);
      st.replaced.erase(id);
      if (!retired)
        retire(self, id); // crashed while recycled: its replacement takes over
      ++st.recycles;
      log_line(self, adapters::log_level::info, "worker recycled",
               {{"worker_id", id}, {"reason", info.reason}});
      if (!st.draining)
        self->send(self, lifecycle_tick_atom::value, false); // next one, if any waits
      emit(
        self, "snakepit.worker.recycled",
        [&] {
          auto w = st.workers.find(id);
          json m{{"requests", w != st.workers.end() ? w->second.slot->requests.load() : 0},
                 {"uptime_ms", w != st.workers.end()
                                 ? std::chrono::duration_cast<std::chrono::milliseconds>(
                                     now - w->second.ready_at)
                                     .count()
                                 : 0}};
          if (info.rss_bytes > 0)
            m["memory_mb"] = static_cast<double>(info.rss_bytes) / (1 << 20);
          return m;
        },
        [&] {
          return json{{"pool", st.cfg.name}, {"worker_id", id}, {"reason", info.reason}};
        });
    }
    if (auto w = st.workers.find(id); w != st.workers.end())
      w->second.slot->offered.store(false); // its blocking callers get the crash
    st.workers.erase(id);
    st.order.erase(std::remove(st.order.begin(), st.order.end(), id), st.order.end());
    st.slots_dirty = true;
    if (!retired || !cause.empty())
      ++st.stats.worker_crashes;
    if (!cause.empty()) {
      emit(
        self, "snakepit.worker.crash", [] { return json::object(); },
        [&] { return json{{"pool", st.cfg.name}, {"worker_id", id}, {"cause", cause}}; });
      auto& taint_on = st.cfg.taint_on;
      if (st.cfg.taint_duration.count() > 0 && !retired
          && std::find(taint_on.begin(), taint_on.end(), cause) != taint_on.end()) {
        // Crash barrier: its restarted process gets no new work for a while.
        st.taints[id] = now + st.cfg.taint_duration;
        log_line(self, adapters::log_level::warn, "worker tainted after a crash",
                 {{"worker_id", id}, {"cause", cause},
                  {"duration_ms", st.cfg.taint_duration.count()}});
        emit(
          self, "snakepit.worker.tainted",
          [&] { return json{{"duration_ms", st.cfg.taint_duration.count()}}; },
          [&] { return json{{"pool", st.cfg.name}, {"worker_id", id}, {"cause", cause}}; });
      }
    }
    // strict_queue requests waiting for the dead worker can never run.
    for (auto q = st.queue.begin(); q != st.queue.end();) {
      if (q->pinned_worker == id) {
        finish(self, q->out,
               caf::make_error(errc::session_worker_unavailable,
                               fmt::format("session {}: worker {} died",
                                           q->req.opts.session_id, id)),
               q->accepted, q->req.opts.correlation_id);
        st.queued.erase(q->id);
        q = st.queue.erase(q);
      } else {
        ++q;
      }
    }
    // Requests running on the dead worker fail now, never hang — except
    // idempotent ones with time left, which go first in line for another worker.
    bool retried = false;
    for (auto f = st.inflight.begin(); f != st.inflight.end();) {
      if (f->second.worker_id != id) {
        ++f;
        continue;
      }
      if (retry_elsewhere(self, f->second, id)) {
        retried = true;
      } else {
        finish(self, f->second.out,
               caf::make_error(errc::worker_crashed,
                               fmt::format("worker {}: {}", id, caf::to_string(msg.reason))),
               f->second.started, f->second.correlation_id);
      }
      f = st.inflight.erase(f);
    }
    if (retried || !st.queue.empty()) {
      // (Also: tainted workers may be all that is left to serve the queue.)
      auto ids = st.order;
      for (auto& wid : ids)
        checkin(self, wid);
    }
    sync_lane(self);
  });
  self->set_exit_handler([self](caf::exit_msg& msg) {
    self->state.lane->set_open(false);
    fail_everything(self, caf::make_error(errc::shutting_down, self->state.cfg.name));
    self->quit(msg.reason);
  });
  return {
    [self](refresh_tools_atom) { refresh_tools(self); },
    [self](spawn_workers_atom) {
      // A restarted pool first retires the workers of its predecessor, which
      // would otherwise keep running unseen (upstream leaked them).
      auto& st = self->state;
      auto prefix = st.cfg.name + "_worker_";
      self->request(st.worker_sup, std::chrono::seconds{10},
                    supervision::which_children_atom::value)
        .then(
          [self, prefix](std::vector<supervision::child_info>& kids) {
            for (auto& kid : kids)
              if (kid.id.rfind(prefix, 0) == 0 && kid.pid)
                self->send(self->state.worker_sup, supervision::terminate_child_atom::value,
                           kid.pid);
            start_more_workers(self);
          },
          [self](caf::error&) { start_more_workers(self); });
    },
    [self](worker_ready_atom, std::string& id, caf::actor& hdl, int pid,
           adapters::bridge_client& client) {
      auto& st = self->state;
      if (st.draining || st.members.count(id) == 0)
        return; // (retired while it started: its stop is on the way)
      self->monitor(hdl);
      st.worker_ids[hdl.address()] = id;
      if (st.workers.count(id) == 0)
        st.order.push_back(id);
      auto now = self->clock().now();
      if (auto old = st.workers.find(id); old != st.workers.end())
        old->second.slot->offered.store(false); // (its down is still on the way)
      auto limit =
        jittered_limit(st.cfg.worker_max_requests, st.cfg.max_requests_jitter, st.uniform());
      auto slot = std::make_shared<lane_slot>(id, pid, std::move(client),
                                              static_cast<uint32_t>(st.cfg.capacity()));
      slot->request_limit = limit;
      auto& w = st.workers[id] =
        worker_entry{hdl, pid, std::move(slot), st.cfg.capacity(), now, limit};
      st.slots_dirty = true;
      if (auto t = st.taints.find(id); t != st.taints.end()) {
        if (t->second > now) {
          w.tainted_until = t->second;
          self->delayed_send(self, t->second - now, taint_expired_atom::value, id);
        } else {
          st.taints.erase(t);
        }
      }
      bool restarted = !st.ever_ready.insert(id).second;
      if (restarted)
        ++st.stats.restarts;
      if (st.tools.empty()) {
        // Workers register their tools with the host as they start; look now and
        // once more shortly after, when the registration has surely arrived.
        refresh_tools(self);
        self->delayed_send(self, std::chrono::milliseconds{500}, refresh_tools_atom::value);
      }
      emit(
        self, restarted ? "snakepit.worker.restarted" : "snakepit.worker.ready",
        [&] { return json{{"workers", st.workers.size()}}; },
        [&] { return json{{"pool", st.cfg.name}, {"worker_id", id}, {"pid", pid}}; });
      checkin(self, id);
      if (st.breaker.on_success()) {
        log_line(self, adapters::log_level::warn, "circuit closed: workers start again",
                 {{"worker_id", id}});
        emit(
          self, "snakepit.circuit_breaker.closed", [] { return json::object(); },
          [&] { return json{{"pool", st.cfg.name}, {"worker_id", id}}; });
        for (auto n = worker_deficit(self); n > 0; --n)
          start_worker(self);
      }
      if (auto r = st.replacing.find(id); r != st.replacing.end()) {
        // A recycle's replacement is ready: the old worker takes no new work now
        // and stops once its calls finished.
        auto old = r->second;
        st.replacing.erase(r);
        if (st.recycling.count(old) > 0 && st.workers.count(old) > 0) {
          st.replaced.insert(old);
          st.order.erase(std::remove(st.order.begin(), st.order.end(), old), st.order.end());
          st.slots_dirty = true;
          sync_lane(self); // withdrawn before its load is read
          maybe_retire(self, old);
        }
      }
      sync_lane(self); // before anyone hears the pool is ready
      if (st.startup_done)
        answer_ready_waiters(self);
      else
        maybe_finish_startup(self);
    },
    [self](worker_exit_atom, std::string& id, int code, int sig) {
      self->state.exits[id] = {code, sig};
    },
    [self](worker_start_failed_atom, std::string& id, caf::error& err) {
      auto& st = self->state;
      if (st.draining || !st.breaker.enabled())
        return;
      if (st.breaker.on_failure(self->clock().now()))
        open_circuit(self, id, err);
      else if (st.breaker.current() != circuit_breaker::state::closed && st.workers.count(id) == 0)
        retire(self, id);
    },
    [self](circuit_probe_atom) {
      auto& st = self->state;
      if (st.draining || st.breaker.current() != circuit_breaker::state::open)
        return;
      auto now = self->clock().now();
      if (!st.breaker.try_half_open(now)) {
        // Failures after the opening pushed the reset out: look again then.
        self->delayed_send(self, st.breaker.opened_at() + st.breaker.reset() - now,
                           circuit_probe_atom::value);
        return;
      }
      log_line(self, adapters::log_level::info, "circuit half-open: starting a probe worker",
               json::object());
      emit(
        self, "snakepit.circuit_breaker.half_open", [] { return json::object(); },
        [&] { return json{{"pool", st.cfg.name}}; });
      if (worker_deficit(self) == 0) {
        if (st.breaker.on_success())
          emit(
            self, "snakepit.circuit_breaker.closed", [] { return json::object(); },
            [&] { return json{{"pool", st.cfg.name}}; });
        return;
      }
      start_worker(self); // the probe: its start closes or re-opens the circuit
    },
    [self](lifecycle_tick_atom, bool periodic) {
      auto& st = self->state;
      if (st.draining)
        return;
      lifecycle_check(self);
      if (periodic)
        self->delayed_send(self, st.cfg.lifecycle_check_interval, lifecycle_tick_atom::value,
                           true);
    },
    [self](recycle_atom, std::string& id) -> caf::result<caf::ok_atom> {
      auto& st = self->state;
      if (st.workers.count(id) == 0)
        return caf::make_error(errc::invalid_argument,
                               fmt::format("pool {} has no ready worker '{}'", st.cfg.name, id));
      begin_recycle(self, id, "manual");
      return caf::ok_atom::value;
    },
    [self](taint_expired_atom, std::string& id) {
      auto& st = self->state;
      auto t = st.taints.find(id);
      if (t != st.taints.end() && t->second <= self->clock().now())
        st.taints.erase(t);
      checkin(self, id);
      sync_lane(self);
    },
    [self](retry_atom, uint64_t rid) {
      auto& st = self->state;
      auto i = st.parked.find(rid);
      if (i == st.parked.end())
        return;
      auto p = std::move(i->second);
      st.parked.erase(i);
      if (caller_gone(p))
        return;
      auto now = self->clock().now();
      st.queue.push_front(std::move(p));
      st.queued.emplace(rid, st.queue.begin());
      self->delayed_send(self, std::chrono::duration_cast<caf::timespan>(
                                 st.queue.front().deadline - now),
                         queue_timeout_atom::value, rid);
      sync_lane(self); // closed while it waits in line
      auto ids = st.order;
      for (auto& wid : ids)
        checkin(self, wid);
      sync_lane(self);
    },
    [self](execute_atom, execute_request& req) -> caf::result<execute_reply> {
      auto rp = self->make_response_promise<execute_reply>();
      auto caller = caf::actor_cast<caf::actor_addr>(self->current_sender());
      accept(self, std::move(req), caf::response_promise{rp}, std::move(caller));
      return rp;
    },
    [self](execute_cb_atom, execute_request& req, callback_sink& cb) {
      auto slot = std::make_shared<reply_slot>();
      slot->fn = std::move(cb.fn);
      slot->abandoned = std::move(cb.abandoned);
      accept(self, std::move(req), std::move(slot), caf::actor_addr{});
    },
    [self](stream_atom, execute_request& req, stream_sink_ptr& sink) {
      accept(self, std::move(req), std::move(sink), caf::actor_addr{});
    },
    [self](stream_atom, execute_request& req) {
      // Actor API: chunks and the end go to the sender as messages.
      auto sender = caf::actor_cast<caf::actor>(self->current_sender());
      if (!sender)
        return;
      auto caller = sender.address();
      accept(self, std::move(req), std::make_shared<actor_stream_sink>(std::move(sender)),
             std::move(caller));
    },
    [self](stream_atom, execute_request& req, uint32_t window) {
      // Actor API with flow control: chunks carry the stream's id; the sender
      // acknowledges them with stream_ack_atom.
      auto sender = caf::actor_cast<caf::actor>(self->current_sender());
      if (!sender)
        return;
      auto& st = self->state;
      for (auto i = st.windowed.begin(); i != st.windowed.end();)
        i = i->second.expired() ? st.windowed.erase(i) : std::next(i);
      auto id = st.next_stream_id++;
      auto sink =
        std::make_shared<windowed_actor_stream_sink>(sender, id, std::max<uint32_t>(window, 1));
      st.windowed.emplace(id, sink);
      // The deadline holds even while the host sends no acks (a paused RPC would
      // otherwise wait for it forever).
      auto budget = req.opts.timeout.count() > 0 ? req.opts.timeout : st.cfg.request_timeout;
      self->delayed_send(self, budget, stream_halt_atom::value, id, true);
      auto caller = sender.address();
      accept(self, std::move(req), std::move(sink), std::move(caller));
    },
    [self](stream_ack_atom, uint64_t id, uint32_t n) {
      auto& st = self->state;
      if (auto i = st.windowed.find(id); i != st.windowed.end()) {
        if (auto sink = i->second.lock())
          sink->ack(n);
        else
          st.windowed.erase(i);
      }
    },
    [self](stream_halt_atom, uint64_t id) {
      auto& st = self->state;
      if (auto i = st.windowed.find(id); i != st.windowed.end())
        if (auto sink = i->second.lock())
          sink->halt(false);
    },
    [self](stream_halt_atom, uint64_t id, bool expired) {
      auto& st = self->state;
      if (auto i = st.windowed.find(id); i != st.windowed.end()) {
        if (auto sink = i->second.lock(); sink && !sink->ended())
          sink->halt(expired);
        st.windowed.erase(i);
      }
    },
    [self](result_atom, std::string& worker_id, uint64_t req_id, execute_result& res) {
      auto& st = self->state;
      auto f = st.inflight.find(req_id);
      if (f == st.inflight.end())
        return; // failed already when its worker died; a restarted worker with
                // the same id must not have its load decremented for it
      if (!res && res.error() == errc::worker_crashed
          && retry_elsewhere(self, f->second, worker_id)) {
        // The worker saw its process die before the pool saw the worker go.
        st.inflight.erase(f);
        if (auto w = st.workers.find(worker_id); w != st.workers.end() && load_of(w->second) > 0)
          w->second.slot->release();
        maybe_retire(self, worker_id);
        auto ids = st.order;
        for (auto& wid : ids)
          if (wid != worker_id)
            checkin(self, wid);
        sync_lane(self);
        return;
      }
      auto started = f->second.started;
      auto out = std::move(f->second.out);
      auto cid = std::move(f->second.correlation_id);
      st.inflight.erase(f);
      // (The gRPC thread may have given the capacity back already, see reply_slot.)
      auto* rs = std::get_if<reply_slot_ptr>(&out);
      bool released = rs != nullptr && (*rs)->lane_released.load();
      finish(self, out, std::move(res), started, cid);
      if (auto w = st.workers.find(worker_id);
          !released && w != st.workers.end() && load_of(w->second) > 0)
        w->second.slot->release();
      checkin(self, worker_id);
      maybe_retire(self, worker_id);
      sync_lane(self);
    },
    [self](lane_done_atom, std::string& worker_id) {
      // A blocking caller freed this worker's slot while the pool must know.
      auto& st = self->state;
      auto w = st.workers.find(worker_id);
      if (w == st.workers.end())
        return;
      if (w->second.request_limit > 0
          && w->second.slot->requests.load() >= w->second.request_limit)
        begin_recycle(self, worker_id, "max_requests");
      checkin(self, worker_id);
      maybe_retire(self, worker_id);
      sync_lane(self);
    },
    [self](queue_timeout_atom, uint64_t req_id) {
      auto& st = self->state;
      auto q = st.queued.find(req_id);
      if (q == st.queued.end())
        return; // already dispatched or answered: a late timer is ignored
      auto p = std::move(*q->second);
      st.queue.erase(q->second);
      st.queued.erase(q);
      if (caller_gone(p))
        return;
      ++st.stats.queue_timeouts;
      // The call's own deadline may be shorter than the queue timeout: then it is
      // the deadline that passed, and the caller gets `timeout`.
      auto deadline_passed = p.deadline <= self->clock().now();
      if (auto& log = st.env->log; log->enabled(adapters::log_level::warn))
        log->warn(deadline_passed ? "request deadline passed in the queue"
                                  : "queue timeout: no worker became free",
                  {{"pool", st.cfg.name}, {"command", p.req.command},
                   {"correlation_id", p.req.opts.correlation_id}});
      emit(
        self, "snakepit.queue.timeout", [] { return json::object(); },
        [&] {
          return json{{"pool", st.cfg.name},
                      {"correlation_id", p.req.opts.correlation_id},
                      {"deadline_passed", deadline_passed}};
        });
      finish(self, p.out,
             deadline_passed
               ? caf::make_error(errc::timeout,
                                 fmt::format("{}: deadline passed in the queue",
                                             p.req.opts.correlation_id))
               : caf::make_error(errc::queue_timeout,
                                 fmt::format("pool {}: no worker within the queue timeout "
                                             "({})",
                                             st.cfg.name, p.req.opts.correlation_id)),
             p.accepted, p.req.opts.correlation_id);
      sync_lane(self);
    },
    [self](await_ready_atom) -> caf::result<caf::ok_atom> {
      auto& st = self->state;
      auto rp = self->make_response_promise<caf::ok_atom>();
      st.ready_waiters.emplace_back(rp);
      answer_ready_waiters(self);
      return rp;
    },
    [self](get_stats_atom) {
      auto& st = self->state;
      auto s = st.stats;
      s.workers = st.workers.size();
      s.busy = 0;
      s.available = 0;
      for (auto& [id, w] : st.workers) {
        auto load = load_of(w);
        if (load > 0)
          ++s.busy;
        if (load < w.capacity)
          ++s.available;
        s.in_flight += load;
        s.capacity += w.capacity;
      }
      s.queue_depth = st.queue.size();
      s.recycles = st.recycles;
      s.starting = st.starting + st.start_attempts_left;
      s.latency = st.latencies;
      // Calls blocking callers ran on the direct lane count like any other.
      auto lane = st.lane->counters();
      s.requests += lane.requests;
      s.direct = lane.requests;
      s.completed += lane.completed;
      s.errors += lane.errors;
      s.latency.merge(lane.latency);
      derive_stats(s);
      return s;
    },
    [self](list_workers_atom) {
      auto& st = self->state;
      std::vector<worker_info> out;
      auto now = self->clock().now();
      for (auto& [id, w] : st.workers)
        out.push_back(worker_info{
          id, w.pid,
          st.replaced.count(id) > 0 ? "recycling"
          : tainted(w, now)         ? "tainted"
          : load_of(w) >= w.capacity ? "busy"
                                     : "available",
          w.slot->requests.load(),
          std::chrono::duration_cast<std::chrono::milliseconds>(now - w.ready_at), load_of(w),
          w.capacity});
      std::sort(out.begin(), out.end(),
                [](const worker_info& a, const worker_info& b) { return a.id < b.id; });
      return out;
    },
    [self](session_forget_atom, std::string& session_id) {
      // The store dropped the session: its binding goes too (a later call with the
      // same id is a new session), which also keeps the affinity cache bounded.
      self->state.sessions.erase(session_id);
      self->state.lane->forget_session(session_id);
    },
    [self](python_telemetry_atom msg) {
      for (auto& kv : self->state.workers)
        self->send(kv.second.handle, msg);
    },
    [self](drain_atom) {
      auto& st = self->state;
      st.draining = true;
      for (auto& p : st.queue)
        finish(self, p.out, caf::make_error(errc::shutting_down, st.cfg.name), p.accepted, p.req.opts.correlation_id);
      st.queue.clear();
      st.queued.clear();
      for (auto& [id, p] : st.parked)
        finish(self, p.out, caf::make_error(errc::shutting_down, st.cfg.name), p.accepted, p.req.opts.correlation_id);
      st.parked.clear();
      sync_lane(self);
      return caf::ok_atom::value;
    },
  };
}

} // namespace

supervision::child_spec pool_spec(pool_config cfg, std::shared_ptr<const worker_env> env) {
  supervision::child_spec spec;
  // The name is taken at spawn time, before the pool's init runs, so a caller that
  // saw the start acknowledged always finds the pool.
  spec.id = "pool:" + cfg.name;
  spec.restart = supervision::restart_type::permanent;
  spec.type = supervision::child_type::worker;
  spec.shutdown = supervision::shutdown_spec::after(std::chrono::seconds{5});
  spec.start = [cfg, env](caf::local_actor* parent, supervision::start_ack ack,
                          const caf::message&) -> caf::actor {
    auto hdl = parent->spawn(pool_impl, cfg, env);
    env->names->put("pool:" + cfg.name, hdl);
    ack.ok(hdl);
    return hdl;
  };
  return spec;
}

} // namespace snakepit::actors
