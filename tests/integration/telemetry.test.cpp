// Every event of the catalogue that the pool and worker emit is seen by a handler
// attached to the runtime's bus, in a scenario with real Python workers.
#include <future>
#include <mutex>
#include <set>

#include "actors/observability/telemetry.hpp"
#include "harness.hpp"
#include "tests/support/event_capture.hpp"
#include "tests/support/log_capture.hpp"

using namespace std::chrono_literals;
using snakepit::json;
using namespace snakepit::testing;

namespace {

std::string str(const json& rec, const char* key) {
  auto i = rec.find(key);
  return i != rec.end() && i->is_string() ? i->get<std::string>() : std::string{};
}

} // namespace

TEST_SUITE("integration.telemetry") {

  TEST_CASE("the pool and worker events of the catalogue are emitted") {
    auto cfg = small_config(1);
    cfg.pools[0].queue.max_size = 1;
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
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE_FALSE(r.await_ready(30s));
    snakepit::execute_options with_cid;
    with_cid.correlation_id = "cid-telemetry-1";
    CHECK(r.execute("echo", {{"x", 1}}, with_cid));
    CHECK_FALSE(r.execute("fail"));
    auto busy = [&] {
      return eventually([&] {
        auto s = r.get_stats();
        return s && s->busy == 1;
      });
    };
    // The worker held by a gate (however slow the machine): one call queued that times
    // out (its own 1 s budget ends in the queue), one rejected (queue full).
    {
      gate held;
      auto running = call_async(r, "wait_gate", held.args());
      REQUIRE(busy());
      snakepit::execute_options short_budget;
      short_budget.timeout = 1s;
      auto timed_out = call_async(r, "ping", json::object(), short_budget);
      auto rejected = call_async(r, "ping");
      CHECK_FALSE(timed_out.get());
      CHECK_FALSE(rejected.get());
      held.open();
      CHECK_OK(running.get());
    }
    // A queued request that does get dequeued once the worker is free.
    {
      gate held;
      auto running = call_async(r, "wait_gate", held.args());
      REQUIRE(busy());
      auto queued = call_async(r, "ping");
      REQUIRE(eventually([&] {
        auto s = r.get_stats();
        return s && s->queue_depth == 1;
      }));
      held.open();
      CHECK_OK(running.get());
      CHECK_OK(queued.get());
    }
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
      CHECK_MSG(seen.count(name) == 1, std::string{name});
    CHECK(cid_seen == "cid-telemetry-1");
    stop_and_check(r);
  }

  TEST_CASE("stop and exception events name the command, worker and correlation id of "
            "their start on every path, and the default logger writes one line each") {
    auto cfg = small_config(1);
    cfg.log.level = snakepit::adapters::log_level::debug;
    cfg.log.format = snakepit::adapters::log_format::json;
    cfg.log.to_stderr = false;
    cfg.pools[0].queue.timeout = 200ms;
    event_capture events;
    auto opts = events.options("snakepit.request");
    auto sink = std::make_shared<capture_sink>();
    opts.log_sinks.push_back(sink);
    auto rt = snakepit::runtime::start(cfg, opts);
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(r.attach_default_logger() != 0);
    auto call = [](const char* cid) {
      snakepit::execute_options o;
      o.correlation_id = cid;
      return o;
    };
    // The direct lane (blocking, a free worker), the pool actor (async), a failure,
    // a stream, and one that never reaches a worker (its queue time runs out).
    REQUIRE(r.execute("echo", {{"x", 1}}, call("cid-join-lane")));
    std::promise<snakepit::execute_result> async_done;
    r.execute_async("echo", {{"x", 2}}, call("cid-join-async"),
                    [&](snakepit::execute_result res) { async_done.set_value(res); });
    REQUIRE(async_done.get_future().get());
    CHECK_FALSE(r.execute("fail", {{"message", "joined"}}, call("cid-join-fail")));
    CHECK_FALSE(r.execute_stream(
      "stream_progress", {{"steps", 2}}, [](const json&, bool) { return true; },
      call("cid-join-stream")));
    std::promise<void> slept;
    r.execute_async("sleep", {{"ms", 800}}, call("cid-join-busy"),
                    [&](snakepit::execute_result) { slept.set_value(); });
    REQUIRE(eventually([&] { return r.get_stats()->busy == 1; }));
    CHECK_FALSE(r.execute("ping", json::object(), call("cid-join-queued")));
    slept.get_future().wait();
    REQUIRE(r.telemetry().flush(5s));

    auto by_cid = [&](const std::string& name, const std::string& cid) {
      return events.wait_for(name, [&](const snakepit::telemetry::event& ev) {
        return ev.metadata.value("correlation_id", "") == cid;
      });
    };
    for (auto [cid, command, ok] :
         {std::tuple{"cid-join-lane", "echo", true},
          std::tuple{"cid-join-async", "echo", true},
          std::tuple{"cid-join-fail", "fail", false},
          std::tuple{"cid-join-stream", "stream_progress", true}}) {
      CAPTURE(cid);
      auto start = by_cid("snakepit.request.start", cid);
      auto stop =
        by_cid(ok ? "snakepit.request.stop" : "snakepit.request.exception", cid);
      REQUIRE_MSG(start, events.dump());
      REQUIRE_MSG(stop, events.dump());
      CHECK(stop->metadata["command"] == command);
      CHECK(stop->metadata["command"] == start->metadata["command"]);
      CHECK(stop->metadata["worker_id"] == start->metadata["worker_id"]);
      CHECK(stop->metadata["worker_id"] != "");
      CHECK(stop->metadata["pool"] == "default");
      CHECK(stop->metadata["success"] == ok);
      auto line = sink->wait_for([&](const json& rec) {
        return str(rec, "correlation_id") == cid &&
               str(rec, "msg").rfind("snakepit.request.", 0) == 0;
      });
      REQUIRE_MSG(line, sink->dump());
      CHECK(str(*line, "command") == command);
      CHECK(str(*line, "worker_id") == stop->metadata["worker_id"].get<std::string>());
      CHECK(str(*line, "level") == "debug");
    }
    // Never dispatched: no start, an exception with the command and no worker.
    auto queued = by_cid("snakepit.request.exception", "cid-join-queued");
    REQUIRE_MSG(queued, events.dump());
    CHECK(queued->metadata["command"] == "ping");
    CHECK(queued->metadata["worker_id"] == "");
    CHECK(events.count("snakepit.request.start") == 5);
    stop_and_check(r);
  }

} // TEST_SUITE
