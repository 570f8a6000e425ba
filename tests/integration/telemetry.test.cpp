// Every event of the catalogue that the pool and worker emit is seen by a handler
// attached to the runtime's bus, in a scenario with real Python workers.
#include <future>
#include <mutex>
#include <set>

#include "actors/observability/telemetry.hpp"
#include "harness.hpp"

using namespace std::chrono_literals;
using snakepit::json;
using namespace snakepit::testing;

TEST_SUITE("integration.telemetry") {

  TEST_CASE("the pool and worker events of the catalogue are emitted") {
    auto cfg = small_config(1);
    cfg.pools[0].queue.max_size = 1;
    cfg.pools[0].queue.timeout = 100ms;
    std::mutex mtx;
    std::set<std::string> seen;
    std::string cid_seen;
    snakepit::start_options opts;
    opts.telemetry_handlers.emplace_back(
      "snakepit", [&](const snakepit::telemetry::event& ev) {
        std::lock_guard<std::mutex> g{mtx};
        seen.insert(ev.name);
        if (ev.name == "snakepit.request.start" &&
            ev.metadata.value("command", "") == "echo")
          cid_seen = ev.metadata.value("correlation_id", "");
      });
    auto rt = snakepit::runtime::start(cfg, opts);
    REQUIRE_MESSAGE(rt, explain(rt.error()));
    auto& r = **rt;
    REQUIRE_FALSE(r.await_ready(30s));
    snakepit::execute_options with_cid;
    with_cid.correlation_id = "cid-telemetry-1";
    CHECK(r.execute("echo", {{"x", 1}}, with_cid));
    CHECK_FALSE(r.execute("fail"));
    // One running, one queued (times out), one rejected (queue full).
    std::promise<void> p1, p2, p3;
    r.execute_async("sleep", {{"ms", 500}}, {},
                    [&](snakepit::execute_result) { p1.set_value(); });
    REQUIRE(eventually([&] { return r.get_stats()->busy == 1; }));
    r.execute_async("ping", json::object(), {},
                    [&](snakepit::execute_result) { p2.set_value(); });
    r.execute_async("ping", json::object(), {},
                    [&](snakepit::execute_result) { p3.set_value(); });
    p1.get_future().wait();
    p2.get_future().wait();
    p3.get_future().wait();
    // A queued request that does get dequeued.
    std::promise<void> p4, p5;
    r.execute_async("sleep", {{"ms", 50}}, {},
                    [&](snakepit::execute_result) { p4.set_value(); });
    r.execute_async("ping", json::object(), {},
                    [&](snakepit::execute_result) { p5.set_value(); });
    p4.get_future().wait();
    p5.get_future().wait();
    // A crash: terminated, then restarted.
    auto pid = serving_workers(r)->front().pid;
    ::kill(pid, SIGKILL);
    REQUIRE(eventually([&] {
      auto ws = serving_workers(r);
      return ws && ws->size() == 1 && ws->front().pid != pid;
    }));
    CHECK(r.telemetry().flush(5s));
    std::lock_guard<std::mutex> g{mtx};
    for (auto name :
         {"snakepit.pool.init_started", "snakepit.pool.init_complete",
          "snakepit.worker.spawned", "snakepit.worker.ready",
          "snakepit.worker.terminated", "snakepit.worker.restarted",
          "snakepit.request.start", "snakepit.request.stop", "snakepit.request.exception",
          "snakepit.queue.enqueued", "snakepit.queue.dequeued", "snakepit.queue.timeout",
          "snakepit.pool.saturated"})
      CHECK_MESSAGE(seen.count(name) == 1, std::string{name});
    CHECK(cid_seen == "cid-telemetry-1");
    stop_and_check(r);
  }

} // TEST_SUITE
