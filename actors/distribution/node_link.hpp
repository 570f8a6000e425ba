// The host's side of distribution (docs/distribution.md): one node link actor per
// configured node connects to its gateway (bounded by a timeout, retried with
// back-off), does the handshake, monitors it, forwards calls and keeps the node's
// latest load reports in the node directory, which the runtime's calls read to
// place each call.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include "actors/distribution/wire.hpp"
#include "adapters/log.hpp"
#include "supervision/child_spec.hpp"

namespace snakepit::telemetry {
class bus;
} // namespace snakepit::telemetry

namespace snakepit::distribution {

/// Where a link stands.
enum class node_state { connecting, connected, down };

/// "connecting", "connected", "down".
const char* to_string(node_state x);

/// One configured node as the directory knows it.
struct node_view {
  std::string name;
  std::string address; ///< "host:port"
  node_state state = node_state::connecting;
  /// When `state` last changed (wall clock, for `down since …`).
  std::chrono::system_clock::time_point since;
  /// Why the last connection attempt failed or the connection was lost.
  std::string last_error;
  /// The node's pools as its latest report gave them.
  std::vector<pool_load> pools;
  uint64_t calls = 0;  ///< calls forwarded to the node
  uint64_t failed = 0; ///< of those, answered with node_down
};

/// Where a call goes: a node link (with the node's name), or nothing.
struct node_route {
  caf::actor link;
  std::string node;
  /// The node pool's default budget, for a call without its own.
  std::chrono::milliseconds request_timeout{0};
  /// Its free capacity in the node's latest report.
  uint32_t free = 0;
};

/// The nodes of one runtime and their latest loads, shared by the links (writers)
/// and the runtime's callers (readers). Thread-safe.
class node_directory {
 public:
  void add(const std::string& name, const std::string& address, caf::actor link);

  void set_link(const std::string& name, caf::actor link);

  void set_state(const std::string& name, node_state state, std::string error = {});

  void set_loads(const std::string& name, std::vector<pool_load> loads);

  /// A call reserved on node `name` (by `pick` with `reserve`) ended; `lost` when
  /// with node_down.
  void end_call(const std::string& name, const std::string& pool, bool lost);

  /// The connected node serving `pool` with the most free capacity (ties: the
  /// first configured), skipping `exclude`; nullopt when none serves it. With
  /// `reserve`, the call is counted there at once (calls in flight and the
  /// node's `calls`), so that calls placed at the same moment spread; the link
  /// that runs it releases it (`end_call`). With `only_free` too, nothing is
  /// reserved when even the best node has no free capacity (`free` 0).
  std::optional<node_route> pick(const std::string& pool, const std::string& exclude = {},
                                 bool reserve = false, bool only_free = false);

  /// Node `node` if it is connected and serves `pool`, with the call reserved
  /// there; nullopt otherwise.
  std::optional<node_route> pick_node(const std::string& node, const std::string& pool);

  /// Where session `id` was placed: "" for the local pool, else a node's name;
  /// nullopt when it was not placed yet.
  std::optional<std::string> session_place(const std::string& id) const;

  /// Places session `id` on `node` ("" = local); beyond `cap` sessions the oldest
  /// placement is forgotten (it is placed afresh on its next call).
  void place_session(const std::string& id, const std::string& node, size_t cap);

  /// Forgets session `id`'s placement (cleaned up, or its node lost under hint).
  void forget_session(const std::string& id);

  /// The free capacity of `pool` summed over connected nodes.
  uint32_t free_capacity(const std::string& pool) const;

  /// Whether a configured node (connected or not) last reported `pool`.
  bool serves(const std::string& pool) const;

  /// The connected nodes whose latest report names `pool`, with their links, in
  /// configuration order.
  std::vector<std::pair<std::string, caf::actor>> serving(const std::string& pool) const;

  std::vector<node_view> nodes() const;

  /// The links, for the runtime's stop.
  std::vector<caf::actor> links() const;

  /// Forgets every node (runtime stop).
  void clear();

 private:
  struct entry {
    node_view view;
    caf::actor link;
    /// This host's calls in flight there, by pool.
    std::map<std::string, uint32_t> in_flight;
  };
  /// Free capacity of `pool` at `e`: its report, or this host's own calls there
  /// when they are more than the report counted.
  static uint32_t free_of(const entry& e, const pool_load& load);
  mutable std::mutex mtx_;
  std::vector<entry> entries_;
  std::unordered_map<std::string, std::string> sessions_;
  std::deque<std::string> session_order_;
};

struct link_options {
  std::string name; ///< the node's name in the host's configuration
  std::string host; ///< where its gateway listens
  uint16_t port = 0;
  /// The host's own name in the handshake.
  std::string self_name;
  /// Budget of one connection attempt (TCP, BASP and our handshake).
  std::chrono::milliseconds connect_timeout{2000};
  /// Back-off between attempts: doubles from the first to the cap.
  std::chrono::milliseconds retry_min{100};
  std::chrono::milliseconds retry_max{5000};
  std::shared_ptr<node_directory> directory;
  /// The runtime's log: connections made and lost (info, warn), attempts (debug).
  std::shared_ptr<adapters::logger> log;
  /// The runtime's telemetry: the node's connection and loss, and the request
  /// and stream events of the calls that run there (with `node`). May be null.
  std::shared_ptr<telemetry::bus> telemetry;
  /// The local pool of a name (null when none), where an idempotent call of a
  /// lost node is retried when no other node serves its pool.
  std::function<caf::actor(const std::string&)> local_pool;
};

/// Spawns a node link. Besides `node_stats_atom, std::string pool` ->
/// `remote_pool_figures` (node_down when not connected or the node does not answer
/// within 5 s), it speaks the pool's `execute_cb_atom, execute_request,
/// callback_sink` (the reply, or a typed error such as node_down, goes to the
/// callback exactly once) and `stream_atom, execute_request, stream_sink_ptr`
/// (chunks with the sink's own flow control carried to the node as a window of
/// acknowledgements, then the end exactly once), and quits on an exit message,
/// failing its calls and streams in flight with shutting_down.
caf::actor spawn_node_link(caf::actor_system& sys, link_options opts);

/// A node link as a supervisor's child (`node:<name>`, permanent): each start
/// registers the new handle in the directory, so a restarted link takes the node's
/// calls at once. A link that stops for any reason fails what it has in flight
/// (`shutting_down` on an orderly stop, `internal` otherwise) and marks its node
/// down until its successor connects.
supervision::child_spec node_link_child(link_options opts);

} // namespace snakepit::distribution
