// The init handshake between a supervisor and a child it starts. CAF's spawn
// cannot report init failure, so a child confirms explicitly; this mirrors
// OTP's proc_lib:init_ack, i.e. start_link returning {ok, Pid} or {error, Reason}.
#pragma once

#include <cstdint>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/error.hpp>

namespace snakepit::supervision {

/// Handed to a start function; the child calls exactly one of `ok` / `fail`
/// once it is initialised. Copyable, cheap, callable from any actor or thread.
/// It refers to the receiver weakly, so storing it never keeps a supervisor alive.
class start_ack {
 public:
  /// A no-op acknowledgement (for top-level actors nobody waits for).
  start_ack() = default;

  /// Sends `(ack_atom, ticket, actor)` or `(ack_atom, ticket, error)` to `receiver`.
  start_ack(caf::actor_addr receiver, uint64_t ticket);

  /// The child reports successful initialisation.
  void ok(const caf::actor& self) const;

  /// The child reports init failure; it should quit afterwards.
  void fail(caf::error reason) const;

  /// Correlates acknowledgements with start attempts.
  uint64_t ticket() const noexcept { return ticket_; }

  /// True if somebody waits for this acknowledgement.
  bool wanted() const noexcept { return static_cast<bool>(receiver_); }

 private:
  caf::actor_addr receiver_;
  uint64_t ticket_ = 0;
};

} // namespace snakepit::supervision
