// The session store (upstream Snakepit.Bridge.SessionStore): sessions with creation
// and last-access times, a TTL swept periodically, metadata, the last worker that
// served them and a key/value state map that Python tools read and update through the
// host's bridge server. One actor owns everything, so every update (increment,
// compare-and-set) is atomic by construction. Its protocol is `session_store_actor`;
// callers use the functions at the end of this header (as Elixir callers use
// `SessionStore.create_session/2`) and never build its messages themselves.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_cast.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "supervision/child_spec.hpp"

namespace caf {
class actor_system;
} // namespace caf

namespace snakepit::actors {

/// Limits and timers of the store, with upstream's defaults.
struct session_store_config {
  /// A session not accessed for this long is removed by the next sweep.
  std::chrono::seconds ttl{3600};
  /// How often expired sessions are swept.
  std::chrono::milliseconds sweep_interval{60000};
  /// At most this many sessions; creating one more fails with quota_exceeded.
  size_t max_sessions = 10000;
  /// Share of `max_sessions` at which a warning is logged (once per crossing).
  double warn_ratio = 0.8;
  /// Called (on the store's thread; keep it short) for every session removed by the
  /// TTL sweep, e.g. to drop its tools from the tool registry.
  std::function<void(const std::string&)> on_expire;
  /// Called when the session count crosses `warn_ratio * max_sessions` upwards
  /// (default: a line on stderr).
  std::function<void(size_t count, size_t max)> on_warning;
  /// Called (on the store's thread) for every new session, and for every session
  /// removed by a cleanup request (with the number of entries removed).
  std::function<void(const std::string&)> on_create;
  std::function<void(const std::string&, int32_t removed)> on_cleanup;

  /// Checks the limits (positive ttl, interval and quota, ratio in (0, 1]).
  caf::error validate() const;
};

/// What `get_session_info` reports about one session.
struct session_info {
  std::string id;
  std::chrono::system_clock::time_point created;
  std::chrono::system_clock::time_point last_accessed;
  /// The worker of the last request ("" if none ran yet).
  std::string last_worker;
  std::map<std::string, std::string> metadata;
  /// State keys, sorted.
  std::vector<std::string> state_keys;
  /// Requests routed to the session (`touch_session`).
  uint64_t request_count = 0;
  /// Time to live after the last access.
  std::chrono::seconds ttl{0};
};

/// Session metadata: string keys and values.
using session_metadata = std::map<std::string, std::string>;

/// Longest session id accepted.
inline constexpr size_t max_session_id_length = 128;

/// none if `id` is 1..128 characters of `[A-Za-z0-9_-]`, else invalid_session_id.
caf::error validate_session_id(const std::string& id);

/// A new session id: "sess_" + 32 hex digits from the kernel's CSPRNG (getrandom).
std::string generate_session_id();

// -- protocol -------------------------------------------------------------------

/// Tags `create_session`.
using session_create_atom = caf::atom_constant<caf::atom("sesscreate")>;
/// Tags `touch_session`.
using session_touch_atom = caf::atom_constant<caf::atom("sesstouch")>;
/// Tags `get_session_info`.
using session_info_atom = caf::atom_constant<caf::atom("sessinfo")>;
/// Tags `session_exists`.
using session_exists_atom = caf::atom_constant<caf::atom("sessexists")>;
/// Tags `cleanup_session` here and `cleanup_session_tools` in the tool registry.
using session_cleanup_atom = caf::atom_constant<caf::atom("sessclean")>;
/// Tags `count_sessions`.
using session_count_atom = caf::atom_constant<caf::atom("sesscount")>;
/// Tags `get_state`.
using state_get_atom = caf::atom_constant<caf::atom("stget")>;
/// Tags `put_state`.
using state_put_atom = caf::atom_constant<caf::atom("stput")>;
/// Tags `compare_and_set_state`.
using state_cas_atom = caf::atom_constant<caf::atom("stcas")>;
/// Tags `delete_state`.
using state_delete_atom = caf::atom_constant<caf::atom("stdel")>;
/// Tags `state_keys`.
using state_keys_atom = caf::atom_constant<caf::atom("stkeys")>;
/// Tags `increment_state`.
using state_incr_atom = caf::atom_constant<caf::atom("stincr")>;

/// The store's interface; each message is documented at its wrapper below. State
/// values travel as JSON text.
using session_store_actor = caf::typed_actor<
  caf::replies_to<session_create_atom, std::string, session_metadata>::with<std::string>,
  caf::reacts_to<session_touch_atom, std::string, std::string>,
  caf::replies_to<session_info_atom, std::string>::with<session_info>,
  caf::replies_to<session_exists_atom, std::string>::with<bool>,
  caf::replies_to<session_cleanup_atom, std::string>::with<int32_t>,
  caf::replies_to<session_count_atom>::with<uint64_t>,
  caf::replies_to<state_get_atom, std::string, std::string>::with<bool, std::string>,
  caf::replies_to<state_put_atom, std::string, std::string,
                  std::string>::with<caf::ok_atom>,
  caf::replies_to<state_cas_atom, std::string, std::string, std::string,
                  std::string>::with<bool, std::string>,
  caf::replies_to<state_delete_atom, std::string, std::string>::with<bool>,
  caf::replies_to<state_keys_atom, std::string>::with<std::vector<std::string>>,
  caf::replies_to<state_incr_atom, std::string, std::string,
                  std::string>::with<std::string>>;

/// The name the runtime gives the store in its name table.
inline constexpr const char* session_store_name = "session_store";

/// The store behind a dynamically typed handle, as a name table or a supervisor
/// keeps it. An invalid handle stays invalid.
inline session_store_actor as_session_store(const caf::actor& hdl) {
  return caf::actor_cast<session_store_actor>(hdl);
}

/// Spawns the store outside a supervision tree (tests, hosts with their own tree).
session_store_actor spawn_session_store(caf::actor_system& sys,
                                        session_store_config cfg = {});

/// A child spec for the store (permanent worker; state is lost when it restarts).
supervision::child_spec session_store_child(std::string id,
                                            session_store_config cfg = {});

// -- calls ----------------------------------------------------------------------
//
// Each call sends one request from `self` and returns CAF's response handle: an
// actor continues with `.then(ok, err)`, a `caf::scoped_actor` with
// `.receive(ok, err)`. `self` is an actor pointer or a scoped_actor; `timeout` a
// `std::chrono` duration or `caf::infinite` (default 5 s, OTP's call timeout).

/// Creates (or touches) session `id`, merging `metadata` into its own; an empty id
/// asks for a generated one. Reply: the id. Errors: invalid_session_id, quota_exceeded.
template<class Self, class Timeout = std::chrono::seconds>
auto create_session(Self&& self, const session_store_actor& store, std::string id,
                    session_metadata metadata,
                    Timeout timeout = std::chrono::seconds{5}) {
  return self->request(store, timeout, session_create_atom::value, std::move(id),
                       std::move(metadata));
}

/// Reply: what the store knows about session `id`; refreshes its last access.
/// Error: session_not_found.
template<class Self, class Timeout = std::chrono::seconds>
auto get_session_info(Self&& self, const session_store_actor& store, std::string id,
                      Timeout timeout = std::chrono::seconds{5}) {
  return self->request(store, timeout, session_info_atom::value, std::move(id));
}

/// Reply: whether session `id` exists (the bridge's Heartbeat). Does not refresh it:
/// a worker's heartbeats must not keep a session alive past its TTL.
template<class Self, class Timeout = std::chrono::seconds>
auto session_exists(Self&& self, const session_store_actor& store, std::string id,
                    Timeout timeout = std::chrono::seconds{5}) {
  return self->request(store, timeout, session_exists_atom::value, std::move(id));
}

/// Removes session `id`. Reply: `int32_t` entries removed (state keys + the session
/// record), 0 if it did not exist.
template<class Self, class Timeout = std::chrono::seconds>
auto cleanup_session(Self&& self, const session_store_actor& store, std::string id,
                     Timeout timeout = std::chrono::seconds{5}) {
  return self->request(store, timeout, session_cleanup_atom::value, std::move(id));
}

/// Reply: `uint64_t` number of live sessions.
template<class Self, class Timeout = std::chrono::seconds>
auto count_sessions(Self&& self, const session_store_actor& store,
                    Timeout timeout = std::chrono::seconds{5}) {
  return self->request(store, timeout, session_count_atom::value);
}

/// Reply: `(bool found, std::string json)`, "null" when not found. Creates the
/// session when missing (errors: invalid_session_id, quota_exceeded).
template<class Self, class Timeout = std::chrono::seconds>
auto get_state(Self&& self, const session_store_actor& store, std::string id,
               std::string key, Timeout timeout = std::chrono::seconds{5}) {
  return self->request(store, timeout, state_get_atom::value, std::move(id),
                       std::move(key));
}

/// Sets `key` to the JSON text `value` (not JSON: null). Reply: ok. Creates the
/// session when missing.
template<class Self, class Timeout = std::chrono::seconds>
auto put_state(Self&& self, const session_store_actor& store, std::string id,
               std::string key, std::string value,
               Timeout timeout = std::chrono::seconds{5}) {
  return self->request(store, timeout, state_put_atom::value, std::move(id),
                       std::move(key), std::move(value));
}

/// Sets `key` to `value` only if it currently equals `expected` (JSON; an absent
/// key equals null). Reply: `(bool swapped, std::string current_json)`.
template<class Self, class Timeout = std::chrono::seconds>
auto compare_and_set_state(Self&& self, const session_store_actor& store, std::string id,
                           std::string key, std::string expected, std::string value,
                           Timeout timeout = std::chrono::seconds{5}) {
  return self->request(store, timeout, state_cas_atom::value, std::move(id),
                       std::move(key), std::move(expected), std::move(value));
}

/// Removes `key`. Reply: whether it existed.
template<class Self, class Timeout = std::chrono::seconds>
auto delete_state(Self&& self, const session_store_actor& store, std::string id,
                  std::string key, Timeout timeout = std::chrono::seconds{5}) {
  return self->request(store, timeout, state_delete_atom::value, std::move(id),
                       std::move(key));
}

/// Reply: `std::vector<std::string>` the session's state keys, sorted.
template<class Self, class Timeout = std::chrono::seconds>
auto state_keys(Self&& self, const session_store_actor& store, std::string id,
                Timeout timeout = std::chrono::seconds{5}) {
  return self->request(store, timeout, state_keys_atom::value, std::move(id));
}

/// Adds the JSON number `by` to `key` (absent counts as 0; integers stay integers).
/// Reply: the new value as JSON text. Error: invalid_argument.
template<class Self, class Timeout = std::chrono::seconds>
auto increment_state(Self&& self, const session_store_actor& store, std::string id,
                     std::string key, std::string by,
                     Timeout timeout = std::chrono::seconds{5}) {
  return self->request(store, timeout, state_incr_atom::value, std::move(id),
                       std::move(key), std::move(by));
}

/// Casts: one request of session `id` ran on `worker_id` (upserts the session,
/// counts the request, refreshes its last access; upstream's store_worker_session).
/// Safe from any thread; does nothing when `store` is invalid.
void touch_session(const session_store_actor& store, std::string id,
                   std::string worker_id);

} // namespace snakepit::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::actors::session_info)
