// Restart strategies with several children: which children are stopped, in
// which order, and in which order they come back (supervisor.erl restart/3).
#include "test_support.hpp"

using namespace sup_test;

namespace {

std::vector<sp::child_spec> abc(const log_ptr& log) {
  return {child("a", log), child("b", log), child("c", log)};
}

const auto crash = caf::make_error(caf::sec::runtime_error, std::string{"crash"});

} // namespace

TEST_SUITE("supervision.strategy") {

  TEST_CASE_FIXTURE(det_fixture, "one_for_one restarts only the failed child") {
    auto sup = spawn_sup({sp::strategy::one_for_one, 3, 5s}, abc(log));
    REQUIRE(take_ack());
    auto a = pid_of(sup, "a");
    auto c = pid_of(sup, "c");
    log->take();
    terminate_with(pid_of(sup, "b"), crash);
    CHECK(log->take() == events({"stop:b", "start:b"}));
    CHECK(pid_of(sup, "a") == a);
    CHECK(pid_of(sup, "c") == c);
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "one_for_all stops the others in reverse order and restarts all in order") {
    auto sup =
      spawn_sup({sp::strategy::one_for_all, 3, 5s},
                {child("a", log), child("b", log), child("c", log), child("d", log)});
    REQUIRE(take_ack());
    log->take();
    terminate_with(pid_of(sup, "b"), crash);
    CHECK(log->take() == events({"stop:b", "stop:d", "stop:c", "stop:a", "start:a",
                                 "start:b", "start:c", "start:d"}));
    CHECK(log->reason("d") == caf::exit_reason::user_shutdown);
    for (auto& k : children_of(sup))
      CHECK(k.status == sp::child_status::running);
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "rest_for_one restarts the failed child and those started after it") {
    auto sup =
      spawn_sup({sp::strategy::rest_for_one, 3, 5s},
                {child("a", log), child("b", log), child("c", log), child("d", log)});
    REQUIRE(take_ack());
    auto a = pid_of(sup, "a");
    log->take();
    terminate_with(pid_of(sup, "b"), crash);
    CHECK(log->take() ==
          events({"stop:b", "stop:d", "stop:c", "start:b", "start:c", "start:d"}));
    CHECK(pid_of(sup, "a") == a);
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "rest_for_one on the last child restarts only that child") {
    auto sup = spawn_sup({sp::strategy::rest_for_one, 3, 5s}, abc(log));
    REQUIRE(take_ack());
    log->take();
    terminate_with(pid_of(sup, "c"), crash);
    CHECK(log->take() == events({"stop:c", "start:c"}));
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "one_for_all drops temporary siblings instead of restarting them") {
    auto sup = spawn_sup(
      {sp::strategy::one_for_all, 3, 5s},
      {child("a", log), child("t", log, sp::restart_type::temporary), child("c", log)});
    REQUIRE(take_ack());
    log->take();
    terminate_with(pid_of(sup, "a"), crash);
    CHECK(log->take() == events({"stop:a", "stop:c", "stop:t", "start:a", "start:c"}));
    auto kids = children_of(sup);
    REQUIRE(kids.size() == 2);
    CHECK(kids[0].id == "a");
    CHECK(kids[1].id == "c");
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "one_for_all also restarts a transient sibling that had ended normally") {
    auto sup = spawn_sup(
      {sp::strategy::one_for_all, 3, 5s},
      {child("a", log), child("b", log, sp::restart_type::transient), child("c", log)});
    REQUIRE(take_ack());
    terminate_with(pid_of(sup, "b"), caf::error{});
    CHECK_FALSE(pid_of(sup, "b"));
    log->take();
    terminate_with(pid_of(sup, "a"), crash);
    CHECK(log->take() == events({"stop:a", "stop:c", "start:a", "start:b", "start:c"}));
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "a normal exit of a transient child does not trigger one_for_all") {
    auto sup = spawn_sup(
      {sp::strategy::one_for_all, 3, 5s},
      {child("a", log), child("b", log, sp::restart_type::transient), child("c", log)});
    REQUIRE(take_ack());
    log->take();
    terminate_with(pid_of(sup, "b"), caf::error{});
    CHECK(log->take() == events({"stop:b"}));
    CHECK(pid_of(sup, "a"));
    CHECK(pid_of(sup, "c"));
  }

} // TEST_SUITE
