#include "adapters/process_registry.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <doctest/doctest.h>

#include "adapters/errors.hpp"
#include "adapters/process.hpp"
#include "tests/support/checks.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/files.hpp"

using namespace snakepit::adapters;
using namespace std::chrono_literals;
using snakepit::testing::eventually;

namespace {

/// A private data directory, removed at scope exit.
struct registry_dir : snakepit::testing::temp_dir {
  registry_dir() : temp_dir("registry-test") {}
};

/// Running and not a zombie.
bool running(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string line;
  if (!in || !std::getline(in, line))
    return false;
  auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

/// Starts `sh -c script` in its own group, without the lifeline.
child_process start_sh(const std::string& script) {
  process_spec spec;
  spec.executable = "/bin/sh";
  spec.args = {"-c", script};
  spec.pass_lifeline = false;
  spec.new_process_group = true;
  auto child = spawn_process(spec);
  REQUIRE(child);
  return std::move(*child);
}

/// Kills and reaps a test child.
void finish(child_process& child) {
  child.signal_group(SIGKILL);
  CHECK(wait_for_exit(child.pid(), 10s));
}

/// A run id whose host is "dead": our pid with a start time that is not ours.
void begin_dead_run(process_registry& reg, const std::string& run_id) {
  auto self = process_start_time(::getpid());
  REQUIRE(self);
  REQUIRE_FALSE(reg.begin_run(run_id, ::getpid(), *self + 1));
}

uintmax_t files_size(const std::string& dir) {
  uintmax_t total = 0;
  for (auto& e : std::filesystem::directory_iterator(dir))
    total += e.file_size();
  return total;
}

} // namespace

TEST_SUITE("adapters.process_registry") {

  TEST_CASE("process_start_time reads a live process and nothing for a missing one") {
    auto self = process_start_time(::getpid());
    REQUIRE(self);
    CHECK(*self > 0);
    CHECK(process_start_time(::getpid()) == self);
    CHECK_FALSE(process_start_time(0));
    CHECK_FALSE(process_start_time(-5));
    // pid_max is at most 2^22.
    CHECK_FALSE(process_start_time(4194305 + 17));
    CHECK_FALSE(current_boot_id().empty());
  }

  TEST_CASE("default_data_dir follows XDG_STATE_HOME, then HOME") {
    auto* old_state = std::getenv("XDG_STATE_HOME");
    std::string saved = old_state ? old_state : "";
    ::setenv("XDG_STATE_HOME", "/x/state", 1);
    CHECK(default_data_dir() == "/x/state/snakepit");
    ::setenv("XDG_STATE_HOME", "relative", 1);
    if (auto* home = std::getenv("HOME"); home && home[0] == '/')
      CHECK(default_data_dir() == std::string{home} + "/.local/state/snakepit");
    if (old_state)
      ::setenv("XDG_STATE_HOME", saved.c_str(), 1);
    else
      ::unsetenv("XDG_STATE_HOME");
  }

  TEST_CASE("reserve, activate and remove leave exactly the expected rows") {
    registry_dir dir;
    auto reg = process_registry::open(dir.path + "/nested/state");
    REQUIRE_OK(reg);
    auto& r = **reg;
    struct stat st;
    REQUIRE(::stat((dir.path + "/nested/state").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
    REQUIRE_FALSE(r.begin_run("run_a"));
    auto id = r.reserve("run_a", "w1");
    REQUIRE(id);
    auto rows = r.entries("run_a");
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].state == "reserved");
    CHECK(rows[0].pid == 0);
    CHECK(rows[0].label == "w1");
    REQUIRE_FALSE(r.activate(*id, 4242, 4242, 99));
    rows = r.entries("run_a");
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].state == "active");
    CHECK(rows[0].pid == 4242);
    CHECK(rows[0].pgid == 4242);
    CHECK(rows[0].start_time == 99);
    CHECK(r.activate(*id + 100, 1, 1, 1));
    REQUIRE_FALSE(r.record("run_b", 4343, 4343, 7, "w2"));
    CHECK(r.entries().size() == 2);
    CHECK(r.entries("run_b").size() == 1);
    REQUIRE_FALSE(r.remove("run_a", 4242));
    CHECK(r.entries("run_a").empty());
    CHECK(r.entries().size() == 1);
    // A run with entries left keeps its row; without, end_run forgets it.
    REQUIRE_FALSE(r.begin_run("run_b"));
    REQUIRE_FALSE(r.end_run("run_b"));
    CHECK(r.runs() == std::vector<std::string>{"run_a", "run_b"});
    REQUIRE_FALSE(r.remove("run_b", 4343));
    REQUIRE_FALSE(r.end_run("run_b"));
    REQUIRE_FALSE(r.end_run("run_a"));
    CHECK(r.runs().empty());
    CHECK(r.entries().empty());
  }

  TEST_CASE("entries survive closing and reopening the database") {
    registry_dir dir;
    {
      auto reg = process_registry::open(dir.path);
      REQUIRE(reg);
      REQUIRE_FALSE((*reg)->begin_run("r1"));
      REQUIRE_FALSE((*reg)->record("r1", 11, 11, 5, "w"));
    }
    auto reg = process_registry::open(dir.path);
    REQUIRE(reg);
    auto rows = (*reg)->entries();
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].pid == 11);
    CHECK((*reg)->runs() == std::vector<std::string>{"r1"});
  }

  TEST_CASE("the sweep kills a recorded process group when pid and start time match") {
    registry_dir dir;
    auto reg = process_registry::open(dir.path);
    REQUIRE(reg);
    auto& r = **reg;
    // A "worker" with a grandchild in its group.
    auto mark = dir.path + "/grandchild";
    auto worker = start_sh("sleep 60 & echo $! > '" + mark + ".tmp'; mv '" + mark +
                           ".tmp' '" + mark + "'; wait");
    REQUIRE(eventually([&] { return std::filesystem::exists(mark); }));
    pid_t grandchild = 0;
    std::ifstream{mark} >> grandchild;
    REQUIRE(grandchild > 0);
    REQUIRE(running(grandchild));
    auto start = process_start_time(worker.pid());
    REQUIRE(start);
    begin_dead_run(r, "dead_run");
    REQUIRE_FALSE(r.record("dead_run", worker.pid(), worker.pid(), *start, "w1"));
    auto rep = r.sweep("current_run");
    CHECK(rep.killed == 1);
    CHECK(rep.removed == 1);
    CHECK(rep.survivors == 0);
    auto exit = wait_for_exit(worker.pid(), 10s);
    REQUIRE(exit);
    CHECK(exit->signal == SIGKILL);
    CHECK(eventually([&] { return !running(grandchild); }));
    CHECK(r.entries().empty());
    CHECK(r.runs().empty());
  }

  TEST_CASE(
    "stale identity: a recorded pid that now names another process is not killed") {
    registry_dir dir;
    auto reg = process_registry::open(dir.path);
    REQUIRE(reg);
    auto& r = **reg;
    auto unrelated = start_sh("exec sleep 60");
    auto start = process_start_time(unrelated.pid());
    REQUIRE(start);
    begin_dead_run(r, "old_run");
    // Same pid, different start time: the recorded process died, the pid was reused.
    REQUIRE_FALSE(
      r.record("old_run", unrelated.pid(), unrelated.pid(), *start + 1000, "w1"));
    auto rep = r.sweep();
    CHECK(rep.killed == 0);
    CHECK(rep.removed == 1);
    std::this_thread::sleep_for(200ms);
    CHECK(running(unrelated.pid()));
    CHECK(unrelated.alive());
    CHECK(r.entries().empty());
    finish(unrelated);
  }

  TEST_CASE("entries of a run whose host is alive are left alone") {
    registry_dir dir;
    auto reg = process_registry::open(dir.path);
    REQUIRE(reg);
    auto& r = **reg;
    auto worker = start_sh("exec sleep 60");
    auto start = process_start_time(worker.pid());
    REQUIRE(start);
    REQUIRE_FALSE(r.begin_run("other_live_runtime")); // host = this process, alive
    REQUIRE_FALSE(r.record("other_live_runtime", worker.pid(), worker.pid(), *start));
    auto rep = r.sweep("my_run");
    CHECK(rep.killed == 0);
    CHECK(rep.removed == 0);
    CHECK(rep.live == 1);
    CHECK(running(worker.pid()));
    CHECK(r.entries().size() == 1);
    // The run being kept is never swept either, even when its host looks dead.
    begin_dead_run(r, "my_run");
    REQUIRE_FALSE(r.record("my_run", worker.pid(), worker.pid(), *start));
    rep = r.sweep("my_run");
    CHECK(rep.killed == 0);
    CHECK(rep.live == 2);
    CHECK(running(worker.pid()));
    finish(worker);
    REQUIRE_FALSE(r.remove("other_live_runtime", worker.pid()));
    REQUIRE_FALSE(r.remove("my_run", worker.pid()));
    REQUIRE_FALSE(r.end_run("other_live_runtime"));
    REQUIRE_FALSE(r.end_run("my_run"));
    CHECK(r.entries().empty());
  }

  TEST_CASE(
    "gone processes, reservations and entries without a run are removed silently") {
    registry_dir dir;
    auto reg = process_registry::open(dir.path);
    REQUIRE(reg);
    auto& r = **reg;
    auto gone = start_sh("exit 0");
    auto gone_pid = gone.pid();
    REQUIRE(wait_for_exit(gone_pid, 10s));
    begin_dead_run(r, "old");
    REQUIRE_FALSE(r.record("old", gone_pid, gone_pid, 12345));
    REQUIRE(r.reserve("old", "never_spawned"));
    REQUIRE_FALSE(r.record("no_run_row", 4194305 + 3, 4194305 + 3, 1));
    auto rep = r.sweep();
    CHECK(rep.killed == 0);
    CHECK(rep.removed == 3);
    CHECK(r.entries().empty());
    CHECK(r.runs().empty());
  }

  TEST_CASE("entries of an earlier boot are dropped when the database is opened") {
    registry_dir dir;
    {
      auto reg = process_registry::open(dir.path);
      REQUIRE(reg);
      REQUIRE_FALSE((*reg)->begin_run("before_reboot"));
      REQUIRE_FALSE((*reg)->record("before_reboot", ::getpid(), ::getpid(), 1));
    }
    {
      sqlite3* db = nullptr;
      REQUIRE(sqlite3_open((dir.path + "/processes.db").c_str(), &db) == SQLITE_OK);
      CHECK(sqlite3_exec(db,
                         "UPDATE processes SET boot_id = 'another-boot';"
                         "UPDATE runs SET boot_id = 'another-boot'",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
      sqlite3_close(db);
    }
    auto reg = process_registry::open(dir.path);
    REQUIRE(reg);
    CHECK((*reg)->entries().empty());
    CHECK((*reg)->runs().empty());
  }

  TEST_CASE("the database does not grow over many boots and sweeps") {
    registry_dir dir;
    uintmax_t first = 0;
    for (int boot = 0; boot < 6; ++boot) {
      auto reg = process_registry::open(dir.path);
      REQUIRE(reg);
      auto& r = **reg;
      auto rep = r.sweep();
      CHECK(rep.killed == 0);
      CHECK(r.entries().empty());
      auto run = "run" + std::to_string(boot);
      begin_dead_run(r, run);
      // Entries a dead host left: processes that no longer exist.
      for (int i = 0; i < 300; ++i)
        REQUIRE_FALSE(
          r.record(run, 4194305 + i, 4194305 + i, 1, "w" + std::to_string(i)));
      // And entries added and removed while running.
      for (int i = 0; i < 300; ++i) {
        REQUIRE_FALSE(r.record(run, 100000 + i, 100000 + i, 1));
        REQUIRE_FALSE(r.remove(run, 100000 + i));
      }
      CHECK(r.entries(run).size() == 300);
      r.sweep();
      CHECK(r.entries().empty());
      auto size = files_size(dir.path);
      if (boot == 0)
        first = size;
      else
        CHECK_MSG(size <= first, "boot " << boot << ": " << size << " > " << first);
    }
    CHECK(first < 512 * 1024);
  }

} // TEST_SUITE
