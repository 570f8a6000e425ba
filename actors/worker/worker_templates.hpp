// The runtime's worker templates (adapters/fork_server.hpp): one per interpreter,
// working directory and environment, launched when the first worker that can use it
// starts and stopped with the runtime after the pools. A template is an OS process of
// the runtime like a worker: in the process table, watched by the orphan guard,
// reaped by the exit watcher, its stderr in the log.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <caf/expected.hpp>

#include "adapters/log.hpp"
#include "adapters/process.hpp"

namespace snakepit::adapters {
class fork_server;
class orphan_guard;
class stderr_pump;
} // namespace snakepit::adapters

namespace snakepit::actors {

class process_table;

class worker_templates {
 public:
  worker_templates(std::shared_ptr<process_table> processes,
                   std::shared_ptr<adapters::orphan_guard> guard,
                   std::shared_ptr<adapters::stderr_pump> pump, adapters::logger_ptr log);
  ~worker_templates();

  worker_templates(const worker_templates&) = delete;
  worker_templates& operator=(const worker_templates&) = delete;

  /// Starts the worker `spec` describes ("<python> -m snakepit_bridge …") as a copy of
  /// the template for its interpreter, cwd and environment, launching that template
  /// first if needed (the first call then waits up to `ready_timeout` for its
  /// imports). An error means "spawn it yourself": a template that failed is logged
  /// once, kept as failed, and not relaunched.
  caf::expected<adapters::child_process> spawn(const adapters::process_spec& spec,
                                               std::chrono::milliseconds ready_timeout);

  /// Templates launched so far (failed ones included).
  size_t size() const;

  /// Stops every template (they exit on EOF; workers are not touched). Idempotent;
  /// later `spawn` calls fail.
  void stop();

 private:
  std::shared_ptr<adapters::fork_server> launch(const adapters::process_spec& spec,
                                                caf::error& err);

  std::shared_ptr<process_table> processes_;
  std::weak_ptr<adapters::orphan_guard> guard_;
  std::shared_ptr<adapters::stderr_pump> pump_;
  adapters::logger_ptr log_;
  mutable std::mutex mtx_;
  bool stopped_ = false;
  std::map<std::string, std::shared_ptr<adapters::fork_server>> servers_;
};

} // namespace snakepit::actors
