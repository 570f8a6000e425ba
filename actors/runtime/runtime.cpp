#include "actors/runtime/runtime.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/atoms.hpp"
#include "actors/observability/control.hpp"
#include "actors/observability/metrics.hpp"
#include "actors/pool/pool.hpp"
#include "actors/sessions/session_store.hpp"
#include "actors/pool/stream_sink.hpp"
#include "actors/observability/telemetry.hpp"
#include "actors/sessions/tool_registry.hpp"
#include "actors/worker/worker_env.hpp"
#include "adapters/bridge_client.hpp"
#include "actors/sessions/bridge_server.hpp"
#include "adapters/errors.hpp"
#include "adapters/log.hpp"
#include "adapters/process.hpp"
#include "adapters/process_registry.hpp"
#include "adapters/stderr_pump.hpp"
#include "supervision/dynamic_supervisor.hpp"
#include "supervision/registry.hpp"
#include "supervision/supervisor.hpp"

namespace snakepit {

using namespace std::chrono_literals;

void register_types(caf::actor_system_config& cfg) {
  register_error_category(cfg);
}

namespace {

struct owned_system_config : caf::actor_system_config {
  owned_system_config() {
    register_types(*this);
    // Most messages here arrive from foreign threads (gRPC completion queue, exit
    // watcher, blocking callers). The work-stealing scheduler's idle workers poll
    // with back-off sleeps, which adds a wake-up delay to each such hand-off; the
    // sharing scheduler wakes a worker through a condition variable at once.
    set("scheduler.policy", caf::atom("sharing"));
    // One scheduler thread per core: more only adds hand-offs between threads.
    set("scheduler.max-threads",
        static_cast<size_t>(std::max(2u, std::thread::hardware_concurrency())));
  }
};

/// Wraps a child spec so the started actor is recorded under `name` (Erlang's
/// registered process names; a restarted child replaces its entry).
supervision::child_spec named(supervision::child_spec spec,
                              std::shared_ptr<actors::name_table> names, std::string name) {
  auto inner = std::move(spec.start);
  spec.start = [inner, names, name](caf::local_actor* parent, supervision::start_ack ack,
                                    const caf::message& extra) {
    auto hdl = inner(parent, std::move(ack), extra);
    names->put(name, hdl);
    return hdl;
  };
  return spec;
}

/// Marks `dir` as ours (host pid and its start time in `<dir>/owner`) and removes
/// the runtime directories beside it whose owner is gone: a host killed by SIGKILL
/// cannot remove its own (its workers exit through the lifeline, their files stay).
/// A directory is removed only when its owner file names a pid that is dead or now
/// belongs to a process with another start time.
void sweep_runtime_dirs(const std::filesystem::path& parent, const std::string& skip) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (auto& entry : fs::directory_iterator{parent, ec}) {
    auto name = entry.path().filename().string();
    if (name == skip || name.rfind("snakepit-", 0) != 0 || !entry.is_directory(ec))
      continue;
    std::ifstream in{entry.path() / "owner"};
    long pid = 0;
    uint64_t start = 0;
    if (!(in >> pid >> start) || pid <= 0)
      continue; // not ours to judge
    auto now_start = adapters::process_start_time(static_cast<pid_t>(pid));
    if (now_start && *now_start == start)
      continue; // its host is alive
    fs::remove_all(entry.path(), ec);
  }
}

void claim_and_sweep_runtime_dirs(const std::string& dir) {
  auto me = ::getpid();
  auto my_start = adapters::process_start_time(me);
  {
    std::ofstream out{dir + "/owner"};
    out << me << ' ' << (my_start ? *my_start : 0) << '\n';
  }
  std::filesystem::path p{dir};
  sweep_runtime_dirs(p.parent_path(), p.filename().string());
}

} // namespace

struct runtime::impl {
  config cfg;
  std::unique_ptr<owned_system_config> own_cfg;
  std::unique_ptr<caf::actor_system> own_sys;
  caf::actor_system* sys = nullptr;
  std::optional<adapters::runtime_dir> dir;
  std::shared_ptr<actors::worker_env> env;
  caf::actor top;
  std::mutex stop_mtx;
  bool stopped = false;
  std::shared_ptr<adapters::process_registry> registry;
  std::unique_ptr<actors::bridge_server> bridge;
  actors::control_servers servers;

  caf::actor find_pool(const std::string& name) const {
    auto& pname = name.empty() ? cfg.pools.front().name : name;
    return env->names->get("pool:" + pname);
  }

  caf::error pool_missing(const std::string& name) const {
    if (stopped)
      return caf::make_error(errc::shutting_down, "the runtime is stopped");
    return caf::make_error(errc::pool_not_found,
                           name.empty() ? cfg.pools.front().name : name);
  }

  /// Kills whatever is left and waits for the exit watcher to see it go.
  void reap_all(std::chrono::milliseconds timeout) {
    if (env->processes->wait_empty(timeout))
      return;
    for (auto pid : env->processes->snapshot()) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
    }
    env->processes->wait_empty(5s);
  }

  caf::error shutdown() {
    std::lock_guard<std::mutex> guard{stop_mtx};
    if (stopped)
      return caf::none;
    // The endpoints' threads ask the pools: they go first (and see no half-stopped
    // runtime).
    servers.stop();
    stopped = true;
    caf::error result;
    if (top) {
      {
        caf::scoped_actor self{*sys};
        for (auto& p : cfg.pools)
          if (auto hdl = env->names->get("pool:" + p.name))
            self->request(hdl, 2s, actors::drain_atom::value)
              .receive([](caf::ok_atom) {}, [](caf::error&) {});
      }
      auto grace = std::chrono::milliseconds{0};
      for (auto& p : cfg.pools)
        grace = std::max(grace, p.graceful_shutdown_timeout);
      result = supervision::stop(*sys, top, cfg.shutdown_timeout + grace);
      top = nullptr;
    }
    env->names->clear();
    if (bridge)
      bridge->stop();
    reap_all(cfg.shutdown_timeout);
    // Every worker is gone: their pipes are at EOF and the last lines get logged.
    if (env->stderr_pump)
      env->stderr_pump->stop();
    if (registry)
      registry->end_run(env->run_id);
    if (env->grpc)
      env->grpc->shutdown();
    if (env->telemetry)
      env->telemetry->stop();
    if (dir)
      dir->remove();
    if (env->log->enabled(adapters::log_level::info))
      env->log->info("runtime stopped", {{"run_id", env->run_id}});
    env->log->flush();
    return result;
  }
};

runtime::runtime(std::unique_ptr<impl> ptr) : impl_(std::move(ptr)) {
}

runtime::~runtime() {
  if (!impl_)
    return;
  impl_->shutdown();
  // The owned system goes last: ~actor_system waits for every actor, including
  // a host's scoped actors, so it must not run inside stop().
  impl_->own_sys.reset();
  impl_->own_cfg.reset();
}

namespace {

caf::expected<std::unique_ptr<runtime::impl>>
make_impl(caf::actor_system* sys, std::unique_ptr<owned_system_config> own_cfg,
          std::unique_ptr<caf::actor_system> own_sys, config cfg) {
  auto p = std::make_unique<runtime::impl>();
  p->cfg = std::move(cfg);
  p->own_cfg = std::move(own_cfg);
  p->own_sys = std::move(own_sys);
  p->sys = p->own_sys ? p->own_sys.get() : sys;
  return p;
}

} // namespace

caf::expected<std::unique_ptr<runtime>> runtime::start(config cfg, start_options opts) {
  if (auto err = cfg.validate())
    return err;
  auto own_cfg = std::make_unique<owned_system_config>();
  auto own_sys = std::make_unique<caf::actor_system>(*own_cfg);
  auto p = make_impl(nullptr, std::move(own_cfg), std::move(own_sys), std::move(cfg));
  if (!p)
    return p.error();
  return launch(std::move(*p), opts);
}

caf::expected<std::unique_ptr<runtime>> runtime::start(caf::actor_system& sys, config cfg,
                                                       start_options opts) {
  if (auto err = cfg.validate())
    return err;
  auto p = make_impl(&sys, nullptr, nullptr, std::move(cfg));
  if (!p)
    return p.error();
  return launch(std::move(*p), opts);
}

caf::expected<std::unique_ptr<runtime>> runtime::launch(std::unique_ptr<impl> p,
                                                       start_options opts) {
  auto deadline = std::chrono::steady_clock::now() + opts.timeout;
  auto dir = adapters::runtime_dir::create("snakepit");
  if (!dir)
    return dir.error();
  p->dir.emplace(std::move(*dir));
  claim_and_sweep_runtime_dirs(p->dir->path());
  auto env = std::make_shared<actors::worker_env>();
  {
    adapters::log_options lopts;
    lopts.level = p->cfg.log.level;
    lopts.format = p->cfg.log.format;
    lopts.to_stderr = p->cfg.log.to_stderr;
    lopts.file = p->cfg.log.file;
    lopts.sinks = opts.log_sinks;
    auto log = adapters::logger::create(std::move(lopts));
    if (!log)
      return log.error();
    env->log = std::move(*log);
    if (p->cfg.log.capture_worker_stderr)
      env->stderr_pump = std::make_shared<adapters::stderr_pump>(
        env->log, p->cfg.log.worker_stderr_level);
  }
  env->python = p->cfg.python;
  env->python_path = p->cfg.effective_python_path();
  env->run_id = actors::make_run_id();
  env->runtime_dir = p->dir->path();
  env->grpc = std::make_shared<adapters::grpc_runtime>(1);
  env->telemetry = std::make_shared<telemetry::bus>();
  for (auto& [prefix, fn] : opts.telemetry_handlers)
    env->telemetry->attach(prefix, fn);
  for (auto& pool : p->cfg.pools)
    (*env->pool_generations)[pool.name] = 0;
  p->env = env;
  // Record the run before sweeping (a concurrent sweeper then sees it alive), sweep
  // what dead runs left, and only then start anything.
  auto registry = adapters::process_registry::open(
    p->cfg.data_dir.empty() ? adapters::default_data_dir() : p->cfg.data_dir);
  if (!registry)
    return registry.error();
  // A run id already in the registry would make this host and that run one (its
  // exit would let a boot sweep kill our workers): draw another.
  {
    auto taken = (*registry)->runs();
    for (int i = 0; i < 16 && std::find(taken.begin(), taken.end(), env->run_id) != taken.end();
         ++i)
      env->run_id = actors::make_run_id();
  }
  if (auto err = (*registry)->begin_run(env->run_id))
    return err;
  if (p->cfg.sweep_orphans_at_start)
    (*registry)->sweep(env->run_id);
  env->processes->attach(*registry, env->run_id);
  p->registry = *registry;
  // The host's bridge server runs before any worker: workers get its address at spawn.
  actors::bridge_server_options bopts;
  bopts.socket_path = p->dir->file("host.sock");
  bopts.system = p->sys;
  bopts.session_store = [names = env->names] { return names->get("session_store"); };
  bopts.tool_registry = [names = env->names] { return names->get("tool_registry"); };
  auto bridge = actors::bridge_server::start(std::move(bopts));
  if (!bridge) {
    p->shutdown();
    return bridge.error();
  }
  p->bridge = std::move(*bridge);
  env->bridge_address = p->bridge->address();
  // snakepit_sup (one_for_one) -> registry, runtime_sup (rest_for_one) ->
  // worker_sup (dynamic), pool per configured pool.
  supervision::dynamic_supervisor_flags wflags;
  wflags.max_restarts = p->cfg.worker_sup.max_restarts;
  wflags.max_seconds = p->cfg.worker_sup.max_seconds;
  std::vector<supervision::child_spec> runtime_children;
  runtime_children.push_back(
    named(supervision::dynamic_supervisor_child("worker_sup", wflags), env->names,
          "worker_sup"));
  for (auto& pool : p->cfg.pools)
    runtime_children.push_back(actors::pool_spec(pool, env));
  supervision::supervisor_flags rflags;
  rflags.strat = supervision::strategy::rest_for_one;
  rflags.intensity = 3;
  rflags.period = 5s;
  std::vector<supervision::child_spec> top_children;
  top_children.push_back(
    named(supervision::registry_child("registry"), env->names, "registry"));
  actors::session_store_config scfg;
  scfg.ttl = p->cfg.sessions.ttl;
  scfg.sweep_interval = p->cfg.sessions.sweep_interval;
  scfg.max_sessions = p->cfg.sessions.max;
  scfg.on_warning = [bus = env->telemetry](size_t count, size_t max) {
    bus->emit("snakepit.session.accumulation_warning", {{"count", count}, {"max", max}});
  };
  scfg.on_create = [bus = env->telemetry](const std::string& id) {
    if (bus->active())
      bus->emit("snakepit.session.created", json::object(), {{"session_id", id}});
  };
  // A session that is gone is forgotten by every pool's affinity cache too.
  std::vector<std::string> pool_names;
  for (auto& pc : p->cfg.pools)
    pool_names.push_back("pool:" + pc.name);
  auto forget = [names = env->names, pool_names](const std::string& id) {
    for (auto& name : pool_names)
      if (auto pool = names->get(name))
        caf::anon_send(pool, actors::session_forget_atom::value, id);
  };
  scfg.on_cleanup = [bus = env->telemetry, forget](const std::string& id, int32_t removed) {
    forget(id);
    if (bus->active())
      bus->emit("snakepit.session.cleanup", {{"removed", removed}}, {{"session_id", id}});
  };
  scfg.on_expire = [names = env->names, bus = env->telemetry, forget](const std::string& id) {
    bus->emit("snakepit.session.expired", json::object(), {{"session_id", id}});
    if (auto tools = names->get("tool_registry"))
      caf::anon_send(tools, actors::session_cleanup_atom::value, id);
    forget(id);
  };
  top_children.push_back(named(actors::session_store_child("session_store", std::move(scfg)),
                               env->names, "session_store"));
  top_children.push_back(
    named(actors::tool_registry_child("tool_registry"), env->names, "tool_registry"));
  top_children.push_back(
    supervision::supervisor_child("runtime_sup", rflags, std::move(runtime_children)));
  supervision::supervisor_flags tflags;
  tflags.strat = supervision::strategy::one_for_one;
  tflags.intensity = 3;
  tflags.period = 5s;
  auto top = supervision::start_supervisor(*p->sys, tflags, std::move(top_children),
                                           opts.timeout);
  if (!top) {
    p->shutdown();
    return top.error();
  }
  p->top = *top;
  if (env->log->enabled(adapters::log_level::info)) {
    auto names = adapters::log_fields::array();
    for (auto& pool : p->cfg.pools)
      names.push_back(pool.name);
    env->log->info("runtime started", {{"run_id", env->run_id}, {"pools", names}});
  }
  std::unique_ptr<runtime> rt{new runtime(std::move(p))};
  auto servers = actors::start_control_servers(*rt, rt->impl_->cfg);
  if (!servers) {
    rt->stop();
    return servers.error();
  }
  rt->impl_->servers = std::move(*servers);
  if (opts.wait_ready) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (auto err = rt->await_ready(std::max(left, std::chrono::milliseconds{1}))) {
      rt->stop();
      return err;
    }
  }
  return rt;
}

namespace {

/// One blocking caller waiting for its reply. The reply usually arrives within a
/// millisecond, so the caller first polls (yielding its core) before it sleeps on
/// the condition variable: a futex wake-up costs tens of µs on small VMs. Every
/// caller polls, also under concurrent load: a reply that finds its caller polling
/// costs the single gRPC completion thread no wake-up (letting only one caller poll
/// measured 5-12 % lower throughput with 16 callers).
struct reply_waiter {
  std::atomic<bool> ready{false};
  std::mutex mtx;
  std::condition_variable cv;
  std::optional<execute_result> value;

  void set(execute_result res) {
    {
      std::lock_guard<std::mutex> guard{mtx};
      value.emplace(std::move(res));
      ready.store(true, std::memory_order_release);
    }
    cv.notify_one();
  }

  bool wait(std::chrono::steady_clock::time_point deadline) {
    auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds{300};
    while (!ready.load(std::memory_order_acquire)) {
      if (std::chrono::steady_clock::now() >= spin_until)
        break;
      std::this_thread::yield();
    }
    std::unique_lock<std::mutex> guard{mtx};
    return cv.wait_until(guard, deadline, [this] { return ready.load(); });
  }
};

} // namespace

execute_result runtime::execute(const std::string& command, json args, execute_options opts) {
  auto budget = opts.timeout;
  if (budget.count() <= 0) {
    budget = impl_->cfg.pools.front().request_timeout;
    for (auto& p : impl_->cfg.pools)
      if (p.name == opts.pool)
        budget = p.request_timeout;
  }
  auto hdl = impl_->find_pool(opts.pool);
  if (!hdl)
    return impl_->pool_missing(opts.pool);
  execute_request req{command, std::move(args), std::move(opts)};
  // The direct lane: when the pool would dispatch at once, claim a worker in its
  // checkout table and make the call on this thread (docs/architecture.md).
  if (auto lane = impl_->env->lanes->get(req.opts.pool.empty() ? impl_->cfg.pools.front().name
                                                               : req.opts.pool))
    if (auto res = lane->execute(req, budget))
      return std::move(*res);
  auto waiter = std::make_shared<reply_waiter>();
  callback_sink sink;
  sink.fn = [waiter](execute_result res) { waiter->set(std::move(res)); };
  auto abandoned = sink.abandoned;
  auto cid = req.opts.correlation_id;
  caf::anon_send(hdl, actors::execute_cb_atom::value, std::move(req), std::move(sink));
  // The pool always answers (result, queue timeout, deadline, crash, shutdown);
  // the margin only guards against a pool that died with the request.
  if (!waiter->wait(std::chrono::steady_clock::now() + budget + 5s)) {
    abandoned->store(true);
    return with_correlation_id(caf::make_error(errc::timeout, command), cid);
  }
  std::lock_guard<std::mutex> guard{waiter->mtx};
  return std::move(*waiter->value);
}

execute_result runtime::execute_in_session(const std::string& session_id,
                                           const std::string& command, json args,
                                           execute_options opts) {
  opts.session_id = session_id;
  return execute(command, std::move(args), std::move(opts));
}

caf::error runtime::execute_in_session_stream(
  const std::string& session_id, const std::string& command, json args,
  const std::function<bool(const json&, bool)>& on_chunk, execute_options opts) {
  opts.session_id = session_id;
  return execute_stream(command, std::move(args), on_chunk, std::move(opts));
}

void runtime::execute_async(const std::string& command, json args, execute_options opts,
                            execute_callback done) {
  auto hdl = impl_->find_pool(opts.pool);
  if (!hdl) {
    done(impl_->pool_missing(opts.pool));
    return;
  }
  callback_sink sink;
  sink.fn = std::move(done);
  execute_request req{command, std::move(args), std::move(opts)};
  caf::anon_send(hdl, actors::execute_cb_atom::value, std::move(req), std::move(sink));
}

namespace {

/// A stream consumed by a blocking caller: the gRPC thread fills a bounded queue,
/// the caller's thread drains it; a full queue pauses the RPC until drained.
class blocking_stream_sink final : public actors::stream_sink {
public:
  static constexpr size_t high_water = 32;
  static constexpr size_t low_water = 8;

  adapters::stream_step on_chunk(json chunk, bool is_final) override {
    std::lock_guard<std::mutex> guard{mtx_};
    if (halted_)
      return adapters::stream_step::halt;
    queue_.emplace_back(std::move(chunk), is_final);
    cv_.notify_one();
    if (queue_.size() >= high_water) {
      paused_ = true;
      return adapters::stream_step::pause;
    }
    return adapters::stream_step::more;
  }

  void on_end(caf::error err) override {
    std::lock_guard<std::mutex> guard{mtx_};
    finished_ = true;
    result_ = std::move(err);
    cv_.notify_one();
  }

  void attach(adapters::stream_control ctl) override {
    std::lock_guard<std::mutex> guard{mtx_};
    control_ = std::move(ctl);
    if (halted_)
      control_.cancel();
  }

  /// Drains the stream on the calling thread until it ends or `deadline`.
  caf::error run(const std::function<bool(const json&, bool)>& on_chunk,
                 std::chrono::steady_clock::time_point deadline) {
    std::unique_lock<std::mutex> guard{mtx_};
    for (;;) {
      if (!cv_.wait_until(guard, deadline, [this] { return !queue_.empty() || finished_; })) {
        abandoned = true;
        halted_ = true;
        control_.cancel();
        return caf::make_error(errc::timeout, "stream did not end within its budget");
      }
      if (queue_.empty() && finished_)
        break;
      auto [chunk, is_final] = std::move(queue_.front());
      queue_.pop_front();
      if (paused_ && queue_.size() <= low_water) {
        paused_ = false;
        control_.resume();
      }
      if (halted_)
        continue; // drain what arrived before the cancel took effect
      guard.unlock();
      bool more = on_chunk(chunk, is_final);
      guard.lock();
      if (!more) {
        halted_ = true;
        control_.cancel();
        if (paused_) {
          paused_ = false;
          control_.resume();
        }
      }
    }
    // A halt cancels the RPC on purpose: that is a successful end for the caller.
    if (halted_ && result_ == errc::cancelled)
      return caf::none;
    return result_;
  }

private:
  std::mutex mtx_;
  std::condition_variable cv_;
  std::deque<std::pair<json, bool>> queue_;
  adapters::stream_control control_;
  caf::error result_;
  bool finished_ = false;
  bool paused_ = false;
  bool halted_ = false;
};

} // namespace

caf::error runtime::execute_stream(const std::string& command, json args,
                                   const std::function<bool(const json&, bool)>& on_chunk,
                                   execute_options opts) {
  auto hdl = impl_->find_pool(opts.pool);
  if (!hdl)
    return impl_->pool_missing(opts.pool);
  auto budget = opts.timeout;
  if (budget.count() <= 0) {
    budget = impl_->cfg.pools.front().request_timeout;
    for (auto& p : impl_->cfg.pools)
      if (p.name == opts.pool)
        budget = p.request_timeout;
    opts.timeout = budget;
  }
  auto sink = std::make_shared<blocking_stream_sink>();
  execute_request req{command, std::move(args), std::move(opts)};
  caf::anon_send(hdl, actors::stream_atom::value, std::move(req),
                 actors::stream_sink_ptr{sink});
  return sink->run(on_chunk, std::chrono::steady_clock::now() + budget + 5s);
}

caf::error runtime::await_ready(std::chrono::milliseconds timeout) {
  // Every pool must have finished starting; a start fails only when no pool can
  // serve (one broken pool does not stop the healthy ones).
  size_t ready = 0;
  caf::error first;
  for (auto& p : impl_->cfg.pools) {
    auto err = await_ready(p.name, timeout);
    if (!err)
      ++ready;
    else if (!first)
      first = std::move(err);
  }
  return ready > 0 ? caf::error{} : first;
}

caf::error runtime::await_ready(const std::string& pool, std::chrono::milliseconds timeout) {
  caf::scoped_actor self{*impl_->sys};
  caf::error result = caf::make_error(errc::pool_not_found, pool);
  for (auto& p : impl_->cfg.pools) {
    if (p.name != pool)
      continue;
    result = caf::none;
    auto hdl = impl_->find_pool(p.name);
    if (!hdl)
      return impl_->pool_missing(p.name);
    self->request(hdl, timeout, actors::await_ready_atom::value)
      .receive([](caf::ok_atom) {},
               [&](caf::error& err) {
                 if (!result)
                   result = err == caf::sec::request_timeout
                              ? caf::make_error(errc::not_ready,
                                                fmt::format("pool {} not ready within {} ms",
                                                            p.name, timeout.count()))
                              : std::move(err);
               });
  }
  return result;
}

caf::expected<pool_stats> runtime::get_stats(const std::string& pool) {
  auto hdl = impl_->find_pool(pool);
  if (!hdl)
    return impl_->pool_missing(pool);
  caf::scoped_actor self{*impl_->sys};
  caf::expected<pool_stats> out{caf::make_error(errc::timeout, "get_stats")};
  self->request(hdl, 5s, actors::get_stats_atom::value)
    .receive([&](pool_stats& s) { out = std::move(s); },
             [&](caf::error& err) { out = std::move(err); });
  return out;
}

caf::expected<std::vector<worker_info>> runtime::list_workers(const std::string& pool) {
  auto hdl = impl_->find_pool(pool);
  if (!hdl)
    return impl_->pool_missing(pool);
  caf::scoped_actor self{*impl_->sys};
  caf::expected<std::vector<worker_info>> out{caf::make_error(errc::timeout, "list_workers")};
  self->request(hdl, 5s, actors::list_workers_atom::value)
    .receive([&](std::vector<worker_info>& ws) { out = std::move(ws); },
             [&](caf::error& err) { out = std::move(err); });
  return out;
}

caf::error runtime::set_python_telemetry(adapters::telemetry_control ctl) {
  if (!(ctl.sampling_rate >= 0.0 && ctl.sampling_rate <= 1.0))
    return caf::make_error(errc::invalid_argument,
                           fmt::format("sampling_rate {} is not in [0, 1]", ctl.sampling_rate));
  if (impl_->stopped)
    return caf::make_error(errc::shutting_down, "the runtime is stopped");
  impl_->env->python_telemetry->set(std::move(ctl));
  for (auto& p : impl_->cfg.pools)
    if (auto hdl = impl_->find_pool(p.name))
      caf::anon_send(hdl, actors::python_telemetry_atom::value);
  return caf::none;
}

caf::error runtime::recycle_worker(const std::string& worker_id, const std::string& pool) {
  auto hdl = impl_->find_pool(pool);
  if (!hdl)
    return impl_->pool_missing(pool);
  caf::scoped_actor self{*impl_->sys};
  caf::error out = caf::make_error(errc::timeout, "recycle_worker");
  self->request(hdl, 5s, actors::recycle_atom::value, worker_id)
    .receive([&](caf::ok_atom) { out = caf::none; }, [&](caf::error& err) { out = std::move(err); });
  return out;
}

caf::expected<runtime_stats> runtime::get_all_stats() {
  runtime_stats out;
  for (auto& p : impl_->cfg.pools) {
    if (!impl_->find_pool(p.name))
      continue;
    auto s = get_stats(p.name);
    if (s)
      out.pools.push_back(std::move(*s));
    else if (s.error() == errc::shutting_down)
      return s.error();
  }
  if (impl_->stopped)
    return caf::make_error(errc::shutting_down, "the runtime is stopped");
  out.total = sum_stats(out.pools);
  return out;
}

caf::expected<std::map<std::string, std::vector<worker_info>>> runtime::list_all_workers() {
  std::map<std::string, std::vector<worker_info>> out;
  for (auto& p : impl_->cfg.pools) {
    if (!impl_->find_pool(p.name))
      continue;
    auto ws = list_workers(p.name);
    if (ws)
      out.emplace(p.name, std::move(*ws));
    else if (ws.error() == errc::shutting_down)
      return ws.error();
  }
  if (impl_->stopped)
    return caf::make_error(errc::shutting_down, "the runtime is stopped");
  return out;
}

std::string runtime::metrics_address() const {
  return impl_->servers.metrics ? impl_->servers.metrics->address() : std::string{};
}

std::string runtime::control_socket() const {
  return impl_->servers.control ? impl_->servers.control->address() : std::string{};
}

caf::actor runtime::pool(const std::string& name) const {
  return impl_->find_pool(name);
}

caf::actor_system& runtime::system() {
  return *impl_->sys;
}

caf::error runtime::stop() {
  return impl_->shutdown();
}

std::vector<int> runtime::live_processes() const {
  auto pids = impl_->env->processes->snapshot();
  return {pids.begin(), pids.end()};
}

const std::string& runtime::runtime_dir() const {
  return impl_->env->runtime_dir;
}

namespace {

/// One blocking request from a host thread (never a CAF thread).
template <class R, class... Ts>
caf::expected<R> ask(caf::actor_system& sys, const caf::actor& hdl, Ts&&... xs) {
  if (!hdl)
    return caf::make_error(errc::shutting_down, "the runtime is stopped");
  caf::scoped_actor self{sys};
  caf::expected<R> out{caf::make_error(errc::timeout, "no reply within 5 s")};
  self->request(hdl, std::chrono::seconds{5}, std::forward<Ts>(xs)...)
    .receive([&](R& x) { out = std::move(x); },
             [&](caf::error& err) {
               if (err != caf::sec::request_timeout)
                 out = std::move(err);
             });
  return out;
}

} // namespace

caf::error runtime::register_host_tool(const std::string& name,
                                       std::function<json(const json&)> fn,
                                       const std::string& description, bool exposed) {
  actors::host_tool t;
  t.info.name = name;
  t.info.description = description;
  t.info.exposed = exposed;
  t.fn = std::move(fn);
  auto r = ask<caf::ok_atom>(*impl_->sys, impl_->env->names->get("tool_registry"),
                             actors::tool_register_host_atom::value, std::move(t));
  return r ? caf::error{} : r.error();
}

caf::expected<std::string> runtime::create_session(std::optional<std::string> id,
                                                   std::map<std::string, std::string> meta) {
  if (id)
    if (auto err = actors::validate_session_id(*id))
      return err;
  return ask<std::string>(*impl_->sys, impl_->env->names->get("session_store"),
                          actors::session_create_atom::value, id.value_or(std::string{}),
                          std::move(meta));
}

caf::expected<actors::session_info> runtime::get_session_info(const std::string& session_id) {
  return ask<actors::session_info>(*impl_->sys, impl_->env->names->get("session_store"),
                                   actors::session_info_atom::value, session_id);
}

caf::expected<int> runtime::cleanup_session(const std::string& session_id) {
  auto state = ask<int32_t>(*impl_->sys, impl_->env->names->get("session_store"),
                            actors::session_cleanup_atom::value, session_id);
  if (!state)
    return state.error();
  auto tools = ask<int32_t>(*impl_->sys, impl_->env->names->get("tool_registry"),
                            actors::session_cleanup_atom::value, session_id);
  if (!tools)
    return tools.error();
  return *state + *tools;
}

caf::expected<std::vector<actors::tool_info>>
runtime::list_tools(const std::string& session_id) {
  return ask<std::vector<actors::tool_info>>(*impl_->sys,
                                             impl_->env->names->get("tool_registry"),
                                             actors::tool_list_atom::value, session_id);
}

caf::actor runtime::session_store() const {
  return impl_->env->names->get("session_store");
}

const std::string& runtime::bridge_address() const {
  return impl_->env->bridge_address;
}

const std::string& runtime::run_id() const {
  return impl_->env->run_id;
}

telemetry::bus& runtime::telemetry() {
  return *impl_->env->telemetry;
}

adapters::logger& runtime::log() {
  return *impl_->env->log;
}

caf::expected<adapters::sweep_report> cleanup_orphans(const config& cfg) {
  auto registry = adapters::process_registry::open(
    cfg.data_dir.empty() ? adapters::default_data_dir() : cfg.data_dir);
  if (!registry)
    return registry.error();
  // Runtime directories of dead hosts go too (where runtime_dir::create puts them).
  sweep_runtime_dirs("/tmp", {});
  if (auto* xdg = ::getenv("XDG_RUNTIME_DIR"); xdg && *xdg)
    sweep_runtime_dirs(xdg, {});
  return (*registry)->sweep();
}

caf::error run_as_script(config cfg, const std::function<void(runtime&)>& fn,
                         start_options opts) {
  auto rt = runtime::start(std::move(cfg), opts);
  if (!rt)
    return rt.error();
  try {
    fn(**rt);
  } catch (...) {
    (*rt)->stop();
    throw;
  }
  return (*rt)->stop();
}

} // namespace snakepit
