// Restart decisions: every restart type against every class of exit reason,
// exactly as supervisor.erl's do_restart/3 decides them.
#include "test_support.hpp"

using namespace sup_test;

namespace {

caf::error reason_of(const std::string& name) {
  if (name == "normal")
    return caf::error{};
  if (name == "shutdown")
    return caf::exit_reason::user_shutdown;
  if (name == "killed")
    return caf::exit_reason::kill;
  return caf::make_error(caf::sec::runtime_error, std::string{"crash"});
}

// Terminates child "w" with the given reason and checks whether it was
// restarted and whether its spec survived.
void check(det_fixture& fx, sp::restart_type rt, const std::string& reason,
           bool restarted, bool spec_kept) {
  auto sup = fx.spawn_sup({sp::strategy::one_for_one, 3, 5s}, {child("w", fx.log, rt)});
  REQUIRE(fx.take_ack());
  auto before = fx.pid_of(sup, "w");
  REQUIRE(before);
  fx.log->take();
  fx.terminate_with(before, reason_of(reason));
  auto evs = fx.log->take();
  if (restarted) {
    CHECK(evs == events({"stop:w", "start:w"}));
    auto after = fx.pid_of(sup, "w");
    CHECK(after);
    CHECK(after != before);
  } else {
    CHECK(evs == events({"stop:w"}));
  }
  auto kids = fx.children_of(sup);
  CHECK(kids.size() == (spec_kept ? 1u : 0u));
  if (spec_kept && !restarted) {
    CHECK(kids[0].status == sp::child_status::undefined);
    CHECK_FALSE(kids[0].pid);
  }
}

} // namespace

TEST_SUITE("supervision.restart") {

  TEST_CASE_FIXTURE(det_fixture, "a permanent child is restarted after a normal exit") {
    check(*this, sp::restart_type::permanent, "normal", true, true);
  }

  TEST_CASE_FIXTURE(det_fixture, "a permanent child is restarted after a shutdown exit") {
    check(*this, sp::restart_type::permanent, "shutdown", true, true);
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "a permanent child is restarted after an abnormal exit") {
    check(*this, sp::restart_type::permanent, "abnormal", true, true);
  }

  TEST_CASE_FIXTURE(det_fixture, "a permanent child is restarted after being killed") {
    check(*this, sp::restart_type::permanent, "killed", true, true);
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "a transient child is not restarted after a normal exit but keeps its spec") {
    check(*this, sp::restart_type::transient, "normal", false, true);
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "a transient child is not restarted after a shutdown exit") {
    check(*this, sp::restart_type::transient, "shutdown", false, true);
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "a transient child is restarted after an abnormal exit") {
    check(*this, sp::restart_type::transient, "abnormal", true, true);
  }

  TEST_CASE_FIXTURE(det_fixture, "a transient child is restarted after being killed") {
    check(*this, sp::restart_type::transient, "killed", true, true);
  }

  TEST_CASE_FIXTURE(det_fixture, "a temporary child is dropped after a normal exit") {
    check(*this, sp::restart_type::temporary, "normal", false, false);
  }

  TEST_CASE_FIXTURE(det_fixture, "a temporary child is dropped after a shutdown exit") {
    check(*this, sp::restart_type::temporary, "shutdown", false, false);
  }

  TEST_CASE_FIXTURE(det_fixture, "a temporary child is dropped after an abnormal exit") {
    check(*this, sp::restart_type::temporary, "abnormal", false, false);
  }

  TEST_CASE_FIXTURE(det_fixture, "a temporary child is dropped after being killed") {
    check(*this, sp::restart_type::temporary, "killed", false, false);
  }

  TEST_CASE("exit reasons map onto OTP's classes") {
    CHECK(sp::classify_exit(caf::error{}) == sp::exit_kind::normal);
    CHECK(sp::classify_exit(caf::exit_reason::normal) == sp::exit_kind::normal);
    CHECK(sp::classify_exit(caf::exit_reason::user_shutdown) == sp::exit_kind::shutdown);
    CHECK(sp::classify_exit(caf::make_error(sp::sup_errc::shutdown)) ==
          sp::exit_kind::shutdown);
    CHECK(sp::classify_exit(caf::exit_reason::kill) == sp::exit_kind::killed);
    CHECK(sp::classify_exit(caf::sec::runtime_error) == sp::exit_kind::abnormal);
    CHECK(sp::classify_exit(caf::exit_reason::unreachable) == sp::exit_kind::abnormal);
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "a transient child quitting with sup_errc::shutdown counts as shutdown") {
    auto sup = spawn_sup({}, {child("w", log, sp::restart_type::transient)});
    REQUIRE(take_ack());
    auto pid = pid_of(sup, "w");
    log->take();
    self->send(pid, die_atom::value, caf::make_error(sp::sup_errc::shutdown));
    sched.run();
    CHECK(log->take() == events({"stop:w"}));
    CHECK_FALSE(pid_of(sup, "w"));
  }

} // TEST_SUITE
