// An actor system on CAF's test coordinator: no scheduler threads, virtual time, a
// blocking `self` to send from and receive at. The base of every deterministic suite
// (CAF's own test fixtures, reduced to what ours need).
#pragma once

#include <chrono>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>

namespace snakepit::testing {

/// Deterministic actor system. `sched.run()` runs every actor until all mailboxes are
/// empty; `sched.clock()` is the virtual clock (advanced with `advance_time`).
struct deterministic_system {
  /// Adds what the suite needs to the config before the system starts (error
  /// categories, for example).
  using configure_fn = void (*)(caf::actor_system_config&);

  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scoped_actor self;
  caf::scheduler::test_coordinator& sched;

  explicit deterministic_system(configure_fn configure = nullptr)
    : sys(prepare(cfg, configure)), self(sys, true),
      sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())) {
    // Windows that look back from "now" (restart intensity, TTLs) must not reach
    // before the clock's epoch.
    sched.clock().current_time += std::chrono::hours(1);
  }

  ~deterministic_system() { sched.run(); }

  deterministic_system(const deterministic_system&) = delete;
  deterministic_system& operator=(const deterministic_system&) = delete;

 private:
  static caf::actor_system_config& prepare(caf::actor_system_config& c,
                                           configure_fn configure) {
    c.set("scheduler.policy", caf::atom("testing"));
    c.set("logger.inline-output", true);
    if (configure != nullptr)
      configure(c);
    return c;
  }
};

} // namespace snakepit::testing
