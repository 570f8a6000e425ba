// Session affinity modes, worker profiles with real per-worker concurrency, and
// multi-pool routing, with real Python workers.
#include <algorithm>
#include <atomic>
#include <future>
#include <mutex>
#include <set>

#include "actors/observability/telemetry.hpp"
#include "harness.hpp"

using namespace std::chrono_literals;
using snakepit::errc;
using snakepit::json;
using namespace snakepit::testing;

namespace {

int pid_of(const snakepit::execute_result& res) {
  return res ? res->result.value("pid", 0) : 0;
}

bool busy_workers(snakepit::runtime& rt, size_t n) {
  return eventually([&] {
    auto s = rt.get_stats();
    return s && s->busy >= n;
  });
}

/// Starts a call in session `sid` that holds its worker until `held` opens.
std::future<snakepit::execute_result> held_call(snakepit::runtime& rt, const char* sid,
                                                const gate& held) {
  snakepit::execute_options o;
  o.session_id = sid;
  return call_async(rt, "wait_gate", held.args(), o);
}

} // namespace

TEST_SUITE("integration.affinity") {

  TEST_CASE("hint: a session's sequential calls on an idle pool all run on one worker") {
    auto rt = snakepit::runtime::start(small_config(4));
    REQUIRE_OK(rt);
    std::set<int> pids;
    for (int i = 0; i < 100; ++i) {
      auto res = (*rt)->execute_in_session("sess_a", "info");
      REQUIRE_OK(res);
      pids.insert(pid_of(res));
    }
    CHECK(pids.size() == 1);
    auto meta = (*rt)->execute_in_session("sess_a", "request_metadata");
    REQUIRE(meta);
    CHECK(meta->result.value("session_id", std::string{}) == "sess_a");
    stop_and_check(**rt);
  }

  TEST_CASE("hint: when the session's worker is busy the call goes elsewhere and the "
            "session follows") {
    auto rt = snakepit::runtime::start(small_config(2));
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto first = r.execute_in_session("s1", "info");
    REQUIRE(first);
    auto home = pid_of(first);
    gate held;
    auto slow = held_call(r, "s1", held);
    REQUIRE(busy_workers(r, 1));
    auto moved = r.execute_in_session("s1", "info");
    REQUIRE(moved);
    CHECK(pid_of(moved) != home);
    held.open();
    auto blocked = slow.get();
    REQUIRE_OK(blocked);
    CHECK(blocked->result.value("opened", false)); // it ended because the gate opened
    CHECK(pid_of(blocked) == home);
    auto after = r.execute_in_session("s1", "info");
    REQUIRE(after);
    CHECK(pid_of(after) == pid_of(moved)); // the session followed its new worker
    stop_and_check(r);
  }

  TEST_CASE(
    "strict_queue: a call waits for the session's busy worker instead of moving") {
    auto cfg = small_config(2);
    cfg.pools[0].affinity = snakepit::affinity_mode::strict_queue;
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto first = r.execute_in_session("s2", "info");
    REQUIRE(first);
    auto home = pid_of(first);
    gate held;
    auto slow = held_call(r, "s2", held);
    REQUIRE(busy_workers(r, 1));
    // Another session is free to use the other worker meanwhile.
    auto other = r.execute_in_session("s3", "info");
    REQUIRE(other);
    CHECK(pid_of(other) != home);
    // s2's next call queues for its busy worker instead of taking the idle one.
    auto waiting =
      std::async(std::launch::async, [&] { return r.execute_in_session("s2", "info"); });
    // Should a check below stop the test, open the gate before `waiting` waits for
    // its call.
    struct open_on_exit {
      gate& g;
      ~open_on_exit() { g.open(); }
    } opener{held};
    CHECK(eventually([&] {
      auto s = r.get_stats();
      return s && s->queue_depth == 1;
    }));
    CHECK(waiting.wait_for(100ms) == std::future_status::timeout);
    held.open();
    auto blocked = slow.get();
    REQUIRE_OK(blocked);
    CHECK(blocked->result.value("opened", false));
    auto waited = waiting.get();
    REQUIRE_OK(waited);
    CHECK(pid_of(waited) == home);
    auto stats = r.get_stats();
    REQUIRE(stats);
    CHECK(stats->queued == 1);
    stop_and_check(r);
  }

  TEST_CASE(
    "strict_fail_fast: a call to the session's busy worker fails with worker_busy") {
    auto cfg = small_config(2);
    cfg.pools[0].affinity = snakepit::affinity_mode::strict_fail_fast;
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(r.execute_in_session("s4", "info"));
    gate held;
    auto slow = held_call(r, "s4", held);
    REQUIRE(busy_workers(r, 1));
    auto res = r.execute_in_session("s4", "info");
    REQUIRE_FALSE(res);
    CHECK_ERROR(res, errc::worker_busy);
    CHECK(r.get_stats()->queue_depth == 0);
    held.open();
    auto blocked = slow.get();
    REQUIRE_OK(blocked);
    CHECK(blocked->result.value("opened", false));
    stop_and_check(r);
  }

  TEST_CASE("killing the session's worker: hint moves on, strict reports "
            "session_worker_unavailable") {
    for (auto mode :
         {snakepit::affinity_mode::hint, snakepit::affinity_mode::strict_queue}) {
      CAPTURE(snakepit::to_string(mode));
      auto cfg = small_config(2);
      cfg.pools[0].affinity = mode;
      auto rt = snakepit::runtime::start(cfg);
      REQUIRE_OK(rt);
      auto& r = **rt;
      auto first = r.execute_in_session("s5", "info");
      REQUIRE(first);
      auto victim = pid_of(first);
      REQUIRE(::kill(victim, SIGKILL) == 0);
      REQUIRE(eventually([&] { return !pid_alive(victim); }));
      // Wait until the pool saw the death (the restarted worker has a new pid).
      REQUIRE(eventually([&] {
        auto ws = serving_workers(r);
        if (!ws || ws->size() != 2)
          return false;
        for (auto& w : *ws)
          if (w.pid == victim)
            return false;
        return true;
      }));
      auto next = r.execute_in_session("s5", "info");
      if (mode == snakepit::affinity_mode::hint) {
        REQUIRE_OK(next);
        CHECK(pid_of(next) != victim);
      } else {
        REQUIRE_FALSE(next);
        CHECK_ERROR(next, errc::session_worker_unavailable);
      }
      stop_and_check(r);
    }
  }

  TEST_CASE("the runtime's max_sessions quota is enforced with quota_exceeded") {
    auto cfg = small_config(1);
    cfg.sessions.max = 2;
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    CHECK((*rt)->create_session(std::string{"q1"}));
    CHECK((*rt)->create_session(std::string{"q2"}));
    auto third = (*rt)->create_session(std::string{"q3"});
    REQUIRE_FALSE(third);
    CHECK_ERROR(third, errc::quota_exceeded);
    CHECK((*rt)->cleanup_session("q1"));
    CHECK((*rt)->create_session(std::string{"q3"}));
    stop_and_check(**rt);
  }

  TEST_CASE("an invalid session id is rejected") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto res = (*rt)->execute_in_session("bad id!", "ping");
    REQUIRE_FALSE(res);
    CHECK(is_error(res.error(), errc::invalid_session_id));
    stop_and_check(**rt);
  }

} // TEST_SUITE

TEST_SUITE("integration.scheduling") {

  TEST_CASE("thread profile: 8 concurrent sleeps on 2 workers x 4 threads all overlap") {
    auto cfg = small_config(2);
    cfg.pools[0].worker_profile = snakepit::worker_profile::thread;
    cfg.pools[0].threads_per_worker = 4;
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    std::mutex mtx;
    std::vector<json> results;
    std::vector<std::promise<void>> done(8);
    for (size_t i = 0; i < 8; ++i) {
      r.execute_async("timed_sleep", {{"ms", 1500}}, {},
                      [&, i](snakepit::execute_result res) {
                        {
                          std::lock_guard<std::mutex> g{mtx};
                          if (res)
                            results.push_back(res->result);
                        }
                        done[i].set_value();
                      });
      // Load tracking follows every dispatch: in flight = calls made so far.
      CHECK(eventually(
        [&] {
          auto s = r.get_stats();
          return s && s->in_flight == i + 1;
        },
        5s));
    }
    auto s = r.get_stats();
    REQUIRE(s);
    CHECK(s->capacity == 8);
    for (auto& d : done)
      d.get_future().wait();
    CHECK(eventually([&] { return r.get_stats()->in_flight == 0; }));
    REQUIRE(results.size() == 8);
    double latest_start = 0, earliest_end = 1e300;
    std::set<int> pids;
    for (auto& res : results) {
      latest_start = std::max(latest_start, res.value("start", 0.0));
      earliest_end = std::min(earliest_end, res.value("end", 0.0));
      pids.insert(res.value("pid", 0));
    }
    CHECK(latest_start < earliest_end); // every sleep was running at one moment
    CHECK(pids.size() == 2);
    auto ws = serving_workers(r);
    REQUIRE(ws);
    for (auto& w : *ws)
      CHECK(w.capacity == 4);
    stop_and_check(r);
  }

  TEST_CASE(
    "capacity strategies: profile dispatches one per worker, hybrid reports capacity") {
    {
      auto cfg = small_config(1);
      cfg.pools[0].worker_profile = snakepit::worker_profile::thread;
      cfg.pools[0].threads_per_worker = 4;
      cfg.pools[0].capacity_strategy = snakepit::capacity_strategy::profile;
      auto rt = snakepit::runtime::start(cfg);
      REQUIRE_OK(rt);
      CHECK(serving_workers(**rt)->front().capacity == 1);
      stop_and_check(**rt);
    }
    {
      std::atomic<int> reached{0};
      snakepit::start_options opts;
      opts.telemetry_handlers.emplace_back("snakepit.pool.capacity_reached",
                                           [&](const auto&) { ++reached; });
      auto cfg = small_config(1);
      cfg.pools[0].worker_profile = snakepit::worker_profile::thread;
      cfg.pools[0].threads_per_worker = 2;
      cfg.pools[0].capacity_strategy = snakepit::capacity_strategy::hybrid;
      auto rt = snakepit::runtime::start(cfg, opts);
      REQUIRE_OK(rt);
      std::promise<void> a, b;
      (*rt)->execute_async("sleep", {{"ms", 300}}, {},
                           [&](snakepit::execute_result) { a.set_value(); });
      (*rt)->execute_async("sleep", {{"ms", 300}}, {},
                           [&](snakepit::execute_result) { b.set_value(); });
      a.get_future().wait();
      b.get_future().wait();
      (*rt)->telemetry().flush(5s);
      CHECK(reached.load() >= 1);
      stop_and_check(**rt);
    }
    auto bad = small_config(1);
    bad.pools[0].capacity_strategy = static_cast<snakepit::capacity_strategy>(42);
    CHECK(snakepit::describe(bad.validate()).find("capacity_strategy") !=
          std::string::npos);
  }

  TEST_CASE("thread limits follow the profile and the pool's override wins") {
    auto cfg = small_config(1);
    cfg.pools[0].worker_profile = snakepit::worker_profile::thread;
    cfg.pools[0].threads_per_worker = 3;
    cfg.pools[0].adapter_env = {{"MKL_NUM_THREADS", "7"}};
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    CHECK((*rt)->execute("env", {{"name", "OPENBLAS_NUM_THREADS"}})->result == "3");
    CHECK((*rt)->execute("env", {{"name", "MKL_NUM_THREADS"}})->result == "7");
    stop_and_check(**rt);
  }

  TEST_CASE(
    "pools with different adapters and settings serve side by side, routed by name") {
    auto cfg = small_config(1);
    cfg.pools[0].name = "alpha";
    snakepit::pool_config beta = cfg.pools[0];
    beta.name = "beta";
    beta.pool_size = 2;
    beta.adapter_env = {{"POOL_TAG", "beta"}};
    cfg.pools.push_back(beta);
    snakepit::pool_config gamma = cfg.pools[0];
    gamma.name = "gamma";
    gamma.adapter = "snakepit_bridge.adapters.session_showcase.SessionShowcaseAdapter";
    cfg.pools.push_back(gamma);
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    snakepit::execute_options a, b, g;
    a.pool = "alpha";
    b.pool = "beta";
    g.pool = "gamma";
    CHECK(r.execute("env", {{"name", "POOL_TAG"}}, a)->result.is_null());
    CHECK(r.execute("env", {{"name", "POOL_TAG"}}, b)->result == "beta");
    // A third pool with a different adapter, served at the same time as the others.
    CHECK(r.execute("whoami", json::object(), g));
    auto other = r.execute("whoami", json::object(), a);
    REQUIRE_FALSE(other); // alpha's adapter has no such tool
    CHECK(is_error(other.error(), errc::unknown_tool));
    CHECK(serving_workers(r, "alpha")->size() == 1);
    CHECK(serving_workers(r, "beta")->size() == 2);
    CHECK(r.get_stats("beta")->completed == 1);
    stop_and_check(r);
  }

  TEST_CASE("a broken pool reports its error while a healthy pool keeps serving") {
    auto cfg = small_config(1);
    cfg.pools[0].name = "healthy";
    snakepit::pool_config broken = cfg.pools[0];
    broken.name = "broken";
    broken.adapter = "snakepit_missing_pool_module.Adapter";
    cfg.pools.push_back(broken);
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    snakepit::execute_options h, b;
    h.pool = "healthy";
    b.pool = "broken";
    CHECK(r.execute("ping", json::object(), h));
    auto err = r.await_ready("broken", 5s);
    REQUIRE(err);
    CHECK(is_error(err, errc::start_failed));
    CHECK(snakepit::describe(err).find("ModuleNotFoundError") != std::string::npos);
    auto res = r.execute("ping", json::object(), b);
    REQUIRE_FALSE(res);
    CHECK(is_error(res.error(), errc::start_failed));
    stop_and_check(r);
  }

} // TEST_SUITE
