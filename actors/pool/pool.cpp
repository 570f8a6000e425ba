// The pool actor: a shell around detail::pool_core. Each handler turns one
// message into one core call, then restores the checkout table's invariant
// (`step`); the core asks for effects through `shell_callee` (messages to the
// worker supervisor and workers, timers, monitors).
#include "actors/pool/pool.hpp"

#include <atomic>
#include <random>
#include <unordered_map>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/pool/detail/pool_core.hpp"
#include "actors/pool/detail/stream_sinks.hpp"
#include "actors/pool/lifecycle.hpp"
#include "actors/sessions/session_store.hpp"
#include "actors/sessions/tool_registry.hpp"
#include "actors/worker/worker.hpp"
#include "actors/worker/worker_rpc.hpp"
#include "adapters/errors.hpp"
#include "supervision/atoms.hpp"
#include "supervision/dynamic_supervisor.hpp"

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::actors::detail::pool_timer)

namespace snakepit::actors {

namespace {

/// Private messages: workers and the tree (worker_ready, results, exits, start
/// failures), blocking callers (lane_done), the session store (forget), and the
/// pool's own timers.
using pool_private =
  pool_actor::extend<caf::reacts_to<spawn_workers_atom>,
                     caf::reacts_to<worker_ready_atom, std::string, caf::actor, int,
                                    adapters::connection_ptr>,
                     caf::reacts_to<worker_exit_atom, std::string, int, int>,
                     caf::reacts_to<worker_start_failed_atom, std::string, caf::error>,
                     caf::reacts_to<result_atom, std::string, uint64_t, execute_result>,
                     caf::reacts_to<lane_done_atom, std::string>,
                     caf::reacts_to<session_forget_atom, std::string>,
                     caf::reacts_to<refresh_tools_atom>,
                     caf::reacts_to<pool_timer_atom, detail::pool_timer>,
                     caf::reacts_to<stream_halt_atom, uint64_t, bool>>;

/// What outlives one incarnation of a pool (its child spec keeps it): the size
/// it was last resized to, and how often it started (a restarted pool names its
/// workers anew: `<pool>_worker_<n>_g<generation>`).
struct pool_memory {
  std::atomic<size_t> size{0};
  std::atomic<uint64_t> generation{0};
};

struct pool_state;
using pool_ptr = pool_private::stateful_pointer<pool_state>;

/// Carries out what the core asks, as messages of this actor.
class shell_callee final : public detail::pool_callee {
 public:
  explicit shell_callee(pool_ptr self) : self_(self) {}

  detail::pool_time now() override;
  double uniform() override {
    return std::uniform_real_distribution<double>{0.0, 1.0}(rng_);
  }
  void start_worker(const std::string& id) override;
  void retire_worker(const std::string& id) override;
  void run(const detail::worker_incarnation& w, const std::string& worker_id,
           uint64_t req_id, execute_request req, caf::timespan budget,
           reply_slot_ptr slot) override;
  void run_stream(const detail::worker_incarnation& w, const std::string& worker_id,
                  uint64_t req_id, execute_request req, caf::timespan budget,
                  stream_sink_ptr sink) override;
  void schedule(caf::timespan delay, detail::pool_timer t) override;
  void monitor_caller(const caf::actor_addr& caller) override;
  void touch_session(const std::string& session_id,
                     const std::string& worker_id) override;
  void refresh_tools() override;
  std::optional<uint64_t> resident_bytes(int pid) override {
    return actors::resident_bytes(pid);
  }

 private:
  pool_ptr self_;
  std::mt19937_64 rng_{std::random_device{}()};
};

struct pool_state {
  static inline const char* name = "snakepit.pool";

  pool_config cfg;
  std::shared_ptr<const worker_env> env;
  /// What outlives one incarnation of the pool, shared with its child spec.
  std::shared_ptr<pool_memory> memory;
  caf::actor worker_sup;
  std::shared_ptr<direct_lane> lane;
  std::unique_ptr<shell_callee> callee;
  std::unique_ptr<detail::pool_core> core;
  /// Monitored worker actors: which worker and incarnation each one is.
  std::unordered_map<caf::actor_addr, std::pair<std::string, uint64_t>> workers;
  /// Each ready worker's channel: the pool issues calls on it itself, without a
  /// hop through the worker actor (worker_rpc.hpp).
  std::unordered_map<std::string, worker_channel> channels;
  /// Windowed actor-API streams by the id their chunks carry (acks, halts).
  std::unordered_map<uint64_t, std::weak_ptr<detail::windowed_actor_stream_sink>>
    windowed;
  uint64_t next_stream_id = 1;

  pool_state() = default;
  pool_state(const pool_state&) = delete;
  pool_state& operator=(const pool_state&) = delete;

  ~pool_state() {
    core.reset(); // retires the lane: blocking callers stop finding these workers
    if (lane)
      env->lanes->remove(cfg.name, lane);
  }
};

/// One message: a core call, then the checkout table's invariant restored.
template<class F>
void step(pool_ptr self, F&& f) {
  f(*self->state.core);
  self->state.core->sync_lane();
}

caf::timespan start_timeout(const pool_config& cfg) {
  return cfg.startup.ready_timeout + std::chrono::seconds{10};
}

// --- the callee ------------------------------------------------------------------

detail::pool_time shell_callee::now() {
  return self_->clock().now();
}

void shell_callee::start_worker(const std::string& id) {
  auto& st = self_->state;
  worker_args args{id, caf::actor_cast<caf::actor>(self_), st.cfg, st.env};
  auto self = self_;
  self_
    ->request(st.worker_sup, start_timeout(st.cfg), supervision::start_child_atom::value,
              worker_starter_spec(std::move(args)))
    .then(
      [self, id](caf::actor&) {
        step(self, [&](detail::pool_core& core) { core.on_start_result(id, caf::none); });
      },
      [self, id](caf::error& err) {
        step(self, [&](detail::pool_core& core) { core.on_start_result(id, err); });
      });
}

void shell_callee::retire_worker(const std::string& id) {
  // Found by id: worker_sup may have restarted the starter under a new handle.
  auto sup = self_->state.worker_sup;
  auto stop_budget =
    self_->state.cfg.graceful_shutdown_timeout + std::chrono::seconds{10};
  auto self = self_;
  self_->request(sup, std::chrono::seconds{10}, supervision::which_children_atom::value)
    .then(
      [self, sup, id, stop_budget](std::vector<supervision::child_info>& kids) {
        for (auto& kid : kids)
          if (kid.id == id && kid.pid)
            self
              ->request(sup, stop_budget, supervision::terminate_child_atom::value,
                        kid.pid)
              .then([](caf::ok_atom) {}, [](caf::error&) {});
      },
      [](caf::error&) {});
}

void shell_callee::run(const detail::worker_incarnation&, const std::string& worker_id,
                       uint64_t req_id, execute_request req, caf::timespan budget,
                       reply_slot_ptr slot) {
  issue_execute(self_->state.channels.at(worker_id), req_id, std::move(req), budget,
                std::move(slot));
}

void shell_callee::run_stream(const detail::worker_incarnation&,
                              const std::string& worker_id, uint64_t req_id,
                              execute_request req, caf::timespan budget,
                              stream_sink_ptr sink) {
  issue_stream(self_->state.channels.at(worker_id), req_id, std::move(req), budget,
               std::move(sink));
}

void shell_callee::schedule(caf::timespan delay, detail::pool_timer t) {
  auto hdl = caf::actor_cast<caf::actor>(self_);
  if (delay.count() <= 0)
    caf::unsafe_send_as(self_, hdl, pool_timer_atom::value, std::move(t));
  else
    caf::delayed_anon_send(hdl, delay, pool_timer_atom::value, std::move(t));
}

void shell_callee::monitor_caller(const caf::actor_addr& caller) {
  self_->monitor(caller);
}

void shell_callee::touch_session(const std::string& session_id,
                                 const std::string& worker_id) {
  actors::touch_session(
    as_session_store(self_->state.env->names->get(session_store_name)), session_id,
    worker_id);
}

void shell_callee::refresh_tools() {
  // Workers register their tools with the host as they start: look now and once
  // more shortly after, when the registration has surely arrived.
  auto hdl = caf::actor_cast<caf::actor>(self_);
  caf::unsafe_send_as(self_, hdl, refresh_tools_atom::value);
  caf::delayed_anon_send(hdl, std::chrono::milliseconds{500}, refresh_tools_atom::value);
}

// --- handlers that need more than one line -----------------------------------------

/// Asks the tool registry which tools this pool's workers registered.
void ask_tool_registry(pool_ptr self) {
  auto reg = as_tool_registry(self->state.env->names->get(tool_registry_name));
  if (!reg || self->state.core->tools_known())
    return;
  auto prefix = self->state.cfg.name + "_worker_";
  list_tools(self, reg, std::string{})
    .then(
      [self, prefix](std::vector<tool_info>& all) {
        std::unordered_set<std::string> mine;
        bool open = false;
        for (auto& t : all) {
          if (t.kind != "python" || !t.session_id.empty())
            continue;
          if (std::none_of(t.workers.begin(), t.workers.end(),
                           [&](const auto& w) { return w.rfind(prefix, 0) == 0; }))
            continue;
          open = open || t.name == "execute_tool";
          mine.insert(t.name);
        }
        step(self,
             [&](detail::pool_core& core) { core.set_tools(std::move(mine), open); });
      },
      [](caf::error&) {});
}

/// A restarted pool first retires the workers of its predecessor, which would
/// otherwise keep running unseen (upstream leaked them), then starts its own.
void replace_predecessor(pool_ptr self) {
  auto sup = self->state.worker_sup;
  auto prefix = self->state.cfg.name + "_worker_";
  auto begin = [self] {
    step(self, [](detail::pool_core& core) { core.begin_startup(); });
  };
  self->request(sup, std::chrono::seconds{10}, supervision::which_children_atom::value)
    .then(
      [self, sup, prefix, begin](std::vector<supervision::child_info>& kids) {
        for (auto& kid : kids)
          if (kid.id.rfind(prefix, 0) == 0 && kid.pid)
            caf::unsafe_send_as(self, sup, supervision::terminate_child_atom::value,
                                kid.pid);
        begin();
      },
      [begin](caf::error&) { begin(); });
}

void worker_ready(pool_ptr self, const std::string& id, caf::actor& hdl, int pid,
                  adapters::connection_ptr& client) {
  auto& st = self->state;
  if (!st.core->accepts_ready(id))
    return; // (retired while it started: its stop is on the way)
  st.channels[id] = worker_channel{id,
                                   st.cfg.name,
                                   caf::actor_cast<caf::actor>(self),
                                   worker_handle(hdl),
                                   client,
                                   st.env->log,
                                   st.env->telemetry,
                                   st.cfg.host_adapter};
  self->monitor(hdl);
  uint64_t serial = 0;
  step(self, [&](detail::pool_core& core) {
    serial = core.on_worker_ready(id, hdl, pid, std::move(client));
  });
  st.workers[hdl.address()] = {id, serial};
}

void on_down(pool_ptr self, caf::down_msg& msg) {
  auto& st = self->state;
  auto i = st.workers.find(msg.source);
  if (i == st.workers.end()) {
    step(self, [&](detail::pool_core& core) { core.on_caller_down(msg.source); });
    return;
  }
  auto [id, serial] = std::move(i->second);
  st.workers.erase(i);
  if (auto* w = st.core->table().find(id);
      w != nullptr && w->live && w->live->serial == serial)
    st.channels.erase(id);
  step(self,
       [&](detail::pool_core& core) { core.on_worker_down(id, serial, msg.reason); });
}

/// Takes a request: run, queue or refuse it. `from` is monitored while it waits.
void accept(pool_ptr self, execute_request& req, detail::reply_sink out,
            caf::strong_actor_ptr from) {
  auto caller = caf::actor_cast<caf::actor_addr>(from);
  step(self, [&](detail::pool_core& core) {
    core.accept(std::move(req), std::move(out), std::move(caller));
  });
}

/// Actor API: chunks and the end go to the sender as messages.
void accept_streaming(pool_ptr self, execute_request& req) {
  auto sender = caf::actor_cast<caf::actor>(self->current_sender());
  if (sender)
    accept(self, req,
           stream_sink_ptr{std::make_shared<detail::actor_stream_sink>(sender)},
           self->current_sender());
}

/// Actor API with flow control: chunks carry the stream's id; the sender
/// acknowledges them with stream_ack_atom.
void accept_windowed(pool_ptr self, execute_request& req, uint32_t window) {
  auto sender = caf::actor_cast<caf::actor>(self->current_sender());
  if (!sender)
    return;
  auto& st = self->state;
  forget_ended(st.windowed);
  auto id = st.next_stream_id++;
  auto sink = std::make_shared<detail::windowed_actor_stream_sink>(
    sender, id, std::max<uint32_t>(window, 1));
  st.windowed.emplace(id, sink);
  // The deadline holds even while the host sends no acks (a paused RPC would
  // otherwise wait for it forever).
  auto budget = req.opts.timeout.count() > 0 ? req.opts.timeout : st.cfg.request_timeout;
  caf::delayed_anon_send(caf::actor_cast<caf::actor>(self), budget,
                         stream_halt_atom::value, id, true);
  accept(self, req, stream_sink_ptr{std::move(sink)}, self->current_sender());
}

/// The windowed stream `id`, if it is still running.
std::shared_ptr<detail::windowed_actor_stream_sink> windowed(pool_ptr self, uint64_t id) {
  return find_live(self->state.windowed, id);
}

caf::result<caf::ok_atom> await_ready(pool_ptr self) {
  auto rp = self->make_response_promise<caf::ok_atom>();
  self->state.core->await_ready([rp](caf::error err) mutable {
    if (err)
      rp.deliver(std::move(err));
    else
      rp.deliver(caf::ok_atom::value);
  });
  return rp;
}

caf::result<caf::ok_atom> recycle(pool_ptr self, const std::string& id) {
  caf::error err;
  step(self, [&](detail::pool_core& core) { err = core.recycle(id); });
  if (err)
    return err;
  return caf::ok_atom::value;
}

caf::result<caf::ok_atom> resize(pool_ptr self, size_t n) {
  caf::error err;
  step(self, [&](detail::pool_core& core) { err = core.resize(n); });
  if (err)
    return err;
  self->state.memory->size.store(n);
  return caf::ok_atom::value;
}

/// The deadline of windowed stream `id` passed (or it ended: forget it).
void stream_expired(pool_ptr self, uint64_t id, bool expired) {
  if (auto sink = windowed(self, id); sink && !sink->ended())
    sink->halt(expired);
  self->state.windowed.erase(id);
}

pool_private::behavior_type pool_behavior(pool_ptr self);

pool_private::behavior_type pool_impl(pool_ptr self, pool_config cfg,
                                      std::shared_ptr<const worker_env> env,
                                      std::shared_ptr<pool_memory> memory) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.cfg.pool_size = memory->size.load();
  st.memory = std::move(memory);
  st.env = std::move(env);
  st.worker_sup = st.env->names->get("worker_sup");
  if (!st.worker_sup) {
    self->quit(caf::make_error(errc::internal, "pool started without a worker_sup"));
    return {pool_private::behavior_type::unsafe_init{}, caf::behavior{}};
  }
  lane_context lctx;
  lctx.pool = st.cfg.name;
  lctx.telemetry = st.env->telemetry;
  lctx.log = st.env->log;
  lctx.processes = st.env->processes;
  lctx.capacity_events = st.cfg.capacity_strategy == snakepit::capacity_strategy::hybrid;
  lctx.max_message_bytes = st.cfg.max_message_bytes;
  lctx.input = st.cfg.input;
  lctx.host_adapter = st.cfg.host_adapter != nullptr;
  lctx.max_queue_size = st.cfg.queue.max_size;
  lctx.saturation_log = std::make_shared<adapters::log_throttle>();
  auto saturation_log = lctx.saturation_log;
  lctx.touch_session = [names = st.env->names](const std::string& sid,
                                               const std::string& wid) {
    touch_session(as_session_store(names->get(session_store_name)), sid, wid);
  };
  st.lane = std::make_shared<direct_lane>(
    std::move(lctx), [hdl = caf::actor_cast<caf::actor>(self)](const std::string& id) {
      caf::anon_send(hdl, lane_done_atom::value, id);
    });
  if (st.cfg.direct_dispatch)
    st.env->lanes->put(st.cfg.name, st.lane);
  st.callee = std::make_unique<shell_callee>(self);
  auto generation = ++st.memory->generation;
  st.core = std::make_unique<detail::pool_core>(
    st.cfg, st.lane,
    detail::pool_events{st.cfg.name, st.env->telemetry, st.env->log,
                        std::move(saturation_log)},
    *st.callee, generation);
  caf::unsafe_send_as(self, caf::actor_cast<caf::actor>(self), spawn_workers_atom::value);
  self->set_down_handler([self](caf::down_msg& msg) { on_down(self, msg); });
  self->set_exit_handler([self](caf::exit_msg& msg) {
    self->state.core->shutdown(
      caf::make_error(errc::shutting_down, self->state.cfg.name));
    self->quit(msg.reason);
  });
  return pool_behavior(self);
}

pool_private::behavior_type pool_behavior(pool_ptr self) {
  using core_t = detail::pool_core;
  auto& core = *self->state.core; // (lives as long as the behaviour)
  return {
    // --- callers -------------------------------------------------------------------
    [self](execute_atom, execute_request& req) -> caf::result<execute_reply> {
      auto rp = self->make_response_promise<execute_reply>();
      accept(self, req, caf::response_promise{rp}, self->current_sender());
      return rp;
    },
    [self](execute_cb_atom, execute_request& req, callback_sink& cb) {
      auto slot = std::make_shared<reply_slot>();
      slot->fn = std::move(cb.fn);
      slot->abandoned = std::move(cb.abandoned);
      accept(self, req, std::move(slot), nullptr);
    },
    [self](stream_atom, execute_request& req, stream_sink_ptr& sink) {
      accept(self, req, std::move(sink), nullptr);
    },
    [self](stream_atom, execute_request& req) { accept_streaming(self, req); },
    [self](stream_atom, execute_request& req, uint32_t window) {
      accept_windowed(self, req, window);
    },
    [self](stream_ack_atom, uint64_t id, uint32_t n) {
      if (auto sink = windowed(self, id))
        sink->ack(n);
    },
    [self](stream_halt_atom, uint64_t id) {
      if (auto sink = windowed(self, id))
        sink->halt(false);
    },
    [self](await_ready_atom) { return await_ready(self); },
    [&core](get_stats_atom) { return core.stats(); },
    [&core](list_workers_atom) { return core.workers(); },
    [&core](init_status_atom, const std::string& id) { return core.init_status(id); },
    [self](resize_atom, size_t n) { return resize(self, n); },
    [self](recycle_atom, std::string& id) { return recycle(self, id); },
    [self](drain_atom) {
      step(self, [](core_t& c) { c.drain(); });
      return caf::ok_atom::value;
    },
    [self](python_telemetry_atom) {
      for (auto& hdl : self->state.core->live_handles())
        send_python_telemetry(self, hdl);
    },
    // --- workers and the tree ------------------------------------------------------
    [self](spawn_workers_atom) { replace_predecessor(self); },
    [self](worker_ready_atom, std::string& id, caf::actor& hdl, int pid,
           adapters::connection_ptr& client) {
      worker_ready(self, id, hdl, pid, client);
    },
    [self](worker_exit_atom, std::string& id, int code, int sig) {
      self->state.core->on_worker_exit(id, code, sig);
    },
    [self](worker_start_failed_atom, std::string& id, caf::error& err) {
      step(self, [&](core_t& c) { c.on_worker_start_failed(id, err); });
    },
    [self](result_atom, std::string& worker_id, uint64_t req_id, execute_result& res) {
      step(self, [&](core_t& c) { c.on_result(worker_id, req_id, std::move(res)); });
    },
    [self](lane_done_atom, std::string& worker_id) {
      step(self, [&](core_t& c) { c.on_lane_done(worker_id); });
    },
    [self](session_forget_atom, std::string& session_id) {
      self->state.core->forget_session(session_id);
    },
    [self](refresh_tools_atom) { ask_tool_registry(self); },
    [self](pool_timer_atom, detail::pool_timer& t) {
      step(self, [&](core_t& c) { c.on_timer(t); });
    },
    [self](stream_halt_atom, uint64_t id, bool expired) {
      stream_expired(self, id, expired);
    },
  };
}

} // namespace

supervision::child_spec pool_spec(pool_config cfg,
                                  std::shared_ptr<const worker_env> env) {
  supervision::child_spec spec;
  // The name is taken at spawn time, before the pool's init runs, so a caller that
  // saw the start acknowledged always finds the pool.
  spec.id = "pool:" + cfg.name;
  spec.restart = supervision::restart_type::permanent;
  spec.type = supervision::child_type::worker;
  spec.shutdown = supervision::shutdown_spec::after(std::chrono::seconds{5});
  auto memory = std::make_shared<pool_memory>();
  memory->size = cfg.pool_size;
  spec.start = [cfg, env, memory](caf::local_actor* parent, supervision::start_ack ack,
                                  const caf::message&) -> caf::actor {
    auto hdl = caf::actor_cast<caf::actor>(parent->spawn(pool_impl, cfg, env, memory));
    env->names->put("pool:" + cfg.name, hdl);
    ack.ok(hdl);
    return hdl;
  };
  return spec;
}

} // namespace snakepit::actors
