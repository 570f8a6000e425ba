#include "supervision/detail/supervisor_core.hpp"

#include <set>

#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include "supervision/atoms.hpp"
#include "supervision/errors.hpp"

namespace snakepit::supervision::detail {

bool restart_window::add(caf::actor_clock::time_point now) {
  // OTP keeps restarts with Time >= Now - Period and then checks the count.
  auto threshold = now - period_;
  while (!times_.empty() && times_.back() < threshold)
    times_.pop_back();
  times_.push_front(now);
  return static_cast<int>(times_.size()) <= intensity_;
}

supervisor_core::supervisor_core(caf::event_based_actor* self)
  : self_(self), live_(std::make_shared<live_map>()) {
  // nop
}

void supervisor_core::start_child(const child_spec& spec, const caf::message& extra,
                                  start_cont k) {
  auto ticket = ++next_ticket_;
  start_ack ack{self_->address(), ticket};
  caf::actor pid;
  // A throwing start function is a failed start, not a supervisor crash.
  try {
    pid = spec.start(self_, ack, extra);
  } catch (const std::exception& ex) {
    k(caf::make_error(caf::sec::runtime_error, std::string{ex.what()}));
    return;
  } catch (...) {
    k(caf::make_error(caf::sec::runtime_error));
    return;
  }
  if (!pid) {
    k(caf::make_error(caf::sec::runtime_error, "start function returned no actor"));
    return;
  }
  self_->monitor(pid);
  (*live_)[pid.id()] = pid;
  starts_.emplace(ticket, pending_start{pid, std::move(k)});
  self_->delayed_send(self_, spec.start_timeout, start_timeout_atom::value, ticket);
}

std::vector<std::pair<caf::actor, supervisor_core::start_cont>>
supervisor_core::take_starts() {
  std::vector<std::pair<caf::actor, start_cont>> out;
  for (auto& kv : starts_)
    out.emplace_back(kv.second.pid, std::move(kv.second.k));
  starts_.clear();
  return out;
}

void supervisor_core::handle_ack(uint64_t ticket, caf::expected<caf::actor> res) {
  auto i = starts_.find(ticket);
  if (i == starts_.end())
    return; // late ack of an attempt that already failed
  if (res) {
    auto entry = std::move(i->second);
    starts_.erase(i);
    entry.k(entry.pid);
    return;
  }
  fail_start(ticket, std::move(res.error()));
}

caf::message_handler supervisor_core::handlers() {
  return {
    [this](ack_atom, uint64_t ticket, caf::actor& pid) { handle_ack(ticket, pid); },
    [this](ack_atom, uint64_t ticket, caf::error& err) {
      handle_ack(ticket, std::move(err));
    },
    [this](start_timeout_atom, uint64_t ticket) { handle_start_timeout(ticket); },
    [this](kill_timer_atom, uint64_t ticket) { handle_kill_timer(ticket); },
  };
}

void supervisor_core::route_down(const caf::down_msg& dm,
                                 std::function<void(const caf::down_msg&)> exited) {
  if (handle_down(dm))
    return;
  if (busy()) {
    defer_down(dm, [dm, exited = std::move(exited)] { exited(dm); });
    return;
  }
  exited(dm);
}

void supervisor_core::quit(const caf::error& reason) {
  fail_queued_requests();
  self_->quit(reason);
}

void supervisor_core::handle_start_timeout(uint64_t ticket) {
  if (starts_.count(ticket) != 0)
    fail_start(ticket, caf::make_error(sup_errc::start_timeout));
}

void supervisor_core::fail_start(uint64_t ticket, caf::error reason) {
  // The child may still be alive (it acked a failure or hangs in init): kill it
  // and report only after its down_msg, so no half-started child outlives us.
  auto i = starts_.find(ticket);
  auto entry = std::move(i->second);
  starts_.erase(i);
  auto k = std::move(entry.k);
  stop_child(entry.pid, shutdown_spec::brutal_kill(),
             [k, reason]() mutable { k(std::move(reason)); });
}

bool supervisor_core::handle_down(const caf::down_msg& dm) {
  if (auto ptr = caf::actor_cast<caf::strong_actor_ptr>(dm.source))
    live_->erase(ptr->id());
  for (auto i = starts_.begin(); i != starts_.end(); ++i) {
    if (i->second.pid.address() == dm.source) {
      auto k = std::move(i->second.k);
      starts_.erase(i);
      // A child that ends before acknowledging failed to start, even if normally.
      k(dm.reason ? dm.reason : caf::make_error(caf::exit_reason::normal));
      return true;
    }
  }
  auto j = stops_.find(dm.source);
  if (j != stops_.end()) {
    auto ks = std::move(j->second.ks);
    stops_.erase(j);
    for (auto& k : ks)
      k();
    return true;
  }
  return false;
}

void supervisor_core::stop_child(const caf::actor& pid, const shutdown_spec& sd,
                                 done_cont k) {
  uint64_t ticket = 0;
  if (sd.k == shutdown_spec::kind::timeout) {
    ticket = ++next_ticket_;
    self_->delayed_send(self_, sd.timeout, kill_timer_atom::value, ticket);
  }
  begin_stop(pid, sd, ticket, std::move(k));
}

void supervisor_core::begin_stop(const caf::actor& pid, const shutdown_spec& sd,
                                 uint64_t ticket, done_cont k) {
  if (!pid) {
    k();
    return;
  }
  // Like OTP's monitor_child: if the child already died and its down_msg waits
  // in our deferred queue, consume it instead of treating it as a crash later.
  for (auto i = queue_.begin(); i != queue_.end(); ++i) {
    if (i->down_src && i->down_src == pid.address()) {
      queue_.erase(i);
      live_->erase(pid.id());
      k();
      return;
    }
  }
  auto j = stops_.find(pid.address());
  if (j != stops_.end()) {
    j->second.ks.push_back(std::move(k));
    return;
  }
  stops_.emplace(pid.address(), pending_stop{pid, {std::move(k)}, ticket});
  if (sd.k == shutdown_spec::kind::brutal_kill)
    self_->send_exit(pid, caf::exit_reason::kill);
  else
    self_->send_exit(pid, caf::exit_reason::user_shutdown);
}

void supervisor_core::handle_kill_timer(uint64_t ticket) {
  for (auto& kv : stops_)
    if (kv.second.kill_ticket == ticket)
      self_->send_exit(kv.second.pid, caf::exit_reason::kill);
}

void supervisor_core::stop_sequential(
  std::vector<std::pair<caf::actor, shutdown_spec>> xs, done_cont k) {
  if (xs.empty()) {
    k();
    return;
  }
  auto head = xs.front();
  xs.erase(xs.begin());
  stop_child(head.first, head.second,
             [this, rest = std::move(xs), k = std::move(k)]() mutable {
               stop_sequential(std::move(rest), std::move(k));
             });
}

void supervisor_core::stop_concurrent(
  std::vector<std::pair<caf::actor, shutdown_spec>> xs, done_cont k) {
  auto remaining = std::make_shared<size_t>(xs.size() + 1);
  auto one_done = [remaining, k = std::move(k)] {
    if (--*remaining == 0)
      k();
  };
  // Elixir's DynamicSupervisor: all exits go out at once, one timer per timeout.
  std::map<caf::timespan, uint64_t> timers;
  for (auto& [pid, sd] : xs) {
    uint64_t ticket = 0;
    if (sd.k == shutdown_spec::kind::timeout) {
      auto t = caf::timespan{sd.timeout};
      auto i = timers.find(t);
      if (i == timers.end()) {
        ticket = ++next_ticket_;
        timers.emplace(t, ticket);
        self_->delayed_send(self_, sd.timeout, kill_timer_atom::value, ticket);
      } else {
        ticket = i->second;
      }
    }
    begin_stop(pid, sd, ticket, one_done);
  }
  one_done();
}

void supervisor_core::end() {
  busy_ = false;
  if (draining_)
    return;
  draining_ = true;
  while (!busy_ && !queue_.empty()) {
    auto fn = std::move(queue_.front().fn);
    queue_.pop_front();
    fn();
  }
  draining_ = false;
}

void supervisor_core::defer(std::function<void()> fn, bool front) {
  if (front)
    queue_.push_front(deferred{caf::actor_addr{}, std::move(fn)});
  else
    queue_.push_back(deferred{caf::actor_addr{}, std::move(fn)});
}

void supervisor_core::when_idle(std::function<void()> fn) {
  if (busy_)
    defer(std::move(fn));
  else
    fn();
}

caf::response_promise
supervisor_core::queue_request(std::function<void(caf::response_promise&)> fn) {
  auto rp = self_->make_response_promise();
  auto key = ++next_request_;
  queued_requests_.emplace(key, rp);
  when_idle([this, fn = std::move(fn), key] {
    auto i = queued_requests_.find(key);
    if (i == queued_requests_.end())
      return;
    auto p = std::move(i->second);
    queued_requests_.erase(i);
    fn(p);
  });
  return rp;
}

void supervisor_core::fail_queued_requests() {
  for (auto& kv : queued_requests_)
    kv.second.deliver(caf::make_error(caf::sec::request_receiver_down));
  queued_requests_.clear();
}

void supervisor_core::defer_down(const caf::down_msg& dm, std::function<void()> fn) {
  queue_.push_back(deferred{dm.source, std::move(fn)});
}

void supervisor_core::attach_kill_children_on_exit() {
  auto live = live_;
  self_->attach_functor([live](const caf::error& reason) {
    // After an orderly stop nothing is left; after a crash or kill the children
    // must not outlive us, and CAF has no link-with-trap_exit equivalent of OTP.
    auto fwd = reason ? reason : caf::error{caf::exit_reason::user_shutdown};
    for (auto& kv : *live)
      kv.second->enqueue(nullptr, caf::make_message_id(),
                         caf::make_message(caf::exit_msg{kv.second.address(), fwd}),
                         nullptr);
    live->clear();
  });
}

} // namespace snakepit::supervision::detail
