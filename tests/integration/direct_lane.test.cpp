// The direct lane: blocking callers claim a worker in the pool's checkout table and
// call it on their own thread. Checked against the pool's own rules with real
// Python workers: counting, capacity shared exactly with the actor path, no
// overtaking of queued requests, queued work served as soon as a lane call frees
// its worker, crashes, deadlines, recycling and shutdown.
#include <algorithm>
#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <thread>
#include <vector>

#include "actors/observability/telemetry.hpp"

#include "harness.hpp"

using namespace std::chrono_literals;
using snakepit::errc;
using snakepit::json;
using namespace snakepit::testing;

namespace {

using steady = std::chrono::steady_clock;

/// Waits until the pool reports `n` requests running.
bool busy_with(snakepit::runtime& r, size_t n) {
  return eventually([&] {
    auto s = r.get_stats();
    return s && s->in_flight == n;
  });
}

/// The most calls one process ran at once, from the start and end times `timed_sleep`
/// took in Python (not from the host's own bookkeeping, which is what is checked).
size_t most_at_once(const std::vector<json>& spans) {
  std::map<int, std::vector<std::pair<double, int>>> edges;
  for (auto& s : spans) {
    auto& e = edges[s.at("pid").get<int>()];
    e.emplace_back(s.at("start").get<double>(), +1);
    e.emplace_back(s.at("end").get<double>(), -1);
  }
  size_t most = 0;
  for (auto& [pid, e] : edges) {
    std::sort(e.begin(), e.end()); // at equal times an end (-1) counts before a start
    int running = 0;
    for (auto& [at, step] : e)
      most = std::max(most, static_cast<size_t>(running += step));
  }
  return most;
}

} // namespace

TEST_SUITE("integration.direct_lane") {

  TEST_CASE(
    "blocking calls run on the direct lane and count in stats, listings and telemetry") {
    std::mutex mtx;
    std::vector<snakepit::telemetry::event> events;
    snakepit::start_options so;
    so.telemetry_handlers.emplace_back("snakepit.request",
                                       [&](const snakepit::telemetry::event& ev) {
                                         std::lock_guard<std::mutex> g{mtx};
                                         events.push_back(ev);
                                       });
    auto rt = snakepit::runtime::start(small_config(2), so);
    REQUIRE_OK(rt);
    auto& r = **rt;
    for (int i = 0; i < 30; ++i) {
      auto res = r.execute("add", {{"a", i}, {"b", 1}});
      REQUIRE_OK(res);
      CHECK(res->result.get<double>() == i + 1);
      CHECK_FALSE(res->worker_id.empty());
    }
    snakepit::execute_options opts;
    opts.correlation_id = "lane-cid-1";
    auto failed = r.execute("fail", json::object(), opts);
    REQUIRE_FALSE(failed);
    CHECK(is_error(failed.error(), errc::tool_error));
    CHECK(snakepit::correlation_id_of(failed.error()) == "lane-cid-1");
    auto s = r.get_stats();
    REQUIRE(s);
    CHECK(s->requests == 31);
    CHECK(s->direct == 31);
    CHECK(s->completed == 30);
    CHECK(s->errors == 1);
    CHECK(s->latency.count() == 30);
    CHECK(s->in_flight == 0);
    auto ws = serving_workers(r);
    REQUIRE(ws);
    uint64_t served = 0;
    for (auto& w : *ws)
      served += w.requests;
    CHECK(served == 31);
    REQUIRE(r.telemetry().flush(5s));
    {
      std::lock_guard<std::mutex> g{mtx};
      size_t starts = 0, stops = 0, exceptions = 0;
      for (auto& ev : events) {
        if (ev.name == "snakepit.request.start") {
          ++starts;
          CHECK(ev.metadata.value("pool", "") == "default");
          CHECK_FALSE(ev.metadata.value("worker_id", "").empty());
          CHECK_FALSE(ev.metadata.value("correlation_id", "").empty());
        } else if (ev.name == "snakepit.request.stop") {
          ++stops;
          CHECK(ev.measurements.value("duration_us", -1) >= 0);
        } else if (ev.name == "snakepit.request.exception") {
          ++exceptions;
          CHECK(ev.metadata.value("success", true) == false);
        }
      }
      CHECK(starts == 31);
      CHECK(stops == 30);
      CHECK(exceptions == 1);
    }
    stop_and_check(r);
  }

  TEST_CASE("session calls take the lane to the worker their session is bound to") {
    auto rt = snakepit::runtime::start(small_config(2));
    REQUIRE_OK(rt);
    auto& r = **rt;
    std::set<std::string> workers;
    for (int i = 0; i < 10; ++i) {
      auto res = r.execute_in_session("lane_session_1", "request_metadata");
      REQUIRE_OK(res);
      workers.insert(res->worker_id);
      CHECK(res->result.value("session_id", std::string{"?"}) == "lane_session_1");
    }
    CHECK(workers.size() == 1);
    auto s = r.get_stats();
    REQUIRE(s);
    // The first call binds the session (through the pool); the rest follow the binding.
    CHECK(s->direct == 9);
    auto info = r.get_session_info("lane_session_1");
    REQUIRE_OK(info);
    CHECK(eventually([&] {
      auto i = r.get_session_info("lane_session_1");
      return i && i->request_count == 10;
    }));
    CHECK(info->last_worker == *workers.begin());
    // A session cleaned up in the store is forgotten by the pool and the lane: its
    // next call binds afresh through the pool, the ones after follow on the lane.
    REQUIRE(r.cleanup_session("lane_session_1"));
    REQUIRE(r.get_stats()); // (the store's notice is in the pool's mailbox before this)
    for (int i = 0; i < 2; ++i) {
      auto res = r.execute_in_session("lane_session_1", "request_metadata");
      REQUIRE_OK(res);
    }
    auto after = r.get_stats();
    REQUIRE(after);
    CHECK(after->direct == 10);
    CHECK(after->requests == 12);
    // An invalid id is the pool's to refuse.
    auto bad = r.execute_in_session("no spaces allowed", "ping");
    REQUIRE_FALSE(bad);
    CHECK(is_error(bad.error(), errc::invalid_session_id));
    stop_and_check(r);
  }

  TEST_CASE("with direct_dispatch off every blocking call goes through the pool and "
            "worker actors") {
    auto cfg = small_config(1);
    cfg.pools[0].direct_dispatch = false;
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    for (int i = 0; i < 10; ++i)
      CHECK(r.execute("ping"));
    auto s = r.get_stats();
    REQUIRE(s);
    CHECK(s->requests == 10);
    CHECK(s->direct == 0);
    CHECK(s->completed == 10);
    stop_and_check(r);
  }

  TEST_CASE(
    "a request queued behind a call on the lane runs as soon as that call returns") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto& r = **rt;
    steady::time_point lane_done;
    auto lane = std::async(std::launch::async, [&] {
      auto res = r.execute("sleep", {{"ms", 400}});
      lane_done = steady::now();
      return res;
    });
    REQUIRE(busy_with(r, 1));
    std::promise<snakepit::execute_result> queued;
    r.execute_async("ping", json::object(), {}, [&](snakepit::execute_result res) {
      queued.set_value(std::move(res));
    });
    auto fut = queued.get_future();
    // The pool's queue timeout is 10 s: without the lane's notice the ping would sit
    // in the queue until then.
    REQUIRE(fut.wait_for(3s) == std::future_status::ready);
    auto ping_done = steady::now();
    auto res = fut.get();
    CHECK_OK(res);
    auto first = lane.get();
    CHECK_OK(first);
    CHECK(ping_done >= lane_done);
    auto s = r.get_stats();
    REQUIRE(s);
    CHECK(s->direct == 1);
    CHECK(s->queued == 1);
    CHECK(s->completed == 2);
    stop_and_check(r);
  }

  TEST_CASE("blocking callers wait behind requests already queued") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto& r = **rt;
    std::mutex mtx;
    std::vector<std::string> order;
    auto note = [&](const std::string& who) {
      std::lock_guard<std::mutex> g{mtx};
      order.push_back(who);
    };
    auto a = std::async(std::launch::async, [&] {
      auto res = r.execute("sleep", {{"ms", 400}});
      note("a");
      return res;
    });
    REQUIRE(busy_with(r, 1));
    std::promise<void> b_done;
    r.execute_async("sleep", {{"ms", 100}}, {}, [&](snakepit::execute_result res) {
      CHECK(res);
      note("b");
      b_done.set_value();
    });
    REQUIRE(eventually([&] { return r.get_stats()->queue_depth == 1; }));
    // The queue is not empty: this blocking call may not take the lane, even once
    // the worker is free, before b ran.
    auto c = std::async(std::launch::async, [&] {
      auto res = r.execute("ping");
      note("c");
      return res;
    });
    CHECK(a.get());
    CHECK(c.get());
    b_done.get_future().wait();
    std::lock_guard<std::mutex> g{mtx};
    CHECK(order == std::vector<std::string>{"a", "b", "c"});
    auto s = r.get_stats();
    REQUIRE(s);
    CHECK(s->direct == 1);
    CHECK(s->queued == 2);
    stop_and_check(r);
  }

  TEST_CASE("blocking and asynchronous callers share each worker's capacity exactly") {
    auto cfg = small_config(2);
    cfg.pools[0].worker_profile = snakepit::worker_profile::thread;
    cfg.pools[0].threads_per_worker = 2;
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    std::mutex mtx;
    std::vector<json> spans; // what each call's tool saw: start, end, pid
    auto keep = [&](const snakepit::execute_result& res) {
      if (res) {
        std::lock_guard<std::mutex> g{mtx};
        spans.push_back(res->result);
      }
    };
    constexpr int callers = 6, per_caller = 15, async_calls = 60;
    std::atomic<int> async_left{async_calls};
    std::promise<void> async_done;
    for (int i = 0; i < async_calls; ++i)
      r.execute_async("timed_sleep", {{"ms", 5}}, {}, [&](snakepit::execute_result res) {
        keep(res);
        if (--async_left == 0)
          async_done.set_value();
      });
    std::vector<std::thread> threads;
    for (int c = 0; c < callers; ++c)
      threads.emplace_back([&] {
        for (int i = 0; i < per_caller; ++i)
          keep(r.execute("timed_sleep", {{"ms", 5}}));
      });
    for (auto& t : threads)
      t.join();
    REQUIRE(async_done.get_future().wait_for(30s) == std::future_status::ready);
    std::lock_guard<std::mutex> g{mtx};
    CHECK(spans.size() == static_cast<size_t>(callers * per_caller + async_calls));
    // No process ran more calls at once than its 2 threads, by its own clock.
    auto most = most_at_once(spans);
    MESSAGE("most calls at once in one worker: " << most);
    CHECK(most <= 2);
    snakepit::pool_stats loaded;
    REQUIRE(eventually([&] {
      auto now = r.get_stats();
      if (now)
        loaded = *now;
      return now && now->in_flight == 0 && now->queue_depth == 0;
    }));
    // Under that load the blocking calls may all have found a queue and gone through
    // the pool (no overtaking); on the idle pool every blocking call takes the lane.
    constexpr int idle_calls = 5;
    for (int i = 0; i < idle_calls; ++i)
      CHECK(r.execute("sleep", {{"ms", 1}}));
    auto s = r.get_stats();
    REQUIRE(s);
    CHECK(s->requests ==
          static_cast<uint64_t>(callers * per_caller + async_calls + idle_calls));
    CHECK(s->completed == s->requests);
    CHECK(s->direct == loaded.direct + idle_calls);
    CHECK(s->in_flight == 0);
    CHECK(s->queue_depth == 0);
    stop_and_check(r);
  }

  TEST_CASE("kill -9 during a call on the lane: worker_crashed at once, then a new "
            "process serves") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto old = serving_workers(r)->front();
    snakepit::execute_options opts;
    opts.correlation_id = "lane-crash-1";
    auto call = std::async(std::launch::async, [&] {
      return r.execute("sleep", {{"ms", 10000}}, opts);
    });
    REQUIRE(busy_with(r, 1));
    auto killed = steady::now();
    REQUIRE(::kill(old.pid, SIGKILL) == 0);
    REQUIRE(call.wait_for(5s) == std::future_status::ready);
    CHECK(steady::now() - killed < 2s);
    auto res = call.get();
    REQUIRE_FALSE(res);
    CHECK_ERROR(res, errc::worker_crashed);
    CHECK(snakepit::correlation_id_of(res.error()) == "lane-crash-1");
    REQUIRE(eventually([&] {
      auto ws = serving_workers(r);
      return ws && ws->size() == 1 && ws->front().pid != old.pid;
    }));
    auto next = r.execute("ping");
    CHECK_OK(next);
    auto s = r.get_stats();
    REQUIRE(s);
    CHECK(s->direct == 2);
    CHECK(s->errors == 1);
    CHECK(s->worker_crashes == 1);
    stop_and_check(r);
  }

  TEST_CASE("a sequential caller loses at most its one call when its worker is killed") {
    auto rt = snakepit::runtime::start(small_config(2));
    REQUIRE_OK(rt);
    auto& r = **rt;
    std::atomic<bool> stop{false};
    std::atomic<int> ok{0};
    std::vector<snakepit::execute_result> failures;
    std::mutex mtx;
    std::string last_worker;
    std::thread caller{[&] {
      while (!stop) {
        auto res = r.execute("sleep", {{"ms", 5}});
        std::lock_guard<std::mutex> g{mtx};
        if (res) {
          ++ok;
          last_worker = res->worker_id;
        } else {
          failures.push_back(std::move(res));
        }
      }
    }};
    REQUIRE(eventually([&] { return ok > 20; }));
    int victim = 0;
    std::string victim_id;
    {
      std::lock_guard<std::mutex> g{mtx};
      victim_id = last_worker;
    }
    auto listed = serving_workers(r);
    REQUIRE(listed);
    for (auto& w : *listed)
      if (w.id == victim_id)
        victim = w.pid;
    REQUIRE(victim != 0);
    REQUIRE(::kill(victim, SIGKILL) == 0);
    // Until the pool sees the worker go, the caller's next calls must not keep
    // trying the dead process: they go to the other worker.
    REQUIRE(eventually([&] {
      auto ws = serving_workers(r);
      if (!ws)
        return false;
      for (auto& w : *ws)
        if (w.id == victim_id && w.pid != victim)
          return true;
      return false;
    }));
    auto before = ok.load();
    REQUIRE(eventually([&] { return ok > before + 20; }));
    stop = true;
    caller.join();
    std::lock_guard<std::mutex> g{mtx};
    CHECK(failures.size() <= 1);
    for (auto& f : failures)
      CHECK_ERROR(f, errc::worker_crashed);
    stop_and_check(r);
  }

  TEST_CASE("a deadline on the lane gives timeout with the call's correlation id") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto& r = **rt;
    snakepit::execute_options opts;
    opts.timeout = 300ms;
    opts.correlation_id = "lane-deadline-1";
    auto t0 = steady::now();
    auto res = r.execute("sleep", {{"ms", 1500}}, opts);
    auto took = steady::now() - t0;
    REQUIRE_FALSE(res);
    CHECK_ERROR(res, errc::timeout);
    CHECK(snakepit::correlation_id_of(res.error()) == "lane-deadline-1");
    CHECK(took >= 250ms);
    CHECK(took < 1200ms);
    auto next = r.execute("ping");
    CHECK_OK(next);
    auto s = r.get_stats();
    REQUIRE(s);
    CHECK(s->direct == 2);
    stop_and_check(r);
  }

  TEST_CASE("worker_max_requests counts calls on the lane: the worker is recycled") {
    auto cfg = small_config(1);
    cfg.pools[0].recycling.max_requests = 10;
    cfg.pools[0].recycling.requests_jitter = 0;
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto first = serving_workers(r)->front();
    // The worker serves on until its replacement is ready, then takes no new work.
    std::set<std::string> served_by;
    auto until = steady::now() + 20s;
    while (served_by.size() < 2 && steady::now() < until) {
      auto res = r.execute("ping");
      REQUIRE_OK(res);
      served_by.insert(res->worker_id);
    }
    CHECK(served_by.size() == 2);
    CHECK(eventually([&] {
      auto s = r.get_stats();
      return s && s->recycles == 1;
    }));
    CHECK(eventually([&] { return !pid_alive(first.pid); }));
    auto s = r.get_stats();
    REQUIRE(s);
    CHECK(s->direct == s->requests);
    stop_and_check(r);
  }

  TEST_CASE(
    "stopping the runtime while a call runs on the lane ends that call with an error") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto call = std::async(std::launch::async, [&] {
      return r.execute("sleep", {{"ms", 30000}});
    });
    REQUIRE(busy_with(r, 1));
    CHECK(r.get_stats()->direct == 1);
    stop_and_check(r);
    REQUIRE(call.wait_for(10s) == std::future_status::ready);
    auto res = call.get();
    REQUIRE_FALSE(res);
    CHECK_MSG((is_error(res.error(), errc::shutting_down) ||
               is_error(res.error(), errc::worker_crashed)),
              explain(res.error()));
  }

} // TEST_SUITE
