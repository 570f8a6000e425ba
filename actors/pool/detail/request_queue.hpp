// The pool's requests that are not running: the FIFO queue (upstream Pool's
// `:queue` with its per-request `{:queue_timeout, ...}`), idempotent calls parked
// for their retry backoff, and the requests running on workers (with what to run
// again if their worker crashes).
//
//   request_queue q;
//   q.push_back(std::move(p));                    // waits for a worker
//   auto p = q.take(id);                          // its queue timer fired
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include <caf/actor_addr.hpp>

#include "actors/pool/detail/reply.hpp"
#include "actors/pool/detail/worker_table.hpp"
#include "actors/types.hpp"
#include "actors/worker/request_trace.hpp"

namespace snakepit::actors::detail {

/// A request the pool accepted and has not dispatched yet.
struct pending_request {
  uint64_t id = 0;
  execute_request req;
  reply_sink out;
  pool_time deadline{};
  pool_time accepted{};
  /// The actor that asked (monitored while it waits; null for the facade).
  caf::actor_addr caller;
  /// strict_queue: only this worker may run it (empty: any worker).
  std::string pinned_worker;
  /// Retries so far (idempotent requests whose worker crashed).
  int attempt = 0;

  const std::string& correlation_id() const { return req.opts.correlation_id; }

  /// As its events name it; no worker yet.
  request_ident ident() const { return {req.command, {}, req.opts.correlation_id}; }
};

/// A request running on a worker.
struct inflight_request {
  std::string worker_id;
  /// The incarnation it runs on (a restarted worker under the same id is another).
  uint64_t serial = 0;
  reply_sink out;
  pool_time started{};
  /// For idempotent calls: what to run again if the worker crashes (its `out`
  /// is empty; the live sink is the one above).
  std::shared_ptr<pending_request> retry;
  /// Command, worker and correlation id, for its stop event and its error.
  request_ident ident;
};

/// The waiting requests in FIFO order, found by id in O(1).
class request_queue {
 public:
  using list_type = std::list<pending_request>;
  using iterator = list_type::iterator;

  bool empty() const { return queue_.empty(); }
  size_t size() const { return queue_.size(); }
  iterator begin() { return queue_.begin(); }
  iterator end() { return queue_.end(); }

  void push_back(pending_request p);
  /// A retry goes first in line.
  void push_front(pending_request p);
  /// Removes `pos` and returns the request; `pos` moves to the next one.
  pending_request take(iterator& pos);
  /// Removes the request `id` if it still waits.
  std::optional<pending_request> take(uint64_t id);
  /// Removes every request for which `pred` holds, handing each to `fn`.
  void take_if(const std::function<bool(const pending_request&)>& pred,
               const std::function<void(pending_request&)>& fn);
  /// Removes every request, handing each to `fn`.
  void take_all(const std::function<void(pending_request&)>& fn);

 private:
  list_type queue_;
  std::unordered_map<uint64_t, iterator> index_;
};

} // namespace snakepit::actors::detail
