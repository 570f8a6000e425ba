// Child specifications and introspection records of a supervisor.
// Mirrors OTP's child_spec() map (id, start, restart, shutdown, type) and the
// results of supervisor:which_children/1 and supervisor:count_children/1.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/detail/type_list.hpp>
#include <caf/detail/type_traits.hpp>
#include <caf/error.hpp>
#include <caf/local_actor.hpp>
#include <caf/message.hpp>

#include "supervision/start_ack.hpp"

namespace snakepit::supervision {

/// When a terminated child is restarted (OTP restart values).
enum class restart_type {
  /// Always restarted.
  permanent,
  /// Restarted only after an abnormal exit (not normal, not shutdown).
  transient,
  /// Never restarted; its spec is dropped once it terminates.
  temporary,
};

/// Whether a child is a worker or a supervisor (affects counts and defaults).
enum class child_type { worker, supervisor };

/// How a child is stopped: OTP brutal_kill | Timeout | infinity.
struct shutdown_spec {
  /// The three OTP shutdown flavours.
  enum class kind { brutal_kill, timeout, infinity };
  /// Which flavour.
  kind k = kind::timeout;
  /// Grace period for `kind::timeout` before the child is killed.
  std::chrono::milliseconds timeout{5000};

  /// Kill at once (exit_reason::kill).
  static shutdown_spec brutal_kill();
  /// Ask with exit_reason::user_shutdown, kill after `t`.
  static shutdown_spec after(std::chrono::milliseconds t);
  /// Ask with exit_reason::user_shutdown and wait as long as it takes.
  static shutdown_spec infinity();
};

/// Starts a child: spawn it (e.g. `parent->spawn(...)`), hand it `ack`, return
/// its handle. An invalid handle means the start failed. `extra_args` are the
/// arguments a dynamic supervisor appends (empty otherwise).
using start_fn = std::function<caf::actor(caf::local_actor* parent, start_ack ack,
                                          const caf::message& extra_args)>;

/// Everything a supervisor needs to know about one child.
struct child_spec {
  /// Unique (per supervisor) name of the child.
  std::string id;
  /// Spawns the child.
  start_fn start;
  /// Restart policy.
  restart_type restart = restart_type::permanent;
  /// Stop policy.
  shutdown_spec shutdown = shutdown_spec::after(std::chrono::milliseconds{5000});
  /// Worker or supervisor.
  child_type type = child_type::worker;
  /// How long the child may take to call `start_ack::ok`.
  std::chrono::milliseconds start_timeout{30000};
};

/// Checks one spec: non-empty id, a start function, non-negative timeouts.
caf::error validate(const child_spec& spec);

/// Checks a child list: every spec valid and ids unique. The error
/// (`sup_errc::invalid_child_spec`) names the offending child.
caf::error validate(const std::vector<child_spec>& specs);

/// OTP's restart decision for a terminated child of the given type.
bool should_restart(restart_type type, const caf::error& reason);

/// State of a child as shown by `which_children`.
enum class child_status {
  /// Alive; `child_info::pid` is valid.
  running,
  /// A restart failed and is being retried; `pid` is invalid.
  restarting,
  /// Not running (terminated, not restarted); `pid` is invalid.
  undefined,
};

/// One row of `which_children`.
struct child_info {
  /// The child's id (for dynamic supervisors: the spec's id, not unique).
  std::string id;
  /// The running actor, invalid unless `status == running`.
  caf::actor pid;
  /// Worker or supervisor.
  child_type type = child_type::worker;
  /// Running, restarting or undefined.
  child_status status = child_status::undefined;
};

/// Reply of `count_children` (OTP's specs/active/supervisors/workers).
struct child_counts {
  /// Number of child specs.
  size_t specs = 0;
  /// Number of running children.
  size_t active = 0;
  /// Number of specs of type supervisor.
  size_t supervisors = 0;
  /// Number of specs of type worker.
  size_t workers = 0;
};

namespace detail {

template<class F>
using self_pointer_t =
  caf::detail::tl_head_t<typename caf::detail::get_callable_trait<F>::arg_types>;

} // namespace detail

/// A child whose body is a plain function-based CAF actor:
/// `fun(caf::event_based_actor*` or `caf::stateful_actor<S>*, args...)`. The
/// child acknowledges its start right after `fun` has built its behaviour. If
/// `fun` also accepts a trailing `const caf::message&`, it receives the extra
/// arguments given to a dynamic supervisor's `start_child`.
template<class F, class... Ts>
child_spec worker_child(std::string id, F fun, Ts... args) {
  using self_ptr = detail::self_pointer_t<F>;
  child_spec spec;
  spec.id = std::move(id);
  spec.start = [fun, args...](caf::local_actor* parent, start_ack ack,
                              const caf::message& extra) -> caf::actor {
    auto body = [fun](self_ptr self, start_ack a, caf::message x, Ts... xs) {
      auto bhvr = [&] {
        if constexpr (std::is_invocable_v<F, self_ptr, Ts..., const caf::message&>)
          return fun(self, xs..., x);
        else
          return fun(self, xs...);
      }();
      a.ok(caf::actor_cast<caf::actor>(self));
      return bhvr;
    };
    return caf::actor_cast<caf::actor>(parent->spawn(body, ack, extra, args...));
  };
  return spec;
}

} // namespace snakepit::supervision

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::supervision::child_spec)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::supervision::child_info)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<snakepit::supervision::child_info>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::supervision::child_counts)
