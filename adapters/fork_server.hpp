// The host's side of a worker template (python/snakepit_bridge/forkserver.py): one
// Python process that has imported grpc and the bridge once and starts each gRPC
// worker as a copy of itself, in milliseconds instead of ~0.2 s of CPU per import.
// The copy is made with clone(CLONE_PARENT), so the worker is the host's own child:
// reaped by the exit watcher, signalled through its pidfd and process group, holding
// the lifeline, exactly like a worker from spawn_process. Protocol in forkserver.py.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include <caf/expected.hpp>

#include "adapters/process.hpp"

namespace snakepit::adapters {

class fork_server {
 public:
  /// The module the template runs.
  static constexpr const char* module = "snakepit_bridge.forkserver";

  /// Spawns the template from `spec` (its executable, environment, cwd, stderr;
  /// arguments and stdin are replaced: "-m snakepit_bridge.forkserver", the control
  /// socket). Returns at once: the template imports while the host goes on, and the
  /// first `spawn` waits for it.
  static caf::expected<std::unique_ptr<fork_server>> launch(process_spec spec);

  fork_server(const fork_server&) = delete;
  fork_server& operator=(const fork_server&) = delete;

  /// Closes the control socket (the template exits on EOF) and, should it still run
  /// after a short while, kills it. Never blocks longer than ~200 ms.
  ~fork_server();

  /// The template's process id.
  pid_t pid() const { return pid_; }

  /// The template's process group (its own).
  pid_t pgid() const { return pgid_; }

  /// Starts a worker from `spec`, which must run "<template's executable> -m
  /// snakepit_bridge ...": its arguments, environment (complete, as for
  /// spawn_process), cwd and stderr are the worker's; stdin is /dev/null, stdout and
  /// the lifeline (fd 3) are the template's. Waits for the template's readiness at
  /// most until `ready_timeout` after its launch. Thread-safe; requests are served one
  /// at a time. An error (start_failed) means: start it some other way; after a
  /// failure of the template itself every later call fails at once.
  caf::expected<child_process> spawn(const process_spec& spec,
                                     std::chrono::milliseconds ready_timeout);

  /// Whether the template may still serve (not failed, not exited).
  bool usable() const;

  /// Why the template cannot serve; "" while it can.
  std::string failure() const;

 private:
  fork_server(child_process proc, int sock, std::string executable);
  caf::error await_ready(std::chrono::milliseconds timeout);
  caf::error fail(std::string why);

  mutable std::mutex mtx_;
  child_process proc_;
  pid_t pid_ = 0;
  pid_t pgid_ = 0;
  int sock_ = -1;
  std::string executable_;
  std::chrono::steady_clock::time_point launched_;
  bool ready_ = false;
  std::string failure_;
};

} // namespace snakepit::adapters
