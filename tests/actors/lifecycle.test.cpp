// The lifecycle policy without processes: exit classification, recycling limits,
// resident memory, retry backoff and the circuit breaker's state machine; run ids.
#include <doctest/doctest.h>

#include <signal.h>
#include <unistd.h>

#include <set>
#include <vector>

#include "actors/pool/lifecycle.hpp"
#include "actors/worker/worker_env.hpp"
#include "tests/support/checks.hpp"

using namespace std::chrono_literals;
using snakepit::actors::circuit_breaker;
namespace lc = snakepit::actors;

TEST_SUITE("actors.lifecycle") {

  TEST_CASE("exits are classified by signal, shell status and exit code") {
    CHECK(lc::classify_exit(-1, SIGSEGV) == "segfault");
    CHECK(lc::classify_exit(-1, SIGABRT) == "abort");
    CHECK(lc::classify_exit(-1, SIGBUS) == "bus_error");
    CHECK(lc::classify_exit(-1, SIGILL) == "illegal_instruction");
    CHECK(lc::classify_exit(-1, SIGFPE) == "fpe");
    CHECK(lc::classify_exit(-1, SIGKILL) == "killed");
    CHECK(lc::classify_exit(-1, SIGTERM) == "terminated");
    CHECK(lc::classify_exit(-1, SIGUSR1) == "signal_10");
    CHECK(lc::classify_exit(139, 0) == "segfault");
    CHECK(lc::classify_exit(137, 0) == "killed");
    CHECK(lc::classify_exit(134, 0) == "abort");
    CHECK(lc::classify_exit(3, 0) == "exit_3");
    CHECK(lc::classify_exit(0, 0) == "exit_0");
  }

  TEST_CASE("taint causes are the classified names") {
    for (auto c : {"segfault", "abort", "bus_error", "illegal_instruction", "fpe",
                   "killed", "terminated", "exit_1", "exit_137", "signal_10"})
      CHECK_MSG(lc::is_crash_cause(c), c);
    for (auto c : {"", "oom", "exit_", "exit_x", "signal_", "SEGFAULT", "exit_-1"})
      CHECK_FALSE_MESSAGE(lc::is_crash_cause(c), c);
  }

  TEST_CASE("resident memory is read from /proc") {
    auto mine = lc::resident_bytes(static_cast<int>(::getpid()));
    REQUIRE(mine);
    CHECK(*mine > (1u << 20));
    CHECK(*mine < (uint64_t{64} << 30));
    CHECK_FALSE(lc::resident_bytes(0x7ffffff0));
  }

  TEST_CASE("request limits are jittered within [max(1-j), max]") {
    CHECK(lc::jittered_limit(0, 0.1, 0.5) == 0);
    CHECK(lc::jittered_limit(100, 0.0, 0.9) == 100);
    CHECK(lc::jittered_limit(100, 0.2, 0.0) == 80);
    CHECK(lc::jittered_limit(100, 0.2, 0.999) == 100);
    CHECK(lc::jittered_limit(1, 0.9, 0.0) == 1);
    std::set<uint64_t> seen;
    for (int i = 0; i < 100; ++i) {
      auto v = lc::jittered_limit(1000, 0.1, i / 100.0);
      CHECK(v >= 900);
      CHECK(v <= 1000);
      seen.insert(v);
    }
    CHECK(seen.size() > 50); // spread out, not one value
  }

  TEST_CASE("retry delays follow the backoff list with +-25 % jitter") {
    std::vector<std::chrono::milliseconds> backoff{50ms, 100ms, 200ms};
    CHECK(lc::retry_delay(backoff, 1, 0.5) == 50ms);
    CHECK(lc::retry_delay(backoff, 2, 0.5) == 100ms);
    CHECK(lc::retry_delay(backoff, 3, 0.5) == 200ms);
    CHECK(lc::retry_delay(backoff, 7, 0.5) == 200ms); // the last one repeats
    CHECK(lc::retry_delay(backoff, 1, 0.0) == 38ms);  // 37.5 rounds up
    CHECK(lc::retry_delay(backoff, 3, 0.9999) == 250ms);
    CHECK(lc::retry_delay({}, 1, 0.5) == 0ms);
    CHECK(lc::retry_delay(backoff, 0, 0.5) == 0ms);
  }

  TEST_CASE("the circuit opens after threshold failures in a row") {
    circuit_breaker cb{3, 1000ms};
    auto t0 = std::chrono::steady_clock::time_point{} + 1h;
    CHECK_FALSE(cb.on_failure(t0));
    CHECK_FALSE(cb.on_failure(t0));
    CHECK(cb.on_success() == false); // a success in between resets the count
    CHECK_FALSE(cb.on_failure(t0));
    CHECK_FALSE(cb.on_failure(t0));
    CHECK(cb.current() == circuit_breaker::state::closed);
    CHECK(cb.on_failure(t0));
    CHECK(cb.current() == circuit_breaker::state::open);
    CHECK_FALSE(cb.on_failure(t0)); // already open
    SUBCASE("half-open after the reset; the probe's success closes it") {
      CHECK_FALSE(cb.try_half_open(t0 + 999ms));
      CHECK(cb.try_half_open(t0 + 1000ms));
      CHECK(cb.current() == circuit_breaker::state::half_open);
      CHECK(cb.on_success());
      CHECK(cb.current() == circuit_breaker::state::closed);
      CHECK(cb.failures() == 0);
    }
    SUBCASE("the probe's failure opens it again, with a fresh reset period") {
      REQUIRE(cb.try_half_open(t0 + 1500ms));
      CHECK(cb.on_failure(t0 + 1600ms));
      CHECK(cb.current() == circuit_breaker::state::open);
      CHECK_FALSE(cb.try_half_open(t0 + 2000ms));
      CHECK(cb.try_half_open(t0 + 2600ms));
    }
    SUBCASE("failures while open push the reset out") {
      cb.on_failure(t0 + 800ms);
      CHECK_FALSE(cb.try_half_open(t0 + 1000ms));
      CHECK(cb.try_half_open(t0 + 1800ms));
    }
  }

  TEST_CASE("a threshold of 0 disables the breaker") {
    circuit_breaker cb{0, 10ms};
    auto t0 = std::chrono::steady_clock::time_point{} + 1h;
    for (int i = 0; i < 100; ++i)
      CHECK_FALSE(cb.on_failure(t0));
    CHECK(cb.current() == circuit_breaker::state::closed);
    CHECK_FALSE(cb.enabled());
  }

  TEST_CASE(
    "run ids are 7 base36 characters and do not repeat when made in the same second") {
    // They key the persisted process registry: a repeat would let one host's sweep
    // take another live host's workers for its own dead ones.
    std::set<std::string> seen;
    for (int i = 0; i < 20000; ++i) {
      auto id = lc::make_run_id();
      REQUIRE(id.size() == 7);
      for (char c : id)
        REQUIRE(((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')));
      seen.insert(id);
    }
    CHECK(seen.size() == 20000);
  }

} // TEST_SUITE
