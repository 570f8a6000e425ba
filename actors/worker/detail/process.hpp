// Process ownership of one worker: its command line, the spawn (adapters::process),
// the ready file and its backoff, the readiness Ping's retries, and the stop's
// SIGTERM -> grace -> SIGKILL escalation. Upstream: GRPCWorker's init/connect steps,
// worker/process_manager.ex and ProcessKiller. Plain C++: the actor decides when.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <caf/actor_clock.hpp>
#include <caf/error.hpp>

#include "actors/pool/adapter.hpp"
#include "actors/sessions/token_registry.hpp"
#include "actors/worker/detail/protocol.hpp"
#include "actors/worker/worker.hpp"
#include "adapters/connection.hpp"
#include "adapters/log.hpp"
#include "adapters/process.hpp"

namespace snakepit::actors::detail {

/// The Python logging level matching the host's.
const char* python_log_level(adapters::log_level lvl);

/// How a worker is launched: the pool's keys (kind, command, env, cwd; the bundled
/// Python bridge of the kind when no command is given), then the host adapter's
/// `configure_launch`.
worker_launch make_launch(const worker_args& args, const std::string& socket_path,
                          const std::string& ready_path);

/// The command line and environment of a worker's process; a non-empty
/// `bridge_token` goes into its environment as SNAKEPIT_BRIDGE_TOKEN.
adapters::process_spec make_process_spec(const worker_args& args,
                                         const std::string& socket_path,
                                         const std::string& ready_path,
                                         const std::string& bridge_token = {});

/// The last lines a worker wrote to stderr, for its start error. Thread-safe.
class stderr_tail {
 public:
  /// Keeps `line` (the stderr pump's thread).
  void add(std::string_view line);
  /// The kept lines, joined by " | "; "" when none.
  std::string text() const;

 private:
  mutable std::mutex mtx_;
  std::deque<std::string> lines_;
};

/// The worker's own startup error (`<ready file>.error`, JSON written by the Python
/// side) as "Type: message"; "" when there is none.
std::string startup_error_text(const std::string& ready_path);

/// The one Python process of a worker and the files it is reached by. Its
/// destructor is the last line of defence (e.g. the actor was killed): it never
/// leaves the process running nor its files behind.
class worker_process {
 public:
  worker_process() = default;
  worker_process(const worker_process&) = delete;
  worker_process& operator=(const worker_process&) = delete;
  ~worker_process();

  /// Clears what a predecessor of the same id left, takes a bridge token for the
  /// process, spawns it (stderr into the runtime's pump), records it in the process
  /// table and has the exit watcher revoke the token and call `on_exit` (on its
  /// thread) once it exited and its group is killed.
  caf::error start(const worker_args& args,
                   std::function<void(adapters::process_exit)> on_exit);

  /// True until the process is seen to have exited.
  bool running() const;

  /// The process id (0 before the start or after the exit).
  pid_t pid() const;

  /// Sends `sig` to the process group if the process runs.
  void signal(int sig);

  /// The exit watcher reported the exit: the handle goes.
  void exited();

  /// The gRPC target once the ready file appeared (its content, else the socket).
  std::optional<std::string> ready_target() const;

  /// The error the bundled Python bridge wrote beside its ready file; "" if none.
  std::string reported_error() const { return startup_error_text(ready_path_); }

  /// Why the worker could not start, as far as it said: the error its Python side
  /// wrote beside the ready file, else its last stderr lines; "" when neither.
  std::string startup_error() const;

  /// The stdio kind: the host's ends of the worker's stdin (a socket) and stdout (a
  /// pipe), handed over once (-1 after, and for the gRPC kind).
  std::pair<int, int> take_stdio();

  /// How the worker was launched.
  const worker_launch& launch() const { return launch_; }

  /// The worker is ready: its stderr lines are all logged from now on (while it
  /// starts, lines another worker of its pool already logged are not repeated).
  void started() { starting_->store(false); }

 private:
  /// Issues the process's bridge token (none for the stdio kind or without a bridge).
  caf::error take_token(const worker_args& args);
  /// Revokes the token, if any (idempotent).
  void give_back_token();

  std::optional<adapters::child_process> proc_;
  /// The process's bridge token and where it was issued; revoked on exit.
  std::weak_ptr<token_registry> tokens_;
  std::string token_;
  std::string socket_path_;
  std::string ready_path_;
  worker_launch launch_;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  std::shared_ptr<stderr_tail> tail_ = std::make_shared<stderr_tail>();
  std::shared_ptr<std::atomic<bool>> starting_ =
    std::make_shared<std::atomic<bool>>(true);
};

/// The readiness handshake's timing: ready-file polls back off quickly to 10 ms (a
/// Python worker needs 100-300 ms to import grpc and bind, so readiness is seen at
/// most 10 ms late, one stat() per poll); a failed Ping is retried after 100, 200,
/// 400, 500 ms, and the fifth failure fails the start.
class worker_readiness {
 public:
  using time_point = caf::actor_clock::time_point;

  /// The start must be acknowledged by `deadline`.
  explicit worker_readiness(time_point deadline = {}) : deadline_(deadline) {}

  /// Whether the ready deadline passed.
  bool expired(time_point now) const { return now >= deadline_; }

  /// The delay before the next ready-file poll (2, 4, 8, 10, 10, ... ms).
  std::chrono::milliseconds next_poll();

  /// Counts a Ping sent.
  void pinging() { ++ping_attempts_; }

  /// After a failed Ping: the delay before trying again, none to give up.
  std::optional<std::chrono::milliseconds> retry_after_failed_ping() const;

 private:
  time_point deadline_;
  std::chrono::milliseconds poll_{2};
  int ping_attempts_ = 0;
};

/// Sends the readiness Ping (counted in `readiness`) on `client`; its answer comes
/// back to `self` as `ping_result_atom`.
void send_ready_ping(worker_readiness& readiness, adapters::worker_connection& client,
                     const worker_private& self);

/// The graceful stop (upstream's terminate/2 with ProcessKiller): SIGTERM, then
/// SIGKILL when the grace period's timer of the current generation fires while the
/// process still runs. Timers cannot be cancelled in CAF 0.17, hence the generation.
class stop_escalation {
 public:
  /// Starts a stop for `reason`; false if one is under way (the first reason stays).
  bool begin(caf::error reason);

  /// Whether a stop began.
  bool begun() const { return begun_; }

  /// Why the worker stops.
  const caf::error& reason() const { return reason_; }

  /// A new grace timer; its message carries the returned generation.
  uint64_t arm() { return ++gen_; }

  /// Whether the grace timer of generation `gen` must SIGKILL.
  bool kill_due(uint64_t gen, bool running) const {
    return begun_ && gen == gen_ && running;
  }

 private:
  bool begun_ = false;
  caf::error reason_;
  uint64_t gen_ = 0;
};

} // namespace snakepit::actors::detail
