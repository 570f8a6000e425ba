// The supervisor's request API: which_children, count_children, restart_child,
// delete_child, terminate_child and start_child with their OTP error replies.
#include "test_support.hpp"

using namespace sup_test;

TEST_SUITE("supervision.introspection") {

  TEST_CASE_FIXTURE(det_fixture,
                    "which_children lists children in start order with type and pid") {
    auto sup = spawn_sup({}, {child("a", log),
                              sp::supervisor_child("inner", {}, {child("x", log)}),
                              child("c", log)});
    REQUIRE(take_ack());
    auto kids = children_of(sup);
    REQUIRE(kids.size() == 3);
    CHECK(kids[0].id == "a");
    CHECK(kids[1].id == "inner");
    CHECK(kids[2].id == "c");
    CHECK(kids[0].type == sp::child_type::worker);
    CHECK(kids[1].type == sp::child_type::supervisor);
    for (auto& k : kids) {
      CHECK(k.pid);
      CHECK(k.status == sp::child_status::running);
    }
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "count_children counts specs, running children, supervisors and workers") {
    auto sup = spawn_sup({}, {child("a", log),
                              sp::supervisor_child("inner", {}, {child("x", log)}),
                              child("c", log)});
    REQUIRE(take_ack());
    auto n = ask<sp::child_counts>(sup, sp::count_children_atom::value);
    REQUIRE(n);
    CHECK(n->specs == 3);
    CHECK(n->active == 3);
    CHECK(n->supervisors == 1);
    CHECK(n->workers == 2);
    auto ok = ask<caf::ok_atom>(sup, sp::terminate_child_atom::value, std::string{"c"});
    CHECK(ok);
    n = ask<sp::child_counts>(sup, sp::count_children_atom::value);
    REQUIRE(n);
    CHECK(n->specs == 3);
    CHECK(n->active == 2);
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "terminate_child stops a child without restarting it and keeps its spec") {
    auto sup = spawn_sup({}, {child("a", log), child("b", log)});
    REQUIRE(take_ack());
    log->take();
    CHECK(ask<caf::ok_atom>(sup, sp::terminate_child_atom::value, std::string{"a"}));
    CHECK(log->take() == events({"stop:a"}));
    CHECK(log->reason("a") == caf::exit_reason::user_shutdown);
    auto kids = children_of(sup);
    REQUIRE(kids.size() == 2);
    CHECK(kids[0].status == sp::child_status::undefined);
    auto missing =
      ask<caf::ok_atom>(sup, sp::terminate_child_atom::value, std::string{"zz"});
    REQUIRE_FALSE(missing);
    CHECK(sp::is(missing.error(), sp::sup_errc::not_found));
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "terminate_child honours the shutdown timeout of the child") {
    child_opts stubborn;
    stubborn.ignore_shutdown = true;
    auto b = child("b", log, sp::restart_type::permanent, stubborn);
    b.shutdown = sp::shutdown_spec::after(500ms);
    auto sup = spawn_sup({}, {b});
    REQUIRE(take_ack());
    log->take();
    self->send(sup, sp::terminate_child_atom::value, std::string{"b"});
    sched.run();
    CHECK(log->events().empty());
    CHECK_FALSE(take_from_self<caf::ok_atom>());
    sched.advance_time(500ms);
    sched.run();
    CHECK(log->take() == events({"stop:b"}));
    CHECK(take_from_self<caf::ok_atom>());
  }

  TEST_CASE_FIXTURE(det_fixture, "terminate_child removes a temporary child's spec") {
    auto sup = spawn_sup({}, {child("t", log, sp::restart_type::temporary)});
    REQUIRE(take_ack());
    CHECK(ask<caf::ok_atom>(sup, sp::terminate_child_atom::value, std::string{"t"}));
    CHECK(children_of(sup).empty());
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "restart_child refuses running and unknown children and restarts stopped ones") {
    auto sup = spawn_sup({}, {child("a", log)});
    REQUIRE(take_ack());
    auto running = ask<caf::actor>(sup, sp::restart_child_atom::value, std::string{"a"});
    REQUIRE_FALSE(running);
    CHECK(sp::is(running.error(), sp::sup_errc::running));
    auto missing = ask<caf::actor>(sup, sp::restart_child_atom::value, std::string{"b"});
    REQUIRE_FALSE(missing);
    CHECK(sp::is(missing.error(), sp::sup_errc::not_found));
    REQUIRE(ask<caf::ok_atom>(sup, sp::terminate_child_atom::value, std::string{"a"}));
    log->take();
    auto again = ask<caf::actor>(sup, sp::restart_child_atom::value, std::string{"a"});
    REQUIRE(again);
    CHECK(*again == pid_of(sup, "a"));
    CHECK(log->take() == events({"start:a"}));
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "delete_child refuses running and unknown children and deletes stopped ones") {
    auto sup = spawn_sup({}, {child("a", log), child("b", log)});
    REQUIRE(take_ack());
    auto running = ask<caf::ok_atom>(sup, sp::delete_child_atom::value, std::string{"a"});
    REQUIRE_FALSE(running);
    CHECK(sp::is(running.error(), sp::sup_errc::running));
    auto missing = ask<caf::ok_atom>(sup, sp::delete_child_atom::value, std::string{"q"});
    REQUIRE_FALSE(missing);
    CHECK(sp::is(missing.error(), sp::sup_errc::not_found));
    REQUIRE(ask<caf::ok_atom>(sup, sp::terminate_child_atom::value, std::string{"a"}));
    CHECK(ask<caf::ok_atom>(sup, sp::delete_child_atom::value, std::string{"a"}));
    auto kids = children_of(sup);
    REQUIRE(kids.size() == 1);
    CHECK(kids[0].id == "b");
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "start_child adds a child at the end and rejects duplicates") {
    auto sup = spawn_sup({}, {child("a", log)});
    REQUIRE(take_ack());
    auto pid = ask<caf::actor>(sup, sp::start_child_atom::value, child("b", log));
    REQUIRE(pid);
    auto kids = children_of(sup);
    REQUIRE(kids.size() == 2);
    CHECK(kids[1].id == "b");
    CHECK(kids[1].pid == *pid);
    auto dup = ask<caf::actor>(sup, sp::start_child_atom::value, child("a", log));
    REQUIRE_FALSE(dup);
    CHECK(sp::is(dup.error(), sp::sup_errc::already_present));
    // a later crash of the added child is handled like any other
    log->take();
    terminate_with(*pid, caf::make_error(caf::sec::runtime_error));
    CHECK(log->take() == events({"stop:b", "start:b"}));
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "start_child reports a failing child and does not keep its spec") {
    auto sup = spawn_sup({}, {child("a", log)});
    REQUIRE(take_ack());
    child_opts bad;
    *bad.fail_starts = 1;
    auto res = ask<caf::actor>(sup, sp::start_child_atom::value,
                               child("b", log, sp::restart_type::permanent, bad));
    REQUIRE_FALSE(res);
    CHECK(sp::is(res.error(), sp::sup_errc::failed_to_start_child));
    CHECK(error_id(res.error()) == "b");
    CHECK(children_of(sup).size() == 1);
    auto invalid = ask<caf::actor>(sup, sp::start_child_atom::value, child("", log));
    REQUIRE_FALSE(invalid);
    CHECK(sp::is(invalid.error(), sp::sup_errc::invalid_child_spec));
  }

} // TEST_SUITE
