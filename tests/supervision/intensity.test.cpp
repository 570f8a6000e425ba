// Restart intensity: at most `intensity` restarts within `period` (virtual
// time); one more makes the supervisor stop its children and quit with
// sup_errc::shutdown. Failed restarts are retried and count (try_again_restart).
#include "test_support.hpp"

using namespace sup_test;

namespace {

const auto crash = caf::make_error(caf::sec::runtime_error, std::string{"crash"});

} // namespace

TEST_SUITE("supervision.intensity") {

  TEST_CASE_FIXTURE(det_fixture, "intensity 0 makes the first restart exceed the limit") {
    auto sup = spawn_sup({sp::strategy::one_for_one, 0, 5s},
                         {child("a", log), child("b", log), child("c", log)});
    REQUIRE(take_ack());
    watch(sup);
    log->take();
    terminate_with(pid_of(sup, "a"), crash);
    CHECK(log->take() == events({"stop:a", "stop:c", "stop:b"}));
    auto r = down_reason();
    REQUIRE(r);
    CHECK(sp::is(*r, sp::sup_errc::shutdown));
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "exactly intensity restarts within the period are allowed") {
    auto sup = spawn_sup({sp::strategy::one_for_one, 3, 5s}, {child("a", log)});
    REQUIRE(take_ack());
    watch(sup);
    for (int i = 0; i < 3; ++i)
      terminate_with(pid_of(sup, "a"), crash);
    CHECK_FALSE(down_reason());
    CHECK(log->count("start:a") == 4);
    CHECK(pid_of(sup, "a"));
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "one restart more than the intensity within the period shuts the supervisor down") {
    auto sup =
      spawn_sup({sp::strategy::one_for_one, 3, 5s}, {child("a", log), child("b", log)});
    REQUIRE(take_ack());
    watch(sup);
    for (int i = 0; i < 3; ++i)
      terminate_with(pid_of(sup, "a"), crash);
    CHECK_FALSE(down_reason());
    log->take();
    terminate_with(pid_of(sup, "a"), crash);
    CHECK(log->take() == events({"stop:a", "stop:b"}));
    auto r = down_reason();
    REQUIRE(r);
    CHECK(sp::is(*r, sp::sup_errc::shutdown));
    CHECK(sp::classify_exit(*r) == sp::exit_kind::shutdown);
  }

  TEST_CASE_FIXTURE(det_fixture, "restarts older than the period no longer count") {
    auto sup = spawn_sup({sp::strategy::one_for_one, 1, 5s}, {child("a", log)});
    REQUIRE(take_ack());
    watch(sup);
    terminate_with(pid_of(sup, "a"), crash);
    sched.advance_time(6s);
    terminate_with(pid_of(sup, "a"), crash);
    CHECK_FALSE(down_reason());
    CHECK(log->count("start:a") == 3);
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "restarts within the period count even when they are seconds apart") {
    auto sup = spawn_sup({sp::strategy::one_for_one, 1, 5s}, {child("a", log)});
    REQUIRE(take_ack());
    watch(sup);
    terminate_with(pid_of(sup, "a"), crash);
    sched.advance_time(4s);
    CHECK_FALSE(down_reason());
    terminate_with(pid_of(sup, "a"), crash);
    auto r = down_reason();
    REQUIRE(r);
    CHECK(sp::is(*r, sp::sup_errc::shutdown));
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "a failed restart is retried and the retry counts toward the intensity") {
    child_opts opts;
    auto sup = spawn_sup({sp::strategy::one_for_one, 2, 5s},
                         {child("a", log, sp::restart_type::permanent, opts)});
    REQUIRE(take_ack());
    watch(sup);
    *opts.fail_starts = 1;
    log->take();
    terminate_with(pid_of(sup, "a"), crash);
    // restart 1 fails, retry (restart 2) succeeds: within intensity 2
    CHECK(log->take() == events({"stop:a", "fail:a", "stop:a", "start:a"}));
    CHECK_FALSE(down_reason());
    CHECK(pid_of(sup, "a"));
    // a third restart in the window exceeds: proves the retry was counted
    terminate_with(pid_of(sup, "a"), crash);
    auto r = down_reason();
    REQUIRE(r);
    CHECK(sp::is(*r, sp::sup_errc::shutdown));
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "a failing restart exhausts the intensity through its retries") {
    child_opts opts;
    auto sup =
      spawn_sup({sp::strategy::one_for_one, 1, 5s},
                {child("a", log, sp::restart_type::permanent, opts), child("b", log)});
    REQUIRE(take_ack());
    watch(sup);
    *opts.fail_starts = 100;
    log->take();
    terminate_with(pid_of(sup, "a"), crash);
    CHECK(log->take() == events({"stop:a", "fail:a", "stop:a", "stop:b"}));
    auto r = down_reason();
    REQUIRE(r);
    CHECK(sp::is(*r, sp::sup_errc::shutdown));
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "while a failed restart waits for its retry the child shows as restarting") {
    child_opts opts;
    auto spec = child("a", log, sp::restart_type::permanent, opts);
    spec.start_timeout = 1000ms;
    auto sup = spawn_sup({sp::strategy::one_for_one, 5, 5s}, {spec});
    REQUIRE(take_ack());
    *opts.hang_starts = 1;
    terminate_with(pid_of(sup, "a"), crash);
    // the supervisor waits for the new child's ack; requests queue up meanwhile
    self->send(sup, sp::which_children_atom::value);
    self->send(sup, sp::restart_child_atom::value, std::string{"a"});
    self->send(sup, sp::delete_child_atom::value, std::string{"a"});
    sched.run();
    CHECK_FALSE(take_from_self<std::vector<sp::child_info>>());
    sched.advance_time(1000ms);
    sched.run();
    auto kids = take_from_self<std::vector<sp::child_info>>();
    REQUIRE(kids);
    REQUIRE(std::get<0>(*kids).size() == 1);
    CHECK(std::get<0>(*kids)[0].status == sp::child_status::restarting);
    auto e1 = take_from_self<caf::error>();
    auto e2 = take_from_self<caf::error>();
    REQUIRE(e1);
    REQUIRE(e2);
    CHECK(sp::is(std::get<0>(*e1), sp::sup_errc::restarting));
    CHECK(sp::is(std::get<0>(*e2), sp::sup_errc::restarting));
    // the retry has run by now and succeeded
    auto after = children_of(sup);
    REQUIRE(after.size() == 1);
    CHECK(after[0].status == sp::child_status::running);
  }

} // TEST_SUITE
