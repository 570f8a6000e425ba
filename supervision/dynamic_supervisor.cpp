#include "supervision/dynamic_supervisor.hpp"

#include <algorithm>
#include <map>
#include <memory>

#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/stateful_actor.hpp>

#include "supervision/detail/child_record.hpp"
#include "supervision/detail/supervisor_core.hpp"

namespace snakepit::supervision {

caf::error validate(const dynamic_supervisor_flags& flags) {
  return detail::validate_restart_limit(flags.max_restarts, flags.max_seconds,
                                        "max_restarts", "max_seconds");
}

namespace {

/// A child and the extra start arguments its restarts get again.
struct dyn_rec : detail::child_record {
  caf::message extra;
};

class dynamic_supervisor_callee;

using self_ptr = caf::stateful_actor<detail::impl_state<dynamic_supervisor_callee>>*;

// Children are keyed by a private number, since their handles change on restart
// (Elixir keys by the old pid while restarting; a number is simpler in C++).
class dynamic_supervisor_callee {
 public:
  static constexpr const char* name = "snakepit.dynamic_supervisor";

  dynamic_supervisor_callee(self_ptr self, dynamic_supervisor_flags flags, start_ack ack)
    : self_(self), flags_(flags), core_(self),
      window_(flags.max_restarts, caf::timespan{flags.max_seconds}),
      ack_(std::move(ack)) {
    // nop
  }

  caf::behavior init() {
    self_->set_exit_handler([this](caf::exit_msg& em) { on_exit(em.reason); });
    self_->set_down_handler([this](caf::down_msg& dm) { on_down(dm); });
    core_.attach_kill_children_on_exit();
    if (auto err = validate(flags_)) {
      ack_.fail(err);
      self_->quit(err);
      return {};
    }
    ack_.ok(self_);
    return caf::message_handler{
      [this](try_again_atom, uint64_t key) {
        when_idle([this, key] { try_again(key); });
      },
      [this](which_children_atom) {
        return request(
          [this](caf::response_promise& rp) { rp.deliver(which_children()); });
      },
      [this](count_children_atom) {
        return request(
          [this](caf::response_promise& rp) { rp.deliver(count_children()); });
      },
      [this](start_child_atom, child_spec& spec) {
        return request([this, spec](caf::response_promise& rp) {
          start_child(spec, caf::message{}, rp);
        });
      },
      [this](start_child_atom, child_spec& spec, caf::message& extra) {
        return request([this, spec, extra](caf::response_promise& rp) {
          start_child(spec, extra, rp);
        });
      },
      [this](terminate_child_atom, caf::actor& pid) {
        return request(
          [this, pid](caf::response_promise& rp) { terminate_child(pid, rp); });
      },
    }
      .or_else(core_.handlers());
  }

 private:
  void when_idle(std::function<void()> fn) { core_.when_idle(std::move(fn)); }

  // Requests wait while an operation runs (OTP handles one message at a time).
  caf::response_promise request(std::function<void(caf::response_promise&)> fn) {
    return core_.queue_request(std::move(fn));
  }

  std::map<uint64_t, dyn_rec>::iterator find(const caf::actor_addr& addr) {
    return std::find_if(children_.begin(), children_.end(), [&](const auto& kv) {
      return kv.second.pid && kv.second.pid.address() == addr;
    });
  }

  std::vector<std::pair<caf::actor, shutdown_spec>> running() const {
    std::vector<std::pair<caf::actor, shutdown_spec>> xs;
    for (auto& kv : children_)
      if (kv.second.pid)
        xs.emplace_back(kv.second.pid, kv.second.spec.shutdown);
    return xs;
  }

  // Elixir's DynamicSupervisor stops all children at once, not in an order.
  void stop_all_and_quit(caf::error reason) {
    stopping_ = true;
    core_.begin();
    auto xs = running();
    // Children still starting (concurrent_starts) are killed; their requests fail.
    for (auto& [pid, k] : core_.take_starts()) {
      k(caf::make_error(sup_errc::shutdown));
      xs.emplace_back(pid, shutdown_spec::brutal_kill());
    }
    core_.stop_concurrent(std::move(xs), [this, reason] {
      children_.clear();
      core_.quit(reason);
    });
  }

  void on_exit(const caf::error& reason) {
    if (stopping_)
      return;
    auto r = reason ? reason : caf::error{caf::exit_reason::normal};
    if (core_.busy()) {
      core_.defer(
        [this, r] {
          if (!stopping_)
            stop_all_and_quit(r);
        },
        true);
      return;
    }
    stop_all_and_quit(r);
  }

  void on_down(const caf::down_msg& dm) {
    core_.route_down(dm, [this](const caf::down_msg& x) { child_exited(x); });
  }

  void child_exited(const caf::down_msg& dm) {
    auto i = find(dm.source);
    if (i == children_.end())
      return;
    i->second.pid = caf::actor{};
    if (!should_restart(i->second.spec.restart, dm.reason)) {
      children_.erase(i);
      return;
    }
    restart(i->first);
  }

  void try_again(uint64_t key) {
    auto i = children_.find(key);
    if (i != children_.end() && i->second.restarting)
      restart(key);
  }

  void restart(uint64_t key) {
    if (!window_.add(self_->clock().now())) {
      children_.erase(key);
      stop_all_and_quit(caf::make_error(sup_errc::shutdown));
      return;
    }
    auto& rec = children_.at(key);
    core_.begin();
    core_.start_child(rec.spec, rec.extra, [this, key](caf::expected<caf::actor> res) {
      auto i = children_.find(key);
      if (i != children_.end()) {
        if (res) {
          i->second.pid = *res;
          i->second.restarting = false;
        } else {
          i->second.restarting = true;
          self_->send(self_, try_again_atom::value, key);
        }
      }
      core_.end();
    });
  }

  std::vector<child_info> which_children() {
    std::vector<child_info> xs;
    for (auto& kv : children_)
      xs.push_back(detail::info_of(kv.second));
    return xs;
  }

  child_counts count_children() {
    child_counts res;
    for (auto& kv : children_)
      detail::count_into(res, kv.second);
    return res;
  }

  void start_child(const child_spec& spec, const caf::message& extra,
                   caf::response_promise& rp) {
    if (auto err = validate(spec))
      return rp.deliver(err);
    if (flags_.max_children && children_.size() + starting_ >= *flags_.max_children)
      return rp.deliver(caf::make_error(sup_errc::max_children, spec.id));
    auto key = ++next_key_;
    bool concurrent = flags_.concurrent_starts;
    if (concurrent)
      ++starting_;
    else
      core_.begin();
    core_.start_child(
      spec, extra,
      [this, key, spec, extra, rp, concurrent](caf::expected<caf::actor> res) mutable {
        if (concurrent)
          --starting_;
        if (res) {
          children_.emplace(key, dyn_rec{{spec, *res, false}, extra});
          rp.deliver(*res);
        } else {
          rp.deliver(
            caf::make_error(sup_errc::failed_to_start_child, spec.id, res.error()));
        }
        if (!concurrent)
          core_.end();
      });
  }

  void terminate_child(const caf::actor& pid, caf::response_promise& rp) {
    auto i = pid ? find(pid.address()) : children_.end();
    if (i == children_.end())
      return rp.deliver(caf::make_error(sup_errc::not_found));
    auto key = i->first;
    core_.begin();
    core_.stop_child(pid, i->second.spec.shutdown, [this, key, rp]() mutable {
      children_.erase(key);
      rp.deliver(caf::ok_atom::value);
      core_.end();
    });
  }

  self_ptr self_;
  dynamic_supervisor_flags flags_;
  detail::supervisor_core core_;
  detail::restart_window window_;
  start_ack ack_;
  uint64_t next_key_ = 0;
  std::map<uint64_t, dyn_rec> children_;
  /// Children whose concurrent start is in progress.
  size_t starting_ = 0;
  bool stopping_ = false;
};

caf::behavior dynamic_supervisor_impl(self_ptr self, dynamic_supervisor_flags flags,
                                      start_ack ack) {
  self->state.impl =
    std::make_unique<dynamic_supervisor_callee>(self, flags, std::move(ack));
  return self->state.impl->init();
}

} // namespace

caf::actor spawn_dynamic_supervisor(caf::local_actor* parent,
                                    dynamic_supervisor_flags flags, start_ack ack) {
  return parent->spawn(dynamic_supervisor_impl, flags, std::move(ack));
}

caf::actor spawn_dynamic_supervisor(caf::actor_system& sys,
                                    dynamic_supervisor_flags flags) {
  return sys.spawn(dynamic_supervisor_impl, flags, start_ack{});
}

child_spec dynamic_supervisor_child(std::string id, dynamic_supervisor_flags flags,
                                    restart_type restart) {
  child_spec spec;
  spec.id = std::move(id);
  spec.start = [flags](caf::local_actor* parent, start_ack ack, const caf::message&) {
    return spawn_dynamic_supervisor(parent, flags, std::move(ack));
  };
  spec.restart = restart;
  spec.shutdown = shutdown_spec::infinity();
  spec.type = child_type::supervisor;
  return spec;
}

} // namespace snakepit::supervision
