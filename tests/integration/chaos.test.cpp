// Chaos: a host killed by SIGKILL (its workers and their grandchildren must die with
// it, the next boot sweeps the stale registry entries), a stale registry identity that
// must not be killed, and a storm of worker kills under load.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include "adapters/process.hpp"
#include "adapters/process_registry.hpp"

#include "chaos_adapter.hpp"
#include "harness.hpp"

using namespace std::chrono_literals;
using namespace snakepit::testing;
namespace ad = snakepit::adapters;

namespace {

using clock_type = std::chrono::steady_clock;

/// A private data directory (never the user's state dir), removed at scope exit.
struct chaos_dir : temp_dir {
  chaos_dir() : temp_dir("chaos") {}
};

/// A kill -9 of the storm: when (taken just before the signal) and the worker id the
/// process served ("" for a worker template or a process still starting).
struct kill_record {
  clock_type::time_point at;
  std::string worker;
};

/// The id of the worker whose process is `pid`, "" if none is listed with it.
std::string worker_of(snakepit::runtime& r, int pid) {
  if (auto ws = r.list_workers())
    for (auto& w : *ws)
      if (w.pid == pid)
        return w.id;
  return {};
}

/// The worker a worker_crashed error names ("worker <id>: ..."), "" if none.
std::string crashed_worker(const caf::error& err) {
  static const std::regex re{R"(worker (\S+): )"};
  std::smatch m;
  auto text = snakepit::describe(err);
  return std::regex_search(text, m, re) ? m[1].str() : std::string{};
}

/// Index of the last kill of `worker` at or before `t`; `log.size()` if none.
size_t killed_before(const std::vector<kill_record>& log, const std::string& worker,
                     clock_type::time_point t) {
  auto found = log.size();
  for (size_t i = 0; i < log.size(); ++i)
    if (!worker.empty() && log[i].worker == worker && log[i].at <= t)
      found = i;
  return found;
}

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

/// One run of tests/integration/host_helper.cpp.
struct host {
  ad::child_process proc;
  std::string run_id;
  std::vector<int> workers;
  std::vector<int> grandchildren;
  /// Worker templates (pool_config::start_method): processes of the run, no workers.
  std::vector<int> templates;

  host() = default;
  host(host&&) = default;
  host& operator=(host&&) = default;
  ~host() {
    // A failed test must not leave the helper running (its workers follow it).
    if (proc.pid() > 0 && proc.alive()) {
      proc.signal_group(SIGKILL);
      ad::wait_for_exit(proc.pid(), 10s);
    }
  }

  /// Kills the host with SIGKILL and reaps it.
  void kill_hard() {
    REQUIRE(proc.signal(SIGKILL));
    auto exit = ad::wait_for_exit(proc.pid(), 10s);
    REQUIRE(exit);
    CHECK(exit->signal == SIGKILL);
  }

  std::vector<int> ours() const {
    auto all = workers;
    all.insert(all.end(), grandchildren.begin(), grandchildren.end());
    all.insert(all.end(), templates.begin(), templates.end());
    return all;
  }
};

/// Starts the helper host and reads what it started (generous: workers start slowly
/// on a loaded machine).
host boot_host(const std::string& data_dir, int workers, int grandchildren,
               std::vector<std::pair<std::string, std::string>> env = {}) {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  ad::process_spec spec;
  spec.executable = SNAKEPIT_HOST_HELPER;
  spec.args = {data_dir, std::to_string(workers), std::to_string(grandchildren)};
  spec.pass_lifeline = false;
  spec.new_process_group = true;
  spec.stdout_fd = fds[1];
  if (!env.empty())
    spec.env = ad::build_environment(env);
  auto child = ad::spawn_process(spec);
  ::close(fds[1]);
  REQUIRE_OK(child);
  host h;
  h.proc = std::move(*child);
  std::string buf;
  auto deadline = clock_type::now() + 120s;
  bool ready = false;
  while (!ready && clock_type::now() < deadline) {
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0)
      continue;
    char chunk[512];
    auto n = ::read(fds[0], chunk, sizeof chunk);
    if (n <= 0)
      break;
    buf.append(chunk, static_cast<size_t>(n));
    size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      auto line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      if (line.rfind("run ", 0) == 0)
        h.run_id = line.substr(4);
      else if (line.rfind("worker ", 0) == 0)
        h.workers.push_back(std::stoi(line.substr(7)));
      else if (line.rfind("template ", 0) == 0)
        h.templates.push_back(std::stoi(line.substr(9)));
      else if (line.rfind("grandchild ", 0) == 0)
        h.grandchildren.push_back(std::stoi(line.substr(11)));
      else if (line == "ready")
        ready = true;
    }
  }
  ::close(fds[0]);
  REQUIRE_MSG(ready, "the host helper did not report ready");
  REQUIRE(h.workers.size() == static_cast<size_t>(workers));
  REQUIRE(h.grandchildren.size() == static_cast<size_t>(grandchildren));
  return h;
}

std::shared_ptr<ad::process_registry> open_registry(const std::string& dir) {
  auto reg = ad::process_registry::open(dir);
  REQUIRE_OK(reg);
  return *reg;
}

} // namespace

TEST_SUITE("chaos") {

  TEST_CASE(
    "a host killed by SIGKILL takes every worker and grandchild along and reboots "
    "sweep its entries until only the current run is recorded") {
    chaos_dir dir;
    std::string previous_run;
    size_t previous_rows = 0;
    double worst = 0;
    for (int boot = 0; boot <= 5; ++boot) {
      CAPTURE(boot);
      if (!previous_run.empty())
        CHECK(open_registry(dir.path)->entries(previous_run).size() ==
              previous_rows); // stale
      auto h = boot_host(dir.path, 4, 4);
      // Workers and their template: the processes the runtime started itself.
      auto recorded = h.workers;
      recorded.insert(recorded.end(), h.templates.begin(), h.templates.end());
      for (auto pid : h.ours())
        CHECK(pid_alive(pid));
      {
        // The boot swept the previous run; only this run is recorded, with identities.
        auto reg = open_registry(dir.path);
        auto rows = reg->entries();
        CHECK(rows.size() == recorded.size());
        CHECK(reg->runs() == std::vector<std::string>{h.run_id});
        for (auto& r : rows) {
          CHECK(r.run_id == h.run_id);
          CHECK(r.state == "active");
          CHECK(r.pgid == r.pid);
          CHECK(std::find(recorded.begin(), recorded.end(), r.pid) != recorded.end());
          CHECK(ad::process_start_time(r.pid) == r.start_time);
        }
      }
      h.kill_hard();
      auto t0 = clock_type::now();
      auto all_gone = [&] {
        for (auto pid : h.ours())
          if (pid_alive(pid))
            return false;
        return true;
      };
      bool in_time = eventually(all_gone, 2s);
      auto took = seconds_since(t0);
      if (!in_time)
        eventually(all_gone, 20s);
      worst = std::max(worst, took);
      CHECK_MSG(in_time,
                "boot " << boot << ": processes outlived the host by more than 2 s");
      for (auto pid : h.ours())
        CHECK_MSG(!pid_alive(pid), "pid " << pid << " survived its host");
      CHECK(processes_with("--snakepit-run-id " + h.run_id).empty());
      previous_run = h.run_id;
      previous_rows = recorded.size();
    }
    MESSAGE("slowest death of all workers and grandchildren after a host SIGKILL: "
            << worst << " s");
    // Nothing was left to kill: the sweep only drops the last run's entries.
    snakepit::config cfg;
    cfg.data_dir = dir.path;
    auto rep = snakepit::cleanup_orphans(cfg);
    REQUIRE_OK(rep);
    CHECK(rep->killed == 0);
    CHECK(rep->removed == previous_rows);
    auto reg = open_registry(dir.path);
    CHECK(reg->entries().empty());
    CHECK(reg->runs().empty());
  }

  TEST_CASE("workers launched by upstream's convention and their grandchildren are gone "
            "within 2 s of a host SIGKILL") {
    chaos_dir dir;
    auto h = boot_host(dir.path, 2, 2, {{"SNAKEPIT_HELPER_LAUNCH", "upstream"}});
    for (auto pid : h.ours())
      REQUIRE(pid_alive(pid));
    h.kill_hard();
    auto all_gone = [&] {
      for (auto pid : h.ours())
        if (pid_alive(pid))
          return false;
      return true;
    };
    bool in_time = eventually(all_gone, 2s);
    if (!in_time) {
      for (auto pid : h.ours())
        ::kill(pid, SIGKILL);
      eventually(all_gone, 5s);
    }
    CHECK_MSG(in_time, "a worker outlived its host by more than 2 s");
  }

  TEST_CASE("foreign stdio workers that ignore EOF, SIGTERM and the lifeline are gone "
            "within 2 s of a host SIGKILL (the orphan guard)") {
    chaos_dir dir;
    auto h = boot_host(dir.path, 2, 0, {{"SNAKEPIT_HELPER_ROGUE", "1"}});
    // They really ignore SIGTERM: without the reaper's SIGKILL they would survive.
    for (auto pid : h.workers)
      REQUIRE(::kill(pid, SIGTERM) == 0);
    std::this_thread::sleep_for(300ms);
    for (auto pid : h.workers)
      REQUIRE(pid_alive(pid));
    h.kill_hard();
    auto t0 = clock_type::now();
    auto all_gone = [&] {
      for (auto pid : h.workers)
        if (pid_alive(pid))
          return false;
      return true;
    };
    bool in_time = eventually(all_gone, 2s);
    auto took = seconds_since(t0);
    if (!in_time) {
      for (auto pid : h.workers) // never leave them behind, whatever the outcome
        ::kill(pid, SIGKILL);
      eventually(all_gone, 5s);
    }
    CHECK_MSG(in_time, "a foreign worker outlived its host by more than 2 s");
    MESSAGE("foreign workers gone " << took << " s after the host's SIGKILL");
  }

  TEST_CASE(
    "workers of a host that stops answering (SIGSTOP) miss its heartbeats and exit") {
    chaos_dir dir;
    auto h = boot_host(dir.path, 2, 1, {{"SNAKEPIT_HELPER_HEARTBEAT_MS", "100"}});
    for (auto pid : h.ours())
      CHECK(pid_alive(pid));
    // Stopped, not dead: the lifeline pipe stays open, only the heartbeat can tell.
    REQUIRE(h.proc.signal(SIGSTOP));
    auto t0 = clock_type::now();
    // The template (if any) runs no heartbeat: it waits for the host's word, and goes
    // when the host dies.
    auto gone = [&](const std::vector<int>& pids) {
      for (auto pid : pids)
        if (pid_alive(pid))
          return false;
      return true;
    };
    auto workers = h.workers;
    workers.insert(workers.end(), h.grandchildren.begin(), h.grandchildren.end());
    // 2 misses of (100 ms interval + 200 ms timeout), plus the worker's stop.
    CHECK_MSG(eventually([&] { return gone(workers); }, 5s),
              "workers outlived a stopped host");
    MESSAGE("workers of a stopped host gone after " << seconds_since(t0) << " s");
    CHECK(h.proc.alive()); // the host itself is only stopped
    h.kill_hard();
    CHECK_MSG(eventually([&] { return gone(h.templates); }, 2s),
              "a worker template outlived its host by more than 2 s");
    // Its runtime directory and registry entries go with the next sweep.
    snakepit::config cfg;
    cfg.data_dir = dir.path;
    auto rep = snakepit::cleanup_orphans(cfg);
    REQUIRE_OK(rep);
    CHECK(rep->killed == 0);
    CHECK(open_registry(dir.path)->entries().empty());
  }

  TEST_CASE("a booting runtime kills a recorded orphan but not an unrelated process that "
            "now has a recorded pid") {
    chaos_dir dir;
    auto start_sleep = [] {
      ad::process_spec spec;
      spec.executable = "/bin/sleep";
      spec.args = {"120"};
      spec.pass_lifeline = false;
      auto child = ad::spawn_process(spec);
      REQUIRE(child);
      return std::move(*child);
    };
    auto orphan = start_sleep();
    auto unrelated = start_sleep();
    {
      auto reg = open_registry(dir.path);
      auto self = ad::process_start_time(::getpid());
      REQUIRE(self);
      // A run whose host is gone (same pid, another start time: a different process).
      REQUIRE_FALSE(reg->begin_run("deadrun", ::getpid(), *self + 1));
      auto orphan_start = ad::process_start_time(orphan.pid());
      auto unrelated_start = ad::process_start_time(unrelated.pid());
      REQUIRE(orphan_start);
      REQUIRE(unrelated_start);
      REQUIRE_FALSE(reg->record("deadrun", orphan.pid(), orphan.pid(), *orphan_start));
      // The recorded process died long ago and its pid now names `unrelated`.
      REQUIRE_FALSE(
        reg->record("deadrun", unrelated.pid(), unrelated.pid(), *unrelated_start - 1));
    }
    auto cfg = small_config(1);
    cfg.data_dir = dir.path;
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto exit = ad::wait_for_exit(orphan.pid(), 10s);
    REQUIRE(exit);
    CHECK(exit->signal == SIGKILL);
    std::this_thread::sleep_for(200ms);
    CHECK(unrelated.alive());
    CHECK(pid_alive(unrelated.pid()));
    auto run_id = (*rt)->run_id();
    {
      auto reg = open_registry(dir.path);
      auto rows = reg->entries();
      // The worker and its template (pool_config::start_method).
      REQUIRE(rows.size() == (*rt)->live_processes().size());
      for (auto& row : rows)
        CHECK(row.run_id == run_id);
      CHECK(reg->runs() == std::vector<std::string>{run_id});
    }
    stop_and_check(**rt);
    auto reg = open_registry(dir.path);
    CHECK(reg->entries().empty());
    CHECK(reg->runs().empty());
    unrelated.signal(SIGKILL);
    CHECK(ad::wait_for_exit(unrelated.pid(), 10s));
  }

  TEST_CASE(
    "a worker killed by SIGKILL while the host lives takes what it started along") {
    auto cfg = small_config(1);
    use_chaos_adapter(cfg);
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto spawned = r.execute("spawn_grandchild", snakepit::json::object());
    REQUIRE_OK(spawned);
    auto grandchild = spawned->result.at("pid").get<int>();
    auto worker = spawned->result.at("worker").get<int>();
    REQUIRE(pid_alive(grandchild));
    REQUIRE(::kill(worker, SIGKILL) == 0);
    // The exit watcher kills the worker's group before it reaps the worker.
    auto t0 = clock_type::now();
    while (pid_alive(grandchild) && clock_type::now() - t0 < 3s)
      std::this_thread::sleep_for(5ms);
    CHECK_MSG(!pid_alive(grandchild), "the grandchild outlived its worker");
    // The replacement serves.
    bool served = false;
    for (int i = 0; i < 200 && !served; ++i) {
      served = static_cast<bool>(r.execute("ping", snakepit::json::object()));
      if (!served)
        std::this_thread::sleep_for(25ms);
    }
    CHECK(served);
    stop_and_check(r);
  }

  TEST_CASE(
    "crash storm: 30 random kill -9 during 400 requests at concurrency 16: only "
    "non-idempotent calls in flight at a kill fail, with worker_crashed, every call "
    "returns before its deadline and the pool is back to 8 ready workers") {
    chaos_dir dir;
    auto cfg = small_config(8);
    cfg.data_dir = dir.path;
    // This test is about crash handling, not restart intensity or the circuit breaker:
    // 30 kills over a few seconds on 8 workers would exceed the default 3 restarts in
    // 5 s, and when 5 kills in a row land on workers still starting (likely when the
    // restarts are slow), the breaker rightly keeps the pool down for its 30 s reset.
    cfg.pools[0].restart.max_restarts = 100;
    cfg.worker_sup.max_restarts = 100;
    cfg.pools[0].circuit.threshold = 0;
    // A kill lands on a given 100 ms call about once in 15; with the default 2 retries
    // one of 200 idempotent calls killed on all 3 runs would be a few percent per run.
    // 5 retries make that negligible, so any failed idempotent call is a defect.
    cfg.pools[0].retry.max_attempts = 5;
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto run_id = r.run_id();

    constexpr int total = 400;
    constexpr int concurrency = 16;
    constexpr int kills = 30;
    const auto budget = 20s;
    struct outcome {
      bool idempotent;
      clock_type::time_point sent;
      clock_type::time_point returned;
      snakepit::execute_result res;
    };
    std::mutex mtx;
    std::condition_variable cv;
    int in_flight = 0;
    std::vector<outcome> outcomes;

    std::set<int> killed;
    std::vector<kill_record> kill_log;
    std::thread killer{[&] {
      std::mt19937 rng{std::random_device{}()};
      for (int i = 0; i < kills; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds{100 + rng() % 100});
        auto pids = r.live_processes();
        std::vector<int> candidates;
        for (auto pid : pids)
          if (killed.count(pid) == 0 && pid_alive(pid))
            candidates.push_back(pid);
        if (candidates.empty()) {
          --i;
          continue;
        }
        auto pid = candidates[rng() % candidates.size()];
        auto record = kill_record{clock_type::now(), worker_of(r, pid)};
        if (::kill(pid, SIGKILL) == 0) {
          killed.insert(pid);
          kill_log.push_back(std::move(record));
        } else {
          --i;
        }
      }
    }};

    auto t_start = clock_type::now();
    for (int i = 0; i < total; ++i) {
      {
        std::unique_lock<std::mutex> guard{mtx};
        cv.wait(guard, [&] { return in_flight < concurrency; });
        ++in_flight;
      }
      snakepit::execute_options opts;
      opts.timeout = budget;
      opts.idempotent = i % 2 == 0;
      auto sent = clock_type::now();
      r.execute_async("sleep", {{"ms", 100}}, opts,
                      [&, sent, idem = opts.idempotent](snakepit::execute_result res) {
                        auto returned = clock_type::now();
                        std::lock_guard<std::mutex> guard{mtx};
                        outcomes.push_back({idem, sent, returned, std::move(res)});
                        --in_flight;
                        cv.notify_all();
                      });
    }
    bool all_returned;
    {
      std::unique_lock<std::mutex> guard{mtx};
      all_returned = cv.wait_for(guard, budget + 60s, [&] {
        return outcomes.size() == static_cast<size_t>(total);
      });
    }
    killer.join();
    std::unique_lock<std::mutex> guard{mtx};
    REQUIRE_MSG(all_returned, "requests never returned: " << (total - outcomes.size()));
    REQUIRE(kill_log.size() == static_cast<size_t>(kills));
    int ok = 0;
    std::set<size_t> used_kills;
    for (auto& o : outcomes) {
      CHECK_MSG(o.returned - o.sent < budget,
                "a call returned after its deadline: "
                  << std::chrono::duration<double>(o.returned - o.sent).count() << " s");
      if (o.res) {
        ++ok;
        continue;
      }
      // A failure: a non-idempotent call that its worker's process took along when it
      // was killed — running on it, or handed to it in the moment before its exit was
      // seen. Each kill ends at most one call (capacity 1).
      CHECK_FALSE(o.idempotent);
      CHECK_ERROR(o.res, snakepit::errc::worker_crashed);
      auto kill = killed_before(kill_log, crashed_worker(o.res.error()), o.returned);
      CHECK_MSG(kill < kill_log.size(),
                "no kill explains " << snakepit::describe(o.res.error()));
      CHECK_MSG(used_kills.insert(kill).second, "a second call failed from one kill: "
                                                  << snakepit::describe(o.res.error()));
    }
    MESSAGE("storm: " << ok << " ok, " << (total - ok) << " worker_crashed, "
                      << killed.size() << " kills, load done after "
                      << seconds_since(t_start) << " s");
    auto last_kill = kill_log.back().at;
    guard.unlock();

    // Recovery: 8 ready workers, all alive, none of them a killed pid.
    auto recovered = [&] {
      auto ws = serving_workers(r);
      if (!ws || ws->size() != 8)
        return false;
      for (auto& w : *ws)
        if (killed.count(w.pid) != 0 || !pid_alive(w.pid))
          return false;
      return true;
    };
    bool back = eventually(recovered, 60s);
    auto recovery = seconds_since(last_kill);
    REQUIRE_MSG(back, "the pool did not get back to 8 ready workers");
    MESSAGE("back to 8 ready workers " << recovery << " s after the last kill");
    CHECK(recovery < 10.0);
    for (auto pid : killed)
      CHECK_MSG(!pid_alive(pid), "killed pid " << pid << " still alive");
    CHECK(r.execute("ping"));
    stop_and_check(r);
    auto reg = open_registry(dir.path);
    CHECK(reg->entries(run_id).empty());
    CHECK(reg->runs().empty());
  }

} // TEST_SUITE
