// Heartbeats with real Python workers: a worker that stops answering (SIGSTOP, or
// a tool blocking its event loop) is killed and restarted; an independent
// heartbeat only reports.
#include <mutex>
#include <set>

#include "actors/observability/telemetry.hpp"
#include "harness.hpp"

using namespace std::chrono_literals;
using snakepit::errc;
using snakepit::json;
using namespace snakepit::testing;

namespace {

snakepit::config heartbeat_config(bool dependent) {
  auto cfg = small_config(1);
  cfg.pools[0].heartbeat.interval = 100ms;
  cfg.pools[0].heartbeat.timeout = 300ms;
  cfg.pools[0].heartbeat.max_missed = 2;
  cfg.pools[0].heartbeat.dependent = dependent;
  return cfg;
}

bool replaced(snakepit::runtime& rt, int old_pid) {
  auto ws = serving_workers(rt);
  return ws && ws->size() == 1 && ws->front().pid != old_pid;
}

} // namespace

TEST_SUITE("integration.heartbeat") {

  TEST_CASE("a stopped worker misses its heartbeats and is replaced") {
    std::mutex mtx;
    std::set<std::string> events;
    snakepit::start_options opts;
    opts.telemetry_handlers.emplace_back("snakepit.heartbeat",
                                         [&](const snakepit::telemetry::event& ev) {
                                           std::lock_guard<std::mutex> g{mtx};
                                           events.insert(ev.name);
                                         });
    auto rt = snakepit::runtime::start(heartbeat_config(true), opts);
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto pid = serving_workers(r)->front().pid;
    REQUIRE(::kill(pid, SIGSTOP) == 0);
    CHECK(eventually([&] { return replaced(r, pid); }, 15s));
    CHECK(eventually([&] { return !pid_alive(pid); }));
    CHECK(r.execute("ping"));
    r.telemetry().flush(5s);
    {
      std::lock_guard<std::mutex> g{mtx};
      CHECK(events.count("snakepit.heartbeat.missed") == 1);
      CHECK(events.count("snakepit.heartbeat.timeout") == 1);
    }
    stop_and_check(r);
  }

  TEST_CASE("a tool that blocks the worker's event loop gets the worker restarted") {
    auto rt = snakepit::runtime::start(heartbeat_config(true));
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto pid = serving_workers(r)->front().pid;
    auto res = r.execute("block_loop", {{"ms", 20000}});
    REQUIRE_FALSE(res);
    CHECK_MSG(snakepit::describe(res.error()).find("worker_crashed") != std::string::npos,
              explain(res.error()));
    CHECK(eventually([&] { return replaced(r, pid); }, 15s));
    CHECK(r.execute("ping"));
    stop_and_check(r);
  }

  TEST_CASE("a sync tool that sleeps holding the GIL gets the worker restarted") {
    auto rt = snakepit::runtime::start(heartbeat_config(true));
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto pid = serving_workers(r)->front().pid;
    auto t0 = std::chrono::steady_clock::now();
    auto res = r.execute("hold_gil", {{"ms", 20000}});
    REQUIRE_FALSE(res);
    CHECK_ERROR(res, errc::worker_crashed);
    // Killed by the heartbeat, not released by the end of the sleep.
    CHECK(std::chrono::steady_clock::now() - t0 < 15s);
    CHECK(eventually([&] { return replaced(r, pid); }, 15s));
    CHECK(eventually([&] { return !pid_alive(pid); }));
    CHECK(r.execute("ping"));
    stop_and_check(r);
  }

  TEST_CASE("an independent heartbeat reports misses but leaves the worker alone") {
    auto rt = snakepit::runtime::start(heartbeat_config(false));
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto pid = serving_workers(r)->front().pid;
    REQUIRE(::kill(pid, SIGSTOP) == 0);
    std::this_thread::sleep_for(1500ms);
    CHECK(pid_alive(pid));
    CHECK_FALSE(replaced(r, pid));
    ::kill(pid, SIGCONT);
    CHECK(eventually([&] { return static_cast<bool>(r.execute("ping")); }));
    stop_and_check(r);
  }

} // TEST_SUITE
