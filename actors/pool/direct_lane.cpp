#include "actors/pool/direct_lane.hpp"

#include "actors/pool/input_checks.hpp"

#include <random>
#include <thread>

#include <fmt/format.h>

#include "actors/observability/telemetry.hpp"
#include "actors/worker/request_trace.hpp"
#include "actors/worker/worker_env.hpp"
#include "adapters/errors.hpp"

namespace snakepit::actors {

namespace {

using steady = std::chrono::steady_clock;

/// A killed process closes its socket a moment before the exit watcher sees it
/// go: wait that long (as the worker actor does) before calling it a hiccup.
constexpr auto exit_notice_wait = std::chrono::milliseconds{100};

bool process_exited(const process_table& procs, int pid) {
  auto until = steady::now() + exit_notice_wait;
  while (procs.contains(pid)) {
    if (steady::now() >= until)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds{2});
  }
  return true;
}

} // namespace

std::string make_correlation_id(const std::string& pool, uint64_t n) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}-{:x}-{:08x}", pool, n, static_cast<uint32_t>(rng()));
}

direct_lane::direct_lane(lane_context ctx, std::function<void(const std::string&)> notify)
  : ctx_(std::move(ctx)), notify_(std::move(notify)) {}

void direct_lane::publish(std::vector<lane_slot_ptr> slots) {
  auto next = std::make_shared<const std::vector<lane_slot_ptr>>(std::move(slots));
  std::lock_guard<std::mutex> guard{mtx_};
  slots_ = std::move(next);
}

void direct_lane::set_tools(std::unordered_set<std::string> tools, bool open_dispatch) {
  auto next = std::make_shared<const std::unordered_set<std::string>>(std::move(tools));
  std::lock_guard<std::mutex> guard{mtx_};
  tools_ = std::move(next);
  open_dispatch_ = open_dispatch;
}

void direct_lane::retire() {
  retired_.store(true);
  open_.store(false);
  std::lock_guard<std::mutex> guard{mtx_};
  slots_ = std::make_shared<const std::vector<lane_slot_ptr>>();
  sessions_.clear();
  notify_ = nullptr;
}

void direct_lane::bind_session(const std::string& session_id, const lane_slot_ptr& slot) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (!retired_.load())
    sessions_[session_id] = slot;
}

void direct_lane::forget_session(const std::string& session_id) {
  std::lock_guard<std::mutex> guard{mtx_};
  sessions_.erase(session_id);
}

lane_counters direct_lane::counters() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return counters_;
}

uint32_t direct_lane::free_capacity() const {
  if (retired_.load() || queue_size_.load() > 0)
    return 0;
  std::shared_ptr<const std::vector<lane_slot_ptr>> slots;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    slots = slots_;
  }
  uint32_t out = 0;
  for (auto& s : *slots) {
    auto load = s->load.load();
    if (s->claimable() && load < s->capacity)
      out += s->capacity - load;
  }
  return out;
}

bool direct_lane::eligible(const execute_request& req) const {
  auto& o = req.opts;
  if (ctx_.host_adapter || o.idempotent || !o.binary_args.empty())
    return false;
  if (check_input(ctx_.input, req))
    return false; // the pool refuses it (one place says why)
  // The pool measures large or unusual arguments against max_message_bytes before
  // dispatch (payload_too_large); those take its path.
  if (!req.args.empty() && !(req.args.is_object() && req.args.size() <= 8 &&
                             ctx_.max_message_bytes >= (1u << 20)))
    return false;
  if (!o.session_id.empty())
    return true; // (session calls may use tools an adapter registers per session)
  std::lock_guard<std::mutex> guard{mtx_};
  return tools_->empty() || open_dispatch_ || tools_->count(req.command) > 0;
}

lane_slot_ptr direct_lane::claim_bound(const std::string& session_id) {
  lane_slot_ptr slot;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    auto i = sessions_.find(session_id);
    if (i == sessions_.end())
      return nullptr; // a new session: the pool binds it
    slot = i->second.lock();
  }
  // Gone, withdrawn or busy: the pool applies the session's affinity mode.
  if (!slot || !slot->claimable() || !slot->try_claim())
    return nullptr;
  return slot;
}

lane_slot_ptr direct_lane::claim() {
  std::shared_ptr<const std::vector<lane_slot_ptr>> slots;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    slots = slots_;
  }
  // The pool's choice: least loaded, then most recently used. Another caller may
  // take the chosen slot between the look and the claim: look again then.
  for (int attempt = 0; attempt < 4; ++attempt) {
    const lane_slot_ptr* best = nullptr;
    uint32_t best_load = 0;
    uint64_t best_used = 0;
    for (auto& s : *slots) {
      if (!s->claimable())
        continue;
      auto load = s->load.load();
      if (load >= s->capacity)
        continue;
      auto used = s->last_used.load();
      if (best == nullptr || load < best_load ||
          (load == best_load && used > best_used)) {
        best = &s;
        best_load = load;
        best_used = used;
      }
    }
    if (best == nullptr)
      return nullptr;
    if ((*best)->try_claim())
      return *best;
  }
  return nullptr;
}

void direct_lane::notify(const std::string& worker_id) {
  std::function<void(const std::string&)> fn;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    fn = notify_;
  }
  if (fn)
    fn(worker_id);
}

uint32_t direct_lane::note_outcome(bool failed) noexcept {
  if (!failed) {
    failure_run_.store(0);
    return 0;
  }
  return failure_run_.fetch_add(1) + 1;
}

bool worker_failed(const execute_result& res) {
  return !res && (res.error() == errc::worker_crashed || res.error() == errc::timeout);
}

void direct_lane::record(const execute_result& res, int64_t us) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (res) {
    ++counters_.completed;
    counters_.latency.record(us);
  } else {
    ++counters_.errors;
  }
}

std::optional<execute_result> direct_lane::refuse_if_saturated(execute_request& req) {
  if (!saturated_.load(std::memory_order_acquire) || retired_.load() ||
      ctx_.host_adapter || check_input(ctx_.input, req))
    return std::nullopt;
  if (req.opts.correlation_id.empty())
    req.opts.correlation_id = make_correlation_id(ctx_.pool, next_call_.fetch_add(1) + 1);
  auto& cid = req.opts.correlation_id;
  auto queued = queue_size_.load(std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> guard{mtx_};
    ++counters_.saturations;
    ++counters_.errors;
  }
  uint64_t held_back = 0;
  if (ctx_.log && ctx_.log->enabled(adapters::log_level::warn) && ctx_.saturation_log &&
      ctx_.saturation_log->admit(held_back))
    ctx_.log->warn("pool saturated: request refused", {{"pool", ctx_.pool},
                                                       {"command", req.command},
                                                       {"correlation_id", cid},
                                                       {"queue_size", queued},
                                                       {"refused_unlogged", held_back}});
  execute_result res = with_correlation_id(
    caf::make_error(errc::pool_saturated,
                    fmt::format("pool {}: {} requests queued", ctx_.pool, queued)),
    cid);
  if (auto& bus = ctx_.telemetry; bus && bus->active()) {
    bus->emit("snakepit.pool.saturated",
              json{{"queue_size", queued}, {"max_queue_size", ctx_.max_queue_size}},
              json{{"pool", ctx_.pool}, {"correlation_id", cid}});
    bus->emit("snakepit.request.exception", json{{"duration_us", 0}},
              request_stop_metadata(ctx_.pool, {req.command, {}, cid}, res));
  }
  return res;
}

std::optional<execute_result> direct_lane::execute(execute_request& req,
                                                   std::chrono::milliseconds budget) {
  if (!open_.load() || !eligible(req))
    return std::nullopt;
  auto& sid = req.opts.session_id;
  auto slot = sid.empty() ? claim() : claim_bound(sid);
  if (!slot)
    return std::nullopt;
  if (!open_.load() || !slot->claimable()) {
    // Closed or withdrawn between the look and the claim: the pool decides.
    slot->release();
    notify(slot->worker_id);
    return std::nullopt;
  }
  auto started = steady::now();
  {
    std::lock_guard<std::mutex> guard{mtx_};
    ++counters_.requests;
  }
  auto n = slot->requests.fetch_add(1) + 1;
  slot->last_used.store(next_use());
  bool limit_reached = slot->request_limit > 0 && n >= slot->request_limit;
  if (!sid.empty() && ctx_.touch_session)
    ctx_.touch_session(sid, slot->worker_id);
  if (req.opts.correlation_id.empty())
    req.opts.correlation_id = make_correlation_id(ctx_.pool, next_call_.fetch_add(1) + 1);
  auto& bus = ctx_.telemetry;
  if (bus && bus->active()) {
    bus->emit("snakepit.request.start", json{{"queue_us", 0}},
              request_start_metadata(ctx_.pool, slot->worker_id, req, false));
    if (ctx_.capacity_events && slot->load.load() >= slot->capacity)
      bus->emit("snakepit.pool.capacity_reached",
                json{{"capacity", slot->capacity}, {"load", slot->load.load()}},
                json{{"pool", ctx_.pool}, {"worker_id", slot->worker_id}});
  }
  auto call = to_tool_call(std::move(req));
  req.opts.correlation_id = call.correlation_id; // the caller keeps the id it was given
  // The budget travels as the gRPC deadline; the worker shows it to tools as
  // metadata `timeout_ms` (upstream's key) when they read the metadata.
  request_log rlog{
    ctx_.log,        ctx_.pool, slot->worker_id, call.tool_name, call.correlation_id,
    call.session_id, false,     started};
  rlog.dispatched();
  auto reply = slot->client ? slot->client->call(call, budget)
                            : caf::expected<adapters::tool_reply>{caf::make_error(
                                errc::internal, "worker without a connection")};
  execute_result out{caf::no_error};
  if (reply) {
    out = to_reply(std::move(*reply), slot->worker_id);
    rlog.done({});
  } else {
    auto err = std::move(reply.error());
    if (transport_failure(err)) {
      bool exited =
        !retired_.load() && ctx_.processes && process_exited(*ctx_.processes, slot->pid);
      auto broke = slot->client ? slot->client->broken() : caf::error{};
      if (retired_.load()) {
        err = caf::make_error(errc::shutting_down, ctx_.pool);
      } else if (exited) {
        // Until the pool sees the worker go down, no other caller tries it.
        slot->dead.store(true);
        err = caf::make_error(
          errc::worker_crashed,
          fmt::format("worker {}: its process exited during the call", slot->worker_id));
      } else if (broke) {
        err = std::move(broke); // a stdio worker that broke its protocol (restarted)
      }
    }
    rlog.done(err);
    out = with_correlation_id(std::move(err), call.correlation_id);
  }
  slot->release();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(steady::now() - started)
              .count();
  record(out, us);
  if (bus && bus->active())
    bus->emit(out ? "snakepit.request.stop" : "snakepit.request.exception",
              json{{"duration_us", us}},
              request_stop_metadata(
                ctx_.pool, {call.tool_name, slot->worker_id, call.correlation_id}, out));
  auto threshold = failure_threshold_.load();
  bool run_reached = threshold > 0 && note_outcome(worker_failed(out)) >= threshold;
  if (run_reached)
    open_.store(false); // the pool opens its circuit: no call may go around it
  if (!open_.load() || !slot->claimable() || limit_reached || run_reached)
    notify(slot->worker_id);
  return out;
}

void lane_table::put(const std::string& pool, std::shared_ptr<direct_lane> lane) {
  std::lock_guard<std::mutex> guard{mtx_};
  lanes_[pool] = std::move(lane);
}

void lane_table::remove(const std::string& pool,
                        const std::shared_ptr<direct_lane>& lane) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (auto i = lanes_.find(pool); i != lanes_.end() && i->second == lane)
    lanes_.erase(i);
}

std::shared_ptr<direct_lane> lane_table::get(const std::string& pool) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = lanes_.find(pool);
  return i == lanes_.end() ? nullptr : i->second;
}

} // namespace snakepit::actors
