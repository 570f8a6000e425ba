// Elixir-style DynamicSupervisor: children added at run time with extra
// arguments, max_children, terminate_child by handle, its own restart intensity
// and a concurrent shutdown under one timer.
#include "test_support.hpp"

using namespace sup_test;

TEST_SUITE("supervision.dynamic") {

  TEST_CASE_FIXTURE(det_fixture, "start_child passes the extra arguments to the child") {
    auto dyn = spawn_dyn({});
    REQUIRE(take_ack());
    auto pid = ask<caf::actor>(dyn, sp::start_child_atom::value, child("w", log),
                               caf::make_message(std::string{"pool-1"}, 7));
    REQUIRE(pid);
    self->send(*pid, echo_atom::value);
    sched.run();
    auto reply = take_from_self<std::string, caf::message>();
    REQUIRE(reply);
    CHECK(std::get<0>(*reply) == "w");
    auto& extra = std::get<1>(*reply);
    REQUIRE(extra.match_elements<std::string, int>());
    CHECK(extra.get_as<std::string>(0) == "pool-1");
    CHECK(extra.get_as<int>(1) == 7);
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "max_children rejects further children until one is terminated") {
    auto dyn = spawn_dyn({3, 5s, size_t{2}});
    REQUIRE(take_ack());
    auto a = ask<caf::actor>(dyn, sp::start_child_atom::value, child("w", log));
    auto b = ask<caf::actor>(dyn, sp::start_child_atom::value, child("w", log));
    REQUIRE(a);
    REQUIRE(b);
    auto c = ask<caf::actor>(dyn, sp::start_child_atom::value, child("w", log));
    REQUIRE_FALSE(c);
    CHECK(sp::is(c.error(), sp::sup_errc::max_children));
    REQUIRE(ask<caf::ok_atom>(dyn, sp::terminate_child_atom::value, *a));
    CHECK(ask<caf::actor>(dyn, sp::start_child_atom::value, child("w", log)));
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "terminate_child stops a known child and reports unknown ones") {
    auto dyn = spawn_dyn({});
    REQUIRE(take_ack());
    auto a = ask<caf::actor>(dyn, sp::start_child_atom::value, child("a", log));
    REQUIRE(a);
    log->take();
    CHECK(ask<caf::ok_atom>(dyn, sp::terminate_child_atom::value, *a));
    CHECK(log->take() == events({"stop:a"}));
    auto again = ask<caf::ok_atom>(dyn, sp::terminate_child_atom::value, *a);
    REQUIRE_FALSE(again);
    CHECK(sp::is(again.error(), sp::sup_errc::not_found));
    auto n = ask<sp::child_counts>(dyn, sp::count_children_atom::value);
    REQUIRE(n);
    CHECK(n->specs == 0);
  }

  TEST_CASE_FIXTURE(det_fixture, "children are restarted per restart type and counted") {
    auto dyn = spawn_dyn({});
    REQUIRE(take_ack());
    auto p = ask<caf::actor>(dyn, sp::start_child_atom::value, child("p", log));
    auto t = ask<caf::actor>(dyn, sp::start_child_atom::value,
                             child("t", log, sp::restart_type::transient));
    auto tmp = ask<caf::actor>(dyn, sp::start_child_atom::value,
                               child("x", log, sp::restart_type::temporary));
    REQUIRE(p);
    REQUIRE(t);
    REQUIRE(tmp);
    log->take();
    terminate_with(*p, caf::make_error(caf::sec::runtime_error));
    terminate_with(*t, caf::error{});
    terminate_with(*tmp, caf::make_error(caf::sec::runtime_error));
    CHECK(log->take() == events({"stop:p", "start:p", "stop:t", "stop:x"}));
    auto n = ask<sp::child_counts>(dyn, sp::count_children_atom::value);
    REQUIRE(n);
    CHECK(n->specs == 1);
    CHECK(n->active == 1);
    auto kids = ask<std::vector<sp::child_info>>(dyn, sp::which_children_atom::value);
    REQUIRE(kids);
    REQUIRE(kids->size() == 1);
    CHECK((*kids)[0].id == "p");
    CHECK((*kids)[0].pid != *p);
  }

  TEST_CASE_FIXTURE(
    det_fixture, "exceeding max_restarts stops every child and the dynamic supervisor") {
    auto dyn = spawn_dyn({1, 5s, std::nullopt});
    REQUIRE(take_ack());
    watch(dyn);
    auto a = ask<caf::actor>(dyn, sp::start_child_atom::value, child("a", log));
    auto b = ask<caf::actor>(dyn, sp::start_child_atom::value, child("b", log));
    REQUIRE(a);
    REQUIRE(b);
    terminate_with(*a, caf::make_error(caf::sec::runtime_error));
    CHECK_FALSE(down_reason());
    log->take();
    auto kids = ask<std::vector<sp::child_info>>(dyn, sp::which_children_atom::value);
    REQUIRE(kids);
    REQUIRE(kids->size() == 2);
    terminate_with((*kids)[0].pid, caf::make_error(caf::sec::runtime_error));
    CHECK(log->take() == events({"stop:a", "stop:b"}));
    auto r = down_reason();
    REQUIRE(r);
    CHECK(sp::is(*r, sp::sup_errc::shutdown));
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "on stop all children are asked at once and killed together when the timer fires") {
    auto dyn = spawn_dyn({});
    REQUIRE(take_ack());
    watch(dyn);
    child_opts stubborn;
    stubborn.ignore_shutdown = true;
    for (auto id : {"a", "b", "c"}) {
      auto spec = child(id, log, sp::restart_type::permanent, stubborn);
      spec.shutdown = sp::shutdown_spec::after(3000ms);
      REQUIRE(ask<caf::actor>(dyn, sp::start_child_atom::value, spec));
    }
    auto quick = child("q", log);
    REQUIRE(ask<caf::actor>(dyn, sp::start_child_atom::value, quick));
    log->take();
    self->send_exit(dyn, caf::exit_reason::user_shutdown);
    sched.run();
    CHECK(log->take() == events({"stop:q"}));
    sched.advance_time(2999ms);
    sched.run();
    CHECK(log->events().empty());
    sched.advance_time(1ms);
    sched.run();
    // a sequential stop would need 9 s; all three go after 3 s
    CHECK(log->take().size() == 3);
    CHECK(log->reason("b") == caf::exit_reason::kill);
    auto r = down_reason();
    REQUIRE(r);
    CHECK(*r == caf::exit_reason::user_shutdown);
  }

  TEST_CASE_FIXTURE(det_fixture, "a failing start_child is reported and not counted") {
    auto dyn = spawn_dyn({3, 5s, size_t{1}});
    REQUIRE(take_ack());
    child_opts bad;
    *bad.fail_starts = 1;
    auto res = ask<caf::actor>(dyn, sp::start_child_atom::value,
                               child("w", log, sp::restart_type::permanent, bad));
    REQUIRE_FALSE(res);
    CHECK(sp::is(res.error(), sp::sup_errc::failed_to_start_child));
    CHECK(error_id(res.error()) == "w");
    CHECK(ask<caf::actor>(dyn, sp::start_child_atom::value, child("w", log)));
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "start requests wait for a child's init by default, as in OTP") {
    auto dyn = spawn_dyn({});
    REQUIRE(take_ack());
    child_opts slow;
    slow.never_ack = true;
    self->send(dyn, sp::start_child_atom::value,
               child("slow", log, sp::restart_type::permanent, slow));
    sched.run();
    auto fast = ask<caf::actor>(dyn, sp::start_child_atom::value, child("fast", log));
    REQUIRE_FALSE(fast); // no answer while "slow" initialises
    CHECK(log->take() == events({"start:slow"}));
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "with concurrent_starts a child's start does not wait for another's "
                    "init, and a stop kills the children still starting") {
    sp::dynamic_supervisor_flags flags;
    flags.concurrent_starts = true;
    flags.max_children = 2;
    auto dyn = spawn_dyn(flags);
    REQUIRE(take_ack());
    watch(dyn);
    child_opts slow;
    slow.never_ack = true;
    self->send(dyn, sp::start_child_atom::value,
               child("slow", log, sp::restart_type::permanent, slow));
    sched.run();
    auto fast = ask<caf::actor>(dyn, sp::start_child_atom::value, child("fast", log));
    REQUIRE(fast);
    CHECK(log->take() == events({"start:slow", "start:fast"}));
    // A child still starting counts towards max_children but is not listed yet.
    auto third = ask<caf::actor>(dyn, sp::start_child_atom::value, child("third", log));
    REQUIRE_FALSE(third);
    CHECK(sp::is(third.error(), sp::sup_errc::max_children));
    auto n = ask<sp::child_counts>(dyn, sp::count_children_atom::value);
    REQUIRE(n);
    CHECK(n->specs == 1);
    self->send_exit(dyn, caf::exit_reason::user_shutdown);
    sched.run();
    auto failed = take_from_self<caf::error>();
    REQUIRE(failed);
    CHECK(sp::is(std::get<0>(*failed), sp::sup_errc::failed_to_start_child));
    CHECK(error_id(std::get<0>(*failed)) == "slow");
    auto stopped = log->take();
    std::sort(stopped.begin(), stopped.end());
    CHECK(stopped == events({"stop:fast", "stop:slow"}));
    CHECK(log->reason("slow") == caf::exit_reason::kill);
    auto r = down_reason();
    REQUIRE(r);
    CHECK(*r == caf::exit_reason::user_shutdown);
  }

} // TEST_SUITE

namespace {

struct counter_state {
  int base = 0;
  static inline const char* name = "counter";
};

caf::behavior counter(caf::stateful_actor<counter_state>* self, int start,
                      const caf::message& extra) {
  self->state.base = start;
  if (extra.match_elements<int>())
    self->state.base += extra.get_as<int>(0);
  return {[self](int x) { return self->state.base + x; }};
}

} // namespace

TEST_SUITE("supervision.dynamic") {

  TEST_CASE_FIXTURE(
    det_fixture, "worker_child with a stateful function receives the extra arguments") {
    auto dyn = spawn_dyn({});
    REQUIRE(take_ack());
    auto pid =
      ask<caf::actor>(dyn, sp::start_child_atom::value,
                      sp::worker_child("c", counter, 100), caf::make_message(20));
    REQUIRE(pid);
    auto r = ask<int>(*pid, 3);
    REQUIRE(r);
    CHECK(*r == 123);
  }

} // TEST_SUITE
