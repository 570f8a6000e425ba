// The session store (upstream Snakepit.Bridge.SessionStore): sessions with creation
// and last-access times, a TTL swept periodically, metadata, the last worker that
// served them and a key/value state map that Python tools read and update through the
// host's bridge server. One actor owns everything, so every update (increment,
// compare-and-set) is atomic by construction.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/actor.hpp>
#include <caf/error.hpp>

#include "supervision/child_spec.hpp"

namespace caf {
class actor_system;
} // namespace caf

namespace snakepit::actors {

/// Create (or touch) a session: `(atom, id, metadata)` -> `std::string` id. An empty
/// id asks for a generated one. Errors: invalid_session_id, quota_exceeded.
using session_create_atom = caf::atom_constant<caf::atom("sesscreate")>;
/// Cast `(atom, id, worker_id)`: one request of the session ran on `worker_id`
/// (upserts the session, counts the request, refreshes last access).
using session_touch_atom = caf::atom_constant<caf::atom("sesstouch")>;
/// `(atom, id)` -> `std::string` worker id of the last request, "" if none or unknown.
using session_get_worker_atom = caf::atom_constant<caf::atom("sessgetwrk")>;
/// `(atom, id)` -> `session_info`; refreshes last access. Error: session_not_found.
using session_info_atom = caf::atom_constant<caf::atom("sessinfo")>;
/// `(atom, id)` -> bool: whether the session exists (refreshes it; Heartbeat).
using session_exists_atom = caf::atom_constant<caf::atom("sessexists")>;
/// `(atom, id)` -> `int32_t` entries removed (state keys + the session record).
using session_cleanup_atom = caf::atom_constant<caf::atom("sessclean")>;
/// `(atom)` -> `uint64_t` number of live sessions.
using session_count_atom = caf::atom_constant<caf::atom("sesscount")>;
/// `(atom, id, key)` -> `(bool found, std::string json)`.
using state_get_atom = caf::atom_constant<caf::atom("stget")>;
/// `(atom, id, key, std::string json)` -> ok.
using state_put_atom = caf::atom_constant<caf::atom("stput")>;
/// `(atom, id, key, std::string expected_json, std::string new_json)` ->
/// `(bool swapped, std::string current_json)`; an absent key equals `null`.
using state_cas_atom = caf::atom_constant<caf::atom("stcas")>;
/// `(atom, id, key)` -> bool: whether the key existed.
using state_delete_atom = caf::atom_constant<caf::atom("stdel")>;
/// `(atom, id)` -> `std::vector<std::string>` keys in order.
using state_keys_atom = caf::atom_constant<caf::atom("stkeys")>;
/// `(atom, id, key, std::string by_json)` -> `std::string` new value (JSON number).
/// An absent key counts as 0; integers stay integers. Error: invalid_argument.
using state_incr_atom = caf::atom_constant<caf::atom("stincr")>;
/// Internal: periodic TTL sweep.
using session_sweep_atom = caf::atom_constant<caf::atom("sesssweep")>;

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
  /// Requests routed to the session (`session_touch_atom`).
  uint64_t request_count = 0;
  /// Time to live after the last access.
  std::chrono::seconds ttl{0};
};

/// Longest session id accepted.
inline constexpr size_t max_session_id_length = 128;

/// none if `id` is 1..128 characters of `[A-Za-z0-9_-]`, else invalid_session_id.
caf::error validate_session_id(const std::string& id);

/// A new session id: "sess_" + 32 hex digits from the kernel's CSPRNG (getrandom).
std::string generate_session_id();

/// Spawns the store outside a supervision tree (tests, hosts with their own tree).
caf::actor spawn_session_store(caf::actor_system& sys, session_store_config cfg = {});

/// A child spec for the store (permanent worker; state is lost when it restarts).
supervision::child_spec session_store_child(std::string id, session_store_config cfg = {});

} // namespace snakepit::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::actors::session_info)
