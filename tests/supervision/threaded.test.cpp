// The same trees on CAF's real, threaded scheduler: blocking start/stop for
// hosts and restarts. Deadlines are generous; nothing here
// asserts on speed. A child's "stop" entry is written by an attach_functor that
// CAF may run after the monitor fired, so across threads only the order of
// starts (and the set of events) is asserted; the strict order of stops is
// covered by the deterministic suites.
#include <algorithm>

#include "test_support.hpp"

using namespace sup_test;

namespace {

std::vector<std::string> sorted(std::vector<std::string> xs) {
  std::sort(xs.begin(), xs.end());
  return xs;
}

} // namespace

TEST_SUITE("supervision.threaded") {

  TEST_CASE_FIXTURE(
    rt_fixture,
    "start_supervisor returns after all children started and stop after all are gone") {
    auto sup = sp::start_supervisor(
      sys, {}, {child("a", log), child("b", log), child("c", log)}, 10s);
    REQUIRE(sup);
    CHECK(log->take() == events({"start:a", "start:b", "start:c"}));
    CHECK_FALSE(sp::stop(sys, *sup, 10s));
    CHECK(eventually([&] { return log->events().size() == 3; }));
    CHECK(sorted(log->take()) == events({"stop:a", "stop:b", "stop:c"}));
  }

  TEST_CASE_FIXTURE(rt_fixture,
                    "start_supervisor reports the child that failed to start") {
    child_opts bad;
    *bad.fail_starts = 1;
    auto sup = sp::start_supervisor(
      sys, {}, {child("a", log), child("b", log, sp::restart_type::permanent, bad)}, 10s);
    REQUIRE_FALSE(sup);
    CHECK(sp::is(sup.error(), sp::sup_errc::failed_to_start_child));
    CHECK(error_id(sup.error()) == "b");
    CHECK(eventually([&] { return log->count("stop:a") == 1; }));
  }

  TEST_CASE_FIXTURE(rt_fixture,
                    "a crashed child is restarted under the threaded scheduler") {
    auto sup =
      sp::start_supervisor(sys, {sp::strategy::rest_for_one, 5, 5s},
                           {child("a", log), child("b", log), child("c", log)}, 10s);
    REQUIRE(sup);
    auto kids = ask<std::vector<sp::child_info>>(*sup, sp::which_children_atom::value);
    REQUIRE(kids);
    REQUIRE(kids->size() == 3);
    log->take();
    caf::anon_send((*kids)[1].pid, die_atom::value,
                   caf::make_error(caf::sec::runtime_error));
    CHECK(eventually([&] { return log->events().size() == 4; }));
    auto evs = log->take();
    CHECK(sorted(evs) == events({"start:b", "start:c", "stop:b", "stop:c"}));
    auto pos = [&](const char* x) {
      return std::find(evs.begin(), evs.end(), x) - evs.begin();
    };
    CHECK(pos("start:b") < pos("start:c"));
    auto after = ask<std::vector<sp::child_info>>(*sup, sp::which_children_atom::value);
    REQUIRE(after);
    CHECK((*after)[0].pid == (*kids)[0].pid);
    CHECK((*after)[1].pid != (*kids)[1].pid);
    CHECK_FALSE(sp::stop(sys, *sup, 10s));
  }

  TEST_CASE_FIXTURE(
    rt_fixture,
    "a dynamic supervisor under a root supervisor starts and terminates children") {
    auto sup = sp::start_supervisor(sys, {sp::strategy::one_for_all, 3, 5s},
                                    {sp::dynamic_supervisor_child("pool", {})}, 10s);
    REQUIRE(sup);
    auto kids = ask<std::vector<sp::child_info>>(*sup, sp::which_children_atom::value);
    REQUIRE(kids);
    auto pool = (*kids)[0].pid;
    auto w = ask<caf::actor>(pool, sp::start_child_atom::value, child("w", log),
                             caf::make_message(1));
    REQUIRE(w);
    CHECK(ask<caf::ok_atom>(pool, sp::terminate_child_atom::value, *w));
    CHECK(eventually([&] {
      auto left = ask<std::vector<sp::child_info>>(pool, sp::which_children_atom::value);
      return left && left->empty();
    }));
    CHECK(eventually([&] { return log->count("stop:w") == 1; }));
    CHECK_FALSE(sp::stop(sys, *sup, 10s));
  }

  TEST_CASE_FIXTURE(rt_fixture,
                    "stop reports a timeout when the supervisor cannot finish in time") {
    child_opts stubborn;
    stubborn.ignore_shutdown = true;
    auto spec = child("s", log, sp::restart_type::permanent, stubborn);
    spec.shutdown = sp::shutdown_spec::after(2000ms);
    auto sup = sp::start_supervisor(sys, {}, {spec}, 10s);
    REQUIRE(sup);
    auto err = sp::stop(sys, *sup, 100ms);
    CHECK(sp::is(err, sp::sup_errc::stop_timeout));
    // the escalation still happens; a second stop waits for it
    CHECK_FALSE(sp::stop(sys, *sup, 10s));
    CHECK(eventually([&] { return log->count("stop:s") == 1; }));
    CHECK(log->reason("s") == caf::exit_reason::kill);
  }

} // TEST_SUITE
