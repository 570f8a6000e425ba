// The circuit breaker on calls (`pool_circuit::call_failures`) on the protocol
// core: a run of calls its workers failed (worker_crashed, timeout) opens it, new
// calls are refused with circuit_open naming the pool, after the reset one trial
// call goes through and its outcome closes or re-opens it (docs/reliability.md).
#include <string>

#include <doctest/doctest.h>

#include "pool_core_harness.hpp"

using namespace std::chrono_literals;
using snakepit::errc;
using snakepit::pool_config;
using snakepit::actors::circuit_breaker;
using snakepit::actors::test::call_handle;
using snakepit::actors::test::pool_harness;
using snakepit::actors::test::small_pool;

namespace {

pool_config breaker_pool(int call_failures = 3) {
  auto cfg = small_pool(2);
  cfg.circuit.call_failures = call_failures;
  cfg.circuit.reset = 1000ms;
  return cfg;
}

caf::error crashed() {
  return caf::make_error(errc::worker_crashed, "python exited");
}

caf::error timed_out() {
  return caf::make_error(errc::timeout, "deadline exceeded");
}

/// `n` calls, each failed by its worker with `err`.
void failing_calls(pool_harness& h, int n, const caf::error& err) {
  for (int i = 0; i < n; ++i) {
    auto c = h.call();
    h.fail(c, err);
    REQUIRE(c.code() == snakepit::errc_of(err));
  }
}

} // namespace

TEST_SUITE("actors.pool_call_circuit") {

  TEST_CASE("a run of failed calls opens the circuit, new calls get circuit_open naming "
            "the pool") {
    pool_harness h{breaker_pool(3)};
    h.boot();
    failing_calls(h, 2, crashed());
    failing_calls(h, 1, timed_out());
    CHECK(h.core->call_breaker().current() == circuit_breaker::state::open);
    auto refused = h.call();
    REQUIRE(refused.code() == errc::circuit_open);
    auto text = snakepit::describe(refused.error());
    CHECK(text.find("pool p") != std::string::npos);
    CHECK(text.find("3 calls in a row failed") != std::string::npos);
    CHECK(h.runs_of(refused) == 0); // never reached a worker
    CHECK_FALSE(h.lane->is_open()); // nor may blocking callers go around it
  }

  TEST_CASE("a success or another error in between starts the run over") {
    pool_harness h{breaker_pool(3)};
    h.boot();
    failing_calls(h, 2, crashed());
    auto ok = h.call();
    h.complete(ok);
    failing_calls(h, 2, crashed());
    auto raised = h.call();
    h.fail(raised, caf::make_error(errc::tool_error, "ValueError: no"));
    failing_calls(h, 2, timed_out());
    CHECK(h.core->call_breaker().current() == circuit_breaker::state::closed);
    auto c = h.call();
    CHECK(h.runs_of(c) == 1);
  }

  TEST_CASE("half-open lets one trial call through, its success closes the circuit") {
    pool_harness h{breaker_pool(2)};
    h.boot();
    failing_calls(h, 2, crashed());
    h.advance(999ms);
    CHECK(h.call().code() == errc::circuit_open);
    h.advance(1ms);
    CHECK(h.core->call_breaker().current() == circuit_breaker::state::half_open);
    auto trial = h.call();
    CHECK(h.runs_of(trial) == 1);
    auto second = h.call();
    REQUIRE(second.code() == errc::circuit_open);
    CHECK(snakepit::describe(second.error()).find("trial call is running") !=
          std::string::npos);
    h.complete(trial);
    CHECK(trial.ok());
    CHECK(h.core->call_breaker().current() == circuit_breaker::state::closed);
    auto after = h.call();
    CHECK(h.runs_of(after) == 1);
    h.complete(after);
    CHECK(h.lane->is_open());
  }

  TEST_CASE("a failed trial opens the circuit again for another reset period") {
    pool_harness h{breaker_pool(2)};
    h.boot();
    failing_calls(h, 2, timed_out());
    h.advance(1000ms);
    auto trial = h.call();
    h.fail(trial, timed_out());
    CHECK(h.core->call_breaker().current() == circuit_breaker::state::open);
    CHECK(h.call().code() == errc::circuit_open);
    h.advance(1000ms);
    CHECK(h.core->call_breaker().current() == circuit_breaker::state::half_open);
    auto again = h.call();
    h.complete(again);
    CHECK(h.core->call_breaker().current() == circuit_breaker::state::closed);
  }

  TEST_CASE("a trial the worker answered with another error closes the circuit") {
    pool_harness h{breaker_pool(2)};
    h.boot();
    failing_calls(h, 2, crashed());
    h.advance(1000ms);
    auto trial = h.call();
    REQUIRE(h.runs_of(trial) == 1);
    h.fail(trial, caf::make_error(errc::tool_error, "ValueError"));
    CHECK(h.core->call_breaker().current() == circuit_breaker::state::closed);
  }

  TEST_CASE("a trial whose caller went away frees the place for another") {
    pool_harness h{breaker_pool(2)};
    auto ids = h.boot();
    auto a = h.call();
    auto b = h.call();
    h.crash(ids[0]);
    h.crash(ids[1]); // both calls failed: open, and no worker is ready
    REQUIRE(h.core->call_breaker().current() == circuit_breaker::state::open);
    h.advance(1000ms);
    auto trial = h.call(); // waits in the queue for a worker
    REQUIRE(h.runs_of(trial) == 0);
    trial.abandon();
    h.ready(ids[0]); // the abandoned trial is dropped, never run
    CHECK(h.runs_of(trial) == 0);
    CHECK(h.call().code() == errc::circuit_open); // its place is still taken
    h.advance(1000ms);                            // the next look frees it
    auto next = h.call();
    REQUIRE(h.runs_of(next) == 1);
    h.complete(next);
    CHECK(h.core->call_breaker().current() == circuit_breaker::state::closed);
  }

  TEST_CASE("a worker crash under running calls counts each failed call") {
    pool_harness h{breaker_pool(2)};
    auto ids = h.boot();
    auto a = h.call();
    auto b = h.call();
    h.crash(h.running_on(a));
    h.crash(h.running_on(b));
    CHECK(a.code() == errc::worker_crashed);
    CHECK(b.code() == errc::worker_crashed);
    CHECK(h.core->call_breaker().current() == circuit_breaker::state::open);
  }

  TEST_CASE("with call_failures 0 calls never open it") {
    pool_harness h{breaker_pool(0)};
    h.boot();
    failing_calls(h, 20, crashed());
    CHECK(h.core->call_breaker().current() == circuit_breaker::state::closed);
    auto c = h.call();
    CHECK(h.runs_of(c) == 1);
  }

} // TEST_SUITE
