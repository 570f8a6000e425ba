// What crosses a node boundary (docs/distribution.md): plain, inspectable types that
// CAF serializes over BASP, and their conversion from and to the local call types.
// The local types hold JSON values and callbacks and stay in one process; these
// carry JSON as text and an error as CAF serializes it (category, code, context of
// standard types).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/fwd.hpp>
#include <caf/meta/type_name.hpp>

#include "actors/config/config.hpp"
#include "actors/types.hpp"

namespace caf {
class actor_system_config;
} // namespace caf

namespace snakepit::distribution {

/// Version of the messages below. A host and a node refuse each other unless it is
/// the same on both sides (`check_hello`).
inline constexpr uint32_t protocol_version = 3;

/// Snakepit's version as a handshake names it (for messages only).
inline constexpr const char* snakepit_version = "0.1.0";

/// Host -> gateway: `node_hello` -> the node's `node_hello` (or protocol_error).
using node_hello_atom = caf::atom_constant<caf::atom("nodehello")>;
/// Host -> gateway: `remote_call` -> `remote_result` (a typed error travels inside).
using node_call_atom = caf::atom_constant<caf::atom("nodecall")>;
/// Host -> gateway: `std::string pool` -> `remote_pool_figures` (its stats and
/// workers), or pool_not_found.
using node_stats_atom = caf::atom_constant<caf::atom("nodestats")>;
/// Gateway -> host: `std::vector<pool_load>`, every `load_interval`.
using node_load_atom = caf::atom_constant<caf::atom("nodeload")>;

// A stream to a node (no request/response: its chunks come back as messages).
// The host's link numbers its streams; the gateway knows one by (link, id).
/// Host -> gateway: `uint64_t id, remote_call, uint32_t window` opens stream `id`;
/// at most `window` chunks travel unacknowledged.
using node_stream_atom = caf::atom_constant<caf::atom("nodestream")>;
/// Gateway -> host: `uint64_t id, std::string chunk_json, bool is_final`.
using node_chunk_atom = caf::atom_constant<caf::atom("nodechunk")>;
/// Gateway -> host: `uint64_t id, caf::error` (none: a clean end), exactly once.
using node_end_atom = caf::atom_constant<caf::atom("nodeend")>;
/// Host -> gateway: `uint64_t id, uint32_t n`: the host's caller took `n` chunks.
using node_ack_atom = caf::atom_constant<caf::atom("nodeack")>;
/// Host -> gateway: `uint64_t id`: stop the stream (a clean end follows).
using node_halt_atom = caf::atom_constant<caf::atom("nodehalt")>;

/// Chunks of a stream to a node that may travel unacknowledged: enough to keep a
/// loopback or LAN round trip from stalling the producer, few enough that a slow
/// caller holds a fast worker back within a few chunks.
inline constexpr uint32_t node_stream_window = 16;

/// One pool's load as a node reports it (pushed, never asked per call).
struct pool_load {
  std::string pool;
  uint32_t capacity = 0;          ///< requests its ready workers may run at once
  uint32_t load = 0;              ///< requests running now
  uint32_t queued = 0;            ///< requests waiting in its queue
  int64_t request_timeout_ms = 0; ///< the pool's default budget of a call

  /// Requests it could start now (0 when full or queueing).
  uint32_t free() const { return queued > 0 || load >= capacity ? 0 : capacity - load; }
};

template<class Inspector>
typename Inspector::result_type inspect(Inspector& f, pool_load& x) {
  return f(caf::meta::type_name("snakepit.pool_load"), x.pool, x.capacity, x.load,
           x.queued, x.request_timeout_ms);
}

/// The first message each side sends on a new connection.
struct node_hello {
  uint32_t protocol = protocol_version;
  std::string node; ///< the sender's name (its listen address for a node)
  std::string version = snakepit_version; ///< for messages only
  std::vector<pool_load> pools;
};

template<class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_hello& x) {
  return f(caf::meta::type_name("snakepit.node_hello"), x.protocol, x.node, x.version,
           x.pools);
}

/// A tool call sent to a node: `execute_request` with its JSON as text and the
/// remaining budget in milliseconds (the node's deadline starts when it arrives).
struct remote_call {
  std::string pool;
  std::string command;
  std::string args_json;
  std::map<std::string, std::string> binary_args;
  std::string session_id;
  std::string affinity;
  std::string correlation_id;
  std::map<std::string, std::string> metadata;
  int64_t budget_ms = 0;
  bool idempotent = false;
};

template<class Inspector>
typename Inspector::result_type inspect(Inspector& f, remote_call& x) {
  return f(caf::meta::type_name("snakepit.remote_call"), x.pool, x.command, x.args_json,
           x.binary_args, x.session_id, x.affinity, x.correlation_id, x.metadata,
           x.budget_ms, x.idempotent);
}

/// The answer to a `remote_call`: a reply (error empty) or the typed error.
struct remote_result {
  caf::error error;
  std::string result_json;
  std::string binary_result;
  std::string worker_id;
  int64_t execution_time_ms = 0;
};

template<class Inspector>
typename Inspector::result_type inspect(Inspector& f, remote_result& x) {
  return f(caf::meta::type_name("snakepit.remote_result"), x.error, x.result_json,
           x.binary_result, x.worker_id, x.execution_time_ms);
}

/// One worker of a node's pool (`worker_info` across the wire).
struct remote_worker {
  std::string id;
  int32_t pid = 0;
  std::string state;
  uint64_t requests = 0;
  int64_t uptime_ms = 0;
  uint64_t load = 0;
  uint64_t capacity = 1;
  bool tainted = false;
};

template<class Inspector>
typename Inspector::result_type inspect(Inspector& f, remote_worker& x) {
  return f(caf::meta::type_name("snakepit.remote_worker"), x.id, x.pid, x.state,
           x.requests, x.uptime_ms, x.load, x.capacity, x.tainted);
}

/// A node pool's figures (`pool_stats` and its workers across the wire): the
/// counters, the latency histogram as its non-empty buckets (so that the host
/// merges several nodes' exactly), and every worker.
struct remote_pool_figures {
  std::string pool;
  /// workers, starting, available, busy, in_flight, capacity, requests, direct,
  /// completed, errors, queued, queue_depth, queue_timeouts, saturations,
  /// worker_crashes, restarts, recycles: `pool_stats`'s order.
  std::vector<uint64_t> counters;
  std::vector<uint32_t> latency_buckets;
  std::vector<uint64_t> latency_counts;
  uint64_t latency_sum_us = 0;
  uint64_t latency_min_us = 0;
  uint64_t latency_max_us = 0;
  std::vector<remote_worker> workers;
};

template<class Inspector>
typename Inspector::result_type inspect(Inspector& f, remote_pool_figures& x) {
  return f(caf::meta::type_name("snakepit.remote_pool_figures"), x.pool, x.counters,
           x.latency_buckets, x.latency_counts, x.latency_sum_us, x.latency_min_us,
           x.latency_max_us, x.workers);
}

/// A pool's stats and workers to send.
remote_pool_figures to_remote(const pool_stats& stats,
                              const std::vector<worker_info>& workers);

/// The stats of a node's pool; `protocol_error` when the counters are not all there.
caf::expected<pool_stats> stats_of(const remote_pool_figures& x);

/// The workers of a node's pool, their ids prefixed with "<node>/" (ids are unique
/// within one pool on one node only).
std::vector<worker_info> workers_of(const remote_pool_figures& x,
                                    const std::string& node);

/// Registers the types above (and our error category) with a system that talks to
/// other nodes.
void register_wire_types(caf::actor_system_config& cfg);

/// Makes `cfg` a system that talks to other nodes: loads CAF's middleman, registers
/// the types above, and turns on BASP heartbeats every `heartbeat` with a
/// connection that stays silent for `silence` closed (a stopped or cut-off peer
/// then counts as gone; `heartbeat` zero: neither). With `tls` enabled it also
/// loads CAF's openssl module with its files: every node connection of the system
/// is then mutual TLS (check the files with `check_tls` first: CAF reads them only
/// at the first connection, and a bad key aborts the process there).
void prepare_distributed_system(caf::actor_system_config& cfg,
                                std::chrono::milliseconds heartbeat,
                                std::chrono::milliseconds silence,
                                const tls_config& tls = {});

/// Checks `tls` the way OpenSSL will use it: the certificate chain and the key load
/// (with the passphrase), the key matches the certificate, the CA file loads.
/// invalid_config naming the file and OpenSSL's reason; none when TLS is off.
caf::error check_tls(const tls_config& tls);

/// Whether `sys` was prepared with TLS (its openssl module loaded with a
/// certificate: peers are authenticated).
bool uses_tls(caf::actor_system& sys);

/// The actor that connects to other nodes: the openssl module's for a TLS system,
/// else the middleman's.
caf::actor connector(caf::actor_system& sys);

/// `req` to send, with `budget` left of its deadline.
remote_call to_remote(const execute_request& req, std::chrono::milliseconds budget);

/// The request a node runs; `invalid_argument` when the arguments are not a JSON
/// object, `protocol_error` when the budget is not positive.
caf::expected<execute_request> from_remote(const remote_call& call);

/// `res` to send back.
remote_result to_remote(const execute_result& res);

/// The caller's result; `protocol_error` when a reply's JSON does not parse.
execute_result from_remote(const remote_result& res);

/// Splits "host:port" ("[::1]:port" for IPv6); invalid_config for anything else.
caf::expected<std::pair<std::string, uint16_t>> parse_address(const std::string& text);

/// Whether `host` is a loopback address (127.0.0.0/8, ::1, localhost).
bool is_loopback(const std::string& host);

/// Refuses a peer of another protocol version with `protocol_error`, naming both.
caf::error check_hello(const node_hello& theirs);

} // namespace snakepit::distribution
