// Exactly-once reply slot for calls made through the facade's callback path. The
// pool and the gRPC completion thread share it: whoever claims it first answers the
// caller, so a result can go straight from the gRPC thread to the caller (one
// thread hop fewer) while the pool can still fail the call when its worker dies.
#pragma once

#include <atomic>
#include <memory>

#include <caf/allowed_unsafe_message_type.hpp>

#include "actors/pool/direct_lane.hpp"
#include "actors/types.hpp"

namespace snakepit::actors {

struct reply_slot {
  execute_callback fn;
  /// Set by the caller when it stops waiting: a queued request is then dropped.
  std::shared_ptr<std::atomic<bool>> abandoned;
  std::atomic<bool> claimed{false};
  /// The worker's row in the checkout table (set at dispatch): whoever answers from
  /// the gRPC thread gives its capacity back first, so the caller's next call finds
  /// the worker free even on the direct lane; the pool then does not release again.
  lane_slot_ptr lane;
  std::atomic<bool> lane_released{false};

  /// Frees the worker's capacity for this call (once).
  void release_lane() noexcept {
    if (lane && !lane_released.exchange(true))
      lane->release();
  }

  /// True for exactly one caller.
  bool claim() noexcept { return !claimed.exchange(true, std::memory_order_acq_rel); }

  /// Answers the caller unless someone already did; true if this call answered.
  bool deliver(execute_result res) {
    if (!claim())
      return false;
    if (fn)
      fn(std::move(res));
    return true;
  }
};

using reply_slot_ptr = std::shared_ptr<reply_slot>;

} // namespace snakepit::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::actors::reply_slot_ptr)
