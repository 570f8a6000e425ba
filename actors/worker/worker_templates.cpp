#include "actors/worker/worker_templates.hpp"

#include <utility>

#include <unistd.h>

#include "actors/worker/worker_env.hpp"
#include "adapters/errors.hpp"
#include "adapters/fork_server.hpp"
#include "adapters/orphan_guard.hpp"
#include "adapters/stderr_pump.hpp"

namespace snakepit::actors {

namespace {

/// What a template depends on: the interpreter, the working directory and every
/// variable of the environment except the per-worker SNAKEPIT_* ones (the copy gets
/// the worker's complete environment anyway; what the imports saw is what counts).
std::string template_key(const adapters::process_spec& spec) {
  std::string key = spec.executable;
  key += '\0';
  key += spec.cwd;
  for (const auto& [k, v] : spec.env) {
    if (k.rfind("SNAKEPIT_", 0) == 0)
      continue;
    key += '\0';
    key += k;
    key += '=';
    key += v;
  }
  return key;
}

} // namespace

worker_templates::worker_templates(std::shared_ptr<process_table> processes,
                                   std::shared_ptr<adapters::orphan_guard> guard,
                                   std::shared_ptr<adapters::stderr_pump> pump,
                                   adapters::logger_ptr log)
  : processes_(std::move(processes)), guard_(guard), pump_(std::move(pump)),
    log_(std::move(log)) {}

worker_templates::~worker_templates() {
  stop();
}

size_t worker_templates::size() const {
  std::lock_guard<std::mutex> lock{mtx_};
  return servers_.size();
}

void worker_templates::stop() {
  std::map<std::string, std::shared_ptr<adapters::fork_server>> servers;
  {
    std::lock_guard<std::mutex> lock{mtx_};
    stopped_ = true;
    servers.swap(servers_);
  }
  servers.clear(); // each closes its socket; the exit watcher reaps the template
}

std::shared_ptr<adapters::fork_server>
worker_templates::launch(const adapters::process_spec& spec, caf::error& err) {
  auto tspec = spec;
  for (auto i = tspec.env.begin(); i != tspec.env.end();) {
    // A template is no worker: it gets neither an identity nor a bridge token (the
    // copies get their own in each request).
    if (i->first == "SNAKEPIT_WORKER_ID" || i->first == "SNAKEPIT_READY_FILE" ||
        i->first == bridge_token_env)
      i = tspec.env.erase(i);
    else
      ++i;
  }
  tspec.stderr_fd = -1;
  if (pump_) {
    auto fd = pump_->open({{"source", "worker_template"}});
    if (!fd) {
      err = fd.error();
      return nullptr;
    }
    tspec.stderr_fd = *fd;
  }
  auto server = adapters::fork_server::launch(tspec);
  if (tspec.stderr_fd >= 0)
    ::close(tspec.stderr_fd);
  if (!server) {
    err = server.error();
    return nullptr;
  }
  std::shared_ptr<adapters::fork_server> result{std::move(*server)};
  auto pid = result->pid();
  auto group = result->pgid();
  processes_->add(pid);
  std::weak_ptr<adapters::orphan_guard> guard;
  if (auto g = guard_.lock(); g && !g->watch(group))
    guard = g;
  adapters::exit_watcher::instance().watch(
    pid,
    [procs = processes_, pid, group, guard](adapters::process_exit) {
      if (auto g = guard.lock())
        g->unwatch(group);
      procs->remove(pid);
    },
    group);
  if (log_->enabled(adapters::log_level::debug))
    log_->debug("worker template launched", {{"pid", pid}});
  return result;
}

caf::expected<adapters::child_process>
worker_templates::spawn(const adapters::process_spec& spec,
                        std::chrono::milliseconds ready_timeout) {
  std::shared_ptr<adapters::fork_server> server;
  {
    std::lock_guard<std::mutex> lock{mtx_};
    if (stopped_)
      return make_error(errc::start_failed, "the worker templates are stopped");
    auto key = template_key(spec);
    auto i = servers_.find(key);
    if (i == servers_.end()) {
      caf::error err;
      server = launch(spec, err);
      if (!server) {
        if (log_->enabled(adapters::log_level::warn))
          log_->warn("cannot launch a worker template; workers are spawned instead",
                     {{"error", describe(err)}});
        return err;
      }
      servers_.emplace(std::move(key), server);
    } else {
      server = i->second;
    }
  }
  bool was_usable = server->usable();
  auto proc = server->spawn(spec, ready_timeout);
  if (!proc && was_usable && !server->usable() &&
      log_->enabled(adapters::log_level::warn))
    log_->warn("the worker template failed; workers are spawned instead (slower start)",
               {{"pid", server->pid()}, {"error", server->failure()}});
  return proc;
}

} // namespace snakepit::actors
