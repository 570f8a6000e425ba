#include "supervision/start_ack.hpp"

#include <caf/actor_cast.hpp>
#include <caf/send.hpp>

#include "supervision/atoms.hpp"

namespace snakepit::supervision {

start_ack::start_ack(caf::actor_addr receiver, uint64_t ticket)
  : receiver_(std::move(receiver)), ticket_(ticket) {
  // nop
}

void start_ack::ok(const caf::actor& self) const {
  // A receiver that is gone no longer cares; promoting the weak handle fails.
  if (auto dst = caf::actor_cast<caf::actor>(receiver_))
    caf::anon_send(dst, ack_atom::value, ticket_, self);
}

void start_ack::fail(caf::error reason) const {
  if (auto dst = caf::actor_cast<caf::actor>(receiver_))
    caf::anon_send(dst, ack_atom::value, ticket_, std::move(reason));
}

} // namespace snakepit::supervision
