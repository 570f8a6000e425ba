// The pool with real Python workers: round trips, typed errors, concurrency,
// crash replacement and upstream's saturation scenario.
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <future>
#include <mutex>
#include <set>

#include <caf/scoped_actor.hpp>

#include "actors/atoms.hpp"
#include "actors/observability/telemetry.hpp"
#include "actors/pool/pool.hpp"

#include "harness.hpp"
#include "tests/support/event_capture.hpp"

using namespace std::chrono_literals;
using snakepit::errc;
using snakepit::json;
using namespace snakepit::testing;

namespace {

/// Waits for a number of async completions.
struct latch {
  std::mutex mtx;
  std::condition_variable cv;
  size_t left;
  explicit latch(size_t n) : left(n) {}
  void count_down() {
    std::lock_guard<std::mutex> g{mtx};
    if (--left == 0)
      cv.notify_all();
  }
  bool wait(std::chrono::milliseconds t) {
    std::unique_lock<std::mutex> g{mtx};
    return cv.wait_for(g, t, [&] { return left == 0; });
  }
};

} // namespace

TEST_SUITE("integration.pool") {

  TEST_CASE("a pool of four workers becomes ready with four distinct live processes") {
    auto rt = snakepit::runtime::start(small_config(4));
    REQUIRE_OK(rt);
    auto ws = serving_workers(**rt);
    REQUIRE(ws);
    CHECK(ws->size() == 4);
    std::set<int> pids;
    for (auto& w : *ws) {
      pids.insert(w.pid);
      CHECK(pid_alive(w.pid));
      CHECK(w.state == "ready");
    }
    CHECK(pids.size() == 4);
    auto stats = (*rt)->get_stats();
    REQUIRE(stats);
    CHECK(stats->workers == 4);
    CHECK(stats->available == 4);
    stop_and_check(**rt);
  }

  TEST_CASE("ping, echo and add round trip through the pool") {
    auto rt = snakepit::runtime::start(small_config(2));
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto pong = r.execute("ping");
    REQUIRE_OK(pong);
    CHECK(pong->result == "pong");
    CHECK_FALSE(pong->worker_id.empty());
    json payload = {
      {"s", "héllo"}, {"n", 42}, {"list", {1, 2, 3}}, {"nested", {{"ok", true}}}};
    auto echo = r.execute("echo", payload);
    REQUIRE_OK(echo);
    CHECK(echo->result == payload);
    auto sum = r.execute("add", {{"a", 2}, {"b", 40}});
    REQUIRE_OK(sum);
    CHECK(sum->result.get<double>() == doctest::Approx(42.0));
    stop_and_check(r);
  }

  TEST_CASE(
    "a Python exception becomes tool_error with the Python type, message and traceback") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto res = (*rt)->execute("fail", {{"message", "bad input 42"}});
    REQUIRE_FALSE(res);
    CHECK(is_error(res.error(), errc::tool_error));
    auto py = snakepit::python_error_of(res.error());
    REQUIRE(py);
    CHECK(py->type == "ValueError");
    CHECK(py->message == "bad input 42");
    CHECK(py->traceback.find("ValueError") != std::string::npos);
    // The worker survives its tool's exception.
    auto again = (*rt)->execute("ping");
    CHECK(again);
    stop_and_check(**rt);
  }

  TEST_CASE("an unknown tool is reported as unknown_tool") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto res = (*rt)->execute("no_such_tool");
    REQUIRE_FALSE(res);
    CHECK(is_error(res.error(), errc::unknown_tool));
    stop_and_check(**rt);
  }

  TEST_CASE("once the workers registered their tools, an unknown tool is rejected before "
            "dispatch") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto& r = **rt;
    // Registration reaches the host shortly after the worker is ready.
    CHECK(eventually(
      [&] {
        auto res = r.execute("no_such_tool_either");
        return !res &&
               snakepit::describe(res.error()).find("has no tool") != std::string::npos;
      },
      10s));
    auto before = r.get_stats();
    REQUIRE(before);
    auto res = r.execute("no_such_tool_either");
    REQUIRE_FALSE(res);
    CHECK(is_error(res.error(), errc::unknown_tool));
    auto after = r.get_stats();
    REQUIRE(after);
    CHECK(after->requests == before->requests); // never reached a worker
    CHECK(r.execute("ping"));                   // registered tools still go through
    stop_and_check(r);
  }

  TEST_CASE("a call to a pool that does not exist fails with pool_not_found") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    snakepit::execute_options opts;
    opts.pool = "nope";
    auto res = (*rt)->execute("ping", json::object(), opts);
    REQUIRE_FALSE(res);
    CHECK(is_error(res.error(), errc::pool_not_found));
    CHECK_FALSE((*rt)->get_stats("nope"));
    stop_and_check(**rt);
  }

  TEST_CASE("two hundred concurrent requests across four workers are all answered") {
    auto rt = snakepit::runtime::start(small_config(4));
    REQUIRE_OK(rt);
    auto& r = **rt;
    constexpr size_t n = 200;
    latch done{n};
    std::mutex mtx;
    std::set<std::string> workers;
    std::atomic<size_t> ok{0};
    std::vector<std::atomic<int>> answers(n);
    for (size_t i = 0; i < n; ++i) {
      r.execute_async(
        "add", {{"a", i}, {"b", 1}}, {}, [&, i](snakepit::execute_result res) {
          if (res && res->result.get<double>() == static_cast<double>(i + 1)) {
            ++ok;
            std::lock_guard<std::mutex> g{mtx};
            workers.insert(res->worker_id);
          }
          ++answers[i];
          done.count_down();
        });
    }
    REQUIRE(done.wait(60s));
    CHECK(ok == n);
    for (auto& a : answers)
      CHECK(a.load() == 1); // exactly once
    CHECK(workers.size() >= 2);
    auto stats = r.get_stats();
    REQUIRE(stats);
    CHECK(stats->completed >= n);
    CHECK(stats->queue_depth == 0);
    stop_and_check(r);
  }

  TEST_CASE("kill -9 of a busy worker: the in-flight call gets worker_crashed and a new "
            "process takes its place") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto before = serving_workers(r);
    REQUIRE(before);
    REQUIRE(before->size() == 1);
    auto old = before->front();
    std::promise<snakepit::execute_result> p;
    auto fut = p.get_future();
    r.execute_async("sleep", {{"ms", 10000}}, {},
                    [&p](snakepit::execute_result res) { p.set_value(std::move(res)); });
    REQUIRE(eventually([&] {
      auto s = r.get_stats();
      return s && s->busy == 1;
    }));
    REQUIRE(::kill(old.pid, SIGKILL) == 0);
    REQUIRE(fut.wait_for(5s) == std::future_status::ready);
    auto res = fut.get();
    REQUIRE_FALSE(res);
    CHECK_ERROR(res, errc::worker_crashed);
    CHECK(eventually([&] { return !pid_alive(old.pid); }));
    int new_pid = 0;
    CHECK(eventually([&] {
      auto ws = serving_workers(r);
      if (!ws || ws->size() != 1)
        return false;
      new_pid = ws->front().pid;
      return ws->front().id == old.id && new_pid != old.pid;
    }));
    CHECK(pid_alive(new_pid));
    auto next = r.execute("ping");
    CHECK(next);
    auto stats = r.get_stats();
    REQUIRE(stats);
    CHECK(stats->worker_crashes == 1);
    stop_and_check(r);
  }

  TEST_CASE(
    "an idempotent call whose worker is killed mid-call succeeds on another worker") {
    auto rt = snakepit::runtime::start(small_config(2));
    REQUIRE_OK(rt);
    auto& r = **rt;
    std::promise<snakepit::execute_result> p;
    snakepit::execute_options opts;
    opts.idempotent = true;
    opts.timeout = 20s;
    r.execute_async("sleep", {{"ms", 800}}, opts,
                    [&p](snakepit::execute_result res) { p.set_value(std::move(res)); });
    int victim = 0;
    REQUIRE(eventually([&] {
      auto ws = serving_workers(r);
      if (!ws)
        return false;
      for (auto& w : *ws)
        if (w.state == "busy")
          victim = w.pid;
      return victim != 0;
    }));
    REQUIRE(::kill(victim, SIGKILL) == 0);
    auto fut = p.get_future();
    REQUIRE(fut.wait_for(15s) == std::future_status::ready);
    auto res = fut.get();
    REQUIRE_OK(res);
    CHECK(res->result.value("pid", 0) != victim);
    stop_and_check(r);
  }

  TEST_CASE("saturation: queue timeouts and pool_saturated, and no timed-out request "
            "ever executes") {
    auto cfg = small_config(1);
    cfg.pools[0].queue.max_size = 5;
    cfg.pools[0].queue.timeout = 100ms;
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    char tmpl[] = "/tmp/snakepit-probe-XXXXXX";
    int fd = ::mkstemp(tmpl);
    REQUIRE(fd >= 0);
    ::close(fd);
    std::string probe = tmpl;
    constexpr int n = 10;
    latch done{n};
    std::mutex mtx;
    std::vector<snakepit::execute_result> results(n, caf::make_error(errc::internal));
    for (int i = 0; i < n; ++i)
      r.execute_async("slow_probe", {{"path", probe}, {"value", i}, {"ms", 500}}, {},
                      [&, i](snakepit::execute_result res) {
                        {
                          std::lock_guard<std::mutex> g{mtx};
                          results[static_cast<size_t>(i)] = std::move(res);
                        }
                        done.count_down();
                      });
    REQUIRE(done.wait(30s));
    int timeouts = 0, saturated = 0;
    std::set<int> succeeded;
    for (int i = 0; i < n; ++i) {
      auto& res = results[static_cast<size_t>(i)];
      if (res)
        succeeded.insert(i);
      else if (is_error(res.error(), errc::queue_timeout))
        ++timeouts;
      else if (is_error(res.error(), errc::pool_saturated))
        ++saturated;
      else
        FAIL_CHECK("unexpected error: " << snakepit::describe(res.error()));
    }
    CHECK(timeouts >= 1);
    CHECK(saturated >= 1);
    // Let anything that (wrongly) still ran finish, then compare what executed.
    std::this_thread::sleep_for(700ms);
    std::set<int> executed;
    std::ifstream in{probe};
    for (int v; in >> v;)
      executed.insert(v);
    ::unlink(probe.c_str());
    CHECK(executed == succeeded);
    auto stats = r.get_stats();
    REQUIRE(stats);
    CHECK(stats->queue_timeouts == static_cast<uint64_t>(timeouts));
    CHECK(stats->saturations >= static_cast<uint64_t>(saturated));
    stop_and_check(r);
  }

  TEST_CASE("a call whose deadline passes while the tool runs fails with timeout") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    snakepit::execute_options opts;
    opts.timeout = 300ms;
    auto res = (*rt)->execute("sleep", {{"ms", 3000}}, opts);
    REQUIRE_FALSE(res);
    CHECK(is_error(res.error(), errc::timeout));
    stop_and_check(**rt);
  }

  TEST_CASE(
    "workers get single-threaded numeric libraries unless the pool overrides it") {
    auto cfg = small_config(1);
    cfg.pools[0].adapter_env = {{"OMP_NUM_THREADS", "3"}};
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto omp = (*rt)->execute("env", {{"name", "OMP_NUM_THREADS"}});
    REQUIRE(omp);
    CHECK(omp->result == "3");
    auto blas = (*rt)->execute("env", {{"name", "OPENBLAS_NUM_THREADS"}});
    REQUIRE(blas);
    CHECK(blas->result == "1");
    stop_and_check(**rt);
  }

  TEST_CASE("a host actor talks to the pool actor with messages") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto pool = (*rt)->pool();
    REQUIRE(pool);
    caf::scoped_actor self{(*rt)->system()};
    snakepit::execute_request req;
    req.command = "add";
    req.args = {{"a", 1}, {"b", 2}};
    bool got = false;
    snakepit::actors::execute(self, snakepit::actors::pool_handle(pool), req, 10s)
      .receive(
        [&](snakepit::execute_reply& rep) {
          got = true;
          CHECK(rep.result.get<double>() == doctest::Approx(3.0));
        },
        [&](caf::error& err) { FAIL_CHECK(snakepit::describe(err)); });
    CHECK(got);
    stop_and_check(**rt);
  }

} // TEST_SUITE

TEST_SUITE("integration.pool.admission") {

  TEST_CASE("a full queue refuses the facade's callers at once on their own thread") {
    auto cfg = small_config(1);
    cfg.pools[0].queue.max_size = 1;
    cfg.pools[0].queue.timeout = 10s;
    event_capture events;
    auto rt = snakepit::runtime::start(cfg, events.options("snakepit."));
    if (!rt)
      FAIL(explain(rt.error()));
    auto& r = **rt;
    // One call runs, one waits: the queue is full.
    latch held{2};
    for (int i = 0; i < 2; ++i)
      r.execute_async("sleep", {{"ms", 1500}}, {},
                      [&](snakepit::execute_result) { held.count_down(); });
    REQUIRE(eventually([&] { return r.get_stats()->queue_depth == 1; }));
    // Asynchronous: answered before execute_async returns, on this thread.
    bool answered = false;
    snakepit::execute_result refused = caf::make_error(errc::internal);
    auto me = std::this_thread::get_id();
    std::thread::id answered_on;
    r.execute_async("echo", {{"x", 1}}, {}, [&](snakepit::execute_result res) {
      answered = true;
      answered_on = std::this_thread::get_id();
      refused = std::move(res);
    });
    CHECK(answered);
    CHECK(answered_on == me);
    REQUIRE_FALSE(refused);
    CHECK(is_error(refused.error(), errc::pool_saturated));
    CHECK_FALSE(snakepit::correlation_id_of(refused.error()).empty());
    // Blocking: the same, with the caller's own correlation id.
    snakepit::execute_options opts;
    opts.correlation_id = "cid-refused-1";
    auto t0 = std::chrono::steady_clock::now();
    auto blocked = r.execute("echo", {{"x", 2}}, opts);
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);
    REQUIRE_FALSE(blocked);
    CHECK(is_error(blocked.error(), errc::pool_saturated));
    CHECK(snakepit::correlation_id_of(blocked.error()) == "cid-refused-1");
    auto saturated = events.wait_for("snakepit.pool.saturated", [](const auto& ev) {
      return ev.metadata.value("correlation_id", "") == "cid-refused-1";
    });
    REQUIRE(saturated);
    CHECK(saturated->measurements.value("max_queue_size", 0) == 1);
    // Counted like the pool's own refusals; the held calls still complete.
    auto stats = r.get_stats();
    REQUIRE(stats);
    CHECK(stats->saturations == 2);
    REQUIRE(held.wait(20s));
    // Once the queue has room, calls are accepted again.
    CHECK(r.execute("echo", {{"x", 3}}));
    stop_and_check(r);
  }
}
