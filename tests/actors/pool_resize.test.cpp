// The pool's worker list, init status and resizing on the protocol core (plain
// calls, virtual time): what `list_workers` shows through a worker's life, how
// `get_init_status` answers, and how growing and shrinking a running pool keep
// every call answered (docs/pool.md "Resizing").
#include <algorithm>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "pool_core_harness.hpp"

using namespace std::chrono_literals;
using snakepit::errc;
using snakepit::pool_config;
using snakepit::actors::test::pool_harness;
using snakepit::actors::test::small_pool;

namespace {

size_t count_state(const pool_harness& h, const std::string& state) {
  auto ws = h.core->workers();
  return static_cast<size_t>(
    std::count_if(ws.begin(), ws.end(),
                  [&](const snakepit::worker_info& w) { return w.state == state; }));
}

bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

} // namespace

TEST_SUITE("actors.pool_resize") {

  TEST_CASE(
    "list_workers follows a worker: starting, ready, busy, restarting, draining") {
    pool_harness h{small_pool(2)};
    h.core->begin_startup();
    h.sync();
    REQUIRE(h.callee.starts.size() == 2);
    auto a = h.callee.starts[0];
    auto b = h.callee.starts[1];
    CHECK(h.info(a)->state == "starting");
    CHECK(h.info(a)->pid == 0);
    h.start_ok(a);
    h.ready(a);
    h.start_ok(b);
    h.ready(b);
    CHECK(h.info(a)->state == "ready");
    CHECK(h.info(a)->pid > 0);
    auto c = h.call();
    auto busy = h.running_on(c);
    CHECK(h.info(busy)->state == "busy");
    auto idle = busy == a ? b : a;
    h.crash(idle);
    CHECK(h.info(idle)->state == "restarting");
    CHECK(h.info(idle)->pid == 0);
    h.ready(idle);
    CHECK(h.info(idle)->state == "ready");
    REQUIRE_FALSE(h.core->recycle(busy));
    h.sync();
    auto repl = h.callee.starts.back();
    CHECK(h.info(repl)->state == "starting");
    h.start_ok(repl);
    h.ready(repl);
    CHECK(h.info(busy)->state == "draining");
    h.complete(c);
    CHECK(c.ok());
    CHECK(contains(h.callee.retires, busy));
  }

  TEST_CASE("init status: initializing, ready, failed with its reason, not_found") {
    pool_harness h{small_pool(2)};
    h.core->begin_startup();
    h.sync();
    auto a = h.callee.starts[0];
    auto b = h.callee.starts[1];
    CHECK(h.core->init_status(a).state == "initializing");
    h.start_ok(a);
    CHECK(h.core->init_status(a).state == "initializing"); // started, no handshake yet
    h.ready(a);
    CHECK(h.core->init_status(a).state == "ready");
    h.start_failed(b, "ModuleNotFoundError: No module named 'no'");
    auto failed = h.core->init_status(b);
    CHECK(failed.state == "failed");
    CHECK(failed.reason.find("No module named 'no'") != std::string::npos);
    CHECK(h.core->init_status("p_worker_99").state == "not_found");
    h.crash(a);
    CHECK(h.core->init_status(a).state == "initializing"); // restarting
  }

  TEST_CASE("growing starts the missing workers in start-up batches") {
    auto cfg = small_pool(2);
    cfg.startup.concurrency = 2;
    pool_harness h{cfg};
    auto ids = h.boot();
    REQUIRE(ids.size() == 2);
    REQUIRE_FALSE(h.core->resize(6));
    h.sync();
    REQUIRE(h.callee.starts.size() == 4); // two at a time
    CHECK(h.core->stats().starting == 4);
    CHECK(count_state(h, "starting") == 2);
    h.start_ok(h.callee.starts[2]);
    CHECK(h.callee.starts.size() == 5); // one finished: the next one begins
    h.start_ok(h.callee.starts[3]);
    REQUIRE(h.callee.starts.size() == 6);
    for (size_t i = 2; i < 6; ++i) {
      if (i >= 4)
        h.start_ok(h.callee.starts[i]);
      h.ready(h.callee.starts[i]);
    }
    CHECK(h.core->stats().workers == 6);
    CHECK(h.core->stats().starting == 0);
    CHECK(count_state(h, "ready") == 6);
  }

  TEST_CASE(
    "shrinking retires idle workers at once and drains busy ones, no call fails") {
    pool_harness h{small_pool(3)};
    auto ids = h.boot();
    auto c1 = h.call();
    auto c2 = h.call();
    auto w1 = h.running_on(c1);
    auto w2 = h.running_on(c2);
    auto idle = ids[0] != w1 && ids[0] != w2   ? ids[0]
                : ids[1] != w1 && ids[1] != w2 ? ids[1]
                                               : ids[2];
    REQUIRE_FALSE(h.core->resize(1));
    h.sync();
    // The idle worker goes first; then one of the busy ones, which finishes its call.
    REQUIRE(h.callee.retires.size() == 1);
    CHECK(h.callee.retires[0] == idle);
    CHECK(h.info(idle)->state == "draining"); // retired, its down on the way
    CHECK(count_state(h, "draining") == 2);
    auto leaving = h.info(w1)->state == "draining" ? w1 : w2;
    auto staying = leaving == w1 ? w2 : w1;
    auto& on_leaving = leaving == w1 ? c1 : c2;
    auto& on_staying = leaving == w1 ? c2 : c1;
    CHECK_FALSE(h.slot(leaving)->offered.load());
    auto c3 = h.call(); // waits for the staying worker, never the leaving one
    CHECK(h.running_on(c3).empty());
    h.complete(on_leaving);
    CHECK(on_leaving.ok());
    CHECK(contains(h.callee.retires, leaving));
    CHECK(h.running_on(c3).empty());
    h.down(h.callee.retires[0]);
    h.down(leaving);
    h.complete(on_staying);
    CHECK(on_staying.ok());
    CHECK(h.running_on(c3) == staying);
    h.complete(c3);
    CHECK(c3.ok());
    auto s = h.core->stats();
    CHECK(s.workers == 1);
    CHECK(s.errors == 0);
    CHECK(s.worker_crashes == 0);
    CHECK(h.core->workers().size() == 1);
  }

  TEST_CASE("shrinking takes workers that are not ready first, and starts not yet made") {
    auto cfg = small_pool(4);
    cfg.startup.concurrency = 2;
    pool_harness h{cfg};
    h.core->begin_startup();
    h.sync();
    REQUIRE(h.callee.starts.size() == 2);
    auto a = h.callee.starts[0];
    auto b = h.callee.starts[1];
    h.start_ok(a);
    h.ready(a);
    REQUIRE(h.callee.starts.size() == 3);
    auto c = h.callee.starts[2];
    // a ready; b and c starting; one start not begun.
    bool done = false;
    h.core->await_ready([&](caf::error err) { done = !err; });
    REQUIRE_FALSE(h.core->resize(2));
    h.sync();
    CHECK(h.callee.starts.size() == 3); // the fourth start is never made
    REQUIRE(h.callee.retires.size() == 1);
    CHECK((h.callee.retires[0] == b || h.callee.retires[0] == c));
    auto kept = h.callee.retires[0] == b ? c : b;
    h.start_ok(h.callee.retires[0]); // its start completes anyway: not waited for
    h.start_ok(kept);
    h.ready(kept);
    CHECK(done);
    CHECK(h.core->startup_done());
    CHECK(h.core->stats().workers == 2);
  }

  TEST_CASE("resize refuses sizes outside 1..1024 and a draining pool") {
    pool_harness h{small_pool(2)};
    h.boot();
    CHECK(snakepit::errc_of(h.core->resize(0)) == errc::invalid_argument);
    CHECK(snakepit::errc_of(h.core->resize(1025)) == errc::invalid_argument);
    CHECK(h.core->config().pool_size == 2);
    h.core->drain();
    CHECK(snakepit::errc_of(h.core->resize(3)) == errc::shutting_down);
  }

  TEST_CASE("sessions on a worker resized away follow their affinity mode") {
    pool_harness h{small_pool(2)};
    auto ids = h.boot();
    auto hint = h.session_call("h", "hint");
    auto strict = h.session_call("s", "strict_queue");
    auto hint_worker = h.running_on(hint);
    auto strict_worker = h.running_on(strict);
    REQUIRE(hint_worker != strict_worker);
    h.complete(hint);
    h.complete(strict);
    // Both idle with one session each: the younger goes (the later id among equals).
    REQUIRE_FALSE(h.core->resize(1));
    h.sync();
    REQUIRE(h.callee.retires.size() == 1);
    auto gone = h.callee.retires[0];
    CHECK(gone == ids[1]);
    h.down(gone);
    auto again_hint = h.session_call("h", "hint");
    auto again_strict = h.session_call("s", "strict_queue");
    if (gone == hint_worker) {
      CHECK(h.running_on(again_hint) == ids[0]); // hint: moved to the remaining worker
      h.complete(again_hint);
      CHECK(again_hint.ok());
    } else {
      CHECK(again_strict.code() ==
            errc::session_worker_unavailable); // strict: its worker is gone
    }
  }

  TEST_CASE("a draining worker keeps its strict session's calls, then retires") {
    pool_harness h{small_pool(2)};
    auto ids = h.boot();
    auto s1 = h.session_call("s", "strict_queue");
    auto bound = h.running_on(s1);
    auto other = bound == ids[0] ? ids[1] : ids[0];
    auto busy_other = h.call();
    REQUIRE(h.running_on(busy_other) == other);
    REQUIRE_FALSE(h.core->resize(1)); // both busy: the one with fewer sessions goes
    h.sync();
    CHECK(h.info(other)->state == "draining");
    CHECK(h.info(bound)->state == "busy");
    h.complete(busy_other);
    CHECK(busy_other.ok());
    CHECK(contains(h.callee.retires, other));
    h.complete(s1);
    CHECK(s1.ok());
  }

  TEST_CASE("a worker resized away that crashes is retired, not restarted") {
    pool_harness h{small_pool(2)};
    auto ids = h.boot();
    auto a = h.call();
    auto b = h.call();
    REQUIRE_FALSE(h.core->resize(1));
    h.sync();
    auto leaving = h.info(ids[0])->state == "draining" ? ids[0] : ids[1];
    auto& on_leaving = h.running_on(a) == leaving ? a : b;
    h.crash(leaving);
    CHECK(on_leaving.code() == errc::worker_crashed); // the crash, not the resize
    CHECK(contains(h.callee.retires, leaving));
    CHECK_FALSE(h.info(leaving).has_value());
    CHECK(h.callee.starts.size() == 2); // no replacement: the pool is one worker now
  }

  TEST_CASE("growing again takes back a draining worker before starting new ones") {
    pool_harness h{small_pool(2)};
    auto ids = h.boot();
    auto a = h.call();
    auto b = h.call();
    REQUIRE_FALSE(h.core->resize(1));
    h.sync();
    REQUIRE(count_state(h, "draining") == 1);
    REQUIRE_FALSE(h.core->resize(3));
    h.sync();
    CHECK(count_state(h, "draining") == 0);
    CHECK(h.callee.starts.size() == 3); // only the third is new
    h.complete(a);
    h.complete(b);
    CHECK(h.callee.retires.empty());
    CHECK(a.ok());
    CHECK(b.ok());
  }

  TEST_CASE("a resize emits snakepit.pool.resized and one draining event per worker") {
    snakepit::actors::test::event_log log;
    pool_harness h{small_pool(3), log.bus};
    h.boot();
    auto c = h.call();
    REQUIRE_FALSE(h.core->resize(1));
    h.sync();
    auto resized = log.named("snakepit.pool.resized");
    REQUIRE(resized.size() == 1);
    CHECK(resized[0].measurements["from"] == 3);
    CHECK(resized[0].measurements["to"] == 1);
    CHECK(log.named("snakepit.worker.draining").size() == 2);
    h.complete(c);
  }

} // TEST_SUITE
