// Starting and watching external worker processes: posix_spawn (never fork), one process
// group per worker, a lifeline pipe so workers die with the host, pidfd-based reaping.
// Mirrors upstream Snakepit's Port-based `worker/process_manager.ex`, `ProcessKiller`
// and the `--snakepit-run-id` / parent-watch machinery of the Python server.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <caf/expected.hpp>

namespace snakepit::adapters {

/// What to start and how.
struct process_spec {
  /// Absolute path, or a bare name searched in the PATH of `env` (else the host's PATH).
  std::string executable;
  /// Arguments after argv[0] (argv[0] is `executable`).
  std::vector<std::string> args;
  /// The complete environment of the child (see `build_environment`); empty = host's
  /// environ.
  std::vector<std::pair<std::string, std::string>> env;
  /// Working directory of the child; empty = the host's.
  std::string cwd;
  /// Put the child into a new process group (pgid = pid) so stop can signal the whole
  /// tree.
  bool new_process_group = true;
  /// Give the child the lifeline read end as fd 3 (and SNAKEPIT_LIFELINE_FD=3).
  bool pass_lifeline = true;
  /// Becomes the child's fd 2; -1 inherits the host's stderr.
  int stderr_fd = -1;
  /// Becomes the child's fd 1; -1 inherits the host's stdout.
  int stdout_fd = -1;
  /// Becomes the child's fd 0; -1 inherits the host's stdin.
  int stdin_fd = -1;
};

/// How a process ended.
struct process_exit {
  /// Exit status if it exited normally, else -1.
  int code = -1;
  /// Terminating signal if it was killed, else 0.
  int signal = 0;
  /// True if the process called exit (as opposed to being killed by a signal).
  bool exited() const { return signal == 0 && code >= 0; }
  /// "exit code 3", "signal 9 (SIGKILL)" or "unknown exit status".
  std::string to_string() const;
};

/// Owns one spawned process. Movable, not copyable. The destructor does NOT kill: the
/// owner decides when and how (SIGTERM to the group, grace period, SIGKILL).
class child_process {
 public:
  /// An empty handle (pid 0).
  child_process() = default;
  child_process(child_process&& other) noexcept;
  child_process& operator=(child_process&& other) noexcept;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  /// Closes the pidfd; the process keeps running.
  ~child_process();

  /// The process id (0 for an empty handle).
  pid_t pid() const { return pid_; }

  /// The process group id: equal to pid() with an own group, else the host's group.
  pid_t pgid() const { return pgid_; }

  /// True if the child got its own process group.
  bool own_group() const { return own_group_; }

  /// Sends `sig` to the whole group (kill(-pgid)) or, without an own group, to the
  /// process alone (through its pidfd, so a recycled pid is never hit). False if
  /// nothing received it (ESRCH) or the handle is empty.
  bool signal_group(int sig);

  /// Sends `sig` to the process only (never the group). False on ESRCH.
  bool signal(int sig);

  /// True until the process has exited. A zombie that nobody reaped yet counts as exited.
  bool alive() const;

  /// The pidfd of the process (-1 if unavailable); owned by this handle.
  int pidfd() const { return pidfd_; }

 private:
  friend caf::expected<child_process> spawn_process(const process_spec&);
  friend caf::expected<child_process> adopt_child(pid_t, bool);
  child_process(pid_t pid, pid_t pgid, bool own_group, int pidfd);
  void close() noexcept;

  pid_t pid_ = 0;
  pid_t pgid_ = 0;
  bool own_group_ = false;
  int pidfd_ = -1;
};

/// Where `spec.executable` would be found (an absolute or relative path as given, a
/// bare name in the PATH of `spec.env`), checked for being an executable file; the
/// error (`start_failed`) names the path. What `spawn_process` does first.
caf::expected<std::string> resolve_executable(const process_spec& spec);

/// Starts a process with posix_spawn. Fails with errc::start_failed and a message that
/// names the path (missing executable, not executable, bad cwd, spawn error).
caf::expected<child_process> spawn_process(const process_spec& spec);

/// Takes over `pid`, a child of this process that something else started (a worker
/// template's `clone(CLONE_PARENT)`, adapters/fork_server.hpp): a pidfd for it and,
/// with `own_group`, its own process group (pgid = pid), set here as well as by the
/// child so the group exists whichever side comes first. Fails with start_failed when
/// the process is gone or not our child.
caf::expected<child_process> adopt_child(pid_t pid, bool own_group);

/// The fd number at which children find the lifeline read end (3).
int lifeline_child_fd();

/// Process exit watching on ONE dedicated thread (pidfd + epoll), reaping with waitid so
/// no zombie remains. It is the one process-wide object of the library: a pid can be
/// reaped only once per process, so two independent reapers (or a SIGCHLD handler) would
/// steal each other's exit statuses. It installs no signal handler. If the host sets
/// SIGCHLD to SIG_IGN the kernel reaps children itself and exits are reported as unknown.
class exit_watcher {
 public:
  /// The process-wide instance; its thread starts on first use.
  static exit_watcher& instance();

  /// Calls `on_exit` once when `pid` (a child of this process) has exited and was reaped.
  /// Several callbacks per pid are allowed. If the pid was already reaped by the watcher
  /// recently, the callback runs at once with the remembered status. If the pid is not
  /// ours or is already gone, the callback gets an unknown status ({-1, 0}).
  /// Callbacks run on the watcher thread: post into your actor (caf::anon_send), never
  /// block. With `kill_group` > 0, that process group gets SIGKILL after `pid` exits
  /// and before it is reaped — while the exited leader still holds the group id, so
  /// the kill reaches what the process left behind and never a newer group that
  /// reused the id (which a kill after the reap could).
  void watch(pid_t pid, std::function<void(process_exit)> on_exit, pid_t kill_group = 0);

  /// Number of pids currently being watched (for tests and diagnostics).
  size_t watched() const;

  exit_watcher(const exit_watcher&) = delete;
  exit_watcher& operator=(const exit_watcher&) = delete;

  /// Stops and joins the watcher thread.
  ~exit_watcher();

  /// Implementation detail.
  struct impl;

 private:
  exit_watcher();
  std::unique_ptr<impl> impl_;
};

/// Waits up to `timeout` for `pid` to exit (through the exit_watcher, so it never steals
/// another watcher's status). Blocks the caller: for tests and blocking shutdown paths
/// only.
std::optional<process_exit> wait_for_exit(pid_t pid, std::chrono::milliseconds timeout);

/// Builds a complete child environment: the host's environ, then the worker defaults
/// (PYTHONUNBUFFERED=1 and, if `limit_threads`, OPENBLAS/OMP/MKL/NUMEXPR/VECLIB_MAXIMUM
/// thread counts = 1), then `overrides` (the user wins). Keys are unique in the result.
std::vector<std::pair<std::string, std::string>>
build_environment(const std::vector<std::pair<std::string, std::string>>& overrides,
                  bool limit_threads = true);

/// A private (0700) directory for sockets and ready files, removed recursively by the
/// destructor. Lives under $XDG_RUNTIME_DIR if usable, else /tmp, and keeps the path
/// short because unix socket paths are limited to 108 bytes.
class runtime_dir {
 public:
  /// Creates a fresh directory named "<prefix>-XXXXXX".
  static caf::expected<runtime_dir> create(std::string prefix = "snakepit");

  runtime_dir() = default;
  runtime_dir(runtime_dir&& other) noexcept;
  runtime_dir& operator=(runtime_dir&& other) noexcept;
  runtime_dir(const runtime_dir&) = delete;
  runtime_dir& operator=(const runtime_dir&) = delete;
  /// Removes the directory and everything in it.
  ~runtime_dir();

  /// The absolute path ("" once removed or moved from).
  const std::string& path() const { return path_; }

  /// `path() + "/" + name`.
  std::string file(const std::string& name) const;

  /// Removes the directory now (idempotent).
  void remove();

 private:
  explicit runtime_dir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

} // namespace snakepit::adapters
