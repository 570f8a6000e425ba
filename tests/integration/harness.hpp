// Helpers of the integration tests: configs for small real pools and the leak checks
// every test ends with (no process of the run alive, no runtime dir), plus the helpers
// every suite shares (tests/support).
#pragma once

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <future>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "actors/runtime/runtime.hpp"
#include "adapters/errors.hpp"
#include "tests/support/checks.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/files.hpp"
#include "tests/support/python_config.hpp"

namespace snakepit::testing {

inline config small_config(size_t workers = 2) {
  config cfg;
  cfg.pools[0].pool_size = workers;
  cfg.pools[0].graceful_shutdown_timeout = std::chrono::milliseconds{2000};
  return cfg;
}

inline bool pid_alive(int pid) {
  // A zombie counts as dead: it no longer runs anything.
  std::ifstream stat{"/proc/" + std::to_string(pid) + "/stat"};
  if (!stat)
    return false;
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

/// /proc/<pid>/cmdline with its NULs as spaces; "" when unreadable.
inline std::string command_line(int pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/cmdline"};
  std::stringstream ss;
  ss << in.rdbuf();
  auto cmd = ss.str();
  for (auto& c : cmd)
    if (c == '\0')
      c = ' ';
  return cmd;
}

/// Pids of live processes whose command line carries `marker`.
inline std::vector<int> processes_with(const std::string& marker) {
  std::vector<int> out;
  auto* dir = ::opendir("/proc");
  if (!dir)
    return out;
  while (auto* ent = ::readdir(dir)) {
    int pid = std::atoi(ent->d_name);
    if (pid <= 0)
      continue;
    if (command_line(pid).find(marker) != std::string::npos && pid_alive(pid))
      out.push_back(pid);
  }
  ::closedir(dir);
  return out;
}

/// Whether `pid` is a worker template (python/snakepit_bridge/forkserver.py): a
/// process of the runtime that is no worker.
inline bool is_worker_template(int pid) {
  return command_line(pid).find("snakepit_bridge.forkserver") != std::string::npos;
}

/// The runtime's live processes without its worker templates.
inline std::vector<int> live_worker_processes(const runtime& rt) {
  std::vector<int> out;
  for (auto pid : rt.live_processes())
    if (!is_worker_template(pid))
      out.push_back(pid);
  return out;
}

/// The workers of `pool` that have a process serving (ready, busy or draining):
/// `list_workers` without those starting or restarting. Tests that wait for a
/// replacement to serve use this.
inline caf::expected<std::vector<worker_info>>
serving_workers(runtime& rt, const std::string& pool = {}) {
  auto ws = rt.list_workers(pool);
  if (!ws)
    return ws;
  std::vector<worker_info> out;
  for (auto& w : *ws)
    if (w.pid > 0)
      out.push_back(std::move(w));
  return out;
}

inline bool path_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

/// Options of a call that names its session in the request metadata (as upstream
/// callers do), with a generous deadline.
inline execute_options in_session(const std::string& sid) {
  execute_options opts;
  opts.metadata["session_id"] = sid;
  opts.timeout = std::chrono::seconds{60};
  return opts;
}

/// `execute_async` with its result delivered to the returned future. The promise is
/// shared with the callback, so a test that stops early (a failed REQUIRE) leaves the
/// callback no dangling reference.
inline std::future<execute_result> call_async(runtime& rt, const std::string& command,
                                              json args = json::object(),
                                              execute_options opts = {}) {
  auto done = std::make_shared<std::promise<execute_result>>();
  rt.execute_async(command, std::move(args), std::move(opts),
                   [done](execute_result res) { done->set_value(std::move(res)); });
  return done->get_future();
}

/// A gate for the showcase tool `wait_gate`: a call with `args()` holds its worker
/// thread until `open()` creates the gate's file, so a test keeps a worker busy for
/// exactly as long as it needs, however slow the machine. The call gives up after
/// `timeout` (and says so: `opened` false); the destructor opens the gate, so a test
/// that stops early holds no worker.
class gate {
 public:
  gate() : dir_{"gate"}, path_{dir_.path + "/open"} {}

  ~gate() { open(); }

  gate(const gate&) = delete;
  gate& operator=(const gate&) = delete;

  /// Arguments of `wait_gate` for this gate.
  json args(std::chrono::milliseconds timeout = std::chrono::seconds{30}) const {
    return {{"path", path_}, {"timeout_ms", timeout.count()}};
  }

  /// Lets every call held by this gate return.
  void open() { std::ofstream{path_}.flush(); }

 private:
  temp_dir dir_;
  std::string path_;
};

/// Stops the runtime and checks that nothing of it survives.
inline void stop_and_check(runtime& rt) {
  auto run_id = rt.run_id();
  auto dir = rt.runtime_dir();
  auto pids = rt.live_processes();
  CHECK_FALSE(rt.stop());
  for (auto pid : pids)
    CHECK_MSG(!pid_alive(pid), "worker pid " << pid << " survived stop()");
  CHECK(processes_with("--snakepit-run-id " + run_id).empty());
  CHECK_FALSE(path_exists(dir));
  CHECK(rt.live_processes().empty());
}

} // namespace snakepit::testing
