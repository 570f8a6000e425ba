// The name registry: unique names with metadata, removal when the registered
// actor dies, and use under a supervisor.
#include "test_support.hpp"

using namespace sup_test;

namespace {

caf::behavior idle(caf::event_based_actor* self) {
  return {[self](die_atom, caf::error& r) { self->quit(std::move(r)); }};
}

} // namespace

TEST_SUITE("supervision.registry") {

TEST_CASE_FIXTURE(det_fixture, "a registered name resolves to its actor and metadata") {
  auto reg = sp::spawn_registry(sys);
  roots.push_back(reg);
  auto w = sys.spawn(idle);
  roots.push_back(w);
  CHECK(ask<caf::ok_atom>(reg, sp::register_atom::value, std::string{"w1"}, w,
                          caf::make_message(std::string{"python"})));
  self->send(reg, sp::lookup_atom::value, std::string{"w1"});
  sched.run();
  auto hit = take_from_self<caf::actor, caf::message>();
  REQUIRE(hit);
  CHECK(std::get<0>(*hit) == w);
  CHECK(std::get<1>(*hit).get_as<std::string>(0) == "python");
  auto names = ask<std::vector<std::string>>(reg, sp::list_atom::value);
  REQUIRE(names);
  CHECK(*names == std::vector<std::string>{"w1"});
}

TEST_CASE_FIXTURE(det_fixture, "a taken name cannot be registered again") {
  auto reg = sp::spawn_registry(sys);
  roots.push_back(reg);
  auto w = sys.spawn(idle);
  auto v = sys.spawn(idle);
  roots.push_back(w);
  roots.push_back(v);
  REQUIRE(ask<caf::ok_atom>(reg, sp::register_atom::value, std::string{"n"}, w,
                            caf::message{}));
  auto dup = ask<caf::ok_atom>(reg, sp::register_atom::value, std::string{"n"}, v,
                               caf::message{});
  REQUIRE_FALSE(dup);
  CHECK(sp::is(dup.error(), sp::sup_errc::already_registered));
}

TEST_CASE_FIXTURE(det_fixture, "an entry disappears once its actor has died") {
  auto reg = sp::spawn_registry(sys);
  roots.push_back(reg);
  auto w = sys.spawn(idle);
  REQUIRE(ask<caf::ok_atom>(reg, sp::register_atom::value, std::string{"w"}, w,
                            caf::message{}));
  self->send(w, die_atom::value, caf::error{});
  sched.run();
  auto miss = ask<caf::actor>(reg, sp::lookup_atom::value, std::string{"w"});
  REQUIRE_FALSE(miss);
  CHECK(sp::is(miss.error(), sp::sup_errc::not_found));
  auto names = ask<std::vector<std::string>>(reg, sp::list_atom::value);
  REQUIRE(names);
  CHECK(names->empty());
  // the name is free again
  auto v = sys.spawn(idle);
  roots.push_back(v);
  CHECK(ask<caf::ok_atom>(reg, sp::register_atom::value, std::string{"w"}, v,
                          caf::message{}));
}

TEST_CASE_FIXTURE(det_fixture, "unregister frees a name") {
  auto reg = sp::spawn_registry(sys);
  roots.push_back(reg);
  auto w = sys.spawn(idle);
  roots.push_back(w);
  REQUIRE(ask<caf::ok_atom>(reg, sp::register_atom::value, std::string{"w"}, w,
                            caf::message{}));
  CHECK(ask<caf::ok_atom>(reg, sp::unregister_atom::value, std::string{"w"}));
  auto miss = ask<caf::actor>(reg, sp::lookup_atom::value, std::string{"w"});
  REQUIRE_FALSE(miss);
  CHECK(sp::is(miss.error(), sp::sup_errc::not_found));
}

TEST_CASE_FIXTURE(det_fixture, "a supervised registry comes back empty after a crash") {
  auto sup = spawn_sup({}, {sp::registry_child("names")});
  REQUIRE(take_ack());
  auto reg = pid_of(sup, "names");
  REQUIRE(reg);
  auto w = sys.spawn(idle);
  roots.push_back(w);
  REQUIRE(ask<caf::ok_atom>(reg, sp::register_atom::value, std::string{"w"}, w,
                            caf::message{}));
  self->send_exit(reg, caf::make_error(caf::sec::runtime_error));
  sched.run();
  auto reg2 = pid_of(sup, "names");
  REQUIRE(reg2);
  CHECK(reg2 != reg);
  auto names = ask<std::vector<std::string>>(reg2, sp::list_atom::value);
  REQUIRE(names);
  CHECK(names->empty());
}

} // TEST_SUITE
