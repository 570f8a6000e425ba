// Start-up and shut-down of a static supervisor: start order and acks, start
// failures in the middle of the list, start timeouts, spec validation, orderly
// stop in reverse order with shutdown timeouts escalating to kill.
#include "test_support.hpp"

using namespace sup_test;

TEST_SUITE("supervision.startup") {

  TEST_CASE_FIXTURE(det_fixture,
                    "children start left to right and the supervisor acks afterwards") {
    auto sup = spawn_sup({}, {child("a", log), child("b", log), child("c", log)});
    CHECK(log->take() == events({"start:a", "start:b", "start:c"}));
    auto ack = take_ack();
    REQUIRE(ack);
    REQUIRE(*ack);
    CHECK(**ack == sup);
  }

  TEST_CASE_FIXTURE(det_fixture, "a start failure in the middle stops the earlier "
                                 "children in reverse and names the child") {
    child_opts bad;
    *bad.fail_starts = 1;
    auto sup =
      spawn_sup({}, {child("a", log), child("b", log),
                     child("c", log, sp::restart_type::permanent, bad), child("d", log)});
    watch(sup);
    sched.run();
    CHECK(log->take() ==
          events({"start:a", "start:b", "fail:c", "stop:c", "stop:b", "stop:a"}));
    auto ack = take_ack();
    REQUIRE(ack);
    REQUIRE_FALSE(*ack);
    auto err = ack->error();
    CHECK(sp::is(err, sp::sup_errc::failed_to_start_child));
    CHECK(error_id(err) == "c");
    CHECK(error_reason(err) == caf::sec::runtime_error);
    auto r = down_reason();
    REQUIRE(r);
    CHECK(sp::is(*r, sp::sup_errc::failed_to_start_child));
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "a child that dies during init counts as a failed start") {
    child_opts boom;
    boom.throw_in_init = true;
    spawn_sup({}, {child("a", log), child("b", log, sp::restart_type::permanent, boom)});
    auto ack = take_ack();
    REQUIRE(ack);
    REQUIRE_FALSE(*ack);
    CHECK(error_id(ack->error()) == "b");
    CHECK(error_reason(ack->error()) == caf::sec::runtime_error);
    CHECK(log->take() == events({"start:a", "stop:b", "stop:a"}));
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "a child that never acks fails with start_timeout once the timeout elapsed") {
    child_opts slow;
    slow.never_ack = true;
    auto spec = child("s", log, sp::restart_type::permanent, slow);
    spec.start_timeout = 2000ms;
    spawn_sup({}, {child("a", log), spec});
    CHECK_FALSE(take_ack());
    sched.advance_time(1999ms);
    sched.run();
    CHECK_FALSE(take_ack());
    CHECK(log->count("stop:s") == 0);
    sched.advance_time(1ms);
    sched.run();
    auto ack = take_ack();
    REQUIRE(ack);
    REQUIRE_FALSE(*ack);
    CHECK(error_id(ack->error()) == "s");
    CHECK(sp::is(error_reason(ack->error()), sp::sup_errc::start_timeout));
    CHECK(log->reason("s") == caf::exit_reason::kill);
    CHECK(log->take() == events({"start:a", "start:s", "stop:s", "stop:a"}));
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "duplicate child ids are rejected before anything starts") {
    spawn_sup({}, {child("a", log), child("a", log)});
    auto ack = take_ack();
    REQUIRE(ack);
    REQUIRE_FALSE(*ack);
    CHECK(sp::is(ack->error(), sp::sup_errc::invalid_child_spec));
    CHECK(error_id(ack->error()) == "a");
    CHECK(log->events().empty());
  }

  TEST_CASE("spec validation names the offending child") {
    auto log = std::make_shared<event_log>();
    auto no_start = child("x", log);
    no_start.start = nullptr;
    auto err = sp::validate(std::vector<sp::child_spec>{child("a", log), no_start});
    CHECK(sp::is(err, sp::sup_errc::invalid_child_spec));
    CHECK(error_id(err) == "x");
    auto empty = child("", log);
    CHECK(sp::is(sp::validate(empty), sp::sup_errc::invalid_child_spec));
    auto bad_timeout = child("t", log);
    bad_timeout.start_timeout = 0ms;
    CHECK(error_id(sp::validate(std::vector<sp::child_spec>{bad_timeout})) == "t");
    CHECK_FALSE(
      sp::validate(std::vector<sp::child_spec>{child("a", log), child("b", log)}));
    CHECK(sp::is(sp::validate(sp::supervisor_flags{sp::strategy::one_for_one, -1, 5s}),
                 sp::sup_errc::invalid_child_spec));
    CHECK(sp::is(sp::validate(sp::dynamic_supervisor_flags{3, 0s, std::nullopt}),
                 sp::sup_errc::invalid_child_spec));
  }

  TEST_CASE_FIXTURE(det_fixture, "worker_child acks as soon as the behaviour is built") {
    auto sup = spawn_sup({}, {sp::worker_child(
                               "w",
                               [](caf::event_based_actor*, int x) -> caf::behavior {
                                 return {[x](int y) { return x + y; }};
                               },
                               40)});
    auto ack = take_ack();
    REQUIRE(ack);
    REQUIRE(*ack);
    auto w = pid_of(sup, "w");
    REQUIRE(w);
    auto r = ask<int>(w, 2);
    REQUIRE(r);
    CHECK(*r == 42);
  }

} // TEST_SUITE

TEST_SUITE("supervision.shutdown") {

  TEST_CASE_FIXTURE(
    det_fixture,
    "an exit message stops the children in reverse order, then the supervisor") {
    auto sup = spawn_sup({}, {child("a", log), child("b", log), child("c", log)});
    REQUIRE(take_ack());
    watch(sup);
    log->take();
    self->send_exit(sup, caf::exit_reason::user_shutdown);
    sched.run();
    CHECK(log->take() == events({"stop:c", "stop:b", "stop:a"}));
    CHECK(log->reason("b") == caf::exit_reason::user_shutdown);
    auto r = down_reason();
    REQUIRE(r);
    CHECK(*r == caf::exit_reason::user_shutdown);
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "a child that ignores shutdown is killed after its timeout and not before") {
    child_opts stubborn;
    stubborn.ignore_shutdown = true;
    auto b = child("b", log, sp::restart_type::permanent, stubborn);
    b.shutdown = sp::shutdown_spec::after(2000ms);
    auto sup = spawn_sup({}, {child("a", log), b, child("c", log)});
    REQUIRE(take_ack());
    watch(sup);
    log->take();
    self->send_exit(sup, caf::exit_reason::user_shutdown);
    sched.run();
    CHECK(log->events() == events({"stop:c"}));
    sched.advance_time(1999ms);
    sched.run();
    CHECK(log->events() == events({"stop:c"}));
    CHECK_FALSE(down_reason());
    sched.advance_time(1ms);
    sched.run();
    CHECK(log->take() == events({"stop:c", "stop:b", "stop:a"}));
    CHECK(log->reason("b") == caf::exit_reason::kill);
    CHECK(down_reason());
  }

  TEST_CASE_FIXTURE(det_fixture, "a brutal_kill child is killed at once") {
    child_opts stubborn;
    stubborn.ignore_shutdown = true;
    auto b = child("b", log, sp::restart_type::permanent, stubborn);
    b.shutdown = sp::shutdown_spec::brutal_kill();
    auto sup = spawn_sup({}, {child("a", log), b});
    REQUIRE(take_ack());
    watch(sup);
    log->take();
    self->send_exit(sup, caf::exit_reason::user_shutdown);
    sched.run();
    CHECK(log->take() == events({"stop:b", "stop:a"}));
    CHECK(log->reason("b") == caf::exit_reason::kill);
    CHECK(down_reason());
  }

  TEST_CASE_FIXTURE(
    det_fixture, "a child with shutdown infinity is waited for however long it takes") {
    child_opts stubborn;
    stubborn.ignore_shutdown = true;
    auto b = child("b", log, sp::restart_type::permanent, stubborn);
    b.shutdown = sp::shutdown_spec::infinity();
    auto sup = spawn_sup({}, {child("a", log), b});
    REQUIRE(take_ack());
    auto bp = pid_of(sup, "b");
    watch(sup);
    log->take();
    self->send_exit(sup, caf::exit_reason::user_shutdown);
    sched.run();
    sched.advance_time(std::chrono::hours(1));
    sched.run();
    CHECK(log->events().empty());
    CHECK_FALSE(down_reason());
    self->send(bp, die_atom::value, caf::error{});
    sched.run();
    CHECK(log->take() == events({"stop:b", "stop:a"}));
    CHECK(down_reason());
  }

  TEST_CASE_FIXTURE(det_fixture, "children die with their supervisor when it is killed") {
    auto sup = spawn_sup({}, {child("a", log), child("b", log)});
    REQUIRE(take_ack());
    log->take();
    caf::anon_send_exit(sup, caf::exit_reason::kill);
    sched.run();
    auto evs = log->take();
    CHECK(evs.size() == 2);
    CHECK(log->reason("a") == caf::exit_reason::kill);
    CHECK(log->reason("b") == caf::exit_reason::kill);
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "an exit request during a restart is handled after the restart completes") {
    child_opts opts;
    auto spec = child("a", log, sp::restart_type::permanent, opts);
    spec.start_timeout = 1000ms;
    auto sup = spawn_sup({}, {spec, child("b", log)});
    REQUIRE(take_ack());
    watch(sup);
    *opts.hang_starts = 1;
    terminate_with(pid_of(sup, "a"), caf::make_error(caf::sec::runtime_error));
    log->take();
    self->send_exit(sup, caf::exit_reason::user_shutdown);
    sched.run();
    CHECK_FALSE(down_reason());
    sched.advance_time(1000ms);
    sched.run();
    // the hanging start times out, then the queued shutdown runs (no retry)
    CHECK(log->take() == events({"stop:a", "stop:b"}));
    auto r = down_reason();
    REQUIRE(r);
    CHECK(*r == caf::exit_reason::user_shutdown);
  }

} // TEST_SUITE

TEST_SUITE("supervision.shutdown") {

  TEST_CASE_FIXTURE(
    det_fixture,
    "a request still queued when the supervisor quits is answered with an error") {
    child_opts stubborn;
    stubborn.ignore_shutdown = true;
    auto b = child("b", log, sp::restart_type::permanent, stubborn);
    b.shutdown = sp::shutdown_spec::after(1000ms);
    auto sup = spawn_sup({}, {b});
    REQUIRE(take_ack());
    self->send_exit(sup, caf::exit_reason::user_shutdown);
    self->send(sup, sp::count_children_atom::value);
    sched.run();
    CHECK_FALSE(take_from_self<sp::child_counts>());
    sched.advance_time(1000ms);
    sched.run();
    auto err = take_from_self<caf::error>();
    REQUIRE(err);
    CHECK(std::get<0>(*err) == caf::sec::request_receiver_down);
  }

} // TEST_SUITE
