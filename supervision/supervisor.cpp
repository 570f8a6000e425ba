#include "supervision/supervisor.hpp"

#include <algorithm>
#include <map>
#include <memory>
#include <optional>

#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/stateful_actor.hpp>

#include "supervision/detail/child_record.hpp"
#include "supervision/detail/supervisor_core.hpp"

namespace snakepit::supervision {

caf::error validate(const supervisor_flags& flags) {
  return detail::validate_restart_limit(flags.intensity, flags.period,
                                        "restart intensity", "restart period");
}

namespace {

using detail::child_record;

struct start_failure {
  std::string id;
  caf::error reason;
};

class supervisor_callee;

using self_ptr = caf::stateful_actor<detail::impl_state<supervisor_callee>>*;

// All work happens in continuations on the supervisor's own thread of control;
// the core serialises operations the way OTP's single-process supervisor does.
class supervisor_callee {
 public:
  static constexpr const char* name = "snakepit.supervisor";

  supervisor_callee(self_ptr self, supervisor_flags flags, std::vector<child_spec> specs,
                    start_ack ack)
    : self_(self), flags_(flags), core_(self),
      window_(flags.intensity, caf::timespan{flags.period}), ack_(std::move(ack)) {
    for (auto& spec : specs)
      children_.push_back(child_record{std::move(spec), caf::actor{}, false});
  }

  caf::behavior init() {
    self_->set_exit_handler([this](caf::exit_msg& em) { on_exit(em.reason); });
    self_->set_down_handler([this](caf::down_msg& dm) { on_down(dm); });
    core_.attach_kill_children_on_exit();
    std::vector<child_spec> specs;
    for (auto& rec : children_)
      specs.push_back(rec.spec);
    auto err = validate(flags_);
    if (!err)
      err = validate(specs);
    if (err) {
      ack_.fail(err);
      self_->quit(err);
      return {};
    }
    core_.begin();
    start_ids(all_ids(), 0, [this](std::optional<start_failure> fail) {
      if (!fail) {
        ack_.ok(self_);
        core_.end();
        return;
      }
      auto err = caf::make_error(sup_errc::failed_to_start_child, fail->id, fail->reason);
      stop_ids(all_ids(), [this, err] { finish(err, true); });
    });
    return caf::message_handler{
      [this](try_again_atom, std::string& id) {
        when_idle([this, id] { try_again(id); });
      },
      [this](which_children_atom) {
        return request(
          [this](caf::response_promise& rp) { rp.deliver(which_children()); });
      },
      [this](count_children_atom) {
        return request(
          [this](caf::response_promise& rp) { rp.deliver(count_children()); });
      },
      [this](restart_child_atom, std::string& id) {
        return request([this, id](caf::response_promise& rp) { restart_child(id, rp); });
      },
      [this](delete_child_atom, std::string& id) {
        return request([this, id](caf::response_promise& rp) { delete_child(id, rp); });
      },
      [this](terminate_child_atom, std::string& id) {
        return request(
          [this, id](caf::response_promise& rp) { terminate_child(id, rp); });
      },
      [this](start_child_atom, child_spec& spec) {
        return request(
          [this, spec](caf::response_promise& rp) { start_child(spec, rp); });
      },
    }
      .or_else(core_.handlers());
  }

 private:
  // -- bookkeeping ----------------------------------------------------------

  child_record* find(const std::string& id) {
    auto i = std::find_if(children_.begin(), children_.end(),
                          [&](const child_record& x) { return x.spec.id == id; });
    return i != children_.end() ? &*i : nullptr;
  }

  child_record* find(const caf::actor_addr& addr) {
    auto i = std::find_if(children_.begin(), children_.end(), [&](const child_record& x) {
      return x.pid && x.pid.address() == addr;
    });
    return i != children_.end() ? &*i : nullptr;
  }

  void erase(const std::string& id) {
    children_.erase(
      std::remove_if(children_.begin(), children_.end(),
                     [&](const child_record& x) { return x.spec.id == id; }),
      children_.end());
  }

  std::vector<std::string> all_ids() const {
    std::vector<std::string> ids;
    for (auto& rec : children_)
      ids.push_back(rec.spec.id);
    return ids;
  }

  void when_idle(std::function<void()> fn) { core_.when_idle(std::move(fn)); }

  // Requests wait while an operation runs (OTP handles one message at a time).
  caf::response_promise request(std::function<void(caf::response_promise&)> fn) {
    return core_.queue_request(std::move(fn));
  }

  // -- start / stop sequences -------------------------------------------------

  using start_cont = std::function<void(std::optional<start_failure>)>;

  // OTP start_children: left to right, abort at the first failure.
  void start_ids(std::vector<std::string> ids, size_t i, start_cont k) {
    if (i == ids.size()) {
      k(std::nullopt);
      return;
    }
    auto rec = find(ids[i]);
    if (rec == nullptr) {
      start_ids(std::move(ids), i + 1, std::move(k));
      return;
    }
    auto spec = rec->spec;
    core_.start_child(spec, caf::message{},
                      [this, ids = std::move(ids), i,
                       k = std::move(k)](caf::expected<caf::actor> res) mutable {
                        auto rec = find(ids[i]);
                        if (!res) {
                          k(start_failure{ids[i], std::move(res.error())});
                          return;
                        }
                        if (rec != nullptr) {
                          rec->pid = *res;
                          rec->restarting = false;
                        }
                        start_ids(std::move(ids), i + 1, std::move(k));
                      });
  }

  // OTP terminate_children: right to left; temporary children are dropped.
  void stop_ids(const std::vector<std::string>& ids, std::function<void()> k) {
    std::vector<std::pair<caf::actor, shutdown_spec>> xs;
    for (auto i = ids.rbegin(); i != ids.rend(); ++i)
      if (auto rec = find(*i); rec != nullptr && rec->pid)
        xs.emplace_back(rec->pid, rec->spec.shutdown);
    core_.stop_sequential(std::move(xs), [this, ids, k = std::move(k)] {
      for (auto& id : ids) {
        if (auto rec = find(id)) {
          rec->pid = caf::actor{};
          if (rec->spec.restart == restart_type::temporary)
            erase(id);
        }
      }
      k();
    });
  }

  void finish(const caf::error& reason, bool init_failed) {
    if (init_failed)
      ack_.fail(reason);
    core_.quit(reason);
  }

  // -- events -----------------------------------------------------------------

  void on_exit(const caf::error& reason) {
    if (stopping_)
      return;
    // Shutdown waits for the operation in progress (OTP handles the parent's
    // EXIT only between callbacks), but goes before other queued work.
    if (core_.busy()) {
      core_.defer([this, reason] { shutdown(reason); }, true);
      return;
    }
    shutdown(reason);
  }

  void shutdown(const caf::error& reason) {
    if (stopping_)
      return;
    stopping_ = true;
    core_.begin();
    stop_ids(all_ids(), [this, reason] {
      finish(reason ? reason : caf::error{caf::exit_reason::normal}, false);
    });
  }

  void on_down(const caf::down_msg& dm) {
    core_.route_down(dm, [this](const caf::down_msg& x) { child_exited(x); });
  }

  void child_exited(const caf::down_msg& dm) {
    auto rec = find(dm.source);
    if (rec == nullptr)
      return;
    rec->pid = caf::actor{};
    auto id = rec->spec.id;
    if (!should_restart(rec->spec.restart, dm.reason)) {
      if (rec->spec.restart == restart_type::temporary)
        erase(id);
      return;
    }
    restart(id);
  }

  void try_again(const std::string& id) {
    auto rec = find(id);
    if (rec != nullptr && rec->restarting)
      restart(id);
  }

  // OTP restart/2: count first, then apply the strategy.
  void restart(const std::string& id) {
    if (!window_.add(self_->clock().now())) {
      // OTP removes the failed child, terminates the rest and exits `shutdown`.
      if (auto rec = find(id); rec != nullptr && !rec->pid)
        erase(id);
      stopping_ = true;
      core_.begin();
      stop_ids(all_ids(), [this] { finish(caf::make_error(sup_errc::shutdown), false); });
      return;
    }
    std::vector<std::string> ids;
    switch (flags_.strat) {
    case strategy::one_for_one:
      ids.push_back(id);
      break;
    case strategy::one_for_all:
      ids = all_ids();
      break;
    case strategy::rest_for_one: {
      auto all = all_ids();
      auto i = std::find(all.begin(), all.end(), id);
      ids.assign(i, all.end());
      break;
    }
    }
    core_.begin();
    stop_ids(ids, [this, ids] {
      std::vector<std::string> to_start;
      for (auto& x : ids)
        if (find(x) != nullptr)
          to_start.push_back(x);
      start_ids(std::move(to_start), 0, [this](std::optional<start_failure> fail) {
        if (fail) {
          // OTP try_again_restart: retry later so queued requests (e.g. a
          // shutdown) get a chance; the retry counts toward the intensity.
          if (auto rec = find(fail->id))
            rec->restarting = true;
          self_->send(self_, try_again_atom::value, fail->id);
        }
        core_.end();
      });
    });
  }

  // -- requests ---------------------------------------------------------------

  std::vector<child_info> which_children() {
    std::vector<child_info> xs;
    for (auto& rec : children_)
      xs.push_back(detail::info_of(rec));
    return xs;
  }

  child_counts count_children() {
    child_counts res;
    for (auto& rec : children_)
      detail::count_into(res, rec);
    return res;
  }

  void restart_child(const std::string& id, caf::response_promise& rp) {
    if (auto refusal = detail::refuse_restart_or_delete(id, find(id)))
      return rp.deliver(refusal);
    start_and_reply(id, rp, false);
  }

  void delete_child(const std::string& id, caf::response_promise& rp) {
    if (auto refusal = detail::refuse_restart_or_delete(id, find(id)))
      return rp.deliver(refusal);
    erase(id);
    rp.deliver(caf::ok_atom::value);
  }

  void terminate_child(const std::string& id, caf::response_promise& rp) {
    auto rec = find(id);
    if (rec == nullptr)
      return rp.deliver(caf::make_error(sup_errc::not_found, id));
    // Terminating a restarting child cancels the pending retry (OTP sets the
    // pid to undefined, so try_again_restart finds nothing to do).
    rec->restarting = false;
    core_.begin();
    stop_ids({id}, [this, rp]() mutable {
      rp.deliver(caf::ok_atom::value);
      core_.end();
    });
  }

  void start_child(const child_spec& spec, caf::response_promise& rp) {
    if (auto err = validate(spec))
      return rp.deliver(err);
    if (find(spec.id) != nullptr)
      return rp.deliver(caf::make_error(sup_errc::already_present, spec.id));
    children_.push_back(child_record{spec, caf::actor{}, false});
    start_and_reply(spec.id, rp, true);
  }

  // Starts the stopped child `id` for a request and answers it with the child's pid
  // or failed_to_start_child; a child the request added is forgotten when it fails.
  void start_and_reply(const std::string& id, caf::response_promise& rp, bool added) {
    core_.begin();
    start_ids({id}, 0, [this, id, rp, added](std::optional<start_failure> fail) mutable {
      if (fail) {
        if (added)
          erase(id);
        rp.deliver(caf::make_error(sup_errc::failed_to_start_child, id, fail->reason));
      } else if (auto rec = find(id)) {
        rp.deliver(rec->pid);
      }
      core_.end();
    });
  }

  self_ptr self_;
  supervisor_flags flags_;
  detail::supervisor_core core_;
  detail::restart_window window_;
  start_ack ack_;
  std::vector<child_record> children_; // start order
  bool stopping_ = false;
};

caf::behavior supervisor_impl(self_ptr self, supervisor_flags flags,
                              std::vector<child_spec> children, start_ack ack) {
  self->state.impl =
    std::make_unique<supervisor_callee>(self, flags, std::move(children), std::move(ack));
  return self->state.impl->init();
}

} // namespace

caf::actor spawn_supervisor(caf::local_actor* parent, supervisor_flags flags,
                            std::vector<child_spec> children, start_ack ack) {
  return parent->spawn(supervisor_impl, flags, std::move(children), std::move(ack));
}

caf::actor spawn_supervisor(caf::actor_system& sys, supervisor_flags flags,
                            std::vector<child_spec> children) {
  return sys.spawn(supervisor_impl, flags, std::move(children), start_ack{});
}

child_spec supervisor_child(std::string id, supervisor_flags flags,
                            std::vector<child_spec> children, restart_type restart) {
  child_spec spec;
  spec.id = std::move(id);
  spec.start = [flags, children = std::move(children)](
                 caf::local_actor* parent, start_ack ack, const caf::message&) {
    return spawn_supervisor(parent, flags, children, std::move(ack));
  };
  spec.restart = restart;
  spec.shutdown = shutdown_spec::infinity();
  spec.type = child_type::supervisor;
  return spec;
}

caf::expected<caf::actor> start_supervisor(caf::actor_system& sys, supervisor_flags flags,
                                           std::vector<child_spec> children,
                                           std::chrono::milliseconds timeout) {
  caf::scoped_actor self{sys};
  auto sup =
    sys.spawn(supervisor_impl, flags, std::move(children), start_ack{self->address(), 1});
  self->monitor(sup);
  caf::expected<caf::actor> result{caf::make_error(sup_errc::start_timeout)};
  self->receive(
    [&](ack_atom, uint64_t, caf::actor&) { result = sup; },
    [&](ack_atom, uint64_t, caf::error& err) { result = std::move(err); },
    [&](caf::down_msg& dm) {
      result = dm.reason ? dm.reason : caf::make_error(sup_errc::start_timeout);
    },
    caf::after(timeout) >> [&] { caf::anon_send_exit(sup, caf::exit_reason::kill); });
  self->demonitor(sup);
  return result;
}

caf::error stop(caf::actor_system& sys, const caf::actor& sup,
                std::chrono::milliseconds timeout) {
  if (!sup)
    return caf::none;
  caf::scoped_actor self{sys};
  self->monitor(sup);
  self->send_exit(sup, caf::exit_reason::user_shutdown);
  caf::error result = caf::make_error(sup_errc::stop_timeout);
  self->receive([&](caf::down_msg&) { result = caf::none; },
                caf::after(timeout) >> [] {});
  return result;
}

} // namespace snakepit::supervision
