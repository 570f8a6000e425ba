// Supervision trees: a child supervisor that gives up is treated by its parent
// like any child that exited with `shutdown`; stops and kills reach the leaves.
#include "test_support.hpp"

using namespace sup_test;

TEST_SUITE("supervision.nested") {

  TEST_CASE_FIXTURE(det_fixture, "a permanent child supervisor that exceeds its "
                                 "intensity is restarted by its parent") {
    auto sup = spawn_sup(
      {sp::strategy::one_for_one, 3, 5s},
      {child("a", log), sp::supervisor_child("inner", {sp::strategy::one_for_one, 0, 5s},
                                             {child("x", log), child("y", log)})});
    REQUIRE(take_ack());
    auto inner = pid_of(sup, "inner");
    REQUIRE(inner);
    auto x = pid_of(inner, "x");
    log->take();
    terminate_with(x, caf::make_error(caf::sec::runtime_error));
    CHECK(log->take() == events({"stop:x", "stop:y", "start:x", "start:y"}));
    auto inner2 = pid_of(sup, "inner");
    REQUIRE(inner2);
    CHECK(inner2 != inner);
    CHECK(pid_of(inner2, "x"));
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "a transient child supervisor that exceeds its intensity is not restarted") {
    auto sup =
      spawn_sup({sp::strategy::one_for_one, 3, 5s},
                {child("a", log),
                 sp::supervisor_child("inner", {sp::strategy::one_for_one, 0, 5s},
                                      {child("x", log)}, sp::restart_type::transient)});
    REQUIRE(take_ack());
    auto inner = pid_of(sup, "inner");
    log->take();
    terminate_with(pid_of(inner, "x"), caf::make_error(caf::sec::runtime_error));
    CHECK(log->take() == events({"stop:x"}));
    auto kids = children_of(sup);
    REQUIRE(kids.size() == 2);
    CHECK(kids[1].status == sp::child_status::undefined);
  }

  TEST_CASE_FIXTURE(
    det_fixture, "stopping the root stops the whole tree depth first in reverse order") {
    auto sup = spawn_sup(
      {}, {child("a", log),
           sp::supervisor_child("inner", {}, {child("x", log), child("y", log)}),
           child("b", log)});
    REQUIRE(take_ack());
    CHECK(log->take() == events({"start:a", "start:x", "start:y", "start:b"}));
    watch(sup);
    self->send_exit(sup, caf::exit_reason::user_shutdown);
    sched.run();
    CHECK(log->take() == events({"stop:b", "stop:y", "stop:x", "stop:a"}));
    CHECK(down_reason());
  }

  TEST_CASE_FIXTURE(det_fixture, "killing the root kills the grandchildren too") {
    auto sup = spawn_sup({}, {sp::supervisor_child("inner", {}, {child("x", log)}),
                              sp::dynamic_supervisor_child("dyn", {})});
    REQUIRE(take_ack());
    auto dyn = pid_of(sup, "dyn");
    REQUIRE(ask<caf::actor>(dyn, sp::start_child_atom::value, child("d", log)));
    log->take();
    caf::anon_send_exit(sup, caf::exit_reason::kill);
    sched.run();
    CHECK(log->count("stop:x") == 1);
    CHECK(log->count("stop:d") == 1);
    CHECK(log->reason("x") == caf::exit_reason::kill);
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "a failing nested start fails the parent's start with the nested child's id") {
    child_opts bad;
    *bad.fail_starts = 1;
    spawn_sup({}, {child("a", log),
                   sp::supervisor_child(
                     "inner", {}, {child("x", log, sp::restart_type::permanent, bad)})});
    auto ack = take_ack();
    REQUIRE(ack);
    REQUIRE_FALSE(*ack);
    CHECK(error_id(ack->error()) == "inner");
    auto inner_reason = error_reason(ack->error());
    CHECK(sp::is(inner_reason, sp::sup_errc::failed_to_start_child));
    CHECK(error_id(inner_reason) == "x");
  }

} // TEST_SUITE
