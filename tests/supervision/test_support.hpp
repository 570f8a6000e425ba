// Fixtures of the supervision suites: supervisors on the deterministic actor system
// (tests/support), an event log children write to, and configurable test children
// (crash on demand, fail or hang in init, ignore shutdown requests).
#pragma once

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <caf/all.hpp>

#include "supervision/dynamic_supervisor.hpp"
#include "supervision/supervisor.hpp"
#include "tests/support/deterministic.hpp"
#include "tests/support/eventually.hpp"

namespace sp = snakepit::supervision;
using namespace std::chrono_literals;

namespace sup_test {

using die_atom = caf::atom_constant<caf::atom("t_die")>;
using echo_atom = caf::atom_constant<caf::atom("t_echo")>;

/// Start/stop events in the order they happened ("start:a", "stop:b", ...).
class event_log {
 public:
  void add(std::string x) {
    std::lock_guard<std::mutex> guard{mtx_};
    events_.push_back(std::move(x));
  }

  void set_reason(const std::string& id, caf::error r) {
    std::lock_guard<std::mutex> guard{mtx_};
    reasons_[id] = std::move(r);
  }

  caf::error reason(const std::string& id) {
    std::lock_guard<std::mutex> guard{mtx_};
    return reasons_[id];
  }

  std::vector<std::string> events() {
    std::lock_guard<std::mutex> guard{mtx_};
    return events_;
  }

  /// Returns the events and forgets them.
  std::vector<std::string> take() {
    std::lock_guard<std::mutex> guard{mtx_};
    auto res = std::move(events_);
    events_.clear();
    return res;
  }

  size_t count(const std::string& x) {
    std::lock_guard<std::mutex> guard{mtx_};
    size_t n = 0;
    for (auto& e : events_)
      if (e == x)
        ++n;
    return n;
  }

 private:
  std::mutex mtx_;
  std::vector<std::string> events_;
  std::map<std::string, caf::error> reasons_;
};

using log_ptr = std::shared_ptr<event_log>;

/// How a test child behaves.
struct child_opts {
  /// Number of upcoming starts that fail via `ack.fail` (shared across restarts).
  std::shared_ptr<std::atomic<int>> fail_starts = std::make_shared<std::atomic<int>>(0);
  /// Number of upcoming starts that never acknowledge (shared across restarts).
  std::shared_ptr<std::atomic<int>> hang_starts = std::make_shared<std::atomic<int>>(0);
  /// Never acknowledge any start.
  bool never_ack = false;
  /// Throw during init (the actor dies with sec::runtime_error before acking).
  bool throw_in_init = false;
  /// Trap exit messages and ignore them (only kill stops it).
  bool ignore_shutdown = false;
};

inline caf::behavior test_worker(caf::event_based_actor* self, std::string id,
                                 log_ptr log, sp::start_ack ack, child_opts opts,
                                 caf::message extra) {
  self->attach_functor([id, log](const caf::error& r) {
    log->add("stop:" + id);
    log->set_reason(id, r);
  });
  if (opts.throw_in_init)
    throw std::runtime_error("init blew up");
  if (opts.fail_starts->load() > 0) {
    --*opts.fail_starts;
    log->add("fail:" + id);
    auto err = caf::make_error(caf::sec::runtime_error, std::string{"init failed"});
    ack.fail(err);
    self->quit(err);
    return {};
  }
  if (opts.ignore_shutdown)
    self->set_exit_handler([](caf::exit_msg&) {});
  log->add("start:" + id);
  bool hang = opts.never_ack;
  if (opts.hang_starts->load() > 0) {
    --*opts.hang_starts;
    hang = true;
  }
  if (!hang)
    ack.ok(self);
  return {
    [self](die_atom, caf::error& reason) { self->quit(std::move(reason)); },
    [id, extra](echo_atom) { return std::make_tuple(id, extra); },
  };
}

/// A test child spec; `extra` given to a dynamic supervisor reaches the child.
inline sp::child_spec child(std::string id, log_ptr log,
                            sp::restart_type rt = sp::restart_type::permanent,
                            child_opts opts = {}) {
  sp::child_spec spec;
  spec.id = id;
  spec.restart = rt;
  spec.start = [id, log, opts](caf::local_actor* parent, sp::start_ack ack,
                               const caf::message& extra) {
    return parent->spawn(test_worker, id, log, ack, opts, extra);
  };
  return spec;
}

/// The child id carried in a failed_to_start_child / invalid_child_spec error.
inline std::string error_id(const caf::error& err) {
  if (!err || err.context().empty() || !err.context().match_element<std::string>(0))
    return "";
  return err.context().get_as<std::string>(0);
}

/// The reason carried in a failed_to_start_child error.
inline caf::error error_reason(const caf::error& err) {
  if (!err || err.context().size() < 2 || !err.context().match_element<caf::error>(1))
    return caf::error{};
  return err.context().get_as<caf::error>(1);
}

inline std::vector<std::string> events(std::initializer_list<const char*> xs) {
  return std::vector<std::string>(xs.begin(), xs.end());
}

/// Deterministic fixture: no scheduler threads, virtual clock.
struct det_fixture : snakepit::testing::deterministic_system {
  log_ptr log = std::make_shared<event_log>();
  std::vector<caf::actor> roots;

  det_fixture() : deterministic_system(sp::add_error_category) {
    // nop
  }

  ~det_fixture() {
    // Kill whatever the test left running: supervisors forward the kill to
    // their children, so ~actor_system does not wait forever.
    for (auto& x : roots)
      caf::anon_send_exit(x, caf::exit_reason::kill);
    sched.run();
  }

  /// Spawns a supervisor whose start ack goes to `self`; runs its start.
  caf::actor spawn_sup(sp::supervisor_flags flags, std::vector<sp::child_spec> xs) {
    auto sup = sp::spawn_supervisor(self.ptr(), flags, std::move(xs),
                                    sp::start_ack{self->address(), 7});
    roots.push_back(sup);
    sched.run();
    return sup;
  }

  caf::actor spawn_dyn(sp::dynamic_supervisor_flags flags) {
    auto sup =
      sp::spawn_dynamic_supervisor(self.ptr(), flags, sp::start_ack{self->address(), 8});
    roots.push_back(sup);
    sched.run();
    return sup;
  }

  /// The start acknowledgement that arrived at `self`, if any.
  std::optional<caf::expected<caf::actor>> take_ack() {
    std::optional<caf::expected<caf::actor>> res;
    self->receive([&](sp::ack_atom, uint64_t, caf::actor& a) { res = a; },
                  [&](sp::ack_atom, uint64_t, caf::error& e) { res = e; },
                  caf::after(std::chrono::seconds(0)) >> [] {});
    return res;
  }

  /// Pops one message of the given types from `self`'s mailbox.
  template<class... Ts>
  std::optional<std::tuple<Ts...>> take_from_self() {
    std::optional<std::tuple<Ts...>> res;
    self->receive([&](Ts&... xs) { res = std::make_tuple(xs...); },
                  caf::after(std::chrono::seconds(0)) >> [] {});
    return res;
  }

  /// Sends a request, runs the system and returns the reply or error.
  template<class T, class... Ts>
  caf::expected<T> ask(const caf::actor& dst, Ts... xs) {
    self->send(dst, xs...);
    sched.run();
    std::optional<caf::expected<T>> res;
    self->receive([&](T& x) { res = std::move(x); },
                  [&](caf::error& e) { res = std::move(e); },
                  caf::after(std::chrono::seconds(0)) >> [] {});
    if (!res)
      return caf::make_error(caf::sec::request_timeout);
    return std::move(*res);
  }

  std::vector<sp::child_info> children_of(const caf::actor& sup) {
    auto res = ask<std::vector<sp::child_info>>(sup, sp::which_children_atom::value);
    REQUIRE(res);
    return *res;
  }

  caf::actor pid_of(const caf::actor& sup, const std::string& id) {
    for (auto& x : children_of(sup))
      if (x.id == id)
        return x.pid;
    return caf::actor{};
  }

  /// Makes a child terminate with `reason` (normal via a message, since CAF
  /// ignores exit messages with reason normal).
  void terminate_with(const caf::actor& pid, const caf::error& reason) {
    REQUIRE(pid);
    if (!reason || reason == caf::exit_reason::normal)
      self->send(pid, die_atom::value, caf::error{});
    else
      self->send_exit(pid, reason);
    sched.run();
  }

  /// Watches `hdl`; `down_reason` then tells whether it terminated.
  void watch(const caf::actor& hdl) { self->monitor(hdl); }

  std::optional<caf::error> down_reason() {
    std::optional<caf::error> res;
    self->receive([&](caf::down_msg& dm) { res = dm.reason; },
                  caf::after(std::chrono::seconds(0)) >> [] {});
    return res;
  }
};

/// Fixture on the real, threaded scheduler.
struct rt_fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  log_ptr log = std::make_shared<event_log>();

  static caf::actor_system_config& prepare(caf::actor_system_config& c) {
    c.set("scheduler.max-threads", 2);
    sp::add_error_category(c);
    return c;
  }

  rt_fixture() : sys(prepare(cfg)) {
    // nop
  }

  /// Polls `pred` until it holds or a generous deadline passes.
  template<class Pred>
  bool eventually(Pred pred, std::chrono::milliseconds deadline = 10s) {
    return snakepit::testing::eventually(pred, deadline, 5ms);
  }

  template<class T, class... Ts>
  caf::expected<T> ask(const caf::actor& dst, Ts... xs) {
    caf::scoped_actor self{sys};
    caf::expected<T> res{caf::make_error(caf::sec::request_timeout)};
    self->request(dst, 10s, xs...)
      .receive([&](T& x) { res = std::move(x); },
               [&](caf::error& e) { res = std::move(e); });
    return res;
  }
};

} // namespace sup_test
