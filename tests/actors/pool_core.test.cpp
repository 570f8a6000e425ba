// The pool's protocol core without actors or Python: every decision of the pool
// (admission, the queue, affinity, crashes, retries, taint, recycling, the circuit
// breaker, startup, drain) checked with plain calls on a virtual clock, against the
// behaviour of the pool actor it was taken from (docs/pool.md, docs/scheduling.md,
// docs/reliability.md, docs/architecture.md "The checkout table and the direct lane").
#include <algorithm>
#include <csignal>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/scoped_actor.hpp>

#include "pool_core_harness.hpp"

using namespace std::chrono_literals;
using snakepit::errc;
using snakepit::errc_of;
using snakepit::execute_options;
using snakepit::json;
using snakepit::pool_config;
using snakepit::actors::circuit_breaker;
using snakepit::actors::test::call_handle;
using snakepit::actors::test::event_log;
using snakepit::actors::test::pool_harness;
using snakepit::actors::test::small_pool;

namespace {

/// Distinct actor addresses for callers (the only use of an actor system here:
/// scoped actors on the test scheduler, which run nothing).
struct caller_addresses {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;

  caller_addresses() {
    cfg.set("scheduler.policy", caf::atom("testing"));
    sys = std::make_unique<caf::actor_system>(cfg);
  }
};

pool_config thread_pool(size_t workers, size_t threads) {
  auto cfg = small_pool(workers);
  cfg.worker_profile = snakepit::worker_profile::thread;
  cfg.threads_per_worker = threads;
  return cfg;
}

/// The other of two workers.
std::string other(const std::vector<std::string>& ids, const std::string& id) {
  return ids.at(0) == id ? ids.at(1) : ids.at(0);
}

} // namespace

TEST_SUITE("actors.pool_core") {

  // --- startup ---------------------------------------------------------------------

  TEST_CASE("startup starts startup_concurrency workers at a time and the next as each "
            "start finishes") {
    auto cfg = small_pool(5);
    cfg.startup.concurrency = 2;
    pool_harness h{cfg};
    h.core->begin_startup();
    h.sync();
    auto& starts = h.callee.starts;
    CHECK(starts.size() == 2);
    CHECK(h.core->stats().starting == 5);
    h.start_ok(starts[0]);
    CHECK(starts.size() == 3);
    CHECK(h.core->stats().starting == 4);
    h.start_failed(starts[1]);
    CHECK(starts.size() == 4);
    h.start_ok(starts[2]);
    CHECK(starts.size() == 5);
    h.start_ok(starts[3]);
    h.start_ok(starts[4]);
    CHECK(starts.size() == 5);
    CHECK(std::set<std::string>(starts.begin(), starts.end()).size() == 5);
    CHECK(starts.front() == "p_worker_1");
    CHECK(starts.back() == "p_worker_5");
  }

  TEST_CASE("await_ready is answered once every started worker is ready, in whichever "
            "order ready and start result come") {
    pool_harness h;
    std::vector<caf::error> answers;
    h.core->await_ready([&](caf::error err) { answers.push_back(std::move(err)); });
    h.core->begin_startup();
    h.sync();
    REQUIRE(h.callee.starts.size() == 2);
    auto a = h.callee.starts[0];
    auto b = h.callee.starts[1];
    h.ready(a); // its worker_ready overtook the start reply
    h.start_ok(a);
    h.start_ok(b);
    CHECK(answers.empty());
    CHECK_FALSE(h.core->startup_done());
    h.ready(b);
    REQUIRE(answers.size() == 1);
    CHECK_FALSE(answers[0]);
    CHECK(h.core->startup_done());
    h.core->await_ready([&](caf::error err) { answers.push_back(std::move(err)); });
    REQUIRE(answers.size() == 2);
    CHECK_FALSE(answers[1]);
  }

  TEST_CASE("a pool whose every start failed answers await_ready with start_failed and "
            "refuses calls at once") {
    pool_harness h;
    h.core->begin_startup();
    h.sync();
    auto ids = h.callee.starts;
    REQUIRE(ids.size() == 2);
    std::vector<caf::error> answers;
    h.core->await_ready([&](caf::error err) { answers.push_back(std::move(err)); });
    for (auto& id : ids)
      h.start_failed(id);
    CHECK(h.core->startup_done());
    REQUIRE(answers.size() == 1);
    CHECK(answers[0] == errc::start_failed);
    auto c = h.call();
    CHECK(c.code() == errc::start_failed);
    CHECK(h.callee.runs.empty());
    CHECK(h.core->queue_depth() == 0);
  }

  TEST_CASE(
    "a pool with one failed start becomes ready with the other worker and serves") {
    pool_harness h;
    h.core->begin_startup();
    h.sync();
    auto a = h.callee.starts.at(0);
    auto b = h.callee.starts.at(1);
    std::vector<caf::error> answers;
    h.core->await_ready([&](caf::error err) { answers.push_back(std::move(err)); });
    h.start_failed(a);
    h.start_ok(b);
    CHECK(answers.empty());
    h.ready(b);
    REQUIRE(answers.size() == 1);
    CHECK_FALSE(answers[0]);
    auto c = h.call();
    CHECK(h.running_on(c) == b);
    CHECK(h.core->stats().workers == 1);
  }

  TEST_CASE("calls made before any worker is ready wait and run on the first worker to "
            "become ready") {
    pool_harness h;
    h.core->begin_startup();
    h.sync();
    auto a = h.callee.starts.at(0);
    auto c = h.call();
    CHECK_FALSE(c.answered());
    CHECK(h.core->queue_depth() == 1);
    CHECK_FALSE(h.lane->is_open());
    h.start_ok(a);
    CHECK(h.running_on(c).empty());
    h.ready(a);
    CHECK(h.running_on(c) == a);
    CHECK(h.core->queue_depth() == 0);
  }

  // --- dispatch and the queue --------------------------------------------------------

  TEST_CASE("a call runs at once on a free worker with its own budget and its result "
            "reaches the caller") {
    pool_harness h;
    auto ids = h.boot();
    execute_options opts;
    opts.timeout = 2500ms;
    auto c = h.call_with(opts);
    auto* r = h.run_of(c);
    REQUIRE(r != nullptr);
    CHECK(r->budget == 2500ms);
    CHECK(r->slot == c.slot);
    CHECK(r->serial == h.serials.at(r->worker_id));
    CHECK(c.slot->lane == h.slot(r->worker_id));
    auto d = h.call();
    REQUIRE(h.run_of(d) != nullptr);
    CHECK(h.run_of(d)->budget == 10000ms); // the pool's request_timeout
    CHECK(h.run_of(d)->worker_id != r->worker_id);
    h.complete(c, json{{"x", 1}});
    REQUIRE(c.answers() == 1);
    REQUIRE(c.ok());
    CHECK(c.box->results[0]->result["x"] == 1);
    auto s = h.core->stats();
    CHECK(s.requests == 2);
    CHECK(s.completed == 1);
    CHECK(s.in_flight == 1);
  }

  TEST_CASE(
    "the least-loaded worker is chosen, and among equals the one used most recently") {
    pool_harness h;
    auto ids = h.boot();
    auto c1 = h.call();
    auto warm = h.running_on(c1);
    REQUIRE_FALSE(warm.empty());
    h.complete(c1);
    auto c2 = h.call();
    CHECK(h.running_on(c2) == warm);
    auto c3 = h.call();
    CHECK(h.running_on(c3) == other(ids, warm));
    h.complete(c2);
    h.complete(c3);
    // The other worker ran last: it is the warm one now.
    auto c4 = h.call();
    CHECK(h.running_on(c4) == other(ids, warm));
  }

  TEST_CASE("a call that finds every worker busy waits and runs when a worker frees up") {
    pool_harness h{small_pool(1)};
    auto ids = h.boot();
    auto a = h.call();
    auto b = h.call();
    CHECK_FALSE(b.answered());
    CHECK(h.running_on(b).empty());
    CHECK(h.core->queue_depth() == 1);
    CHECK(h.core->stats().queued == 1);
    CHECK(h.core->stats().queue_depth == 1);
    h.complete(a);
    CHECK(h.running_on(b) == ids[0]);
    CHECK(h.core->queue_depth() == 0);
  }

  TEST_CASE("queued calls are dispatched in arrival order as workers free up") {
    pool_harness h;
    auto ids = h.boot();
    auto a = h.call();
    auto b = h.call();
    auto c = h.call();
    auto d = h.call();
    auto e = h.call();
    CHECK(h.core->queue_depth() == 3);
    h.complete(b);
    CHECK(h.running_on(c) == h.run_of(b)->worker_id);
    CHECK(h.running_on(d).empty());
    h.complete(a);
    CHECK(h.running_on(d) == h.run_of(a)->worker_id);
    CHECK(h.running_on(e).empty());
    h.complete(d);
    CHECK(h.running_on(e) == h.run_of(a)->worker_id);
    std::vector<std::string> order;
    for (auto& r : h.callee.runs)
      order.push_back(r.req.opts.correlation_id);
    CHECK(order == std::vector<std::string>{a.cid, b.cid, c.cid, d.cid, e.cid});
  }

  TEST_CASE("a call that waits longer than queue_timeout fails with queue_timeout and "
            "never runs") {
    pool_harness h{small_pool(1)};
    h.boot();
    auto a = h.call();
    auto b = h.call();
    h.advance(999ms);
    CHECK_FALSE(b.answered());
    h.advance(1ms);
    CHECK(b.code() == errc::queue_timeout);
    CHECK(h.core->stats().queue_timeouts == 1);
    CHECK(h.core->queue_depth() == 0);
    h.complete(a);
    CHECK(h.runs_of(b) == 0);
    CHECK(b.answers() == 1);
    CHECK(h.lane->is_open());
  }

  TEST_CASE("a call whose own deadline is shorter than the queue timeout fails with "
            "timeout in the queue") {
    pool_harness h{small_pool(1)};
    h.boot();
    auto a = h.call();
    execute_options opts;
    opts.timeout = 300ms;
    auto b = h.call_with(opts);
    h.advance(299ms);
    CHECK_FALSE(b.answered());
    h.advance(1ms);
    CHECK(b.code() == errc::timeout);
    CHECK(h.core->stats().queue_timeouts == 1);
    h.complete(a);
    CHECK(h.runs_of(b) == 0);
  }

  TEST_CASE("a late queue timer of a call dispatched meanwhile is ignored") {
    pool_harness h{small_pool(1)};
    h.boot();
    auto a = h.call();
    auto b = h.call();
    h.advance(500ms);
    h.complete(a);
    REQUIRE_FALSE(h.running_on(b).empty());
    h.advance(600ms); // b's queue timer falls due
    CHECK_FALSE(b.answered());
    h.complete(b);
    CHECK(b.answers() == 1);
    CHECK(b.ok());
    CHECK(h.core->stats().queue_timeouts == 0);
  }

  TEST_CASE("a call whose deadline passed in the queue before its timer arrived is "
            "answered with timeout and the next one runs") {
    pool_harness h{small_pool(1)};
    h.boot();
    auto a = h.call();
    execute_options opts;
    opts.timeout = 200ms;
    auto b = h.call_with(opts);
    auto c = h.call();
    h.jump(300ms); // b's timer is still on its way
    h.complete(a);
    CHECK(b.code() == errc::timeout);
    CHECK(h.runs_of(b) == 0);
    CHECK_FALSE(h.running_on(c).empty());
    CHECK(h.core->stats().queue_timeouts == 1);
  }

  TEST_CASE("a call beyond max_queue_size is refused with pool_saturated and counted") {
    auto cfg = small_pool(1);
    cfg.queue.max_size = 2;
    pool_harness h{cfg};
    h.boot();
    auto a = h.call();
    auto b = h.call();
    auto c = h.call();
    auto d = h.call();
    CHECK(d.code() == errc::pool_saturated);
    CHECK_FALSE(b.answered());
    CHECK_FALSE(c.answered());
    auto s = h.core->stats();
    CHECK(s.saturations == 1);
    CHECK(s.requests == 3);
    CHECK(s.queue_depth == 2);
    h.complete(a);
    CHECK(h.runs_of(d) == 0);
  }

  TEST_CASE("a dispatched call's budget is what remains of its deadline after its wait") {
    auto cfg = small_pool(1);
    cfg.queue.timeout = 5000ms;
    pool_harness h{cfg};
    h.boot();
    auto a = h.call();
    execute_options opts;
    opts.timeout = 1000ms;
    auto b = h.call_with(opts);
    h.advance(300ms);
    h.complete(a);
    REQUIRE(h.run_of(b) != nullptr);
    CHECK(h.run_of(b)->budget == 700ms);
  }

  // --- the checkout table ----------------------------------------------------------

  TEST_CASE("the table is open with free workers and nothing waiting, and blocking "
            "callers take it") {
    pool_harness h;
    auto ids = h.boot();
    CHECK(h.lane->is_open());
    for (auto& id : ids) {
      REQUIRE(h.slot(id) != nullptr);
      CHECK(h.slot(id)->offered.load());
    }
    auto res = h.blocking_call();
    REQUIRE(res.has_value()); // taken by the lane (its empty channel answers internal)
    CHECK(errc_of(res->error()) == errc::internal);
    auto s = h.core->stats();
    CHECK(s.direct == 1);
    CHECK(s.requests == 1);
    CHECK(s.errors == 1);
    for (auto& id : ids)
      CHECK(h.slot(id)->load.load() == 0);
  }

  TEST_CASE("the table is closed while a call waits, so blocking callers do not overtake "
            "queued work") {
    pool_harness h{small_pool(1)};
    auto ids = h.boot();
    auto a = h.call();
    CHECK(h.lane->is_open()); // nothing waits; the worker is merely full
    CHECK_FALSE(h.blocking_call().has_value());
    auto b = h.call();
    CHECK_FALSE(h.lane->is_open());
    h.complete(a);
    CHECK(h.running_on(b) == ids[0]);
    CHECK(h.lane->is_open());
    CHECK_FALSE(h.blocking_call().has_value()); // b holds the worker
    h.complete(b);
    CHECK(h.blocking_call().has_value());
  }

  TEST_CASE(
    "a call pinned in the queue keeps the table closed although another worker is free") {
    auto cfg = small_pool(2);
    cfg.affinity = snakepit::affinity_mode::strict_queue;
    pool_harness h{cfg};
    auto ids = h.boot();
    auto s1 = h.session_call("s");
    auto bound = h.running_on(s1);
    REQUIRE_FALSE(bound.empty());
    auto s2 = h.session_call("s");
    CHECK(h.running_on(s2).empty());
    CHECK(h.slot(other(ids, bound))->load.load() == 0);
    CHECK_FALSE(h.lane->is_open());
    CHECK_FALSE(h.blocking_call().has_value());
    h.complete(s1);
    CHECK(h.running_on(s2) == bound);
    CHECK(h.lane->is_open());
  }

  TEST_CASE("a blocking caller that frees a slot while the table is closed tells the "
            "pool, which serves the queue") {
    pool_harness h{small_pool(1)};
    auto ids = h.boot();
    auto slot = h.slot(ids[0]);
    REQUIRE(slot->try_claim()); // a blocking caller's call in flight
    auto b = h.call();
    CHECK(h.running_on(b).empty());
    CHECK_FALSE(h.lane->is_open());
    slot->release();
    CHECK(h.running_on(b).empty()); // the pool cannot see the release
    h.lane_notes.push_back(ids[0]); // the caller read "closed" after its release
    h.forward_lane_notes();
    CHECK(h.running_on(b) == ids[0]);
    CHECK(slot->load.load() == 1);
  }

  TEST_CASE("a slot a blocking caller frees just before the table closes still serves "
            "the queue") {
    pool_harness h{small_pool(1)};
    auto ids = h.boot();
    auto slot = h.slot(ids[0]);
    REQUIRE(slot->try_claim()); // a lane call in flight
    auto out = std::make_shared<snakepit::actors::test::reply_box>();
    auto rs = std::make_shared<snakepit::actors::reply_slot>();
    rs->fn = [out](snakepit::execute_result res) {
      out->results.push_back(std::move(res));
    };
    execute_options opts;
    opts.correlation_id = "b";
    h.core->accept(snakepit::execute_request{"echo", json::object(), opts}, rs,
                   caf::actor_addr{});
    REQUIRE(h.core->queue_depth() == 1); // queued; the table is not closed yet
    REQUIRE(h.lane->is_open());
    slot->release(); // the caller saw the table open: it tells nobody
    REQUIRE(h.lane_notes.empty());
    h.sync(); // closing reads the loads afterwards
    CHECK_FALSE(h.lane->is_open());
    REQUIRE(h.run_of("b") != nullptr);
    CHECK(h.run_of("b")->worker_id == ids[0]);
  }

  TEST_CASE("a lane call that reaches the worker's request limit makes the pool recycle "
            "it on lane_done") {
    auto cfg = small_pool(1);
    cfg.recycling.max_requests = 2;
    cfg.recycling.requests_jitter = 0;
    pool_harness h{cfg};
    auto ids = h.boot();
    REQUIRE(h.callee.starts.size() == 1);
    REQUIRE(h.blocking_call().has_value());
    CHECK(h.callee.starts.size() == 1);
    REQUIRE(h.blocking_call().has_value());
    CHECK(h.callee.starts.size() == 2); // the replacement
    CHECK(h.core->table().recycling_count() == 1);
  }

  // --- session affinity --------------------------------------------------------------

  TEST_CASE("hint: a session call runs on the worker its session is bound to and the "
            "session store hears of it") {
    pool_harness h;
    auto ids = h.boot();
    auto s1 = h.session_call("s");
    auto bound = h.running_on(s1);
    REQUIRE_FALSE(bound.empty());
    REQUIRE(h.callee.touches.size() == 1);
    CHECK(h.callee.touches[0] == std::make_pair(std::string{"s"}, bound));
    h.complete(s1);
    // Make the other worker the warm one: a call without a session would go there.
    auto c1 = h.call();
    auto c2 = h.call();
    CHECK(h.running_on(c2) == other(ids, bound));
    h.complete(c1);
    h.complete(c2);
    auto s2 = h.session_call("s");
    CHECK(h.running_on(s2) == bound);
    CHECK(h.callee.touches.size() == 2);
  }

  TEST_CASE(
    "hint: a session whose worker is busy runs elsewhere and the session follows it") {
    pool_harness h;
    auto ids = h.boot();
    auto s1 = h.session_call("s");
    auto first = h.running_on(s1);
    auto s2 = h.session_call("s");
    CHECK(h.running_on(s2) == other(ids, first));
    h.complete(s1);
    h.complete(s2);
    // The other worker ran last; occupy it with a plain call.
    auto c = h.call();
    REQUIRE(h.running_on(c) == other(ids, first));
    auto s3 = h.session_call("s", "strict_fail_fast");
    CHECK(s3.code() == errc::worker_busy); // bound to the busy one now
  }

  TEST_CASE("strict_queue: a session call waits for its busy worker, other calls use the "
            "free one") {
    auto cfg = small_pool(2);
    cfg.affinity = snakepit::affinity_mode::strict_queue;
    pool_harness h{cfg};
    auto ids = h.boot();
    auto s1 = h.session_call("s");
    auto bound = h.running_on(s1);
    auto s2 = h.session_call("s");
    CHECK(h.running_on(s2).empty());
    CHECK(h.core->queue_depth() == 1);
    auto u = h.call();
    CHECK(h.running_on(u) == other(ids, bound));
    h.complete(u);
    CHECK(h.running_on(s2).empty()); // the free worker does not take it
    h.complete(s1);
    CHECK(h.running_on(s2) == bound);
  }

  TEST_CASE("strict_fail_fast: a session call to its busy worker fails with worker_busy, "
            "a per-call hint runs elsewhere") {
    auto cfg = small_pool(2);
    cfg.affinity = snakepit::affinity_mode::strict_fail_fast;
    pool_harness h{cfg};
    auto ids = h.boot();
    auto s1 = h.session_call("s");
    auto bound = h.running_on(s1);
    auto s2 = h.session_call("s");
    CHECK(s2.code() == errc::worker_busy);
    CHECK(h.runs_of(s2) == 0);
    auto s3 = h.session_call("s", "hint");
    CHECK(h.running_on(s3) == other(ids, bound));
  }

  TEST_CASE("strict modes: a session whose worker is gone fails with "
            "session_worker_unavailable") {
    auto cfg = small_pool(2);
    cfg.affinity = snakepit::affinity_mode::strict_queue;
    pool_harness h{cfg};
    h.boot();
    auto s1 = h.session_call("s");
    auto bound = h.running_on(s1);
    h.complete(s1);
    h.crash(bound);
    auto s2 = h.session_call("s");
    CHECK(s2.code() == errc::session_worker_unavailable);
    CHECK(h.runs_of(s2) == 0);
    auto s3 = h.session_call("s", "strict_fail_fast");
    CHECK(s3.code() == errc::session_worker_unavailable);
  }

  TEST_CASE("strict modes: a worker restarted under the same id is a new incarnation and "
            "the session's binding is lost") {
    auto cfg = small_pool(2);
    cfg.affinity = snakepit::affinity_mode::strict_queue;
    pool_harness h{cfg};
    h.boot();
    auto s1 = h.session_call("s");
    auto bound = h.running_on(s1);
    h.complete(s1);
    auto before = h.serials.at(bound);
    h.crash(bound);
    h.ready(bound);
    CHECK(h.serials.at(bound) != before);
    auto s2 = h.session_call("s");
    CHECK(s2.code() == errc::session_worker_unavailable);
    CHECK(h.runs_of(s2) == 0);
  }

  TEST_CASE(
    "hint: a session whose worker restarted runs anyway and binds to where it ran") {
    pool_harness h;
    auto ids = h.boot();
    auto s1 = h.session_call("s");
    auto bound = h.running_on(s1);
    h.complete(s1);
    h.crash(bound);
    h.ready(bound);
    auto s2 = h.session_call("s");
    auto now_on = h.running_on(s2);
    REQUIRE_FALSE(now_on.empty());
    CHECK(h.callee.touches.back() == std::make_pair(std::string{"s"}, now_on));
    // The new binding holds: with its worker busy a strict call is refused as busy.
    auto s3 = h.session_call("s", "strict_fail_fast");
    CHECK(s3.code() == errc::worker_busy);
  }

  TEST_CASE("a queued call pinned to a worker fails with session_worker_unavailable as "
            "soon as that worker dies") {
    auto cfg = small_pool(2);
    cfg.affinity = snakepit::affinity_mode::strict_queue;
    pool_harness h{cfg};
    h.boot();
    auto s1 = h.session_call("s");
    auto bound = h.running_on(s1);
    auto s2 = h.session_call("s");
    REQUIRE(h.core->queue_depth() == 1);
    h.crash(bound);
    CHECK(s1.code() == errc::worker_crashed);
    CHECK(s2.code() == errc::session_worker_unavailable);
    CHECK(h.core->queue_depth() == 0);
    CHECK(h.lane->is_open());
  }

  TEST_CASE("a malformed session id is refused with invalid_session_id and never runs") {
    pool_harness h;
    h.boot();
    auto a = h.session_call("bad id!");
    auto b = h.session_call(std::string(129, 'a'));
    auto c = h.session_call(std::string(128, 'a'));
    CHECK(a.code() == errc::invalid_session_id);
    CHECK(b.code() == errc::invalid_session_id);
    CHECK_FALSE(c.answered());
    CHECK(h.runs_of(a) == 0);
    CHECK(h.runs_of(b) == 0);
    CHECK(h.runs_of(c) == 1);
    CHECK(h.core->stats().requests == 1);
  }

  TEST_CASE(
    "forget_session drops the binding, so the session's next call starts afresh") {
    auto cfg = small_pool(2);
    cfg.affinity = snakepit::affinity_mode::strict_fail_fast;
    pool_harness h{cfg};
    auto ids = h.boot();
    auto s1 = h.session_call("s");
    auto bound = h.running_on(s1);
    h.core->forget_session("s");
    h.sync();
    auto s2 = h.session_call("s");
    CHECK_FALSE(s2.answered());
    CHECK(h.running_on(s2) == other(ids, bound));
  }

  // --- crashes and retries -----------------------------------------------------------

  TEST_CASE("a crash fails the calls running on the worker with worker_crashed at once "
            "and withdraws its slot") {
    pool_harness h;
    auto ids = h.boot();
    auto a = h.call();
    auto b = h.call();
    auto dead = h.running_on(a);
    auto old_slot = h.slot(dead);
    h.crash(dead);
    CHECK(a.code() == errc::worker_crashed);
    CHECK_FALSE(b.answered());
    CHECK_FALSE(old_slot->offered.load());
    CHECK(h.slot(dead) == nullptr);
    CHECK(h.core->stats().worker_crashes == 1);
    CHECK(h.core->stats().workers == 1);
    REQUIRE(h.core->workers().size() == 2); // the dead one is listed as restarting
    CHECK(h.info(other(ids, dead))->state == "busy");
    CHECK(h.info(dead)->state == "restarting");
    CHECK(h.info(dead)->pid == 0);
    auto c = h.call(); // the live worker is busy: it waits, never goes to the dead one
    CHECK(h.running_on(c).empty());
    CHECK(h.runs_of(c) == 0);
  }

  TEST_CASE("calls queued when a worker crashes are served by the other workers") {
    pool_harness h;
    auto ids = h.boot();
    auto a = h.call();
    auto b = h.call();
    auto c = h.call();
    REQUIRE(h.core->queue_depth() == 1);
    h.crash(h.running_on(a));
    CHECK_FALSE(c.answered());
    h.complete(b);
    CHECK(h.running_on(c) == h.run_of(b)->worker_id);
  }

  TEST_CASE("a restarted worker takes the queued calls and counts as a restart") {
    pool_harness h{small_pool(1)};
    auto ids = h.boot();
    auto a = h.call();
    auto b = h.call();
    h.crash(ids[0]);
    CHECK(a.code() == errc::worker_crashed);
    CHECK(h.running_on(b).empty());
    auto serial = h.ready(ids[0]);
    REQUIRE(h.run_of(b) != nullptr);
    CHECK(h.run_of(b)->worker_id == ids[0]);
    CHECK(h.run_of(b)->serial == serial);
    CHECK(h.core->stats().restarts == 1);
  }

  TEST_CASE("an idempotent call whose worker crashed is parked for its backoff, then "
            "runs first in line") {
    auto cfg = small_pool(2);
    cfg.retry.backoff = {50ms};
    pool_harness h{cfg}; // uniform() = 0.5: no jitter
    auto ids = h.boot();
    auto i = h.idempotent_call();
    auto b = h.call();
    auto q = h.call();
    auto dead = h.running_on(i);
    h.crash(dead);
    CHECK_FALSE(i.answered());
    CHECK(h.core->parked() == 1);
    CHECK_FALSE(h.lane->is_open());
    h.advance(49ms);
    CHECK(h.core->parked() == 1);
    h.advance(1ms);
    CHECK(h.core->parked() == 0);
    CHECK(h.core->queue_depth() == 2);
    h.complete(b);
    CHECK(h.running_on(i) == other(ids, dead));
    CHECK(h.running_on(q).empty());
    CHECK(h.runs_of(i) == 2);
    h.complete(i);
    CHECK(i.answers() == 1);
    CHECK(i.ok());
  }

  TEST_CASE(
    "a retried call fails with worker_crashed once retry_max_attempts are used up") {
    auto cfg = small_pool(2);
    cfg.retry.backoff = {10ms};
    cfg.retry.max_attempts = 1;
    pool_harness h{cfg};
    auto ids = h.boot();
    auto i = h.idempotent_call();
    auto first = h.running_on(i);
    h.crash(first);
    CHECK(h.core->queue_depth() == 0);
    CHECK_FALSE(h.lane->is_open()); // closed while the call waits out its backoff
    h.advance(10ms);
    auto second = h.running_on(i);
    CHECK(second == other(ids, first));
    CHECK_FALSE(i.answered());
    h.crash(second);
    CHECK(i.code() == errc::worker_crashed);
    CHECK(h.runs_of(i) == 2);
    CHECK(h.core->parked() == 0);
  }

  TEST_CASE("an idempotent session call is not retried") {
    pool_harness h;
    h.boot();
    execute_options opts;
    opts.idempotent = true;
    opts.session_id = "s";
    auto i = h.call_with(opts);
    h.crash(h.running_on(i));
    CHECK(i.code() == errc::worker_crashed);
    CHECK(h.core->parked() == 0);
  }

  TEST_CASE(
    "an idempotent call whose deadline leaves no room for the backoff is not retried") {
    auto cfg = small_pool(2);
    cfg.retry.backoff = {50ms};
    pool_harness h{cfg};
    h.boot();
    auto i = h.idempotent_call(40ms);
    h.crash(h.running_on(i));
    CHECK(i.code() == errc::worker_crashed);
    CHECK(h.core->parked() == 0);
    h.advance(100ms);
    CHECK(h.runs_of(i) == 1);
  }

  TEST_CASE("an idempotent call retries when its worker reports the crash before the "
            "pool sees it go down") {
    auto cfg = small_pool(2);
    cfg.retry.backoff = {50ms};
    pool_harness h{cfg};
    h.boot();
    auto i = h.idempotent_call();
    auto first = h.running_on(i);
    h.fail(i, caf::make_error(errc::worker_crashed, "python exited"));
    CHECK_FALSE(i.answered());
    CHECK(h.core->parked() == 1);
    CHECK(h.slot(first)->load.load() == 0);
    h.advance(50ms);
    CHECK(h.runs_of(i) == 2);
    h.complete(i);
    CHECK(i.ok());
  }

  TEST_CASE(
    "an idempotent call that failed for another reason is answered, not retried") {
    pool_harness h;
    h.boot();
    auto i = h.idempotent_call();
    h.fail(i, caf::make_error(errc::tool_error, "ValueError: boom"));
    CHECK(i.code() == errc::tool_error);
    CHECK(h.core->parked() == 0);
    CHECK(h.core->stats().errors == 1);
  }

  TEST_CASE(
    "a caller that stops waiting during the backoff never has its call run again") {
    auto cfg = small_pool(2);
    cfg.retry.backoff = {50ms};
    pool_harness h{cfg};
    h.boot();
    auto i = h.idempotent_call();
    h.crash(h.running_on(i));
    REQUIRE(h.core->parked() == 1);
    i.abandon();
    h.advance(50ms);
    CHECK(h.runs_of(i) == 1);
    CHECK(h.core->parked() == 0);
    CHECK(h.core->queue_depth() == 0);
    CHECK_FALSE(i.answered());
    CHECK(h.lane->is_open());
  }

  TEST_CASE(
    "a late down of an earlier incarnation leaves the worker's new incarnation serving") {
    pool_harness h;
    auto ids = h.boot();
    auto a = h.call();
    auto id = h.running_on(a);
    auto old_serial = h.serials.at(id);
    h.core->on_worker_exit(id, 0, SIGKILL);
    h.sync();
    h.ready(id); // the restarted worker announced itself before the old one's down
    h.core->on_worker_down(id, old_serial,
                           caf::make_error(errc::worker_crashed, "exited"));
    h.sync();
    CHECK(a.code() == errc::worker_crashed);
    REQUIRE(h.slot(id) != nullptr);
    CHECK(h.slot(id)->offered.load());
    CHECK(h.info(id).has_value());
    CHECK(h.core->stats().workers == 2);
  }

  // --- the crash barrier ---------------------------------------------------------------

  TEST_CASE("a worker that crashed of a taint_on cause gets no new work while an "
            "untainted worker is ready") {
    pool_harness h;
    auto ids = h.boot();
    auto bad = ids[0];
    h.crash(bad, 0, SIGSEGV);
    h.ready(bad);
    REQUIRE(h.info(bad).has_value());
    CHECK(h.info(bad)->tainted);
    CHECK_FALSE(h.slot(bad)->offered.load());
    auto c1 = h.call();
    CHECK(h.running_on(c1) == ids[1]);
    auto c2 = h.call(); // waits for the untainted worker rather than take the tainted one
    CHECK(h.running_on(c2).empty());
    h.complete(c1);
    CHECK(h.running_on(c2) == ids[1]);
  }

  TEST_CASE("a tainted worker serves when no untainted worker is ready") {
    pool_harness h;
    auto ids = h.boot();
    h.crash(ids[0], 0, SIGSEGV);
    h.ready(ids[0]);
    auto c1 = h.call();
    auto c2 = h.call();
    REQUIRE(h.running_on(c1) == ids[1]);
    REQUIRE(h.running_on(c2).empty());
    h.crash(ids[1], 0, SIGKILL);
    CHECK(h.running_on(c2) == ids[0]);
    CHECK(h.slot(ids[0])->offered.load());
  }

  TEST_CASE(
    "the taint runs out after taint_duration and the worker takes new work again") {
    pool_harness h;
    auto ids = h.boot();
    h.crash(ids[0], 0, SIGSEGV);
    h.ready(ids[0]);
    auto c1 = h.call();
    auto c2 = h.call();
    REQUIRE(h.running_on(c2).empty());
    h.advance(999ms);
    CHECK(h.running_on(c2).empty());
    h.advance(1ms);
    CHECK(h.running_on(c2) == ids[0]);
    CHECK(h.info(ids[0])->state == "busy");
    CHECK(h.slot(ids[0])->offered.load());
  }

  TEST_CASE("a crash whose cause is not in taint_on does not taint but counts as a "
            "crash, taint_on may name it") {
    {
      pool_harness h;
      auto ids = h.boot();
      h.crash(ids[0], 0, SIGKILL); // "killed": not in the default taint_on
      h.ready(ids[0]);
      CHECK(h.info(ids[0])->state == "ready");
      CHECK(h.slot(ids[0])->offered.load());
      CHECK(h.core->stats().worker_crashes == 1);
      CHECK(h.core->stats().restarts == 1);
    }
    {
      auto cfg = small_pool(2);
      cfg.taint.causes = {"killed", "exit_7"};
      pool_harness h{cfg};
      auto ids = h.boot();
      h.crash(ids[0], 0, SIGKILL);
      h.ready(ids[0]);
      CHECK(h.info(ids[0])->tainted);
      h.crash(ids[1], 7, 0);
      h.ready(ids[1]);
      CHECK(h.info(ids[1])->tainted);
    }
  }

  // --- recycling -----------------------------------------------------------------------

  TEST_CASE("ttl recycling: the replacement starts first, the old worker serves until it "
            "is ready and retires once idle") {
    auto cfg = small_pool(2);
    cfg.recycling.ttl = 1000ms;
    pool_harness h{cfg};
    auto ids = h.boot();
    auto old = ids[0];
    h.advance(999ms);
    CHECK(h.callee.starts.size() == 2);
    h.advance(1ms);                       // the tick at the ttl
    REQUIRE(h.callee.starts.size() == 3); // one at a time in a pool of two
    auto repl = h.callee.starts.back();
    CHECK(h.core->table().recycling_count() == 1);
    // Until its replacement is ready the old worker still takes new work.
    auto c1 = h.call();
    auto c2 = h.call();
    CHECK(h.running_on(c1) != h.running_on(c2));
    auto on_old = h.running_on(c1) == old ? c1 : c2;
    REQUIRE(h.running_on(on_old) == old);
    h.start_ok(repl);
    h.ready(repl);
    CHECK(h.info(old)->state == "draining");
    CHECK_FALSE(h.slot(old)->offered.load());
    CHECK(h.callee.retires.empty()); // its call is still running
    auto c3 = h.call();
    CHECK(h.running_on(c3) == repl);
    auto c4 = h.call(); // every worker busy: it waits
    h.complete(on_old);
    CHECK(h.running_on(c4).empty()); // the replaced worker takes no new work
    REQUIRE(h.callee.retires.size() == 1);
    CHECK(h.callee.retires[0] == old);
    h.down(old);
    auto s = h.core->stats();
    CHECK(s.recycles == 1);
    CHECK(s.worker_crashes == 0);
    CHECK_FALSE(h.info(old).has_value());
    CHECK(h.info(repl).has_value());
    CHECK(on_old.ok());
    h.settle(); // the check after a completed recycle takes up the other worker
    CHECK(h.callee.starts.size() == 4);
  }

  TEST_CASE("a worker is recycled when it reaches its jittered request limit") {
    {
      auto cfg = small_pool(1);
      cfg.recycling.max_requests = 4;
      cfg.recycling.requests_jitter = 0.5;
      pool_harness h{cfg};
      h.callee.random = 0.0; // the low end: 4 * (1 - 0.5) = 2
      h.boot();
      h.complete(h.call());
      CHECK(h.callee.starts.size() == 1);
      auto c = h.call();
      CHECK(h.callee.starts.size() == 2);
      CHECK_FALSE(h.running_on(c).empty());
    }
    {
      auto cfg = small_pool(1);
      cfg.recycling.max_requests = 4;
      cfg.recycling.requests_jitter = 0.5;
      pool_harness h{cfg};
      h.callee.random = 0.99; // the high end: 4
      h.boot();
      for (int i = 0; i < 3; ++i)
        h.complete(h.call());
      CHECK(h.callee.starts.size() == 1);
      h.call();
      CHECK(h.callee.starts.size() == 2);
    }
  }

  TEST_CASE("a worker whose process exceeds the memory threshold is recycled for memory, "
            "the others not") {
    auto cfg = small_pool(2);
    cfg.recycling.max_memory_mb = 100;
    pool_harness h{cfg};
    auto ids = h.boot();
    h.callee.rss[h.pids.at(ids[0])] = 50ull << 20;
    h.callee.rss[h.pids.at(ids[1])] = 300ull << 20;
    h.advance(500ms);
    REQUIRE(h.callee.starts.size() == 3);
    auto repl = h.callee.starts.back();
    h.start_ok(repl);
    h.ready(repl);
    CHECK(h.info(ids[1])->state == "draining");
    CHECK(h.info(ids[0])->state == "ready");
    CHECK(h.callee.retires == std::vector<std::string>{ids[1]});
  }

  TEST_CASE("a manual recycle starts a replacement at once, an unknown worker is refused "
            "with invalid_argument") {
    pool_harness h;
    auto ids = h.boot();
    auto err = h.core->recycle("p_worker_99");
    CHECK(err == errc::invalid_argument);
    CHECK(h.callee.starts.size() == 2);
    CHECK_FALSE(h.core->recycle(ids[0]));
    h.sync();
    CHECK(h.callee.starts.size() == 3);
    // Manual recycles are not held back by the quarter-of-the-pool limit.
    CHECK_FALSE(h.core->recycle(ids[1]));
    h.sync();
    CHECK(h.callee.starts.size() == 4);
    CHECK(h.core->table().recycling_count() == 2);
  }

  TEST_CASE(
    "a failed replacement start cancels the recycle and the old worker keeps serving") {
    auto cfg = small_pool(1);
    cfg.recycling.ttl = 1000ms;
    pool_harness h{cfg};
    auto ids = h.boot();
    h.advance(1000ms);
    REQUIRE(h.callee.starts.size() == 2);
    h.start_failed(h.callee.starts.back());
    CHECK(h.core->table().recycling_count() == 0);
    CHECK(h.slot(ids[0])->offered.load());
    CHECK(h.info(ids[0])->state == "ready");
    auto c = h.call();
    CHECK(h.running_on(c) == ids[0]);
    CHECK(h.callee.retires.empty());
    h.advance(500ms); // a later check tries again
    CHECK(h.callee.starts.size() == 3);
  }

  TEST_CASE("at most a quarter of the pool recycles at once and the next starts when one "
            "completes") {
    auto cfg = small_pool(4);
    cfg.recycling.ttl = 1000ms;
    pool_harness h{cfg};
    auto ids = h.boot();
    h.advance(1000ms);
    REQUIRE(h.callee.starts.size() == 5);
    auto repl = h.callee.starts.back();
    h.advance(500ms); // another tick: still one at a time
    CHECK(h.callee.starts.size() == 5);
    h.start_ok(repl);
    h.ready(repl);
    REQUIRE(h.callee.retires.size() == 1); // idle: retired at once
    h.down(h.callee.retires[0]);
    h.settle();
    CHECK(h.callee.starts.size() == 6);
    CHECK(h.core->stats().recycles == 1);
  }

  // --- the circuit breaker -------------------------------------------------------------

  TEST_CASE("failed starts in a row open the circuit: idle members are retired and calls "
            "fail with circuit_open") {
    auto cfg = small_pool(1);
    cfg.circuit.threshold = 2;
    pool_harness h{cfg};
    auto ids = h.boot();
    h.crash(ids[0]);
    h.start_failed_inside(ids[0]);
    CHECK(h.core->breaker().current() == circuit_breaker::state::closed);
    auto c1 = h.call();
    CHECK_FALSE(c1.answered()); // waits for the restart
    h.start_failed_inside(ids[0]);
    CHECK(h.core->breaker().current() == circuit_breaker::state::open);
    CHECK(h.callee.retires == std::vector<std::string>{ids[0]});
    CHECK(c1.code() == errc::circuit_open);
    auto c2 = h.call();
    CHECK(c2.code() == errc::circuit_open);
    CHECK(h.core->queue_depth() == 0);
    CHECK(h.callee.runs.empty());
  }

  TEST_CASE("after circuit_reset a probe worker starts, its readiness closes the circuit "
            "and refills the pool") {
    auto cfg = small_pool(2);
    cfg.circuit.threshold = 2;
    pool_harness h{cfg};
    auto ids = h.boot();
    h.crash(ids[0]);
    h.crash(ids[1]);
    h.start_failed_inside(ids[0]);
    h.start_failed_inside(ids[1]);
    REQUIRE(h.core->breaker().current() == circuit_breaker::state::open);
    CHECK(h.callee.retires.size() == 2);
    h.advance(999ms);
    CHECK(h.callee.starts.size() == 2);
    h.advance(1ms);
    REQUIRE(h.callee.starts.size() == 3); // one probe
    CHECK(h.core->breaker().current() == circuit_breaker::state::half_open);
    auto probe = h.callee.starts.back();
    h.start_ok(probe);
    h.ready(probe);
    CHECK(h.core->breaker().current() == circuit_breaker::state::closed);
    CHECK(h.callee.starts.size() == 4); // back to pool_size
    auto c = h.call();
    CHECK(h.running_on(c) == probe);
  }

  TEST_CASE("a failed probe opens the circuit again for another period") {
    auto cfg = small_pool(1);
    cfg.circuit.threshold = 2;
    pool_harness h{cfg};
    auto ids = h.boot();
    h.crash(ids[0]);
    h.start_failed_inside(ids[0]);
    h.start_failed_inside(ids[0]);
    REQUIRE(h.core->breaker().current() == circuit_breaker::state::open);
    h.advance(1000ms);
    REQUIRE(h.callee.starts.size() == 2);
    auto probe = h.callee.starts.back();
    h.start_failed_inside(probe);
    h.start_failed(probe);
    CHECK(h.core->breaker().current() == circuit_breaker::state::open);
    auto c = h.call();
    CHECK(c.code() == errc::circuit_open);
    h.advance(999ms);
    CHECK(h.callee.starts.size() == 2);
    h.advance(1ms);
    CHECK(h.callee.starts.size() == 3);
  }

  TEST_CASE("with circuit_threshold 0 failed starts never open the circuit") {
    auto cfg = small_pool(1);
    cfg.circuit.threshold = 0;
    pool_harness h{cfg};
    auto ids = h.boot();
    h.crash(ids[0]);
    for (int i = 0; i < 6; ++i)
      h.start_failed_inside(ids[0]);
    CHECK(h.core->breaker().current() == circuit_breaker::state::closed);
    auto c = h.call();
    CHECK_FALSE(c.answered());
    CHECK(h.callee.retires.empty());
    h.ready(ids[0]);
    CHECK(h.running_on(c) == ids[0]);
  }

  // --- drain and shutdown --------------------------------------------------------------

  TEST_CASE("drain refuses new calls and fails queued and parked ones with shutting_down "
            "while running calls finish") {
    auto cfg = small_pool(2);
    cfg.retry.backoff = {50ms};
    pool_harness h{cfg};
    auto ids = h.boot();
    auto i = h.idempotent_call();
    auto b = h.call();
    auto q = h.call();
    auto dead = h.running_on(i);
    h.crash(dead);
    REQUIRE(h.core->parked() == 1);
    h.core->drain();
    h.sync();
    CHECK(h.core->draining());
    CHECK(q.code() == errc::shutting_down);
    CHECK(i.code() == errc::shutting_down);
    CHECK(h.core->parked() == 0);
    CHECK(h.core->queue_depth() == 0);
    CHECK_FALSE(h.lane->is_open());
    auto n = h.call();
    CHECK(n.code() == errc::shutting_down);
    h.complete(b);
    CHECK(b.ok());
    h.ready(dead); // a restart while draining is not taken into service
    CHECK(h.core->stats().workers == 1);
    h.advance(100ms);
    CHECK(h.runs_of(i) == 1);
  }

  TEST_CASE("shutdown fails every waiting and running call and the ready waiters with "
            "its reason") {
    pool_harness h;
    h.core->begin_startup();
    h.sync();
    auto a = h.callee.starts.at(0);
    h.start_ok(a);
    h.ready(a);
    std::vector<caf::error> answers;
    h.core->await_ready([&](caf::error err) { answers.push_back(std::move(err)); });
    REQUIRE(answers.empty()); // the second worker is still starting
    auto c1 = h.call();
    auto c2 = h.call();
    REQUIRE(h.running_on(c1) == a);
    REQUIRE(h.core->queue_depth() == 1);
    h.core->shutdown(caf::make_error(errc::shutting_down, "p"));
    CHECK(c1.code() == errc::shutting_down);
    CHECK(c2.code() == errc::shutting_down);
    REQUIRE(answers.size() == 1);
    CHECK(answers[0] == errc::shutting_down);
    CHECK(h.core->inflight() == 0);
    CHECK(h.core->queue_depth() == 0);
  }

  // --- tools, payloads, callers ------------------------------------------------------

  TEST_CASE("once tools are known an unknown tool is refused, except for session calls "
            "and with open dispatch") {
    pool_harness h;
    h.boot();
    auto before = h.call("nope");
    CHECK_FALSE(before.answered()); // tools not known yet: the worker decides
    h.complete(before);
    h.core->set_tools({"echo"}, false);
    h.sync();
    CHECK(h.core->tools_known());
    auto c1 = h.call("nope");
    CHECK(c1.code() == errc::unknown_tool);
    CHECK(h.runs_of(c1) == 0);
    auto c2 = h.call("echo");
    CHECK(h.runs_of(c2) == 1);
    h.complete(c2);
    execute_options opts;
    opts.session_id = "s";
    auto c3 = h.call("nope", opts);
    CHECK(h.runs_of(c3) == 1);
    h.complete(c3);
    h.core->set_tools({"echo", "execute_tool"}, true);
    h.sync();
    auto c4 = h.call("nope");
    CHECK(h.runs_of(c4) == 1);
  }

  TEST_CASE("a ready worker makes the pool ask for its tools only while none are known") {
    pool_harness h;
    auto ids = h.boot();
    CHECK(h.callee.tool_refreshes >= 1);
    auto asked = h.callee.tool_refreshes;
    h.core->set_tools({"echo"}, false);
    h.sync();
    h.crash(ids[0]);
    h.ready(ids[0]);
    CHECK(h.callee.tool_refreshes == asked);
  }

  TEST_CASE("a payload above max_message_bytes is refused with payload_too_large before "
            "it takes a worker") {
    auto cfg = small_pool(2);
    cfg.max_message_bytes = 1024;
    pool_harness h{cfg};
    h.boot();
    execute_options blob;
    blob.binary_args["blob"] = std::string(2000, 'x');
    auto a = h.call_with(blob);
    CHECK(a.code() == errc::payload_too_large);
    auto b = h.call_args(json{{"text", std::string(2000, 'x')}});
    CHECK(b.code() == errc::payload_too_large);
    auto c = h.call_args(json{{"text", "small"}});
    CHECK(h.runs_of(c) == 1);
    CHECK(h.runs_of(a) == 0);
    CHECK(h.runs_of(b) == 0);
    CHECK(h.core->stats().requests == 1);
  }

  TEST_CASE("a caller that goes away never has its queued calls run, and each caller is "
            "monitored once") {
    caller_addresses addrs;
    caf::scoped_actor alice{*addrs.sys};
    caf::scoped_actor bob{*addrs.sys};
    pool_harness h{small_pool(1)};
    h.boot();
    auto x = h.call();
    auto a1 = h.call("echo", {}, alice->address());
    auto a2 = h.call("echo", {}, alice->address());
    auto b1 = h.call("echo", {}, bob->address());
    REQUIRE(h.core->queue_depth() == 3);
    CHECK(h.callee.monitored.size() == 2);
    CHECK(std::count(h.callee.monitored.begin(), h.callee.monitored.end(),
                     alice->address()) == 1);
    h.core->on_caller_down(alice->address());
    h.sync();
    CHECK(h.core->queue_depth() == 1);
    h.complete(x);
    CHECK_FALSE(h.running_on(b1).empty());
    CHECK(h.runs_of(a1) == 0);
    CHECK(h.runs_of(a2) == 0);
    CHECK_FALSE(a1.answered());
    CHECK_FALSE(a2.answered());
  }

  TEST_CASE("a facade call abandoned while queued is dropped without running or counting "
            "as a timeout") {
    pool_harness h{small_pool(1)};
    h.boot();
    auto x = h.call();
    auto b = h.call();
    auto c = h.call();
    auto d = h.call();
    b.abandon();
    h.complete(x);
    CHECK(h.runs_of(b) == 0);
    CHECK(h.running_on(c) == h.run_of(x)->worker_id);
    d.abandon();
    h.advance(1000ms); // d's queue timer
    CHECK_FALSE(b.answered());
    CHECK_FALSE(d.answered());
    CHECK(h.runs_of(d) == 0);
    CHECK(h.core->stats().queue_timeouts == 0);
  }

  // --- stats, listings, replies --------------------------------------------------------

  TEST_CASE("stats count workers, busy and available ones, calls in flight, capacity and "
            "the queue") {
    pool_harness h{thread_pool(2, 2)};
    auto ids = h.boot();
    auto c1 = h.call();
    auto c2 = h.call();
    auto c3 = h.call();
    CHECK(h.running_on(c1) != h.running_on(c2)); // least loaded first
    auto s = h.core->stats();
    CHECK(s.workers == 2);
    CHECK(s.capacity == 4);
    CHECK(s.in_flight == 3);
    CHECK(s.busy == 2);
    CHECK(s.available == 1);
    CHECK(s.starting == 0);
    auto c4 = h.call();
    auto c5 = h.call();
    s = h.core->stats();
    CHECK(s.in_flight == 4);
    CHECK(s.available == 0);
    CHECK(s.queue_depth == 1);
    CHECK(s.queued == 1);
    CHECK(s.requests == 5);
    CHECK(s.pool == "p");
    h.complete(c1);
    h.fail(c2, caf::make_error(errc::tool_error, "boom"));
    s = h.core->stats();
    CHECK(s.completed == 1);
    CHECK(s.errors == 1);
    CHECK(s.in_flight == 3); // c5 took the room c1 left; c2's is free
    CHECK(s.available == 1);
    CHECK(s.queue_depth == 0);
  }

  TEST_CASE("workers() lists each ready worker with its pid, state, requests, load and "
            "uptime, sorted by id") {
    pool_harness h;
    auto ids = h.boot();
    h.advance(2000ms);
    auto c1 = h.call();
    auto c2 = h.call();
    h.complete(c2);
    auto list = h.core->workers();
    REQUIRE(list.size() == 2);
    CHECK(list[0].id < list[1].id);
    for (auto& w : list) {
      CHECK(w.pid == h.pids.at(w.id));
      CHECK(w.uptime == 2000ms);
      CHECK(w.capacity == 1);
      CHECK(w.requests == 1);
      bool busy = w.id == h.run_of(c1)->worker_id;
      CHECK(w.state == (busy ? "busy" : "ready"));
      CHECK(w.load == (busy ? 1u : 0u));
    }
  }

  TEST_CASE("every error a pool returns for a call carries the call's correlation id") {
    auto cfg = small_pool(1);
    cfg.max_message_bytes = 1024;
    pool_harness h{cfg};
    auto ids = h.boot();
    auto a = h.call();
    auto b = h.call();
    execute_options big;
    big.binary_args["blob"] = std::string(2000, 'x');
    auto c = h.call_with(big);
    REQUIRE(c.code() == errc::payload_too_large);
    CHECK(snakepit::correlation_id_of(c.error()) == c.cid);
    h.advance(1000ms);
    REQUIRE(b.code() == errc::queue_timeout);
    CHECK(snakepit::correlation_id_of(b.error()) == b.cid);
    h.crash(ids[0]);
    REQUIRE(a.code() == errc::worker_crashed);
    CHECK(snakepit::correlation_id_of(a.error()) == a.cid);
  }

  TEST_CASE("a call without a correlation id is given one") {
    pool_harness h;
    h.boot();
    for (int i = 0; i < 2; ++i) {
      auto slot = std::make_shared<snakepit::actors::reply_slot>();
      h.core->accept(snakepit::execute_request{"echo", json::object(), {}}, slot,
                     caf::actor_addr{});
      h.sync();
    }
    REQUIRE(h.callee.runs.size() == 2);
    auto& x = h.callee.runs[0].req.opts.correlation_id;
    auto& y = h.callee.runs[1].req.opts.correlation_id;
    CHECK_FALSE(x.empty());
    CHECK_FALSE(y.empty());
    CHECK(x != y);
  }

  TEST_CASE(
    "a reply answered from the gRPC thread gives the worker's capacity back only once") {
    pool_harness h{small_pool(1)};
    auto ids = h.boot();
    auto c = h.call();
    auto* r = h.run_of(c);
    REQUIRE(r != nullptr);
    REQUIRE(r->slot->lane == h.slot(ids[0]));
    // The completion thread answers first and frees the capacity...
    r->slot->release_lane();
    r->slot->deliver(snakepit::execute_reply{json{{"ok", true}}, {}, ids[0], 1});
    CHECK(c.ok());
    // ...a blocking caller claims the free worker before the pool hears the result...
    auto slot = h.slot(ids[0]);
    REQUIRE(slot->try_claim());
    h.complete(c);
    // ...and the pool does not give back the blocking caller's claim.
    CHECK(slot->load.load() == 1);
    CHECK(c.answers() == 1);
    CHECK(h.core->stats().completed == 1);
    slot->release();
  }

  TEST_CASE("a call answered with an error by its worker counts as an error and frees "
            "the worker") {
    pool_harness h{small_pool(1)};
    auto ids = h.boot();
    auto a = h.call();
    auto b = h.call();
    h.fail(a, caf::make_error(errc::timeout, "deadline exceeded"));
    CHECK(a.code() == errc::timeout);
    CHECK(h.running_on(b) == ids[0]);
    CHECK(h.core->stats().errors == 1);
  }

  // --- streams -------------------------------------------------------------------------

  TEST_CASE("a stream runs on a worker with its sink and ends through it exactly once") {
    pool_harness h;
    auto ids = h.boot();
    execute_options o1;
    o1.correlation_id = "st1";
    auto s1 = h.stream("count", o1);
    auto* r = h.run_of("st1");
    REQUIRE(r != nullptr);
    CHECK(r->sink == s1);
    CHECK(r->slot == nullptr);
    h.complete("st1");
    REQUIRE(s1->ends.size() == 1);
    CHECK_FALSE(s1->ends[0]);
    // The gRPC thread ended the next one itself: the pool does not end it twice.
    execute_options o2;
    o2.correlation_id = "st2";
    auto s2 = h.stream("count", o2);
    REQUIRE(h.run_of("st2") != nullptr);
    s2->end(caf::error{});
    h.complete("st2");
    CHECK(s2->ends.size() == 1);
    CHECK(h.core->inflight() == 0);
    CHECK(h.core->stats().completed == 2);
  }

  TEST_CASE("a stream that waits longer than queue_timeout ends with queue_timeout") {
    pool_harness h{small_pool(1)};
    h.boot();
    auto a = h.call();
    execute_options o;
    o.correlation_id = "st";
    auto s = h.stream("count", o);
    CHECK(s->ends.empty());
    h.advance(1000ms);
    REQUIRE(s->ends.size() == 1);
    CHECK(s->ends[0] == errc::queue_timeout);
    h.complete(a);
    CHECK(h.run_of("st") == nullptr);
  }

  TEST_CASE("a crash ends a running stream with worker_crashed") {
    pool_harness h;
    h.boot();
    execute_options o;
    o.correlation_id = "st";
    auto s = h.stream("count", o);
    auto* r = h.run_of("st");
    REQUIRE(r != nullptr);
    h.crash(r->worker_id);
    REQUIRE(s->ends.size() == 1);
    CHECK(s->ends[0] == errc::worker_crashed);
  }

  // --- more: draining workers, the breaker while workers serve, generations ---------

  TEST_CASE("a replaced worker that a blocking caller frees is retired on lane_done") {
    pool_harness h{small_pool(1)};
    auto ids = h.boot();
    auto old = ids[0];
    auto slot = h.slot(old);
    REQUIRE(slot->try_claim()); // a lane call in flight
    REQUIRE_FALSE(h.core->recycle(old));
    h.sync();
    auto repl = h.callee.starts.back();
    h.start_ok(repl);
    h.ready(repl);
    CHECK(h.callee.retires.empty()); // its lane call still runs
    CHECK_FALSE(slot->offered.load());
    slot->release();
    h.lane_notes.push_back(old); // the caller saw its slot withdrawn
    h.forward_lane_notes();
    CHECK(h.callee.retires == std::vector<std::string>{old});
  }

  TEST_CASE("a worker being drained still serves the calls pinned to it, then retires") {
    auto cfg = small_pool(2);
    cfg.affinity = snakepit::affinity_mode::strict_queue;
    pool_harness h{cfg};
    auto ids = h.boot();
    auto s1 = h.session_call("s");
    auto bound = h.running_on(s1);
    REQUIRE_FALSE(h.core->recycle(bound));
    h.sync();
    auto repl = h.callee.starts.back();
    h.start_ok(repl);
    h.ready(repl);
    REQUIRE(h.info(bound)->state == "draining");
    auto s2 = h.session_call("s");
    CHECK(h.running_on(s2).empty()); // pinned to its busy, draining worker
    h.complete(s1);
    CHECK(h.running_on(s2) == bound);
    CHECK(h.callee.retires.empty());
    h.complete(s2);
    CHECK(h.callee.retires == std::vector<std::string>{bound});
  }

  TEST_CASE("a recycled worker that crashes before it is idle completes the recycle and "
            "its replacement takes over") {
    pool_harness h;
    auto ids = h.boot();
    auto c = h.call();
    auto old = h.running_on(c);
    REQUIRE_FALSE(h.core->recycle(old));
    h.sync();
    auto repl = h.callee.starts.back();
    h.start_ok(repl);
    h.ready(repl);
    REQUIRE(h.callee.retires.empty());
    h.crash(old, 0, SIGKILL);
    CHECK(c.code() == errc::worker_crashed);
    CHECK(h.callee.retires == std::vector<std::string>{old});
    auto s = h.core->stats();
    CHECK(s.recycles == 1);
    CHECK(s.worker_crashes == 1);
    CHECK(h.core->table().recycling_count() == 0);
    h.ready(old); // its starter restarted it before the retirement arrived
    CHECK_FALSE(h.info(old).has_value());
  }

  TEST_CASE("nothing is recycled while draining") {
    auto cfg = small_pool(2);
    cfg.recycling.ttl = 1000ms;
    pool_harness h{cfg};
    auto ids = h.boot();
    h.core->drain();
    h.sync();
    h.advance(3000ms);
    CHECK(h.callee.starts.size() == 2);
    CHECK(h.core->recycle(ids[0]) == caf::error{});
    h.sync();
    CHECK(h.callee.starts.size() == 2);
  }

  TEST_CASE("while the circuit is open the ready workers still serve and a failing "
            "restart is retired at once") {
    auto cfg = small_pool(2);
    cfg.circuit.threshold = 2;
    pool_harness h{cfg};
    auto ids = h.boot();
    h.crash(ids[0]);
    h.start_failed_inside(ids[0]);
    h.start_failed_inside(ids[0]);
    REQUIRE(h.core->breaker().current() == circuit_breaker::state::open);
    CHECK(h.callee.retires == std::vector<std::string>{ids[0]});
    auto c1 = h.call();
    CHECK(h.running_on(c1) == ids[1]);
    h.complete(c1);
    h.crash(ids[1]);
    h.start_failed_inside(ids[1]);
    CHECK(h.callee.retires == std::vector<std::string>{ids[0], ids[1]});
    auto c2 = h.call();
    CHECK(c2.code() == errc::circuit_open);
  }

  TEST_CASE("failures while the circuit is open push the probe out") {
    auto cfg = small_pool(2);
    cfg.circuit.threshold = 2;
    pool_harness h{cfg};
    auto ids = h.boot();
    h.crash(ids[0]);
    h.crash(ids[1]);
    h.start_failed_inside(ids[0]);
    h.start_failed_inside(ids[0]);
    REQUIRE(h.core->breaker().current() == circuit_breaker::state::open);
    h.advance(500ms);
    h.start_failed_inside(ids[1]); // (its retirement was still on the way)
    h.advance(500ms);              // the first probe timer: too early now
    CHECK(h.callee.starts.size() == 2);
    CHECK(h.core->breaker().current() == circuit_breaker::state::open);
    h.advance(499ms);
    CHECK(h.callee.starts.size() == 2);
    h.advance(1ms);
    CHECK(h.callee.starts.size() == 3);
    CHECK(h.core->breaker().current() == circuit_breaker::state::half_open);
  }

  TEST_CASE("a replacement retired by the open circuit cancels its recycle") {
    auto cfg = small_pool(2);
    cfg.circuit.threshold = 1;
    pool_harness h{cfg};
    auto ids = h.boot();
    REQUIRE_FALSE(h.core->recycle(ids[0]));
    h.sync();
    auto repl = h.callee.starts.back();
    h.start_failed_inside(repl); // opens the circuit, which retires the replacement
    REQUIRE(h.core->breaker().current() == circuit_breaker::state::open);
    CHECK(h.callee.retires == std::vector<std::string>{repl});
    h.start_failed(repl); // its start_child fails
    CHECK(h.core->table().recycling_count() == 0);
    CHECK(h.info(ids[0])->state == "ready");
    // Nothing is missing at the probe: the circuit closes without a start.
    h.advance(1000ms);
    CHECK(h.callee.starts.size() == 3);
    CHECK(h.core->breaker().current() == circuit_breaker::state::closed);
  }

  TEST_CASE("a worker the open circuit retired while it started does not keep startup "
            "from finishing") {
    auto cfg = small_pool(3);
    cfg.circuit.threshold = 2;
    pool_harness h{cfg};
    h.core->begin_startup();
    h.sync();
    REQUIRE(h.callee.starts.size() == 3);
    auto a = h.callee.starts[0];
    auto b = h.callee.starts[1];
    auto c = h.callee.starts[2];
    std::vector<caf::error> answers;
    h.core->await_ready([&](caf::error err) { answers.push_back(std::move(err)); });
    h.start_failed_inside(a);
    h.start_failed(a);
    h.start_failed_inside(b); // opens: c, still starting, is retired
    REQUIRE(h.core->breaker().current() == circuit_breaker::state::open);
    CHECK(std::count(h.callee.retires.begin(), h.callee.retires.end(), c) == 1);
    h.start_failed(b);
    h.ready(c); // it made it before its retirement reached it
    h.start_ok(c);
    CHECK(h.core->stats().workers == 0);
    REQUIRE(answers.size() == 1);
    CHECK(answers[0] != caf::error{});
  }

  TEST_CASE("a pool restarted under a later generation names its workers after it") {
    pool_harness h{small_pool(2), nullptr, 3};
    h.core->begin_startup();
    h.sync();
    CHECK(h.callee.starts == std::vector<std::string>{"p_worker_1_g3", "p_worker_2_g3"});
  }

  // --- events ------------------------------------------------------------------------

  TEST_CASE("startup emits init_started, worker.ready and init_complete") {
    event_log log;
    pool_harness h{small_pool(2), log.bus};
    h.boot();
    auto started = log.named("snakepit.pool.init_started");
    REQUIRE(started.size() == 1);
    CHECK(started[0].measurements["total_workers"] == 2);
    CHECK(started[0].metadata["pool"] == "p");
    CHECK(log.named("snakepit.worker.ready").size() == 2);
    auto complete = log.named("snakepit.pool.init_complete");
    REQUIRE(complete.size() == 1);
    CHECK(complete[0].measurements["ready_workers"] == 2);
  }

  TEST_CASE("a crash of a taint_on cause emits worker.terminated, worker.crash and "
            "worker.tainted") {
    event_log log;
    pool_harness h{small_pool(2), log.bus};
    auto ids = h.boot();
    h.crash(ids[0], 0, SIGSEGV);
    auto crash = log.named("snakepit.worker.crash");
    REQUIRE(crash.size() == 1);
    CHECK(crash[0].metadata["worker_id"] == ids[0]);
    CHECK(crash[0].metadata["cause"] == "segfault");
    auto tainted = log.named("snakepit.worker.tainted");
    REQUIRE(tainted.size() == 1);
    CHECK(tainted[0].measurements["duration_ms"] == 1000);
    CHECK(log.named("snakepit.worker.terminated").size() == 1);
    h.ready(ids[0]);
    CHECK(log.named("snakepit.worker.restarted").size() == 1);
  }

  TEST_CASE("a retry emits request.retried with its attempt and delay") {
    auto cfg = small_pool(2);
    cfg.retry.backoff = {80ms};
    event_log log;
    pool_harness h{cfg, log.bus};
    h.boot();
    auto i = h.idempotent_call();
    auto dead = h.running_on(i);
    h.crash(dead);
    auto retried = log.named("snakepit.request.retried");
    REQUIRE(retried.size() == 1);
    CHECK(retried[0].measurements["attempt"] == 1);
    CHECK(retried[0].measurements["delay_ms"] == 80);
    CHECK(retried[0].metadata["worker_id"] == dead);
    CHECK(retried[0].metadata["correlation_id"] == i.cid);
  }

  TEST_CASE("saturation and a queue timeout emit pool.saturated and queue.timeout") {
    auto cfg = small_pool(1);
    cfg.queue.max_size = 1;
    event_log log;
    pool_harness h{cfg, log.bus};
    h.boot();
    auto a = h.call();
    auto b = h.call();
    auto c = h.call();
    REQUIRE(c.code() == errc::pool_saturated);
    auto sat = log.named("snakepit.pool.saturated");
    REQUIRE(sat.size() == 1);
    CHECK(sat[0].measurements["max_queue_size"] == 1);
    CHECK(log.named("snakepit.queue.enqueued").size() == 1);
    h.advance(1000ms);
    auto to = log.named("snakepit.queue.timeout");
    REQUIRE(to.size() == 1);
    CHECK(to[0].metadata["correlation_id"] == b.cid);
    CHECK(to[0].metadata["deadline_passed"] == false);
  }

  TEST_CASE("the circuit breaker's transitions emit opened, half_open and closed") {
    auto cfg = small_pool(1);
    cfg.circuit.threshold = 2;
    event_log log;
    pool_harness h{cfg, log.bus};
    auto ids = h.boot();
    h.crash(ids[0]);
    h.start_failed_inside(ids[0]);
    h.start_failed_inside(ids[0]);
    auto opened = log.named("snakepit.circuit_breaker.opened");
    REQUIRE(opened.size() == 1);
    CHECK(opened[0].measurements["failures"] == 2);
    h.advance(1000ms);
    CHECK(log.named("snakepit.circuit_breaker.half_open").size() == 1);
    auto probe = h.callee.starts.back();
    h.start_ok(probe);
    h.ready(probe);
    auto closed = log.named("snakepit.circuit_breaker.closed");
    REQUIRE(closed.size() == 1);
    CHECK(closed[0].metadata["worker_id"] == probe);
  }

  TEST_CASE(
    "a completed recycle emits worker.recycled with its reason, requests and memory") {
    auto cfg = small_pool(2);
    cfg.recycling.max_memory_mb = 100;
    event_log log;
    pool_harness h{cfg, log.bus};
    auto ids = h.boot();
    h.complete(h.call());
    h.callee.rss[h.pids.at(ids[0])] = 200ull << 20;
    h.advance(500ms);
    auto repl = h.callee.starts.back();
    h.start_ok(repl);
    h.ready(repl);
    REQUIRE(h.callee.retires == std::vector<std::string>{ids[0]});
    h.down(ids[0]);
    auto rec = log.named("snakepit.worker.recycled");
    REQUIRE(rec.size() == 1);
    CHECK(rec[0].metadata["reason"] == "memory");
    CHECK(rec[0].metadata["worker_id"] == ids[0]);
    CHECK(rec[0].measurements["requests"] == 1);
    CHECK(rec[0].measurements["memory_mb"] == 200.0);
  }

  TEST_CASE("under the hybrid strategy a worker reaching its capacity emits "
            "pool.capacity_reached") {
    auto cfg = thread_pool(1, 2);
    cfg.capacity_strategy = snakepit::capacity_strategy::hybrid;
    event_log log;
    pool_harness h{cfg, log.bus};
    auto ids = h.boot();
    h.call();
    CHECK(log.named("snakepit.pool.capacity_reached").empty());
    h.call();
    auto cap = log.named("snakepit.pool.capacity_reached");
    REQUIRE(cap.size() == 1);
    CHECK(cap[0].measurements["capacity"] == 2);
    CHECK(cap[0].metadata["worker_id"] == ids[0]);
  }

} // TEST_SUITE
