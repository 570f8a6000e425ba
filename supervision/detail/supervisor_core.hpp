// Machinery shared by the static and the dynamic supervisor: asynchronous child
// start (ack + timeout) and stop (exit, grace timer, kill), the restart-intensity
// window, and OTP's "one thing at a time" discipline via a queue of deferred work.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/actor_clock.hpp>
#include <caf/error.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/expected.hpp>
#include <caf/message.hpp>
#include <caf/message_handler.hpp>
#include <caf/system_messages.hpp>

#include "supervision/child_spec.hpp"

namespace snakepit::supervision::detail {

/// The state of a supervisor actor: the object that implements it, and the actor's
/// name, which `Impl::name` gives.
template<class Impl>
struct impl_state {
  std::unique_ptr<Impl> impl;
  static inline const char* name = Impl::name;
};

/// Sliding window of restart times (OTP add_restart/3).
class restart_window {
 public:
  restart_window(int intensity, caf::timespan period)
    : intensity_(intensity), period_(period) {
    // nop
  }

  /// Records a restart at `now`; false if that exceeds the intensity.
  bool add(caf::actor_clock::time_point now);

 private:
  int intensity_;
  caf::timespan period_;
  std::deque<caf::actor_clock::time_point> times_; // newest first
};

/// Asynchronous start/stop of children on behalf of `self`.
class supervisor_core {
 public:
  using start_cont = std::function<void(caf::expected<caf::actor>)>;
  using done_cont = std::function<void()>;
  using live_map = std::map<caf::actor_id, caf::actor>;

  explicit supervisor_core(caf::event_based_actor* self);

  /// Starts a child; `k` gets its handle or the raw failure reason. The child
  /// is monitored right after the start function returns.
  void start_child(const child_spec& spec, const caf::message& extra, start_cont k);

  /// Stops one child per its shutdown spec; `k` runs once its down_msg arrived.
  void stop_child(const caf::actor& pid, const shutdown_spec& sd, done_cont k);

  /// Stops children one after the other in the given order.
  void stop_sequential(std::vector<std::pair<caf::actor, shutdown_spec>> xs, done_cont k);

  /// Stops children concurrently; one kill timer per distinct timeout.
  void stop_concurrent(std::vector<std::pair<caf::actor, shutdown_spec>> xs, done_cont k);

  /// Forgets every start in progress (their acks and start timers are ignored from
  /// now on) and hands over each child with its continuation. The children stay
  /// monitored and alive: the caller stops them.
  std::vector<std::pair<caf::actor, start_cont>> take_starts();

  /// Feeds a start acknowledgement.
  void handle_ack(uint64_t ticket, caf::expected<caf::actor> res);

  /// Feeds a start timer.
  void handle_start_timeout(uint64_t ticket);

  /// Feeds a shutdown grace timer.
  void handle_kill_timer(uint64_t ticket);

  /// Feeds a down_msg; true if a pending start or stop consumed it.
  bool handle_down(const caf::down_msg& dm);

  /// The messages the core sends itself (start acks, start timeouts, kill timers),
  /// for the supervisor to put beside its own handlers.
  caf::message_handler handlers();

  /// A down_msg for the supervisor: consumed by a pending start or stop, or passed
  /// to `exited` now, or once the operation in progress ended.
  void route_down(const caf::down_msg& dm,
                  std::function<void(const caf::down_msg&)> exited);

  /// Answers the queued requests (see fail_queued_requests) and quits with `reason`.
  void quit(const caf::error& reason);

  /// True while an operation is in progress; input is deferred meanwhile.
  bool busy() const noexcept { return busy_; }

  /// Marks the start of an operation.
  void begin() { busy_ = true; }

  /// Marks its end and runs deferred input until the next operation begins.
  void end();

  /// Defers work until no operation is in progress.
  void defer(std::function<void()> fn, bool front = false);

  /// Runs `fn` now, or once the operation in progress ended.
  void when_idle(std::function<void()> fn);

  /// A request to the supervisor (start_child, which_children, ...): `fn` runs
  /// when no operation is in progress and answers through the promise. Until
  /// then the promise is kept here, so a supervisor that quits first can still
  /// answer it (see fail_queued_requests).
  caf::response_promise queue_request(std::function<void(caf::response_promise&)> fn);

  /// Answers every request still queued with request_receiver_down (the
  /// supervisor is about to quit).
  void fail_queued_requests();

  /// Defers a child's down_msg; a later stop of that child consumes it.
  void defer_down(const caf::down_msg& dm, std::function<void()> fn);

  /// Children alive right now (strong handles); shared with the exit functor.
  std::shared_ptr<live_map> live() const { return live_; }

  /// Installs the functor that forwards an abnormal supervisor death to
  /// children that are still alive (nothing is linked).
  void attach_kill_children_on_exit();

 private:
  struct pending_start {
    caf::actor pid;
    start_cont k;
  };

  struct pending_stop {
    caf::actor pid;
    std::vector<done_cont> ks;
    uint64_t kill_ticket = 0;
  };

  struct deferred {
    caf::actor_addr down_src;
    std::function<void()> fn;
  };

  void fail_start(uint64_t ticket, caf::error reason);
  void begin_stop(const caf::actor& pid, const shutdown_spec& sd, uint64_t ticket,
                  done_cont k);

  caf::event_based_actor* self_;
  uint64_t next_ticket_ = 0;
  bool busy_ = false;
  bool draining_ = false;
  std::unordered_map<uint64_t, pending_start> starts_;
  std::map<caf::actor_addr, pending_stop> stops_;
  std::deque<deferred> queue_;
  std::shared_ptr<live_map> live_;
  uint64_t next_request_ = 0;
  std::map<uint64_t, caf::response_promise> queued_requests_;
};

} // namespace snakepit::supervision::detail
