#include "actors/pool/detail/pool_core.hpp"

#include "actors/pool/adapter.hpp"
#include "actors/pool/input_checks.hpp"

#include <algorithm>
#include <tuple>
#include <utility>

#include <fmt/format.h>

#include "actors/observability/metrics.hpp"
#include "adapters/errors.hpp"

namespace snakepit::actors::detail {

namespace {

bool valid_session_id(const std::string& id) {
  if (id.empty() || id.size() > 128)
    return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

/// Rejects a request whose payload cannot be sent, before it takes a worker.
caf::error check_payload(const pool_config& cfg, const execute_request& req) {
  size_t size = 0;
  for (auto& [name, blob] : req.opts.binary_args)
    size += name.size() + blob.size();
  if (size > cfg.max_message_bytes)
    return caf::make_error(
      errc::payload_too_large,
      fmt::format("{} bytes of binary parameters exceed the limit of {}", size,
                  cfg.max_message_bytes));
  if (!req.args.empty() && !(req.args.is_object() && req.args.size() <= 8 && size == 0 &&
                             cfg.max_message_bytes >= (1u << 20))) {
    // Measuring means serialising: done for large or unusual arguments only.
    size += req.args.dump().size();
    if (size > cfg.max_message_bytes)
      return caf::make_error(errc::payload_too_large,
                             fmt::format("request of {} bytes exceeds the limit of {}",
                                         size, cfg.max_message_bytes));
  }
  return caf::none;
}

/// "start_failed: pool p: worker p_worker_1: ...": one line, the code said once.
caf::error pool_start_error(const std::string& pool, const caf::error& err) {
  auto text = describe(err); // (unwraps the supervisors' failed_to_start_child)
  if (constexpr std::string_view code = "start_failed: "; text.rfind(code, 0) == 0)
    text.erase(0, code.size());
  return caf::make_error(errc::start_failed, fmt::format("pool {}: {}", pool, text));
}

caf::timespan until(pool_time deadline, pool_time now) {
  return std::chrono::duration_cast<caf::timespan>(deadline - now);
}

} // namespace

affinity_mode parse_affinity(const std::string& name, affinity_mode fallback) {
  return parse_affinity_mode(name).value_or(fallback);
}

pool_core::pool_core(pool_config cfg, std::shared_ptr<direct_lane> lane,
                     pool_events events, pool_callee& callee, uint64_t generation)
  : cfg_(std::move(cfg)), lane_(std::move(lane)), events_(std::move(events)),
    callee_(callee), default_affinity_(cfg_.affinity), generation_(generation),
    breaker_(cfg_.circuit.threshold, cfg_.circuit.reset),
    call_breaker_(cfg_.circuit.call_failures, cfg_.circuit.reset) {
  stats_.pool = cfg_.name;
  if (cfg_.circuit.call_failures > 0)
    lane_->set_failure_threshold(static_cast<uint32_t>(cfg_.circuit.call_failures));
  start_attempts_left_ = cfg_.pool_size;
  init_started_ = callee_.now();
  if (cfg_.recycling.ttl.count() > 0 || cfg_.recycling.max_memory_mb > 0 ||
      cfg_.recycling.max_requests > 0)
    callee_.schedule(cfg_.recycling.check_interval,
                     {pool_timer::kind::lifecycle_tick, 0, {}});
  events_.init_started(cfg_.pool_size);
}

pool_core::~pool_core() {
  // Blocking callers stop finding this pool's workers; their calls in progress
  // finish on their own.
  lane_->retire();
}

// =================================================================================
// Admission. A request is refused, dispatched at once, or queued.
// =================================================================================

void pool_core::accept(execute_request req, reply_sink out, caf::actor_addr caller) {
  if (req.opts.correlation_id.empty())
    req.opts.correlation_id = make_correlation_id(cfg_.name, next_id_);
  auto err = check_input(cfg_.input, req); // before any hook sees it
  if (!err)
    err = admit(req, is_stream(out));
  if (!err)
    err = refuse_early(req);
  if (!err)
    err = refuse_by_call_circuit();
  if (!err && call_breaker_.current() == circuit_breaker::state::half_open)
    trial_ = req.opts.correlation_id; // the one call let through
  if (err) {
    deliver(out, with_correlation_id(std::move(err), req.opts.correlation_id));
    return;
  }
  auto now = callee_.now();
  auto budget = req.opts.timeout.count() > 0 ? req.opts.timeout : cfg_.request_timeout;
  pending_request p{next_id_++, std::move(req),    std::move(out), now + budget,
                    now,        std::move(caller), std::string{},  0};
  if (!p.req.opts.session_id.empty() && !valid_session_id(p.req.opts.session_id)) {
    finish(p.out,
           caf::make_error(errc::invalid_session_id,
                           "session ids are 1-128 characters of [A-Za-z0-9_-]"),
           p.accepted, p.ident());
    return;
  }
  ++stats_.requests;
  if (route_session(p))
    return;
  if (p.pinned_worker.empty())
    if (auto w = checkout(); !w.empty())
      return dispatch(w, std::move(p));
  enqueue(std::move(p));
}

/// The host adapter's say (adapter.hpp): it may refuse the call, rewrite its
/// arguments and give it a budget of its own.
caf::error pool_core::admit(execute_request& req, bool stream) const {
  auto* a = cfg_.host_adapter.get();
  if (a == nullptr)
    return caf::none;
  if (stream && a->supports_streaming() == false)
    return caf::make_error(
      errc::invalid_argument,
      fmt::format("pool {}: its adapter supports no streaming", cfg_.name));
  if (auto err = a->validate_command(req.command, req.args))
    return err;
  req.args = a->prepare_args(req.command, std::move(req.args));
  if (req.opts.timeout.count() <= 0)
    req.opts.timeout = a->command_timeout(req.command, req.args);
  return caf::none;
}

/// Why a request cannot even wait for a worker (none when it may).
caf::error pool_core::refuse_early(const execute_request& req) const {
  if (draining_)
    return caf::make_error(errc::shutting_down, cfg_.name);
  if (startup_done_ && table_.live_count() == 0 && first_start_error_)
    return first_start_error_; // no worker ever started: fail fast, do not queue
  if (table_.live_count() == 0 && breaker_.current() != circuit_breaker::state::closed)
    return caf::make_error(
      errc::circuit_open,
      fmt::format("pool {}: circuit open after {} failed worker starts", cfg_.name,
                  breaker_.failures()));
  if (auto err = check_payload(cfg_, req))
    return err;
  // Known before dispatch once the workers registered their tools. (Session calls
  // may use tools an adapter registers per session, so they go through.)
  if (!tools_.empty() && !open_dispatch_ && req.opts.session_id.empty() &&
      tools_.count(req.command) == 0)
    return caf::make_error(
      errc::unknown_tool,
      fmt::format("pool {} has no tool '{}'", cfg_.name, printable_name(req.command)));
  return caf::none;
}

/// Session affinity: true when the request was dispatched or answered here; else
/// it may go on (pinned to its worker under strict_queue).
bool pool_core::route_session(pending_request& p) {
  auto& sid = p.req.opts.session_id;
  if (sid.empty())
    return false;
  auto b = sessions_.find(sid);
  if (b == sessions_.end())
    return false;
  auto mode = parse_affinity(p.req.opts.affinity, default_affinity_);
  auto* rec = table_.find(b->second.worker_id);
  auto* w = rec != nullptr && rec->live ? &*rec->live : nullptr;
  bool live = w != nullptr && w->serial == b->second.serial;
  if (live && mode == affinity_mode::hint && rec->retiring())
    return false; // its worker is on the way out: the session moves
  if (live && w->slot->try_claim()) {
    dispatch(b->second.worker_id, std::move(p));
    return true;
  }
  if (mode == affinity_mode::hint)
    return false;
  if (!live) {
    finish(p.out,
           caf::make_error(
             errc::session_worker_unavailable,
             fmt::format("session {}: worker {} is gone", sid, b->second.worker_id)),
           p.accepted, p.ident());
    return true;
  }
  if (mode == affinity_mode::strict_fail_fast) {
    finish(p.out,
           caf::make_error(errc::worker_busy, fmt::format("session {}: worker {} is busy",
                                                          sid, b->second.worker_id)),
           p.accepted, p.ident());
    return true;
  }
  p.pinned_worker = b->second.worker_id; // strict_queue: wait for that worker
  return false;
}

void pool_core::enqueue(pending_request p) {
  if (queue_.size() >= cfg_.queue.max_size) {
    ++stats_.saturations;
    --stats_.requests;
    events_.saturated(p, queue_.size(), cfg_.queue.max_size);
    finish(
      p.out,
      caf::make_error(errc::pool_saturated, fmt::format("pool {}: {} requests queued",
                                                        cfg_.name, queue_.size())),
      p.accepted, p.ident());
    return;
  }
  ++stats_.queued;
  events_.enqueued(p, queue_.size() + 1);
  auto wait = std::min<caf::timespan>(cfg_.queue.timeout, until(p.deadline, p.accepted));
  if (p.caller && monitored_callers_.insert(p.caller).second)
    callee_.monitor_caller(p.caller);
  pool_timer t{pool_timer::kind::queue_timeout, p.id, {}};
  queue_.push_back(std::move(p));
  callee_.schedule(wait, std::move(t));
}

void pool_core::await_ready(std::function<void(caf::error)> fn) {
  ready_waiters_.push_back(std::move(fn));
  answer_ready_waiters();
}

void pool_core::on_caller_down(const caf::actor_addr& caller) {
  // Its queued requests must never execute.
  monitored_callers_.erase(caller);
  queue_.take_if([&](const pending_request& p) { return p.caller == caller; },
                 [](pending_request&) {});
}

// =================================================================================
// Dispatch and checkin. Capacity is claimed in the checkout table, shared with
// blocking callers on the direct lane.
// =================================================================================

/// Claims the least-loaded ready worker with headroom; among equals the one used
/// most recently (a warm process: its pages, caches and scheduler slot are hot).
/// Empty when every worker is at capacity.
std::string pool_core::checkout() {
  auto now = callee_.now();
  bool skip_tainted = table_.any_taint(now) && table_.untainted_ready(now);
  // A blocking caller may claim the chosen worker first (direct lane): look again.
  for (int attempt = 0; attempt < 4; ++attempt) {
    const std::string* best = nullptr;
    const worker_incarnation* best_w = nullptr;
    uint32_t best_load = 0;
    uint64_t best_used = 0;
    for (auto& id : table_.ready_order()) {
      auto& rec = table_.records().at(id);
      auto& w = *rec.live;
      auto load = w.load();
      if (load >= w.capacity || (skip_tainted && rec.tainted(now)))
        continue;
      auto used = w.slot->last_used.load();
      if (best == nullptr || load < best_load ||
          (load == best_load && used > best_used)) {
        best = &id;
        best_w = &w;
        best_load = load;
        best_used = used;
      }
    }
    if (best == nullptr)
      return {};
    if (best_w->slot->try_claim())
      return *best;
  }
  return {};
}

/// Runs `p` on `worker_id`, whose slot the caller claimed for it.
void pool_core::dispatch(const std::string& worker_id, pending_request p) {
  auto& w = *table_.live(worker_id);
  auto now = callee_.now();
  events_.request_start(p, worker_id, now);
  if (auto& sid = p.req.opts.session_id; !sid.empty()) {
    bind_session(sid, worker_id, w);
    callee_.touch_session(sid, worker_id);
  }
  w.slot->requests.fetch_add(1);
  w.slot->last_used.store(lane_->next_use());
  check_request_limit(worker_id, w);
  if (w.load() >= w.capacity &&
      cfg_.capacity_strategy == snakepit::capacity_strategy::hybrid)
    events_.capacity_reached(worker_id, w.capacity, w.load());
  // The remaining budget travels as the gRPC deadline; the worker shows it to
  // tools as metadata `timeout_ms`, upstream's key.
  auto budget = until(p.deadline, now);
  if (auto* ss = std::get_if<stream_sink_ptr>(&p.out)) {
    auto sink = *ss;
    events_.stream_start(p, worker_id);
    inflight_.emplace(
      p.id, inflight_request{worker_id,
                             w.serial,
                             std::move(p.out),
                             p.accepted,
                             {},
                             {p.req.command, worker_id, p.req.opts.correlation_id}});
    callee_.run_stream(w, worker_id, p.id, std::move(p.req), budget, std::move(sink));
    return;
  }
  reply_slot_ptr slot;
  if (auto* sp = std::get_if<reply_slot_ptr>(&p.out)) {
    slot = *sp;
    slot->lane = w.slot;
  }
  std::shared_ptr<pending_request> retry;
  if (p.req.opts.idempotent && p.attempt < cfg_.retry.max_attempts)
    retry = std::make_shared<pending_request>(
      pending_request{p.id, p.req, reply_sink{}, p.deadline, p.accepted, p.caller,
                      std::string{}, p.attempt + 1});
  auto id = p.id;
  inflight_.emplace(
    id, inflight_request{worker_id,
                         w.serial,
                         std::move(p.out),
                         p.accepted,
                         std::move(retry),
                         {p.req.command, worker_id, p.req.opts.correlation_id}});
  callee_.run(w, worker_id, id, std::move(p.req), budget, std::move(slot));
}

void pool_core::bind_session(const std::string& session_id, const std::string& worker_id,
                             const worker_incarnation& w) {
  auto& b = sessions_[session_id];
  if (b.worker_id != worker_id || b.serial != w.serial) {
    b.worker_id = worker_id;
    b.serial = w.serial;
    lane_->bind_session(session_id, w.slot);
  }
}

/// Whether a worker may take requests that are not pinned to it: not once it is
/// replaced, nor while tainted if an untainted worker is ready.
bool pool_core::offers_new_work(const worker_record& rec, pool_time now) const {
  if (rec.retiring())
    return false;
  return !rec.tainted(now) || !table_.untainted_ready(now);
}

/// A worker has room again: give it the oldest runnable queued requests that fit.
void pool_core::checkin(const std::string& worker_id) {
  auto* rec = table_.find(worker_id);
  if (rec == nullptr || !rec->live)
    return;
  auto& w = *rec->live;
  auto now = callee_.now();
  bool takes_new = offers_new_work(*rec, now);
  for (auto q = queue_.begin(); q != queue_.end() && w.has_room();) {
    if (q->pinned_worker.empty() ? !takes_new : q->pinned_worker != worker_id) {
      ++q; // pinned elsewhere (strict_queue), or this worker takes only its own
      continue;
    }
    bool gone = abandoned(q->out);
    bool expired = q->deadline <= now;
    if (!gone && !expired && !w.slot->try_claim())
      break; // a blocking caller took the room meanwhile
    auto p = queue_.take(q);
    if (gone)
      continue; // the caller stopped waiting: never execute its request
    if (expired) {
      ++stats_.queue_timeouts; // its whole budget went by in the queue
      fail_request(
        p, caf::make_error(errc::timeout, fmt::format("{}: deadline passed in the queue",
                                                      p.correlation_id())));
      continue;
    }
    events_.dequeued(p, worker_id, now);
    dispatch(worker_id, std::move(p));
  }
}

void pool_core::checkin_all(const std::string& except) {
  auto ids = table_.ready_order();
  for (auto& id : ids)
    if (id != except)
      checkin(id);
}

/// Answers a request (stats, events), its error carrying the correlation id.
void pool_core::finish(reply_sink& out, execute_result res, pool_time accepted,
                       const request_ident& who) {
  if (!res)
    res = with_correlation_id(std::move(res.error()), who.correlation_id);
  auto us =
    std::chrono::duration_cast<std::chrono::microseconds>(callee_.now() - accepted);
  if (res) {
    ++stats_.completed;
    latencies_.record(us.count());
  } else {
    ++stats_.errors;
  }
  events_.request_stop(res, who, us, is_stream(out));
  bool trial = !trial_.empty() && who.correlation_id == trial_;
  bool trial_failed = trial && worker_failed(res);
  deliver(out, std::move(res));
  if (trial) {
    trial_.clear();
    if (trial_failed) {
      call_breaker_.on_failure(callee_.now()); // half-open: opens again
      events_.call_circuit_opened(lane_->failure_run(), call_breaker_.reset());
      callee_.schedule(call_breaker_.reset(),
                       {pool_timer::kind::call_circuit_probe, 0, {}});
    } else if (call_breaker_.on_success()) {
      lane_->note_outcome(false);
      events_.call_circuit_closed(true);
    }
  }
}

void pool_core::fail_request(pending_request& p, caf::error err) {
  finish(p.out, std::move(err), p.accepted, p.ident());
}

/// Gives a finished request's capacity back (unless the gRPC thread did).
void pool_core::release(const std::string& worker_id) {
  if (auto* w = table_.live(worker_id); w != nullptr && w->load() > 0)
    w->slot->release();
}

void pool_core::on_result(const std::string& worker_id, uint64_t req_id,
                          execute_result res) {
  auto f = inflight_.find(req_id);
  if (f == inflight_.end())
    return; // failed already when its worker died; a restarted worker with the
            // same id must not have its load decremented for it
  if (!res && res.error() == errc::worker_crashed &&
      retry_elsewhere(f->second, worker_id)) {
    // The worker saw its process die before the pool saw the worker go.
    inflight_.erase(f);
    release(worker_id);
    maybe_retire(worker_id);
    checkin_all(worker_id);
    return;
  }
  auto fin = std::move(f->second);
  inflight_.erase(f);
  note_call_outcome(res);
  // (The gRPC thread may have given the capacity back already, see reply_slot.)
  auto* rs = std::get_if<reply_slot_ptr>(&fin.out);
  bool released = rs != nullptr && (*rs)->lane_released.load();
  finish(fin.out, std::move(res), fin.started, fin.ident);
  if (!released)
    release(worker_id);
  checkin(worker_id);
  maybe_retire(worker_id);
}

void pool_core::on_lane_done(const std::string& worker_id) {
  check_failure_run();
  auto* w = table_.live(worker_id);
  if (w == nullptr)
    return;
  check_request_limit(worker_id, *w);
  checkin(worker_id);
  maybe_retire(worker_id);
}

void pool_core::check_request_limit(const std::string& id, const worker_incarnation& w) {
  if (w.request_limit > 0 && w.served() >= w.request_limit)
    begin_recycle(id, "max_requests");
}

// =================================================================================
// Timers.
// =================================================================================

void pool_core::on_timer(const pool_timer& t) {
  switch (t.what) {
  case pool_timer::kind::queue_timeout:
    return on_queue_timeout(t.request);
  case pool_timer::kind::retry:
    return on_retry(t.request);
  case pool_timer::kind::circuit_probe:
    return on_circuit_probe();
  case pool_timer::kind::call_circuit_probe:
    return on_call_circuit_probe();
  case pool_timer::kind::taint_expired:
    return on_taint_expired(t.worker);
  case pool_timer::kind::lifecycle_tick:
    if (draining_)
      return;
    lifecycle_check();
    callee_.schedule(cfg_.recycling.check_interval,
                     {pool_timer::kind::lifecycle_tick, 0, {}});
    return;
  case pool_timer::kind::lifecycle_check:
    if (!draining_)
      lifecycle_check();
    return;
  }
}

void pool_core::on_queue_timeout(uint64_t req_id) {
  auto p = queue_.take(req_id);
  if (!p || abandoned(p->out))
    return; // dispatched or answered already: a late timer is ignored
  ++stats_.queue_timeouts;
  // The call's own deadline may be shorter than the queue timeout: then it is the
  // deadline that passed, and the caller gets `timeout`.
  auto deadline_passed = p->deadline <= callee_.now();
  events_.queue_timeout(*p, deadline_passed);
  fail_request(
    *p, deadline_passed
          ? caf::make_error(errc::timeout, fmt::format("{}: deadline passed in the queue",
                                                       p->correlation_id()))
          : caf::make_error(errc::queue_timeout,
                            fmt::format("pool {}: no worker within the queue timeout "
                                        "({})",
                                        cfg_.name, p->correlation_id())));
}

void pool_core::on_retry(uint64_t req_id) {
  auto i = parked_.find(req_id);
  if (i == parked_.end())
    return;
  auto p = std::move(i->second);
  parked_.erase(i);
  if (abandoned(p.out))
    return;
  auto wait = until(p.deadline, callee_.now());
  queue_.push_front(std::move(p));
  callee_.schedule(wait, {pool_timer::kind::queue_timeout, req_id, {}});
  sync_lane(); // closed while it waits in line, before the loads are read
  checkin_all();
}

void pool_core::on_taint_expired(const std::string& id) {
  // (The taint itself is a time: it has expired by now unless a later crash
  // renewed it, whose own timer comes later.)
  checkin(id);
}

// =================================================================================
// Crashes. A worker went down: fail or retry what ran on it, taint it.
// =================================================================================

void pool_core::on_worker_exit(const std::string& id, int code, int signal) {
  if (auto* rec = table_.find(id))
    rec->exit = std::make_pair(code, signal);
}

void pool_core::on_worker_down(const std::string& id, uint64_t serial,
                               const caf::error& reason) {
  auto* rec = table_.find(id);
  if (rec == nullptr)
    return;
  auto now = callee_.now();
  bool current = rec->live && rec->live->serial == serial;
  bool retired = !rec->member; // retired on purpose (recycled) or gone on its own?
  events_.worker_terminated(id, current ? rec->live->served() : 0, reason);
  if (current) {
    if (rec->recycling)
      recycle_finished(*rec, retired, now);
    table_.drop_live(*rec);
  }
  note_crash(*rec, retired, now);
  bool leaving = rec->leaving && rec->member;
  if (!current && rec->live && rec->tainted(now)) // (a newer incarnation serves already)
    callee_.schedule(until(rec->tainted_until, now),
                     {pool_timer::kind::taint_expired, 0, id});
  fail_pinned_to(id);
  fail_inflight_of(id, serial, reason);
  if (!queue_.empty())
    checkin_all(); // (also: tainted workers may be all that is left to serve)
  if (leaving)
    retire(id); // resized away: its restart would only be stopped again
  else
    table_.forget_if_gone(id);
}

/// Counts the crash, classifies it and taints the worker when its cause says so.
void pool_core::note_crash(worker_record& rec, bool retired, pool_time now) {
  std::string cause;
  if (rec.exit) {
    cause = classify_exit(rec.exit->first, rec.exit->second);
    rec.exit.reset();
  }
  if (!retired || !cause.empty())
    ++stats_.worker_crashes;
  if (cause.empty())
    return;
  events_.worker_crash(rec.id, cause);
  auto& on = cfg_.taint.causes;
  if (cfg_.taint.duration.count() > 0 && !retired &&
      std::find(on.begin(), on.end(), cause) != on.end()) {
    // Crash barrier: its restarted process gets no new work for a while.
    rec.tainted_until = now + cfg_.taint.duration;
    events_.worker_tainted(rec.id, cause, cfg_.taint.duration);
  }
}

/// strict_queue requests waiting for a dead worker can never run.
void pool_core::fail_pinned_to(const std::string& id) {
  queue_.take_if([&](const pending_request& p) { return p.pinned_worker == id; },
                 [&](pending_request& p) {
                   fail_request(p,
                                caf::make_error(errc::session_worker_unavailable,
                                                fmt::format("session {}: worker {} died",
                                                            p.req.opts.session_id, id)));
                 });
}

/// Requests running on the dead incarnation fail now, never hang — except
/// idempotent ones with time left, which go first in line for another worker.
void pool_core::fail_inflight_of(const std::string& id, uint64_t serial,
                                 const caf::error& reason) {
  for (auto f = inflight_.begin(); f != inflight_.end();) {
    if (f->second.worker_id != id || f->second.serial != serial) {
      ++f;
      continue;
    }
    if (!retry_elsewhere(f->second, id)) {
      execute_result res = caf::make_error(
        errc::worker_crashed, fmt::format("worker {}: {}", id, caf::to_string(reason)));
      note_call_outcome(res);
      finish(f->second.out, std::move(res), f->second.started, f->second.ident);
    }
    f = inflight_.erase(f);
  }
}

/// Parks an idempotent call whose worker crashed for its backoff, after which it
/// goes first in line for another worker; false if it cannot be retried (no
/// attempts left, a session call — its worker's state went with it — or no time
/// left for the backoff within its deadline).
bool pool_core::retry_elsewhere(inflight_request& f, const std::string& dead_worker) {
  if (!f.retry || !f.retry->req.opts.session_id.empty())
    return false;
  auto delay = retry_delay(cfg_.retry.backoff, f.retry->attempt, callee_.uniform());
  if (f.retry->deadline <= callee_.now() + delay)
    return false;
  auto p = std::move(*f.retry);
  f.retry.reset();
  p.id = next_id_++;
  p.out = std::move(f.out);
  events_.retried(p, dead_worker, delay);
  auto rid = p.id;
  parked_.emplace(rid, std::move(p));
  callee_.schedule(delay, {pool_timer::kind::retry, rid, {}});
  return true;
}

// =================================================================================
// Workers: startup batches, readiness, start failures and the circuit breaker.
// =================================================================================

/// A fresh worker id: `<pool>_worker_<n>`, with `_g<gen>` for a restarted pool.
std::string pool_core::next_worker_id() {
  ++next_worker_index_;
  auto id = generation_ <= 1 ? fmt::format("{}_worker_{}", cfg_.name, next_worker_index_)
                             : fmt::format("{}_worker_{}_g{}", cfg_.name,
                                           next_worker_index_, generation_);
  table_.add(id);
  return id;
}

void pool_core::begin_startup() {
  start_more_workers();
}

void pool_core::start_more_workers() {
  while (start_attempts_left_ > 0 && starting_ < cfg_.startup.concurrency) {
    --start_attempts_left_;
    ++starting_;
    auto id = next_worker_id();
    initial_.insert(id);
    callee_.start_worker(id);
  }
  maybe_finish_startup();
}

/// Starts one worker outside the initial start-up: a recycle's replacement (when
/// `replaces` is set), a circuit-breaker probe, or a refill.
void pool_core::start_worker(const std::string& replaces) {
  auto id = next_worker_id();
  table_.find(id)->replaces = replaces;
  callee_.start_worker(id);
}

void pool_core::on_start_result(const std::string& id, const caf::error& err) {
  auto* rec = table_.find(id);
  if (initial_.erase(id) > 0) {
    --starting_;
    if (!err) {
      if (rec != nullptr && rec->member)
        ++started_ok_; // (one retired meanwhile will never be ready: not waited for)
    } else {
      if (rec != nullptr)
        rec->member = false;
      note_start_failure(id, err);
      if (!first_start_error_)
        first_start_error_ = pool_start_error(cfg_.name, err);
    }
    table_.forget_if_gone(id);
    start_more_workers();
    return;
  }
  if (!err || rec == nullptr)
    return;
  rec->member = false;
  note_start_failure(id, err);
  auto old = std::move(rec->replaces);
  table_.forget_if_gone(id);
  if (!old.empty())
    cancel_recycle(old);
}

/// Startup is over once every start attempt finished and every started worker's
/// worker_ready arrived (it comes from the worker itself, the start reply from
/// the supervisor chain: the two may arrive in either order).
void pool_core::maybe_finish_startup() {
  if (startup_done_ || start_attempts_left_ > 0 || starting_ > 0 ||
      ready_once_ < started_ok_)
    return;
  startup_done_ = true;
  events_.init_complete(
    std::chrono::duration_cast<std::chrono::milliseconds>(callee_.now() - init_started_),
    table_.live_count(), cfg_.pool_size, first_start_error_);
  answer_ready_waiters();
}

void pool_core::answer_ready_waiters() {
  if (!startup_done_)
    return;
  auto waiters = std::move(ready_waiters_);
  ready_waiters_.clear();
  for (auto& fn : waiters)
    fn(table_.live_count() > 0 ? caf::error{}
       : first_start_error_
         ? first_start_error_
         : caf::make_error(errc::start_failed, cfg_.name, "no worker started"));
}

bool pool_core::accepts_ready(const std::string& id) const {
  auto* rec = table_.find(id);
  return !draining_ && rec != nullptr && rec->member;
}

uint64_t pool_core::on_worker_ready(const std::string& id, caf::actor handle, int pid,
                                    adapters::connection_ptr client) {
  auto* rec = table_.find(id);
  if (!accepts_ready(id))
    return 0; // (retired while it started: its stop is on the way)
  auto now = callee_.now();
  auto limit = jittered_limit(cfg_.recycling.max_requests, cfg_.recycling.requests_jitter,
                              callee_.uniform());
  auto slot = std::make_shared<lane_slot>(id, pid, std::move(client),
                                          static_cast<uint32_t>(cfg_.capacity()));
  slot->request_limit = limit;
  auto serial = table_.next_serial();
  table_.make_live(*rec,
                   worker_incarnation{serial, std::move(handle), pid, std::move(slot),
                                      cfg_.capacity(), now, limit});
  if (rec->tainted(now))
    callee_.schedule(until(rec->tainted_until, now),
                     {pool_timer::kind::taint_expired, 0, id});
  bool restarted = rec->ever_ready;
  if (restarted) {
    ++stats_.restarts;
  } else {
    rec->ever_ready = true;
    ++ready_once_;
  }
  if (tools_.empty())
    callee_.refresh_tools(); // workers register their tools as they start
  events_.worker_ready(id, pid, restarted, table_.live_count());
  checkin(id);
  if (breaker_.on_success()) {
    events_.circuit_closed(id);
    for (auto n = worker_deficit(); n > 0; --n)
      start_worker();
  }
  if (!rec->replaces.empty())
    replacement_ready(std::exchange(rec->replaces, {}));
  sync_lane(); // before anyone hears the pool is ready
  if (startup_done_)
    answer_ready_waiters();
  else
    maybe_finish_startup();
  return serial;
}

void pool_core::on_worker_start_failed(const std::string& id, const caf::error& err) {
  if (draining_ || !breaker_.enabled())
    return;
  if (breaker_.on_failure(callee_.now()))
    open_circuit(id, err);
  else if (breaker_.current() != circuit_breaker::state::closed &&
           table_.live(id) == nullptr)
    retire(id);
}

/// Too many worker starts failed in a row: stop restarting (retire every worker
/// that is not serving), fail calls that have no worker to wait for, and look
/// again after the reset period.
void pool_core::open_circuit(const std::string& worker_id, const caf::error& err) {
  events_.circuit_opened(worker_id, breaker_.failures(), err, breaker_.reset());
  start_attempts_left_ = 0;
  std::vector<std::string> idle;
  for (auto& [id, rec] : table_.records())
    if (rec.member && !rec.live)
      idle.push_back(id);
  for (auto& id : idle)
    retire(id);
  if (table_.live_count() == 0)
    queue_.take_all([&](pending_request& p) {
      fail_request(p, caf::make_error(
                        errc::circuit_open,
                        fmt::format("pool {}: worker starts keep failing", cfg_.name)));
    });
  callee_.schedule(breaker_.reset(), {pool_timer::kind::circuit_probe, 0, {}});
}

void pool_core::on_circuit_probe() {
  if (draining_ || breaker_.current() != circuit_breaker::state::open)
    return;
  auto now = callee_.now();
  if (!breaker_.try_half_open(now)) {
    // Failures after the opening pushed the reset out: look again then.
    callee_.schedule(until(breaker_.opened_at() + breaker_.reset(), now),
                     {pool_timer::kind::circuit_probe, 0, {}});
    return;
  }
  events_.circuit_half_open();
  if (worker_deficit() == 0) {
    if (breaker_.on_success())
      events_.circuit_closed({});
    return;
  }
  start_worker(); // the probe: its start closes or re-opens the circuit
}

/// Remembers a worker whose start failed for good (the last 64, for init status).
void pool_core::note_start_failure(const std::string& id, const caf::error& err) {
  failed_starts_.emplace_back(id, describe(err));
  if (failed_starts_.size() > 64)
    failed_starts_.pop_front();
}

/// Workers the pool should have besides those on their way out.
size_t pool_core::worker_deficit() const {
  auto target = cfg_.pool_size + table_.recycling_count();
  auto members = table_.member_count() - table_.leaving_count();
  return target > members ? target - members : 0;
}

// =================================================================================
// The breaker on calls: a run of calls its workers failed (crash, timeout) opens
// it; open, new calls are refused; after the reset one trial call goes through.
// The run is counted in the checkout table, so calls on the direct lane count too.
// =================================================================================

caf::error pool_core::refuse_by_call_circuit() const {
  auto st = call_breaker_.current();
  if (st == circuit_breaker::state::closed ||
      (st == circuit_breaker::state::half_open && trial_.empty()))
    return caf::none;
  return caf::make_error(
    errc::circuit_open,
    fmt::format("pool {}: circuit open after {} calls in a row failed (worker_crashed or "
                "timeout); {}",
                cfg_.name, cfg_.circuit.call_failures,
                st == circuit_breaker::state::open
                  ? fmt::format("a trial call goes through {} ms after it opened",
                                call_breaker_.reset().count())
                  : std::string{"a trial call is running"}));
}

void pool_core::note_call_outcome(const execute_result& res) {
  if (!call_breaker_.enabled())
    return;
  lane_->note_outcome(worker_failed(res));
  check_failure_run();
}

bool pool_core::request_pending(const std::string& correlation_id) {
  for (auto& [id, f] : inflight_)
    if (f.ident.correlation_id == correlation_id)
      return true;
  for (auto& [id, p] : parked_)
    if (p.correlation_id() == correlation_id)
      return true;
  for (auto& p : queue_)
    if (p.correlation_id() == correlation_id)
      return true;
  return false;
}

void pool_core::check_failure_run() {
  if (call_breaker_.enabled() &&
      call_breaker_.current() == circuit_breaker::state::closed &&
      lane_->failure_run() >= static_cast<uint32_t>(cfg_.circuit.call_failures))
    open_call_circuit();
}

void pool_core::open_call_circuit() {
  call_breaker_.trip(callee_.now());
  events_.call_circuit_opened(lane_->failure_run(), call_breaker_.reset());
  callee_.schedule(call_breaker_.reset(), {pool_timer::kind::call_circuit_probe, 0, {}});
}

/// The reset period passed: half-open (the next call is the trial). Half-open
/// already: a trial that ended without an answer (its caller went away) frees the
/// place for another.
void pool_core::on_call_circuit_probe() {
  auto now = callee_.now();
  auto st = call_breaker_.current();
  if (draining_ || st == circuit_breaker::state::closed)
    return;
  if (st == circuit_breaker::state::open) {
    if (!call_breaker_.try_half_open(now)) {
      callee_.schedule(until(call_breaker_.opened_at() + call_breaker_.reset(), now),
                       {pool_timer::kind::call_circuit_probe, 0, {}});
      return;
    }
    trial_.clear();
    events_.call_circuit_half_open();
  } else if (!trial_.empty() && !request_pending(trial_)) {
    trial_.clear();
  }
  callee_.schedule(call_breaker_.reset(), {pool_timer::kind::call_circuit_probe, 0, {}});
}

// =================================================================================
// Recycling (upstream LifecycleManager): replace first, drain, then retire.
// =================================================================================

bool pool_core::begin_recycle(const std::string& id, const std::string& reason,
                              uint64_t rss) {
  auto* rec = table_.find(id);
  if (draining_ || rec == nullptr || rec->recycling || rec->leaving || !rec->live ||
      !rec->member)
    return false;
  // A few at a time, so a pool whose workers all reach their limit together
  // still serves (and manual recycles are not refused).
  auto limit = std::max<size_t>(1, cfg_.pool_size / 4);
  if (reason != "manual" && table_.recycling_count() >= limit)
    return false;
  rec->recycling = recycle_info{reason, rss};
  events_.recycle_started(id, reason);
  start_worker(id);
  return true;
}

/// A replacement did not start: the old worker keeps serving (a later check
/// tries again); if it is gone meanwhile, a new worker takes its place.
void pool_core::cancel_recycle(const std::string& old) {
  auto* rec = table_.find(old);
  if (rec != nullptr) {
    rec->recycling.reset();
    rec->replaced = false;
  }
  if (rec == nullptr || !rec->member) {
    if (!draining_ && worker_deficit() > 0)
      start_worker();
    return;
  }
  if (rec->live) {
    table_.reinstate(old);
    checkin(old);
  }
}

/// A recycle's replacement is ready: the old worker takes no new work now and
/// stops once its calls finished.
void pool_core::replacement_ready(const std::string& old) {
  auto* rec = table_.find(old);
  if (rec == nullptr || !rec->recycling || !rec->live)
    return;
  rec->replaced = true;
  table_.withdraw(old);
  sync_lane(); // withdrawn before its load is read
  maybe_retire(old);
}

/// A recycled worker went down (retired, or crashed on the way out).
void pool_core::recycle_finished(worker_record& rec, bool retired, pool_time now) {
  auto info = std::move(*rec.recycling);
  rec.recycling.reset();
  rec.replaced = false;
  if (!retired)
    retire(rec.id); // crashed while recycled: its replacement takes over
  ++recycles_;
  if (!draining_)
    callee_.schedule(caf::timespan{0},
                     {pool_timer::kind::lifecycle_check, 0, {}}); // the next one
  auto& w = *rec.live;
  events_.worker_recycled(
    rec.id, info, w.served(),
    std::chrono::duration_cast<std::chrono::milliseconds>(now - w.ready_at));
}

/// Retires a recycled worker once its replacement is ready and its calls finished,
/// and a worker resized away once its calls finished.
void pool_core::maybe_retire(const std::string& id) {
  auto* rec = table_.find(id);
  if (rec == nullptr || !rec->retiring() || !rec->live || rec->live->load() > 0 ||
      !rec->member)
    return;
  retire(id);
}

/// Stops a worker for good: its starter leaves worker_sup.
void pool_core::retire(const std::string& id) {
  auto* rec = table_.find(id);
  if (rec == nullptr)
    return;
  rec->member = false;
  auto replaces = std::exchange(rec->replaces, {});
  callee_.retire_worker(id);
  table_.forget_if_gone(id);
  if (!replaces.empty())
    cancel_recycle(replaces); // a replacement that will never be ready
}

/// The periodic TTL, request-count and memory check (upstream LifecycleManager's
/// check cycle); also run when a recycle completes, to start the next one.
void pool_core::lifecycle_check() {
  auto now = callee_.now();
  auto ids = table_.ready_order();
  for (auto& id : ids) {
    auto* rec = table_.find(id);
    if (rec == nullptr || !rec->live || rec->recycling)
      continue;
    auto& w = *rec->live;
    if (cfg_.recycling.ttl.count() > 0 && now - w.ready_at >= cfg_.recycling.ttl) {
      begin_recycle(id, "ttl");
      continue;
    }
    if (w.request_limit > 0 && w.served() >= w.request_limit) {
      begin_recycle(id, "max_requests"); // (reached while other recycles were under way)
      continue;
    }
    if (cfg_.recycling.max_memory_mb > 0)
      if (auto rss = callee_.resident_bytes(w.pid);
          rss && *rss > cfg_.recycling.max_memory_mb << 20)
        begin_recycle(id, "memory", *rss);
  }
}

caf::error pool_core::recycle(const std::string& worker_id) {
  if (table_.live(worker_id) == nullptr)
    return caf::make_error(
      errc::invalid_argument,
      fmt::format("pool {} has no ready worker '{}'", cfg_.name, worker_id));
  begin_recycle(worker_id, "manual");
  return caf::none;
}

// =================================================================================
// Resizing (seed "Runtime Configuration"): the target changes, the pool follows.
// =================================================================================

caf::error pool_core::resize(size_t n) {
  if (draining_)
    return caf::make_error(errc::shutting_down, cfg_.name);
  if (n < 1 || n > 1024)
    return caf::make_error(
      errc::invalid_argument,
      fmt::format("pool {}: size {} is outside 1..1024", cfg_.name, n));
  auto old = cfg_.pool_size;
  cfg_.pool_size = n;
  events_.resized(old, n);
  if (n > old)
    grow();
  else if (n < old)
    shrink();
  return caf::none;
}

/// Takes back workers a shrink chose that still serve, then starts the rest in
/// the start-up's batches (unless the circuit is open: its probe fills the pool).
void pool_core::grow() {
  for (auto& [id, rec] : table_.records()) {
    if (worker_deficit() == 0)
      return;
    if (!rec.member || !rec.leaving)
      continue;
    rec.leaving = false;
    if (rec.live && !rec.replaced) {
      table_.reinstate(id);
      checkin(id);
    }
  }
  if (breaker_.current() != circuit_breaker::state::closed)
    return;
  // (Members starting now count in the deficit; attempts not yet made do not.)
  start_attempts_left_ = std::max(start_attempts_left_, worker_deficit());
  start_more_workers();
}

/// Chooses the workers to go and lets each finish what it runs.
void pool_core::shrink() {
  auto active = table_.member_count() - table_.leaving_count();
  auto target = cfg_.pool_size + table_.recycling_count();
  if (active + start_attempts_left_ <= target)
    return;
  auto excess = active + start_attempts_left_ - target;
  // Starts not yet begun are simply not made.
  auto unstarted = std::min(excess, start_attempts_left_);
  start_attempts_left_ -= unstarted;
  excess -= unstarted;
  std::vector<std::string> draining;
  for (auto& id : shrink_order()) {
    if (excess == 0)
      break;
    --excess;
    auto& rec = *table_.find(id);
    rec.leaving = true;
    if (rec.live)
      draining.push_back(id);
    else
      retire(id); // not ready: nothing runs on it
  }
  for (auto& id : draining)
    table_.withdraw(id);
  sync_lane(); // withdrawn before their loads are read
  for (auto& id : draining) {
    events_.worker_draining(id, "resize");
    maybe_retire(id);
  }
  maybe_finish_startup(); // (a start-up may have been waiting for those)
}

/// Which workers a shrink takes first: those not ready (starting or restarting),
/// then ready ones by load, fewest bound sessions and youngest first. Workers on
/// their way out or standing in for a recycled one are not chosen.
std::vector<std::string> pool_core::shrink_order() const {
  std::unordered_map<std::string, size_t> bound;
  for (auto& [sid, b] : sessions_)
    ++bound[b.worker_id];
  struct candidate {
    std::string id;
    bool live;
    uint32_t load;
    size_t sessions;
    pool_time ready_at;
  };
  std::vector<candidate> c;
  for (auto& [id, rec] : table_.records()) {
    if (!rec.member || rec.retiring() || rec.recycling || !rec.replaces.empty())
      continue;
    auto b = bound.find(id);
    c.push_back({id, rec.live.has_value(), rec.live ? rec.live->load() : 0u,
                 b == bound.end() ? 0 : b->second,
                 rec.live ? rec.live->ready_at : pool_time{}});
  }
  std::sort(c.begin(), c.end(), [](const candidate& a, const candidate& b) {
    // (Among equals the later id: the younger worker.)
    return std::make_tuple(a.live, a.load, a.sessions, b.ready_at, b.id) <
           std::make_tuple(b.live, b.load, b.sessions, a.ready_at, a.id);
  });
  std::vector<std::string> out;
  for (auto& x : c)
    out.push_back(std::move(x.id));
  return out;
}

// =================================================================================
// Shutdown.
// =================================================================================

void pool_core::drain() {
  draining_ = true;
  auto err = caf::make_error(errc::shutting_down, cfg_.name);
  queue_.take_all([&](pending_request& p) { fail_request(p, err); });
  for (auto& [id, p] : parked_)
    fail_request(p, err);
  parked_.clear();
}

void pool_core::shutdown(const caf::error& reason) {
  lane_->set_open(false);
  queue_.take_all([&](pending_request& p) { fail_request(p, reason); });
  for (auto& [id, f] : inflight_)
    finish(f.out, reason, f.started, f.ident);
  inflight_.clear();
  for (auto& [id, p] : parked_)
    fail_request(p, reason);
  parked_.clear();
  auto waiters = std::move(ready_waiters_);
  ready_waiters_.clear();
  for (auto& fn : waiters)
    fn(reason);
}

// =================================================================================
// Tools and sessions.
// =================================================================================

void pool_core::set_tools(std::unordered_set<std::string> tools, bool open_dispatch) {
  if (tools.empty())
    return;
  tools_ = std::move(tools);
  open_dispatch_ = open_dispatch;
  lane_->set_tools(tools_, open_dispatch_);
}

void pool_core::forget_session(const std::string& session_id) {
  // A later call with the same id is a new session; also keeps the cache bounded.
  sessions_.erase(session_id);
  lane_->forget_session(session_id);
}

// =================================================================================
// The checkout table.
// =================================================================================

/// Closing reads every load afterwards, so a slot a blocking caller freed just
/// before the close still serves the queue (see direct_lane.hpp).
void pool_core::sync_lane() {
  if (auto slots = table_.take_published_slots())
    lane_->publish(std::move(*slots));
  auto now = callee_.now();
  bool skip_tainted = table_.any_taint(now) && table_.untainted_ready(now);
  for (auto& [id, rec] : table_.records())
    if (rec.live)
      rec.live->slot->offered.store(!rec.retiring() &&
                                    !(skip_tainted && rec.tainted(now)));
  bool calls_ok =
    !call_breaker_.enabled() ||
    (call_breaker_.current() == circuit_breaker::state::closed &&
     lane_->failure_run() < static_cast<uint32_t>(cfg_.circuit.call_failures));
  bool open =
    cfg_.direct_dispatch && !draining_ && queue_.empty() && parked_.empty() && calls_ok;
  bool was_open = lane_->is_open();
  lane_->set_open(open);
  lane_->set_saturated(queue_.size() >= cfg_.queue.max_size, queue_.size());
  if (was_open && !open)
    checkin_all();
}

// =================================================================================
// Introspection.
// =================================================================================

pool_stats pool_core::stats() const {
  auto s = stats_;
  s.workers = table_.live_count();
  for (auto& [id, rec] : table_.records()) {
    if (!rec.live)
      continue;
    auto load = rec.live->load();
    if (load > 0)
      ++s.busy;
    if (load < rec.live->capacity)
      ++s.available;
    s.in_flight += load;
    s.capacity += rec.live->capacity;
  }
  s.queue_depth = queue_.size();
  s.recycles = recycles_;
  s.starting = starting_ + start_attempts_left_;
  s.latency = latencies_;
  // Calls blocking callers ran on the direct lane count like any other.
  auto lane = lane_->counters();
  s.requests += lane.requests;
  s.direct = lane.requests;
  s.completed += lane.completed;
  s.errors += lane.errors;
  s.saturations += lane.saturations;
  s.latency.merge(lane.latency);
  derive_stats(s);
  return s;
}

std::vector<worker_info> pool_core::workers() const {
  std::vector<worker_info> out;
  auto now = callee_.now();
  for (auto& [id, rec] : table_.records()) {
    worker_info info;
    info.id = id;
    info.capacity = cfg_.capacity();
    info.tainted = rec.tainted(now);
    if (!rec.live) {
      if (!rec.member)
        continue; // (gone: its record goes with its last down)
      info.state = rec.ever_ready ? "restarting" : "starting";
      out.push_back(std::move(info));
      continue;
    }
    auto& w = *rec.live;
    info.pid = w.pid;
    info.state = rec.retiring() || !rec.member || draining_ ? "draining"
                 : !w.has_room()                            ? "busy"
                                                            : "ready";
    info.requests = w.served();
    info.uptime = std::chrono::duration_cast<std::chrono::milliseconds>(now - w.ready_at);
    info.load = w.load();
    info.capacity = w.capacity;
    out.push_back(std::move(info));
  }
  return out; // (records are kept by id: sorted)
}

worker_init_status pool_core::init_status(const std::string& id) const {
  if (auto* rec = table_.find(id); rec != nullptr && (rec->member || rec->live))
    return {rec->live ? "ready" : "initializing", {}};
  for (auto f = failed_starts_.rbegin(); f != failed_starts_.rend(); ++f)
    if (f->first == id)
      return {"failed", f->second};
  return {"not_found", {}};
}

std::vector<caf::actor> pool_core::live_handles() const {
  std::vector<caf::actor> out;
  for (auto& [id, rec] : table_.records())
    if (rec.live)
      out.push_back(rec.live->handle);
  return out;
}

} // namespace snakepit::actors::detail
