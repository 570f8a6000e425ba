#include "actors/worker/worker.hpp"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/atoms.hpp"
#include "actors/sessions/tool_registry.hpp"
#include "actors/worker/detail/heartbeat.hpp"
#include "actors/worker/detail/process.hpp"
#include "actors/worker/detail/protocol.hpp"
#include "actors/worker/detail/python_telemetry.hpp"
#include "actors/worker/request_trace.hpp"
#include "actors/worker/worker_rpc.hpp"
#include "adapters/bridge_client.hpp"
#include "adapters/errors.hpp"
#include "adapters/log.hpp"
#include "adapters/stdio_client.hpp"
#include "supervision/supervisor.hpp"

namespace snakepit::actors {

namespace {

using worker_private = detail::worker_private;

/// Upstream GRPCWorker's phases: connecting (waiting for the ready file and the
/// Ping), ready, and stopping (SIGTERM sent, waiting for the process to exit).
enum class phase { starting, ready, stopping };

struct worker_state {
  static inline const char* name = "snakepit.worker";

  worker_args args;
  supervision::start_ack ack;
  phase ph = phase::starting;
  detail::worker_process process;
  detail::worker_readiness readiness;
  detail::stop_escalation stop;
  detail::heartbeat_counter heartbeat;
  /// The worker's StreamTelemetry relay (open while ready).
  detail::python_telemetry_relay telemetry;
  /// The connection to the process: gRPC once the ready file appeared, stdio from
  /// the spawn on.
  adapters::connection_ptr client;
  /// What the worker issues its calls with (set when ready).
  worker_channel channel;
  /// The process exited before it was ready (reported after its last stderr lines
  /// had a moment to arrive).
  std::optional<adapters::process_exit> start_exit;
  /// The stdio kind: why the readiness ping failed.
  caf::error ping_failure;
  /// The stdio kind: why the connection broke (the process is killed shortly after).
  caf::error broken;

  bool stdio() const { return process.launch().kind == worker_kind::stdio; }
};

using worker_pointer = worker_private::stateful_pointer<worker_state>;

worker_private handle_of(worker_pointer self) {
  return caf::actor_cast<worker_private>(self);
}

caf::error start_error(const worker_state& st, const std::string& what) {
  return caf::make_error(errc::start_failed,
                         fmt::format("worker {}: {}", st.args.id, what));
}

/// Every way out: the tool registry forgets this worker's id first (so a restarted
/// worker of the same id, which registers only after this actor has quit, is not
/// forgotten in its place), then the actor quits.
void quit_worker(worker_pointer self, caf::error reason) {
  auto& st = self->state;
  forget_worker_tools(as_tool_registry(st.args.env->names->get(tool_registry_name)),
                      st.args.id);
  self->quit(std::move(reason));
}

// -- Start. The process runs; the ready file, then a Ping. ------------------------

/// A start that did not make it. The pool hears of it (its circuit breaker counts
/// failed starts) unless the start was cut short by a stop request.
void fail_start(worker_pointer self, caf::error reason, bool tell_pool = true) {
  auto& st = self->state;
  if (auto& log = st.args.env->log; log->enabled(adapters::log_level::error)) {
    auto f = detail::worker_fields(st.args);
    f["error"] = describe(reason);
    log->error("worker failed to start", f);
  }
  st.process.signal(SIGKILL);
  if (tell_pool)
    self->anon_send(st.args.pool, worker_start_failed_atom::value, st.args.id, reason);
  st.ack.fail(reason);
  quit_worker(self, std::move(reason));
}

/// A stdio bridge's tools, as its ping answer declared them, go into the host's
/// tool registry as a gRPC worker's RegisterTools would put them: the pool routes
/// by them and callers see which tools stream.
void register_declared_tools(worker_pointer self) {
  auto& st = self->state;
  auto caps = adapters::stdio_runtime::capabilities(*st.client);
  auto reg = as_tool_registry(st.args.env->names->get(tool_registry_name));
  if (!reg || !caps.tools_known || !caps.raw.is_object())
    return;
  std::vector<tool_info> tools;
  for (auto& t : caps.raw["tools"]) {
    tool_info info;
    info.kind = "python";
    if (t.is_string()) {
      info.name = t.get<std::string>();
    } else if (t.is_object() && t.contains("name") && t["name"].is_string()) {
      info.name = t["name"].get<std::string>();
      info.description = t.value("description", std::string{});
      info.supports_streaming = t.value("streaming", false);
    }
    if (!info.name.empty() && !validate_tool_name(info.name))
      tools.push_back(std::move(info));
  }
  register_python_tools(self, reg, std::string{}, st.args.id, std::move(tools))
    .then([](const tool_ids&) {}, [](const caf::error&) {});
}

void on_ready(worker_pointer self) {
  auto& st = self->state;
  auto& env = *st.args.env;
  st.ph = phase::ready;
  st.process.started();
  if (st.stdio())
    register_declared_tools(self);
  if (env.log->enabled(adapters::log_level::info)) {
    auto f = detail::worker_fields(st.args);
    f["pid"] = st.process.pid();
    env.log->info("worker ready", f);
  }
  if (!st.stdio())
    st.telemetry.open(*st.client, st.args);
  if (st.heartbeat.settings().enabled)
    self->delayed_send(self, st.heartbeat.settings().interval,
                       detail::heartbeat_atom::value);
  st.channel = worker_channel{st.args.id,    st.args.pool_cfg.name,
                              st.args.pool,  handle_of(self),
                              st.client,     env.log,
                              env.telemetry, st.args.pool_cfg.host_adapter};
  // The channel goes along: the pool lends it to blocking callers (direct lane).
  auto hdl = caf::actor_cast<caf::actor>(self);
  self->anon_send(st.args.pool, worker_ready_atom::value, st.args.id, hdl,
                  static_cast<int>(st.process.pid()), st.client);
  st.ack.ok(hdl);
}

/// Fails the start of a worker whose process exited, with what it said.
void fail_exited_start(worker_pointer self, const adapters::process_exit& e) {
  auto& st = self->state;
  auto err = st.process.startup_error();
  fail_start(self,
             start_error(st, fmt::format("the worker exited during startup ({}){}{}",
                                         e.to_string(), err.empty() ? "" : ": ", err)));
}

/// The stdio kind: a connection from the spawn on, one ping answered means ready.
void start_stdio(worker_pointer self) {
  auto& st = self->state;
  auto& cfg = st.args.pool_cfg;
  auto [to_worker, from_worker] = st.process.take_stdio();
  adapters::stdio_options opts;
  opts.max_message_bytes = cfg.max_message_bytes;
  opts.cancel_grace = cfg.cancel_grace;
  opts.name = "worker " + st.args.id;
  opts.on_broken = [hdl = handle_of(self)](caf::error reason) {
    caf::anon_send(hdl, detail::conn_broken_atom::value, std::move(reason));
  };
  st.client = st.args.env->stdio->connect(to_worker, from_worker, std::move(opts));
  st.client->ping("ready", cfg.startup.ready_timeout,
                  [hdl = handle_of(self)](caf::expected<std::string> res) {
                    caf::anon_send(hdl, detail::ping_result_atom::value,
                                   res ? caf::error{} : std::move(res.error()));
                  });
}

void check_ready(worker_pointer self) {
  auto& st = self->state;
  if (st.ph != phase::starting)
    return;
  if (st.start_exit)
    return fail_exited_start(self, *st.start_exit);
  if (st.stdio()) {
    if (st.ping_failure)
      fail_start(self,
                 start_error(
                   st, fmt::format("no answer to ping: {}{}{}", describe(st.ping_failure),
                                   st.process.startup_error().empty() ? "" : "; ",
                                   st.process.startup_error())));
    return;
  }
  if (auto target = st.process.ready_target()) {
    st.client = std::make_shared<adapters::bridge_client>(*st.args.env->grpc, *target);
    detail::send_ready_ping(st.readiness, *st.client, handle_of(self));
    return;
  }
  if (auto err = st.process.reported_error(); !err.empty())
    return fail_start(self, start_error(st, err));
  if (st.readiness.expired(self->clock().now()))
    return fail_start(
      self, start_error(st, fmt::format("not ready within {} ms",
                                        st.args.pool_cfg.startup.ready_timeout.count())));
  self->delayed_send(self, st.readiness.next_poll(), detail::check_ready_atom::value);
}

void on_ping_result(worker_pointer self, const caf::error& err) {
  auto& st = self->state;
  if (st.ph != phase::starting)
    return;
  if (!err)
    return on_ready(self);
  if (st.stdio()) {
    // Most often the process died: its exit notice and last stderr lines say more
    // than the ping's error, so look again in a moment.
    st.ping_failure = err;
    self->delayed_send(self, std::chrono::milliseconds{150},
                       detail::check_ready_atom::value);
    return;
  }
  if (auto delay = st.readiness.retry_after_failed_ping())
    self->delayed_send(self, *delay, detail::check_ready_atom::value);
  else
    fail_start(self, start_error(st, fmt::format("Ping failed: {}", describe(err))));
}

// -- Stop. SIGTERM to the group, SIGKILL after the grace period. -------------------

/// The actor quits once the exit watcher saw the process go.
void begin_stop(worker_pointer self, caf::error reason) {
  auto& st = self->state;
  if (!st.stop.begin(std::move(reason)))
    return;
  st.ph = phase::stopping;
  st.telemetry.close();
  if (!st.process.running()) {
    quit_worker(self, st.stop.reason());
    return;
  }
  st.process.signal(SIGTERM);
  self->delayed_send(self, st.args.pool_cfg.graceful_shutdown_timeout,
                     detail::escalate_atom::value, st.stop.arm());
}

// -- Exit. The process is gone: why it went depends on the phase. ------------------

/// Calls open on the channel (the worker's own ping and telemetry stream aside).
size_t calls_in_flight(const worker_state& st) {
  auto own = (st.telemetry.is_open() ? 1u : 0u) + (st.heartbeat.pending() ? 1u : 0u);
  auto open = st.client ? st.client->in_flight() : 0;
  return open > own ? open - own : 0;
}

/// An unexpected exit: an abnormal reason, so the starter restarts the worker. The
/// pool first learns how the process died (crash barrier).
void on_crash(worker_pointer self, adapters::process_exit e, size_t in_flight) {
  auto& st = self->state;
  self->anon_send(st.args.pool, worker_exit_atom::value, st.args.id, e.code, e.signal);
  if (auto& log = st.args.env->log; log->enabled(adapters::log_level::error)) {
    auto f = detail::worker_fields(st.args);
    f["exit_code"] = e.code;
    f["signal"] = e.signal;
    f["in_flight"] = in_flight;
    log->error("worker exited unexpectedly (" + e.to_string() + ")", f);
  }
  if (st.client)
    st.client->cancel_all();
  quit_worker(self, caf::make_error(errc::worker_crashed,
                                    fmt::format("worker {}: its process exited ({})",
                                                st.args.id, e.to_string())));
}

void on_stopped(worker_pointer self, adapters::process_exit e) {
  auto& st = self->state;
  if (auto& log = st.args.env->log; log->enabled(adapters::log_level::debug)) {
    auto f = detail::worker_fields(st.args);
    f["exit_code"] = e.code;
    f["signal"] = e.signal;
    log->debug("worker stopped", f);
  }
  quit_worker(self, st.stop.reason());
}

void on_process_exit(worker_pointer self, adapters::process_exit e) {
  auto& st = self->state;
  auto in_flight = calls_in_flight(st);
  st.telemetry.close();
  st.process.exited();
  switch (st.ph) {
  case phase::starting:
    // Its last stderr lines may still be on their way through the pump.
    st.start_exit = e;
    self->delayed_send(self, std::chrono::milliseconds{100},
                       detail::check_ready_atom::value);
    break;
  case phase::ready:
    on_crash(self, e, in_flight);
    break;
  case phase::stopping:
    on_stopped(self, e);
    break;
  }
}

// -- Heartbeat. One ping in flight; the next is scheduled when it resolves. --------

void on_heartbeat(worker_pointer self) {
  auto& st = self->state;
  if (st.ph == phase::ready)
    detail::send_heartbeat(st.heartbeat, *st.client, handle_of(self));
}

void on_heartbeat_result(worker_pointer self, const caf::error& err) {
  auto& st = self->state;
  if (st.ph != phase::ready)
    return;
  auto verdict = st.heartbeat.on_result(err);
  detail::report_heartbeat(st.args, st.heartbeat, verdict, err);
  if (verdict == detail::heartbeat_counter::verdict::dead)
    st.process.signal(SIGKILL); // its exit makes this worker crash
  else
    self->delayed_send(self, st.heartbeat.settings().interval,
                       detail::heartbeat_atom::value);
}

// -- Calls. Issued as the pool would issue them (worker_rpc.hpp). ------------------

/// The prologue of a call the worker is sent: only a ready worker takes it.
bool accept_call(worker_pointer self, uint64_t req_id) {
  auto& st = self->state;
  if (st.ph == phase::ready)
    return true;
  self->anon_send(st.args.pool, result_atom::value, st.args.id, req_id,
                  execute_result{caf::make_error(errc::not_ready, st.args.id)});
  return false;
}

/// Reports a call that failed in transport (after the recheck delay), as a crash if
/// the process is gone.
void report_failed_call(worker_pointer self, uint64_t req_id, execute_result res) {
  auto& st = self->state;
  if (!res && transport_failure(res.error()) && st.process.running() && st.broken) {
    // A stdio worker that closed its output but lives on broke the protocol.
    auto cid = correlation_id_of(res.error());
    res = with_correlation_id(caf::make_error(errc::protocol_error, describe(st.broken)),
                              cid);
  } else if (!res && transport_failure(res.error()) && !st.process.running()) {
    // The connection broke because the process died: report the crash, not the
    // transport symptom that happened to arrive before the exit notice.
    res = caf::make_error(
      errc::worker_crashed,
      fmt::format("worker {}: its process exited during the call", st.args.id));
  }
  self->anon_send(st.args.pool, result_atom::value, st.args.id, req_id, std::move(res));
}

/// A call failed in transport. If the process died its exit notice is on the way (a
/// killed process closes its socket a moment before its exit becomes visible): the
/// worker quits on it, before the recheck, and the pool answers the call with
/// worker_crashed, retrying it if idempotent. Reporting the call at once, even when
/// the process is known to be gone, would free the worker's slot in the pool before
/// the worker quits, and the pool would hand the dead process its next call.
void on_rpc_failed(worker_pointer self, uint64_t req_id, execute_result res) {
  self->delayed_send(self, std::chrono::milliseconds{100},
                     detail::rpc_recheck_atom::value, req_id, std::move(res));
}

/// The stdio connection broke: its calls have failed; the process goes shortly (a
/// call that failed in transport first learns whether it crashed or broke the
/// protocol), and the starter restarts the worker.
void on_conn_broken(worker_pointer self, caf::error reason) {
  auto& st = self->state;
  if (st.broken)
    return;
  if (auto& log = st.args.env->log; st.ph == phase::ready && st.process.running() &&
                                    log->enabled(adapters::log_level::error)) {
    auto f = detail::worker_fields(st.args);
    f["error"] = describe(reason);
    log->error("worker broke its protocol; restarting it", f);
  }
  st.broken = std::move(reason);
  if (st.ph == phase::ready)
    self->delayed_send(self, std::chrono::milliseconds{500},
                       detail::kill_broken_atom::value);
}

// -- The actor. --------------------------------------------------------------------

worker_private::behavior_type worker_behavior(worker_pointer self) {
  return {
    [self](execute_atom, uint64_t req_id, execute_request& req, caf::timespan budget,
           reply_slot_ptr& slot) {
      if (accept_call(self, req_id))
        issue_execute(self->state.channel, req_id, std::move(req), budget,
                      std::move(slot));
    },
    [self](stream_atom, uint64_t req_id, execute_request& req, caf::timespan budget,
           stream_sink_ptr& sink) {
      if (accept_call(self, req_id))
        issue_stream(self->state.channel, req_id, std::move(req), budget,
                     std::move(sink));
    },
    [self](python_telemetry_atom) {
      self->state.telemetry.apply_settings(*self->state.args.env);
    },
    [self](rpc_failed_atom, uint64_t req_id, execute_result& res) {
      on_rpc_failed(self, req_id, std::move(res));
    },
    [self](detail::rpc_recheck_atom, uint64_t req_id, execute_result& res) {
      report_failed_call(self, req_id, std::move(res));
    },
    [self](detail::check_ready_atom) { check_ready(self); },
    [self](detail::conn_broken_atom, caf::error& reason) {
      on_conn_broken(self, std::move(reason));
    },
    [self](detail::kill_broken_atom) {
      auto& st = self->state;
      if (st.process.running())
        st.process.signal(SIGKILL); // its exit makes this worker crash
    },
    [self](detail::ping_result_atom, caf::error& err) { on_ping_result(self, err); },
    [self](detail::process_exited_atom, int code, int sig) {
      on_process_exit(self, adapters::process_exit{code, sig});
    },
    [self](detail::escalate_atom, uint64_t gen) {
      auto& st = self->state;
      if (st.stop.kill_due(gen, st.process.running()))
        st.process.signal(SIGKILL);
    },
    [self](detail::heartbeat_atom) { on_heartbeat(self); },
    [self](detail::heartbeat_result_atom, caf::error& err) {
      on_heartbeat_result(self, err);
    },
  };
}

worker_private::behavior_type worker_impl(worker_pointer self, worker_args args,
                                          supervision::start_ack ack) {
  auto& st = self->state;
  st.args = std::move(args);
  st.ack = std::move(ack);
  st.heartbeat =
    detail::heartbeat_counter{detail::heartbeat_settings::of(st.args.pool_cfg)};
  auto started =
    st.process.start(st.args, [hdl = handle_of(self)](adapters::process_exit e) {
      caf::anon_send(hdl, detail::process_exited_atom::value, e.code, e.signal);
    });
  if (started) {
    fail_start(self, std::move(started));
    return worker_private::behavior_type::make_empty_behavior();
  }
  st.readiness = detail::worker_readiness{self->clock().now() +
                                          st.args.pool_cfg.startup.ready_timeout};
  if (st.stdio())
    start_stdio(self);
  else
    self->send(self, detail::check_ready_atom::value);
  self->set_exit_handler([self](caf::exit_msg& msg) {
    // A supervisor (or anyone holding our handle) asks us to stop.
    if (self->state.ph == phase::starting)
      fail_start(self, msg.reason, false);
    else
      begin_stop(self, std::move(msg.reason));
  });
  return worker_behavior(self);
}

} // namespace

supervision::child_spec worker_spec(worker_args args) {
  supervision::child_spec spec;
  spec.id = args.id;
  spec.restart = supervision::restart_type::transient;
  spec.type = supervision::child_type::worker;
  spec.shutdown = supervision::shutdown_spec::after(
    args.pool_cfg.graceful_shutdown_timeout + std::chrono::milliseconds{2000});
  spec.start_timeout =
    args.pool_cfg.startup.ready_timeout + std::chrono::milliseconds{5000};
  spec.start = [args](caf::local_actor* parent, supervision::start_ack ack,
                      const caf::message&) -> caf::actor {
    return caf::actor_cast<caf::actor>(parent->spawn(worker_impl, args, ack));
  };
  return spec;
}

supervision::child_spec worker_starter_spec(worker_args args) {
  supervision::supervisor_flags flags;
  flags.strat = supervision::strategy::one_for_one;
  flags.intensity = args.pool_cfg.restart.max_restarts;
  flags.period = args.pool_cfg.restart.max_seconds;
  auto id = args.id;
  return supervision::supervisor_child(std::move(id), flags,
                                       {worker_spec(std::move(args))},
                                       supervision::restart_type::permanent);
}

} // namespace snakepit::actors
