#include "actors/worker/worker.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <sstream>
#include <unordered_set>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/atoms.hpp"
#include "actors/observability/telemetry.hpp"
#include "actors/pool/reply_slot.hpp"
#include "actors/worker/request_trace.hpp"
#include "actors/pool/stream_sink.hpp"
#include "actors/types.hpp"
#include "adapters/bridge_client.hpp"
#include "adapters/errors.hpp"
#include "adapters/log.hpp"
#include "adapters/process.hpp"
#include "adapters/stderr_pump.hpp"
#include "supervision/atoms.hpp"
#include "supervision/supervisor.hpp"

namespace snakepit::actors {

namespace {

using namespace std::chrono_literals;

/// Upstream GRPCWorker's phases: connecting (waiting for the ready file and the
/// Ping), ready, and stopping (SIGTERM sent, waiting for the process to exit).
enum class phase { starting, ready, stopping };

using register_atom_retry = caf::atom_constant<caf::atom("regretry")>;
using rpc_recheck_atom = caf::atom_constant<caf::atom("rpcrecheck")>;
using heartbeat_atom = caf::atom_constant<caf::atom("heartbeat")>;
using heartbeat_result_atom = caf::atom_constant<caf::atom("hbresult")>;

struct worker_state {
  static inline const char* name = "snakepit.worker";

  worker_args args;
  supervision::start_ack ack;
  phase ph = phase::starting;
  std::optional<adapters::child_process> proc;
  adapters::bridge_client client;
  std::string socket_path;
  std::string ready_path;
  caf::actor_clock::time_point ready_deadline;
  std::chrono::milliseconds poll_interval{2};
  int ping_attempts = 0;
  uint64_t escalate_gen = 0;
  caf::error stop_reason;
  std::unordered_set<uint64_t> inflight;
  int missed_heartbeats = 0;
  /// The worker's StreamTelemetry relay (open while ready).
  adapters::stream_control telemetry_stream;

  ~worker_state() {
    // Last line of defence (e.g. the actor was killed): never leave the process.
    if (proc && proc->alive())
      proc->signal_group(SIGKILL);
    if (!socket_path.empty())
      ::unlink(socket_path.c_str());
    if (!ready_path.empty()) {
      ::unlink(ready_path.c_str());
      ::unlink((ready_path + ".error").c_str());
      ::unlink((ready_path + ".tmp").c_str());
    }
  }
};

using worker_actor = caf::stateful_actor<worker_state>;

/// The fields every log line of a worker carries.
adapters::log_fields worker_fields(const worker_state& st) {
  return adapters::log_fields{{"pool", st.args.pool_cfg.name}, {"worker_id", st.args.id}};
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string read_file(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  auto s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
    s.pop_back();
  return s;
}

/// The worker's own startup error (written by the Python side as JSON).
std::string startup_error_text(const std::string& ready_path) {
  auto path = ready_path + ".error";
  if (!file_exists(path))
    return {};
  auto text = read_file(path);
  auto doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_object()) {
    auto type = doc.value("type", std::string{"Error"});
    auto msg = doc.value("message", std::string{});
    return fmt::format("{}: {}", type, msg);
  }
  return text;
}

/// A start that did not make it. The pool hears of it (its circuit breaker counts
/// failed starts) unless the start was cut short by a stop request.
void fail_start(worker_actor* self, caf::error reason, bool tell_pool = true) {
  auto& st = self->state;
  if (auto& log = st.args.env->log; log->enabled(adapters::log_level::error)) {
    auto f = worker_fields(st);
    f["error"] = describe(reason);
    log->error("worker failed to start", f);
  }
  if (st.proc && st.proc->alive())
    st.proc->signal_group(SIGKILL);
  if (tell_pool)
    self->send(st.args.pool, worker_start_failed_atom::value, st.args.id, reason);
  st.ack.fail(reason);
  self->quit(std::move(reason));
}

/// Starts the graceful stop: SIGTERM to the process group, SIGKILL after the
/// grace period; the actor quits once the exit watcher saw the process go.
void begin_stop(worker_actor* self, caf::error reason) {
  auto& st = self->state;
  if (st.ph == phase::stopping)
    return;
  st.ph = phase::stopping;
  st.stop_reason = std::move(reason);
  st.telemetry_stream.cancel();
  if (!st.proc || !st.proc->alive()) {
    self->quit(st.stop_reason);
    return;
  }
  st.proc->signal_group(SIGTERM);
  self->delayed_send(self, st.args.pool_cfg.graceful_shutdown_timeout, escalate_atom::value,
                     ++st.escalate_gen);
}

/// Registers id -> (actor, pid) in the worker registry. A restarted worker may
/// race its predecessor's automatic removal, so `already_registered` is retried.
void register_worker(worker_actor* self, int attempt) {
  auto& st = self->state;
  auto reg = st.args.env->names->get("registry");
  if (!reg || !st.proc)
    return;
  auto pid = static_cast<int>(st.proc->pid());
  self
    ->request(reg, std::chrono::seconds{5}, supervision::register_atom::value, st.args.id,
              caf::actor_cast<caf::actor>(self), caf::make_message(pid))
    .then([](caf::ok_atom) {},
          [self, attempt](caf::error&) {
            if (attempt < 50)
              self->delayed_send(self, std::chrono::milliseconds{20}, register_atom_retry::value,
                                 attempt + 1);
          });
}

/// `snakepit.python.<name>` (a leading `python.` of upstream's names is not doubled).
std::string relay_name(const std::string& name) {
  if (name.rfind("python.", 0) == 0)
    return "snakepit." + name;
  return "snakepit.python." + name;
}

/// Opens the worker's StreamTelemetry: its events go onto the runtime's bus with the
/// pool and worker id added (upstream GrpcStream).
void start_python_telemetry(worker_actor* self) {
  auto& st = self->state;
  auto bus = st.args.env->telemetry;
  if (!bus)
    return;
  st.telemetry_stream = st.client.stream_telemetry(
    [bus, pool = st.args.pool_cfg.name, id = st.args.id](adapters::python_event ev) {
      if (ev.name.empty() || !bus->active())
        return;
      json md = json::object();
      for (auto& [key, value] : ev.metadata)
        md[key] = std::move(value);
      md["pool"] = pool;
      md["worker_id"] = id;
      if (!ev.correlation_id.empty())
        md["correlation_id"] = std::move(ev.correlation_id);
      if (ev.timestamp_ns != 0)
        md["python_timestamp_ns"] = ev.timestamp_ns;
      bus->emit(relay_name(ev.name), std::move(ev.measurements), std::move(md));
    },
    [log = st.args.env->log, fields = worker_fields(st)](caf::error err) {
      auto code = err ? errc_of(err) : std::optional<errc>{};
      if (!err || code == errc::cancelled || code == errc::shutting_down
          || !log->enabled(adapters::log_level::debug))
        return;
      auto f = fields;
      f["error"] = describe(err);
      log->debug("python telemetry stream ended", f);
    });
  // Settings the host chose earlier apply to a (re)started worker too; written
  // once the stream is up, ahead of anything else the host sends on it.
  if (auto ctl = st.args.env->python_telemetry->get())
    st.telemetry_stream.send(*ctl);
}

void on_ready(worker_actor* self) {
  auto& st = self->state;
  st.ph = phase::ready;
  if (auto& log = st.args.env->log; log->enabled(adapters::log_level::info)) {
    auto f = worker_fields(st);
    f["pid"] = st.proc->pid();
    log->info("worker ready", f);
  }
  register_worker(self, 0);
  start_python_telemetry(self);
  if (st.args.pool_cfg.heartbeat.enabled)
    self->delayed_send(self, st.args.pool_cfg.heartbeat.interval, heartbeat_atom::value);
  // The channel goes along: the pool lends it to blocking callers (direct lane).
  self->send(st.args.pool, worker_ready_atom::value, st.args.id,
             caf::actor_cast<caf::actor>(self), static_cast<int>(st.proc->pid()), st.client);
  st.ack.ok(caf::actor_cast<caf::actor>(self));
}

void send_ping(worker_actor* self) {
  auto& st = self->state;
  auto hdl = caf::actor_cast<caf::actor>(self);
  ++st.ping_attempts;
  st.client.ping("connection_test", 2s, [hdl](caf::expected<std::string> res) {
    caf::anon_send(hdl, ping_result_atom::value,
                   res ? caf::error{} : std::move(res.error()));
  });
}

void check_ready(worker_actor* self) {
  auto& st = self->state;
  if (st.ph != phase::starting)
    return;
  if (file_exists(st.ready_path)) {
    auto target = read_file(st.ready_path);
    if (target.empty())
      target = "unix:" + st.socket_path;
    st.client = adapters::bridge_client{*st.args.env->grpc, target};
    send_ping(self);
    return;
  }
  if (auto err = startup_error_text(st.ready_path); !err.empty()) {
    fail_start(self, caf::make_error(errc::start_failed,
                                     fmt::format("worker {}: {}", st.args.id, err)));
    return;
  }
  if (self->clock().now() >= st.ready_deadline) {
    fail_start(self, caf::make_error(
                       errc::start_failed,
                       fmt::format("worker {}: not ready within {} ms", st.args.id,
                                   st.args.pool_cfg.startup.ready_timeout.count())));
    return;
  }
  // A Python worker needs 100-300 ms to import grpc and bind: back off quickly to
  // a 10 ms period, so readiness is seen at most 10 ms late (one stat() per poll).
  self->delayed_send(self, st.poll_interval, check_ready_atom::value);
  st.poll_interval = std::min(st.poll_interval * 2, std::chrono::milliseconds{10});
}

request_log make_request_log(const worker_state& st, const adapters::tool_call& call,
                             bool streaming) {
  return request_log{st.args.env->log, st.args.pool_cfg.name, st.args.id, call.tool_name,
                     call.correlation_id, call.session_id, streaming,
                     std::chrono::steady_clock::now()};
}

/// The Python logging level matching the host's.
const char* python_log_level(adapters::log_level lvl) {
  switch (lvl) {
    case adapters::log_level::trace:
    case adapters::log_level::debug:
      return "debug";
    case adapters::log_level::info:
      return "info";
    case adapters::log_level::warn:
      return "warning";
    case adapters::log_level::error:
      return "error";
    case adapters::log_level::critical:
      return "critical";
    case adapters::log_level::off:
      break;
  }
  return "none";
}

/// Hands one finished call to the pool (crash-aware, see rpc_done).
void complete_rpc(worker_actor* self, uint64_t req_id, execute_result res) {
  auto& st = self->state;
  if (st.inflight.erase(req_id) == 0)
    return;
  if (res) {
    res->worker_id = st.args.id;
  } else if (transport_failure(res.error()) && (!st.proc || !st.proc->alive())) {
    // The connection broke because the process died: report the crash, not
    // the transport symptom that happened to arrive before the exit notice.
    res = caf::make_error(errc::worker_crashed,
                          fmt::format("worker {}: python exited during the call",
                                      st.args.id));
  }
  self->send(st.args.pool, result_atom::value, st.args.id, req_id, std::move(res));
}

adapters::process_spec make_process_spec(const worker_state& st) {
  auto& env = *st.args.env;
  auto& cfg = st.args.pool_cfg;
  adapters::process_spec spec;
  spec.executable = env.python;
  spec.args = {"-m",
               "snakepit_bridge", "--adapter",
               cfg.adapter,     "--socket",
               st.socket_path,  "--ready-file",
               st.ready_path,   "--worker-id",
               st.args.id,      "--parent-fd",
               std::to_string(adapters::lifeline_child_fd()),
               "--snakepit-run-id", env.run_id,
               "--grace-period-ms",
               std::to_string(std::max<int64_t>(cfg.graceful_shutdown_timeout.count() - 500, 100)),
               "--cancel-grace-ms", std::to_string(cfg.cancel_grace.count())};
  if (!env.bridge_address.empty()) {
    spec.args.emplace_back("--elixir-address");
    spec.args.push_back(env.bridge_address);
    // The worker's own heartbeat toward the host mirrors the pool's settings.
    spec.args.insert(spec.args.end(),
                     {"--heartbeat-enabled", cfg.heartbeat.enabled ? "true" : "false",
                      "--heartbeat-interval-ms", std::to_string(cfg.heartbeat.interval.count()),
                      "--heartbeat-timeout-ms", std::to_string(cfg.heartbeat.timeout.count()),
                      "--heartbeat-max-missed", std::to_string(cfg.heartbeat.max_missed),
                      cfg.heartbeat.dependent ? "--heartbeat-dependent"
                                              : "--heartbeat-independent"});
  }
  spec.args.insert(spec.args.end(), cfg.adapter_args.begin(), cfg.adapter_args.end());
  std::vector<std::pair<std::string, std::string>> overrides{
    {"PYTHONPATH", env.python_path},
    {"SNAKEPIT_WORKER_ID", st.args.id},
    {"SNAKEPIT_POOL", cfg.name},
    // Python logs at the host's level; captured stderr is parsed as JSON records.
    {"SNAKEPIT_LOG_LEVEL", python_log_level(env.log->level())},
    {"SNAKEPIT_LOG_FORMAT",
     env.stderr_pump || env.log->format() == adapters::log_format::json ? "json" : "text"},
  };
  if (cfg.worker_profile == snakepit::worker_profile::thread) {
    // A thread worker runs `threads_per_worker` requests at once: its numeric
    // libraries may use as many threads (the pool's adapter_env still wins).
    auto n = std::to_string(cfg.threads_per_worker);
    spec.args.emplace_back("--max-workers");
    spec.args.push_back(n);
    for (const char* key : {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                            "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"})
      overrides.emplace_back(key, n);
  }
  overrides.insert(overrides.end(), cfg.adapter_env.begin(), cfg.adapter_env.end());
  spec.env = adapters::build_environment(overrides);
  spec.new_process_group = true;
  spec.pass_lifeline = true;
  return spec;
}

caf::behavior worker_impl(worker_actor* self, worker_args args, supervision::start_ack ack) {
  auto& st = self->state;
  st.args = std::move(args);
  st.ack = ack;
  auto& env = *st.args.env;
  st.socket_path = env.runtime_dir + "/" + st.args.id + ".sock";
  st.ready_path = env.runtime_dir + "/" + st.args.id + ".ready";
  // A restarted worker reuses its id: clear whatever its predecessor left.
  ::unlink(st.socket_path.c_str());
  ::unlink(st.ready_path.c_str());
  ::unlink((st.ready_path + ".error").c_str());
  auto spec = make_process_spec(st);
  if (env.stderr_pump) {
    auto fd = env.stderr_pump->open(worker_fields(st));
    if (!fd) {
      fail_start(self, caf::make_error(errc::start_failed,
                                       fmt::format("worker {}: {}", st.args.id,
                                                   describe(fd.error()))));
      return {};
    }
    spec.stderr_fd = *fd;
  }
  auto proc = adapters::spawn_process(spec);
  if (spec.stderr_fd >= 0)
    ::close(spec.stderr_fd); // the child has its copy; EOF comes when it is gone
  if (!proc) {
    fail_start(self, caf::make_error(errc::start_failed,
                                     fmt::format("worker {}: {}", st.args.id,
                                                 describe(proc.error()))));
    return {};
  }
  st.proc.emplace(std::move(*proc));
  auto pid = st.proc->pid();
  if (env.log->enabled(adapters::log_level::debug)) {
    auto f = worker_fields(st);
    f["pid"] = pid;
    env.log->debug("worker spawned", f);
  }
  if (auto& bus = env.telemetry; bus && bus->active())
    bus->emit("snakepit.worker.spawned", {{"pid", pid}},
              {{"pool", st.args.pool_cfg.name}, {"worker_id", st.args.id}});
  auto procs = env.processes;
  procs->add(pid);
  auto hdl = caf::actor_cast<caf::actor>(self);
  // The worker leads its own process group: whatever it started dies with it, killed
  // by the watcher before the reap (the group id is still reserved then).
  auto group = st.proc->own_group() ? st.proc->pgid() : 0;
  adapters::exit_watcher::instance().watch(
    pid,
    [hdl, procs, pid](adapters::process_exit e) {
      procs->remove(pid);
      caf::anon_send(hdl, process_exited_atom::value, e.code, e.signal);
    },
    group);
  st.ready_deadline = self->clock().now() + st.args.pool_cfg.startup.ready_timeout;
  self->send(self, check_ready_atom::value);
  self->set_exit_handler([self](caf::exit_msg& msg) {
    // A supervisor (or anyone holding our handle) asks us to stop.
    if (self->state.ph == phase::starting)
      fail_start(self, msg.reason, false);
    else
      begin_stop(self, std::move(msg.reason));
  });
  return {
    [self](check_ready_atom) { check_ready(self); },
    [self](register_atom_retry, int attempt) { register_worker(self, attempt); },
    [self](heartbeat_atom) {
      // One ping in flight at a time; the next is scheduled when it resolves.
      auto& st = self->state;
      if (st.ph != phase::ready)
        return;
      auto hdl = caf::actor_cast<caf::actor>(self);
      st.client.ping("heartbeat", st.args.pool_cfg.heartbeat.timeout,
                     [hdl](caf::expected<std::string> res) {
                       caf::anon_send(hdl, heartbeat_result_atom::value,
                                      res ? caf::error{} : std::move(res.error()));
                     });
    },
    [self](heartbeat_result_atom, caf::error& err) {
      auto& st = self->state;
      if (st.ph != phase::ready)
        return;
      auto& cfg = st.args.pool_cfg;
      if (!err) {
        st.missed_heartbeats = 0;
      } else {
        ++st.missed_heartbeats;
        if (auto& log = st.args.env->log; log->enabled(adapters::log_level::warn)) {
          auto f = worker_fields(st);
          f["missed"] = st.missed_heartbeats;
          f["error"] = describe(err);
          log->warn("heartbeat missed", f);
        }
        auto& bus = st.args.env->telemetry;
        if (bus && bus->active())
          bus->emit("snakepit.heartbeat.missed", {{"missed", st.missed_heartbeats}},
                    {{"pool", cfg.name}, {"worker_id", st.args.id},
                     {"error", describe(err)}});
        if (st.missed_heartbeats >= cfg.heartbeat.max_missed && cfg.heartbeat.dependent) {
          // Hung (a tool holding the event loop, SIGSTOP, deadlock): kill the
          // process; its exit makes this worker crash and its starter restart it.
          if (auto& log = st.args.env->log; log->enabled(adapters::log_level::error)) {
            auto f = worker_fields(st);
            f["missed"] = st.missed_heartbeats;
            log->error("heartbeat timeout: killing the worker's process", f);
          }
          if (bus && bus->active())
            bus->emit("snakepit.heartbeat.timeout", {{"missed", st.missed_heartbeats}},
                      {{"pool", cfg.name}, {"worker_id", st.args.id}});
          if (st.proc)
            st.proc->signal_group(SIGKILL);
          return;
        }
      }
      self->delayed_send(self, cfg.heartbeat.interval, heartbeat_atom::value);
    },
    [self](ping_result_atom, caf::error err) {
      auto& st = self->state;
      if (st.ph != phase::starting)
        return;
      if (!err) {
        on_ready(self);
        return;
      }
      if (st.ping_attempts >= 5) {
        fail_start(self, caf::make_error(errc::start_failed,
                                         fmt::format("worker {}: Ping failed: {}",
                                                     st.args.id, describe(err))));
        return;
      }
      auto delay = std::chrono::milliseconds{std::min(50 << st.ping_attempts, 500)};
      self->delayed_send(self, delay, check_ready_atom::value);
    },
    [self](process_exited_atom, int code, int sig) {
      auto& st = self->state;
      adapters::process_exit e{code, sig};
      st.telemetry_stream.cancel();
      // The exit watcher killed the process group before reaping (see the spawn).
      st.proc.reset();
      switch (st.ph) {
        case phase::starting: {
          auto err = startup_error_text(st.ready_path);
          fail_start(self, caf::make_error(
                             errc::start_failed,
                             fmt::format("worker {}: python exited during startup ({}){}{}",
                                         st.args.id, e.to_string(),
                                         err.empty() ? "" : ": ", err)));
          break;
        }
        case phase::ready:
          // Unexpected exit: an abnormal reason, so the starter restarts us. The
          // pool first learns how the process died (crash barrier).
          self->send(st.args.pool, worker_exit_atom::value, st.args.id, e.code, e.signal);
          if (auto& log = st.args.env->log; log->enabled(adapters::log_level::error)) {
            auto f = worker_fields(st);
            f["exit_code"] = code;
            f["signal"] = sig;
            f["in_flight"] = st.inflight.size();
            log->error("worker exited unexpectedly (" + e.to_string() + ")", f);
          }
          st.client.cancel_all();
          self->quit(caf::make_error(
            errc::worker_crashed,
            fmt::format("worker {}: python exited ({})", st.args.id, e.to_string())));
          break;
        case phase::stopping:
          if (auto& log = st.args.env->log; log->enabled(adapters::log_level::debug)) {
            auto f = worker_fields(st);
            f["exit_code"] = code;
            f["signal"] = sig;
            log->debug("worker stopped", f);
          }
          self->quit(st.stop_reason);
          break;
      }
    },
    [self](python_telemetry_atom) {
      auto& st = self->state;
      if (auto ctl = st.args.env->python_telemetry->get())
        st.telemetry_stream.send(*ctl);
    },
    [self](escalate_atom, uint64_t gen) {
      auto& st = self->state;
      if (gen == st.escalate_gen && st.proc && st.proc->alive())
        st.proc->signal_group(SIGKILL);
    },
    [self](execute_atom, uint64_t req_id, execute_request& req, caf::timespan budget,
           reply_slot_ptr& slot) {
      auto& st = self->state;
      if (st.ph != phase::ready) {
        self->send(st.args.pool, result_atom::value, st.args.id, req_id,
                   execute_result{caf::make_error(errc::not_ready, st.args.id)});
        return;
      }
      auto call = to_tool_call(std::move(req));
      auto rlog = make_request_log(st, call, false);
      rlog.dispatched();
      auto hdl = caf::actor_cast<caf::actor>(self);
      st.inflight.insert(req_id);
      st.client.execute(
        std::move(call), std::chrono::duration_cast<std::chrono::milliseconds>(budget),
        [hdl, req_id, slot = std::move(slot), pool = st.args.pool, id_copy = st.args.id,
         id = st.args.id, rlog = std::move(rlog)](caf::expected<adapters::tool_reply> res) mutable {
          rlog.done(res ? caf::error{} : res.error());
          execute_result out{caf::no_error};
          if (res) {
            out = to_reply(std::move(*res), std::move(id));
          } else {
            out = with_correlation_id(std::move(res.error()), rlog.correlation_id);
          }
          // Fast path: answer the caller from this (gRPC) thread. A transport
          // failure takes the actor path, which tells a crash from a hiccup.
          if (slot && (out || !transport_failure(out.error()))) {
            // The pool's books first: the caller's next request cannot overtake
            // this checkin (it is sent after the reply below), so the worker is
            // free again when that request arrives — which affinity relies on.
            auto summary = out ? execute_result{execute_reply{}} : execute_result{out.error()};
            auto mine = slot->claim(); // before the pool can: it must not answer first
            if (mine)
              slot->release_lane(); // the worker is free before the caller runs again
            caf::anon_send(pool, result_atom::value, id_copy, req_id, std::move(summary));
            if (mine && slot->fn)
              slot->fn(std::move(out));
            caf::anon_send(hdl, rpc_done_atom::value, req_id, execute_result{execute_reply{}},
                           true);
            return;
          }
          caf::anon_send(hdl, rpc_done_atom::value, req_id, std::move(out), false);
        });
    },
    [self](stream_atom, uint64_t req_id, execute_request& req, caf::timespan budget,
           stream_sink_ptr& sink) {
      auto& st = self->state;
      if (st.ph != phase::ready) {
        self->send(st.args.pool, result_atom::value, st.args.id, req_id,
                   execute_result{caf::make_error(errc::not_ready, st.args.id)});
        return;
      }
      auto call = to_tool_call(std::move(req));
      auto rlog = make_request_log(st, call, true);
      rlog.dispatched();
      auto hdl = caf::actor_cast<caf::actor>(self);
      st.inflight.insert(req_id);
      // `snakepit.stream.chunk` per chunk, only while someone listens (one load).
      auto on_chunk = [sink, bus = st.args.env->telemetry, n = uint64_t{0},
                       md = json{{"pool", st.args.pool_cfg.name}, {"worker_id", st.args.id},
                                 {"correlation_id", call.correlation_id}}](
                        json chunk, bool is_final) mutable {
        ++n;
        if (bus && bus->active()) {
          auto meta = md;
          meta["is_final"] = is_final;
          bus->emit("snakepit.stream.chunk", {{"index", n}}, std::move(meta));
        }
        return sink->on_chunk(std::move(chunk), is_final);
      };
      auto ctl = st.client.execute_stream(
        std::move(call), std::chrono::duration_cast<std::chrono::milliseconds>(budget),
        std::move(on_chunk),
        [hdl, req_id, sink, pool = st.args.pool, id = st.args.id,
         rlog = std::move(rlog)](caf::error err) {
          rlog.done(err);
          err = with_correlation_id(std::move(err), rlog.correlation_id);
          // As for unary calls: a broken connection goes through the actor, which
          // tells a crash from a hiccup; everything else ends the stream here,
          // after the pool's books (see execute).
          execute_result summary = err ? execute_result{err} : execute_result{execute_reply{}};
          if (!err || !transport_failure(err)) {
            auto mine = sink->claim_end(); // before the pool can (see execute)
            caf::anon_send(pool, result_atom::value, id, req_id, summary);
            if (mine)
              sink->on_end(std::move(err));
            caf::anon_send(hdl, rpc_done_atom::value, req_id, std::move(summary), true);
            return;
          }
          caf::anon_send(hdl, rpc_done_atom::value, req_id, std::move(summary), false);
        });
      sink->attach(std::move(ctl));
    },
    [self](rpc_done_atom, uint64_t req_id, execute_result& res, bool pool_told) {
      auto& st = self->state;
      if (pool_told) {
        st.inflight.erase(req_id); // the gRPC thread already reported to the pool
        return;
      }
      if (!res && transport_failure(res.error()) && st.proc && st.proc->alive()
          && st.inflight.count(req_id) > 0) {
        // A killed process closes its socket a moment before its exit becomes
        // visible: look again shortly. If it died, we quit before the recheck and
        // the pool answers the call with worker_crashed.
        self->delayed_send(self, std::chrono::milliseconds{100}, rpc_recheck_atom::value,
                           req_id, std::move(res));
        return;
      }
      complete_rpc(self, req_id, std::move(res));
    },
    [self](rpc_recheck_atom, uint64_t req_id, execute_result& res) {
      complete_rpc(self, req_id, std::move(res));
    },
  };
}

} // namespace

supervision::child_spec worker_spec(worker_args args) {
  supervision::child_spec spec;
  spec.id = args.id;
  spec.restart = supervision::restart_type::transient;
  spec.type = supervision::child_type::worker;
  spec.shutdown = supervision::shutdown_spec::after(args.pool_cfg.graceful_shutdown_timeout
                                                    + std::chrono::milliseconds{2000});
  spec.start_timeout = args.pool_cfg.startup.ready_timeout + std::chrono::milliseconds{5000};
  spec.start = [args](caf::local_actor* parent, supervision::start_ack ack,
                      const caf::message&) -> caf::actor {
    return parent->spawn(worker_impl, args, ack);
  };
  return spec;
}

supervision::child_spec worker_starter_spec(worker_args args) {
  supervision::supervisor_flags flags;
  flags.strat = supervision::strategy::one_for_one;
  flags.intensity = args.pool_cfg.restart.max_restarts;
  flags.period = args.pool_cfg.restart.max_seconds;
  auto id = args.id;
  return supervision::supervisor_child(std::move(id), flags, {worker_spec(std::move(args))},
                                       supervision::restart_type::permanent);
}

} // namespace snakepit::actors
