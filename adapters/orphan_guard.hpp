// A reaper process that outlives the host just long enough to kill the process groups of
// its workers, for worker commands that ignore EOF, SIGTERM and the lifeline. Plays the
// part of upstream Snakepit's `--snakepit-run-id` cleanup and of an Erlang port's
// guarantee that the external program is closed when its owner dies.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>

#include <caf/error.hpp>
#include <caf/expected.hpp>

namespace snakepit::adapters {

/// Guarantees that watched process groups do not outlive the host, even when the host is
/// killed by SIGKILL. `create` forks a small reaper process (its own session, no host fd
/// but one pipe, no host memory it does not need) that keeps a table of process group
/// ids. When the pipe reaches EOF (the host died, exec'ed or destroyed the guard) or the
/// host's pid is no longer its parent's, the reaper sends SIGTERM and SIGCONT to every
/// group still in its table, waits up to 300 ms for them to go, SIGKILLs what is left
/// and exits.
///
/// Usage: create one guard per host, early (before the host grows: see `trimmed`);
/// `watch(child.pgid())` right after `spawn_process` returns, `unwatch` once the worker's
/// exit was seen (ideally from its exit_watcher callback, so a group id that the kernel
/// hands out again is not killed by mistake). All member functions are thread-safe and
/// never block, except `create` (waits for the reaper to be ready: about 1 ms for a
/// small host, about 0.13 s per GB the host has resident) and the destructor (up to 1 s,
/// only while the reaper does not read).
class orphan_guard {
 public:
  /// Groups one guard can watch at once.
  static constexpr size_t max_groups = 4096;

  /// Starts the reaper. Fails with errc::start_failed if the pipe or the process cannot
  /// be created or the reaper does not report ready within 5 s.
  static caf::expected<orphan_guard> create();

  /// An empty guard: no reaper; `watch` fails, everything else does nothing.
  orphan_guard() noexcept;
  orphan_guard(orphan_guard&& other) noexcept;
  orphan_guard& operator=(orphan_guard&& other) noexcept;
  orphan_guard(const orphan_guard&) = delete;
  orphan_guard& operator=(const orphan_guard&) = delete;

  /// Sends what is still pending (waiting up to 1 s for the reaper to read), then closes
  /// the pipe: the reaper kills every group still watched and exits; the exit_watcher
  /// reaps it. Does not wait for that.
  ~orphan_guard();

  /// Adds process group `pgid` to the reaper's table (a second watch of the same group
  /// is a no-op). Fails with errc::invalid_argument for a pgid below 2 or the host's own
  /// group (the reaper would kill whatever shares it with the host), with
  /// errc::quota_exceeded when `max_groups` groups are watched, and with
  /// errc::internal once the reaper is gone (killed from outside). Never blocks: if the
  /// pipe is full the change is kept and sent with the next call (see `pending`).
  caf::error watch(pid_t pgid);

  /// Removes `pgid` from the table; unknown groups are ignored. Never blocks.
  void unwatch(pid_t pgid);

  /// Sends the changes that a full pipe held back; true once nothing is pending. Never
  /// blocks. Every `watch` and `unwatch` does this first.
  bool flush();

  /// Groups whose watched/unwatched state the reaper has not been told yet. Normally 0;
  /// it grows only while the reaper cannot read (stopped, starved), and is bounded by
  /// twice `max_groups` because only the latest state of each group is kept.
  size_t pending() const;

  /// Groups currently watched (as seen by the caller, sent or pending).
  size_t watched() const;

  /// The reaper's pid (0 for an empty guard). It is a child of the host, leads its own
  /// session and process group, and names itself "snakepit-reaper" (comm and cmdline),
  /// so it is never mistaken for a worker or a copy of the host.
  pid_t pid() const;

  /// False once the reaper has exited (it only does so early if something killed it).
  bool alive() const;

  /// True if the reaper dropped the host memory it inherited (its private anonymous
  /// mappings), so it keeps about 100 kB of its own however large the host is or
  /// becomes. False on architectures other than x86-64 and in sanitizer builds: the
  /// reaper then keeps a copy-on-write image of the host, which grows towards the
  /// host's size at `create` as the host rewrites or frees that memory.
  bool trimmed() const;

  /// Implementation detail.
  struct impl;

 private:
  explicit orphan_guard(std::unique_ptr<impl> impl);
  std::unique_ptr<impl> impl_;
};

} // namespace snakepit::adapters
