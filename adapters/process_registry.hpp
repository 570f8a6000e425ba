// The persisted process registry (upstream Snakepit.Pool.ProcessRegistry with its DETS
// table, and the boot-time orphan cleanup of ApplicationCleanup / ProcessKiller): every
// OS process a runtime starts is recorded in SQLite with its pid, process group, start
// time and run id, so a later boot can kill exactly the survivors of a dead host.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

namespace snakepit::adapters {

/// One recorded process.
struct process_record {
  /// Row id (the handle `reserve` returns).
  int64_t id = 0;
  /// The run that started the process.
  std::string run_id;
  /// 0 while only reserved.
  pid_t pid = 0;
  /// Process group the sweep signals (= pid for workers, which lead their own group).
  pid_t pgid = 0;
  /// Field 22 of `/proc/<pid>/stat` (clock ticks after boot): pid + start time name
  /// one process for the lifetime of a boot, a pid alone does not.
  uint64_t start_time = 0;
  /// "reserved" or "active".
  std::string state;
  /// Free text for people (worker id).
  std::string label;
};

/// What a sweep did.
struct sweep_report {
  /// Processes (groups) that matched their record and were sent SIGKILL.
  size_t killed = 0;
  /// Entries deleted (killed, already gone, pid reused by another process, reserved).
  size_t removed = 0;
  /// Entries left alone because their run's host is still alive.
  size_t live = 0;
  /// Matched processes that did not die within the wait (entries kept for next time).
  size_t survivors = 0;
};

/// The start time of `pid` (field 22 of `/proc/<pid>/stat`), none if it does not exist.
std::optional<uint64_t> process_start_time(pid_t pid);

/// `/proc/sys/kernel/random/boot_id` (empty if unreadable).
std::string current_boot_id();

/// `$XDG_STATE_HOME/snakepit`, else `$HOME/.local/state/snakepit`, else
/// `/tmp/snakepit-state-<uid>`.
std::string default_data_dir();

/// A SQLite database (`<data_dir>/processes.db`, WAL) of the processes of every run on
/// this machine. Thread-safe: one connection behind a mutex. Activations and run starts
/// are written with `synchronous=FULL`; removals with `NORMAL` (a lost removal only
/// leaves a stale entry, which the sweep drops because the process is gone).
class process_registry {
 public:
  /// Creates `data_dir` (0700) if needed and opens (or creates) the database. Entries of
  /// earlier boots are dropped at once: their processes cannot exist any more, and the
  /// file never grows across reboots.
  static caf::expected<std::shared_ptr<process_registry>>
  open(const std::string& data_dir);

  ~process_registry();
  process_registry(const process_registry&) = delete;
  process_registry& operator=(const process_registry&) = delete;

  /// The database file.
  const std::string& path() const { return path_; }

  /// Records that `run_id` belongs to this host process (pid and start time), so
  /// concurrent runtimes sharing the data directory never sweep each other.
  caf::error begin_run(const std::string& run_id);

  /// Same, naming the host explicitly (tests simulate dead hosts with it).
  caf::error begin_run(const std::string& run_id, pid_t host_pid,
                       uint64_t host_start_time);

  /// Forgets the run if none of its entries remain (a run that left survivors keeps
  /// its row so the next boot can sweep them).
  caf::error end_run(const std::string& run_id);

  /// Reserves an entry before spawning; returns its id.
  caf::expected<int64_t> reserve(const std::string& run_id,
                                 const std::string& label = {});

  /// Turns a reservation into an active entry once the pid is known.
  caf::error activate(int64_t id, pid_t pid, pid_t pgid, uint64_t start_time);

  /// Reserve + activate in one write, for callers that learn the pid from the spawn
  /// itself (posix_spawn returns only once the child exists).
  caf::error record(const std::string& run_id, pid_t pid, pid_t pgid, uint64_t start_time,
                    const std::string& label = {});

  /// Deletes the entry of `pid` in `run_id` (the process was reaped).
  caf::error remove(const std::string& run_id, pid_t pid);

  /// Deletes a reservation or entry by id.
  caf::error remove(int64_t id);

  /// Every entry, or those of one run.
  std::vector<process_record> entries(const std::string& run_id = {}) const;

  /// Run ids with a row in the runs table.
  std::vector<std::string> runs() const;

  /// Sweeps the entries of every run whose host is gone (and never `keep_run_id`):
  /// a process is killed (SIGKILL to its group when it leads one) only when its pid
  /// AND start time match the record; entries whose process is gone or whose pid now
  /// names another process are removed without a signal. Waits up to `wait` for
  /// killed processes to disappear.
  sweep_report sweep(const std::string& keep_run_id = {},
                     std::chrono::milliseconds wait = std::chrono::milliseconds{3000});

 private:
  explicit process_registry(std::string path);
  caf::error exec(const char* sql);

  struct db;
  std::string path_;
  mutable std::mutex mtx_;
  std::unique_ptr<db> db_;
  std::string boot_id_;
};

} // namespace snakepit::adapters
