// The telemetry bus: prefix matching, detach, isolation of slow and throwing handlers,
// drop counting. Real threads; waits are bounded by generous deadlines, never by speed.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "actors/observability/telemetry.hpp"
#include "tests/support/log_capture.hpp"

using namespace std::chrono_literals;
using snakepit::telemetry::bus;
using snakepit::telemetry::event;
using snakepit::telemetry::matches;

namespace {

/// Records event names delivered to a handler.
struct recorder {
  std::mutex mtx;
  std::vector<std::string> names;

  auto handler() {
    return [this](const event& ev) {
      std::lock_guard<std::mutex> guard{mtx};
      names.push_back(ev.name);
    };
  }

  std::vector<std::string> get() {
    std::lock_guard<std::mutex> guard{mtx};
    return names;
  }
};

/// A gate a handler can block on until the test opens it.
struct gate {
  std::mutex mtx;
  std::condition_variable cv;
  bool open = false;
  bool entered = false;

  void wait() {
    std::unique_lock<std::mutex> guard{mtx};
    entered = true;
    cv.notify_all();
    cv.wait_for(guard, 30s, [&] { return open; });
  }

  bool wait_entered() {
    std::unique_lock<std::mutex> guard{mtx};
    return cv.wait_for(guard, 10s, [&] { return entered; });
  }

  void release() {
    std::lock_guard<std::mutex> guard{mtx};
    open = true;
    cv.notify_all();
  }
};

} // namespace

TEST_SUITE("actors.telemetry") {

  TEST_CASE("prefixes match whole dotted segments") {
    CHECK(matches("", "snakepit.pool.init_started"));
    CHECK(matches("snakepit", "snakepit.pool.init_started"));
    CHECK(matches("snakepit.pool", "snakepit.pool.init_started"));
    CHECK(matches("snakepit.pool.init_started", "snakepit.pool.init_started"));
    CHECK(matches("snakepit.pool.", "snakepit.pool.saturated"));
    CHECK_FALSE(matches("snakepit.po", "snakepit.pool.init_started"));
    CHECK_FALSE(matches("snakepit.pool", "snakepit.pools.x"));
    CHECK_FALSE(matches("snakepit.pool.init_started.x", "snakepit.pool.init_started"));
    CHECK_FALSE(matches("snakepit.request", "snakepit.pool.init_started"));
  }

  TEST_CASE("handlers receive only the events under their prefix, with the payload") {
    bus b;
    recorder pool_events, all_events;
    std::mutex mtx;
    event last_request;
    b.attach("snakepit.pool", pool_events.handler());
    b.attach("", all_events.handler());
    b.attach("snakepit.request.stop", [&](const event& ev) {
      std::lock_guard<std::mutex> guard{mtx};
      last_request = ev;
    });
    auto before = std::chrono::system_clock::now();
    b.emit("snakepit.pool.init_started", {{"pool_size", 2}}, {{"pool", "default"}});
    b.emit("snakepit.request.stop", {{"duration_ms", 12}}, {{"command", "echo"}});
    b.emit("snakepit.pools.other");
    REQUIRE(b.flush(10s));
    CHECK(pool_events.get() == std::vector<std::string>{"snakepit.pool.init_started"});
    CHECK(all_events.get() == std::vector<std::string>{"snakepit.pool.init_started",
                                                       "snakepit.request.stop",
                                                       "snakepit.pools.other"});
    std::lock_guard<std::mutex> guard{mtx};
    CHECK(last_request.name == "snakepit.request.stop");
    CHECK(last_request.measurements["duration_ms"] == 12);
    CHECK(last_request.metadata["command"] == "echo");
    CHECK(last_request.time >= before);
  }

  TEST_CASE("emit without handlers is inactive and queues nothing") {
    bus b;
    CHECK_FALSE(b.active());
    b.emit("snakepit.request.start");
    auto s = b.stats();
    CHECK(s.emitted == 0);
    CHECK(s.dropped == 0);
    auto id = b.attach("snakepit", [](const event&) {});
    CHECK(id != 0);
    CHECK(b.active());
    b.detach(id);
    CHECK_FALSE(b.active());
  }

  TEST_CASE("a detached handler sees no later events") {
    bus b;
    recorder kept, gone;
    b.attach("snakepit", kept.handler());
    auto id = b.attach("snakepit", gone.handler());
    b.emit("snakepit.a");
    REQUIRE(b.flush(10s));
    b.detach(id);
    b.detach(id); // twice is harmless
    b.detach(9999);
    b.emit("snakepit.b");
    REQUIRE(b.flush(10s));
    CHECK(gone.get() == std::vector<std::string>{"snakepit.a"});
    CHECK(kept.get() == std::vector<std::string>{"snakepit.a", "snakepit.b"});
    CHECK(b.stats().handlers == 1);
  }

  TEST_CASE("detach waits for a running invocation of that handler to finish") {
    bus b;
    gate g;
    std::atomic<bool> finished{false};
    auto id = b.attach("x", [&](const event&) {
      g.wait();
      finished = true;
    });
    b.emit("x");
    REQUIRE(g.wait_entered());
    std::thread opener{[&] {
      std::this_thread::sleep_for(50ms);
      g.release();
    }};
    b.detach(id);
    CHECK(finished.load());
    opener.join();
  }

  TEST_CASE("a throwing handler is detached and counted, the others keep running") {
    bus b;
    recorder good;
    std::atomic<int> calls{0};
    b.attach("snakepit", [&](const event&) {
      ++calls;
      throw std::runtime_error("handler bug");
    });
    b.attach("snakepit", [&](const event&) { throw 42; });
    b.attach("snakepit", good.handler());
    b.emit("snakepit.one");
    b.emit("snakepit.two");
    REQUIRE(b.flush(10s));
    CHECK(calls == 1);
    CHECK(good.get() == std::vector<std::string>{"snakepit.one", "snakepit.two"});
    auto s = b.stats();
    CHECK(s.handler_failures == 2);
    CHECK(s.handlers == 1);
    CHECK(s.delivered == 2);
  }

  TEST_CASE("a slow handler does not block emit, a full queue drops and counts") {
    bus b{4};
    gate g;
    recorder seen;
    std::atomic<bool> inside{false};
    b.attach("slow", [&](const event& ev) {
      if (ev.name == "slow.first") {
        inside = true;
        g.wait();
        inside = false;
      }
    });
    b.attach("slow", seen.handler());
    b.emit("slow.first");
    REQUIRE(g.wait_entered());
    // The dispatcher is stuck in the first event: 4 fit in the queue, 6 are dropped,
    // and all 10 calls return while the handler is still inside (it leaves only when
    // the gate opens below, or after 30 s).
    for (int i = 0; i < 10; ++i)
      b.emit("slow.next", {{"i", i}});
    CHECK(inside.load());
    auto s = b.stats();
    CHECK(s.dropped == 6);
    CHECK(s.queue_depth == 4);
    g.release();
    REQUIRE(b.flush(10s));
    CHECK(seen.get().size() == 5);
    CHECK(b.stats().emitted == 5);
  }

  TEST_CASE("handlers run on the dispatcher thread, never on the emitter's") {
    bus b;
    std::mutex mtx;
    std::thread::id ran_on;
    b.attach("t", [&](const event&) {
      std::lock_guard<std::mutex> guard{mtx};
      ran_on = std::this_thread::get_id();
    });
    b.emit("t");
    REQUIRE(b.flush(10s));
    std::lock_guard<std::mutex> guard{mtx};
    CHECK(ran_on != std::thread::id{});
    CHECK(ran_on != std::this_thread::get_id());
  }

  TEST_CASE("stop delivers queued events, then drops later ones and refuses attach") {
    bus b;
    recorder r;
    b.attach("s", r.handler());
    for (int i = 0; i < 100; ++i)
      b.emit("s.e");
    b.stop();
    CHECK(r.get().size() == 100);
    CHECK_FALSE(b.active());
    b.emit("s.late");
    CHECK(b.attach("s", r.handler()) == 0);
    b.stop(); // idempotent
    CHECK(r.get().size() == 100);
  }

  TEST_CASE("a handler may detach itself and emit from inside the dispatcher") {
    bus b;
    recorder r;
    snakepit::telemetry::handler_id self_id = 0;
    std::atomic<int> calls{0};
    self_id = b.attach("a", [&](const event&) {
      ++calls;
      b.emit("b.follow_up");
      b.detach(self_id);
    });
    b.attach("b", r.handler());
    b.emit("a.x");
    REQUIRE(b.flush(10s));
    b.emit("a.y");
    REQUIRE(b.flush(10s));
    CHECK(calls == 1);
    CHECK(r.get() == std::vector<std::string>{"b.follow_up"});
  }

  TEST_CASE("emit from many threads delivers every event exactly once") {
    bus b{100000};
    std::atomic<int> count{0};
    b.attach("m", [&](const event&) { ++count; });
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&] {
        for (int i = 0; i < 1000; ++i)
          b.emit("m.e");
      });
    for (auto& t : threads)
      t.join();
    REQUIRE(b.flush(20s));
    CHECK(count == 4000);
    CHECK(b.stats().dropped == 0);
  }

  TEST_CASE("attach_many delivers an event once, however many of its prefixes match") {
    bus b;
    recorder r;
    auto id = b.attach_many(
      {"snakepit.request", "snakepit.request.stop", "snakepit.pool"}, r.handler());
    REQUIRE(id != 0);
    CHECK(b.stats().handlers == 1);
    b.emit("snakepit.request.stop");
    b.emit("snakepit.pool.saturated");
    b.emit("snakepit.queue.enqueued");
    REQUIRE(b.flush(10s));
    CHECK(r.get() ==
          std::vector<std::string>{"snakepit.request.stop", "snakepit.pool.saturated"});
    b.detach(id); // one detach removes it from every prefix
    b.emit("snakepit.request.start");
    b.emit("snakepit.pool.init_started");
    REQUIRE(b.flush(10s));
    CHECK(r.get().size() == 2);
    CHECK_FALSE(b.active());
    CHECK(b.attach_many({}, r.handler()) == 0);
    CHECK(b.attach_many({"snakepit"}, {}) == 0);
  }

  TEST_CASE("the default logger writes one line per finished request, at its level") {
    using snakepit::adapters::log_format;
    using snakepit::adapters::log_level;
    auto sink = std::make_shared<snakepit::testing::capture_sink>();
    snakepit::adapters::log_options opts;
    opts.level = log_level::debug;
    opts.format = log_format::json;
    opts.to_stderr = false;
    opts.sinks.push_back(sink);
    auto log = snakepit::adapters::logger::create(std::move(opts));
    REQUIRE(log);
    bus b;
    auto id = snakepit::telemetry::attach_default_logger(b, *log);
    REQUIRE(id != 0);
    CHECK(snakepit::telemetry::attach_default_logger(b, nullptr) == 0);
    b.emit("snakepit.request.start", {{"queue_us", 3}},
           {{"pool", "p"}, {"command", "echo"}, {"correlation_id", "c1"}});
    b.emit("snakepit.request.stop", {{"duration_us", 2500}},
           {{"pool", "p"},
            {"command", "echo"},
            {"worker_id", "p_worker_1"},
            {"correlation_id", "c1"},
            {"success", true}});
    b.emit("snakepit.request.exception", {{"duration_us", 1000}},
           {{"pool", "p"},
            {"command", "fail"},
            {"worker_id", "p_worker_2"},
            {"correlation_id", "c2"},
            {"success", false},
            {"error", "tool_error: ValueError: boom"}});
    REQUIRE(b.flush(10s));
    auto recs = sink->records();
    REQUIRE(recs.size() == 2); // nothing for the start event
    CHECK(recs[0]["level"] == "debug");
    CHECK(recs[0]["msg"] == "snakepit.request.stop");
    CHECK(recs[0]["command"] == "echo");
    CHECK(recs[0]["worker_id"] == "p_worker_1");
    CHECK(recs[0]["correlation_id"] == "c1");
    CHECK(recs[0]["duration_ms"] == doctest::Approx(2.5));
    CHECK(recs[0].count("error") == 0);
    CHECK(recs[1]["msg"] == "snakepit.request.exception");
    CHECK(recs[1]["error"] == "tool_error: ValueError: boom");
    // Below the log's level nothing is written; detach stops it for good.
    (*log)->set_level(log_level::info);
    b.emit("snakepit.request.stop", {{"duration_us", 1}}, {{"command", "quiet"}});
    REQUIRE(b.flush(10s));
    CHECK(sink->records().size() == 2);
    (*log)->set_level(log_level::debug);
    b.detach(id);
    b.emit("snakepit.request.stop", {{"duration_us", 1}}, {{"command", "late"}});
    REQUIRE(b.flush(10s));
    CHECK(sink->records().size() == 2);
  }

} // TEST_SUITE
