// The pool's worker table: one record per worker id, which survives restarts of
// the worker (OTP's `#child{}` in supervisor.erl), holding at most one live
// incarnation (the worker actor that announced itself ready, with its slot in the
// checkout table). Taint, recycling and membership live in the record, once.
//
//   worker_table t;
//   auto& rec = t.add("default_worker_1");        // a start was asked for
//   auto& inc = t.make_live(rec, ready);          // its worker_ready arrived
//   t.offered_ids();                              // ready workers offered new work
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <caf/actor.hpp>

#include "actors/pool/direct_lane.hpp"

namespace snakepit::actors::detail {

using pool_time = std::chrono::steady_clock::time_point;

/// Why a worker is being recycled ("ttl", "max_requests", "memory", "manual").
struct recycle_info {
  std::string reason;
  uint64_t rss_bytes = 0;
};

/// One ready incarnation of a worker: a worker actor that completed its
/// handshake. A restart under the same id is a new incarnation (new serial).
struct worker_incarnation {
  /// Tells incarnations of one id apart (session bindings, stale downs).
  uint64_t serial = 0;
  caf::actor handle;
  int pid = 0;
  /// Its row in the checkout table: load (requests in flight through either
  /// path), requests served, last use; claimed by compare-and-swap.
  lane_slot_ptr slot;
  size_t capacity = 1;
  pool_time ready_at{};
  /// Recycle after this many requests (0: never); drawn with jitter per worker.
  uint64_t request_limit = 0;

  uint32_t load() const { return slot->load.load(); }
  bool has_room() const { return load() < capacity; }
  uint64_t served() const { return slot->requests.load(); }
};

/// One worker id of the pool, from the start request until it is retired and gone.
struct worker_record {
  std::string id;
  /// Its starter runs under worker_sup on this pool's behalf (false once retired).
  bool member = true;
  /// It was ready at least once (a later ready is a restart).
  bool ever_ready = false;
  /// The ready incarnation, if any.
  std::optional<worker_incarnation> live;
  /// Crash barrier: offered no new work before this while untainted workers serve.
  pool_time tainted_until{};
  /// Being recycled: serves until its replacement is ready.
  std::optional<recycle_info> recycling;
  /// Recycled and its replacement is ready: takes no new work, retires when idle.
  bool replaced = false;
  /// This worker is the replacement of a recycled one (until it is ready).
  std::string replaces;
  /// Chosen to go by a shrinking resize: takes no new work, retires when idle.
  bool leaving = false;
  /// How its process last died (exit code, signal), until its down arrives.
  std::optional<std::pair<int, int>> exit;

  bool tainted(pool_time now) const { return tainted_until > now; }
  /// On its way out (replaced by a recycle, or resized away): serves only what is
  /// pinned to it and retires once idle.
  bool retiring() const { return replaced || leaving; }
};

/// Every worker of one pool, by id, and the ready ones in the order they became
/// ready (round robin among equals).
class worker_table {
 public:
  /// A new worker id (a start is being asked for).
  worker_record& add(const std::string& id);
  worker_record* find(const std::string& id);
  const worker_record* find(const std::string& id) const;
  /// The live incarnation of `id`, or null.
  worker_incarnation* live(const std::string& id);
  /// Drops the record if it is neither a member nor live.
  void forget_if_gone(const std::string& id);

  /// Makes `inc` the live incarnation of `rec` (a previous one is withdrawn from
  /// the checkout table first) and puts the worker in the ready order.
  worker_incarnation& make_live(worker_record& rec, worker_incarnation inc);
  /// The live incarnation of `rec` is gone.
  void drop_live(worker_record& rec);
  /// Takes the worker out of the ready order (recycled) or puts it back.
  void withdraw(const std::string& id);
  void reinstate(const std::string& id);

  /// Ready workers that are in the order (not replaced), oldest first.
  const std::vector<std::string>& ready_order() const { return order_; }
  /// Every record, by id.
  const std::map<std::string, worker_record>& records() const { return records_; }
  std::map<std::string, worker_record>& records() { return records_; }

  /// Live workers (ready, replaced ones included).
  size_t live_count() const { return live_count_; }
  /// Members (starters running for this pool).
  size_t member_count() const;
  /// Workers being recycled.
  size_t recycling_count() const;
  /// Members chosen to go by a shrinking resize.
  size_t leaving_count() const;
  /// Whether any taint is set (a cheap test before the per-worker one).
  bool any_taint(pool_time now) const;
  /// Whether any worker in the ready order is free of taint.
  bool untainted_ready(pool_time now) const;

  /// The slots of the ready order, when it changed since the last call.
  std::optional<std::vector<lane_slot_ptr>> take_published_slots();

  uint64_t next_serial() { return ++serial_; }

 private:
  std::map<std::string, worker_record> records_;
  std::vector<std::string> order_;
  size_t live_count_ = 0;
  uint64_t serial_ = 0;
  bool dirty_ = false;
};

} // namespace snakepit::actors::detail
