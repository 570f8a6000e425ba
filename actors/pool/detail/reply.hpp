// Where the answer to one pool request goes: a CAF response promise (actor
// callers), a reply slot (the facade's callback path, which the gRPC thread may
// answer directly) or a stream sink. The pool core answers through `deliver`
// and never needs to know which kind it holds, except to tell streams apart.
#pragma once

#include <variant>

#include <caf/response_promise.hpp>

#include "actors/pool/reply_slot.hpp"
#include "actors/pool/stream_sink.hpp"
#include "actors/types.hpp"

namespace snakepit::actors::detail {

/// The destination of one request's answer.
using reply_sink = std::variant<caf::response_promise, reply_slot_ptr, stream_sink_ptr>;

/// Answers `out` with `res` (ends a stream with its error, none after success).
inline void deliver(reply_sink& out, execute_result res) {
  if (auto* rp = std::get_if<caf::response_promise>(&out)) {
    if (res)
      rp->deliver(std::move(*res));
    else
      rp->deliver(std::move(res.error()));
  } else if (auto* slot = std::get_if<reply_slot_ptr>(&out)) {
    (*slot)->deliver(std::move(res));
  } else {
    std::get<stream_sink_ptr>(out)->end(res ? caf::error{} : std::move(res.error()));
  }
}

/// Whether the caller stopped waiting (then a queued request never runs).
inline bool abandoned(const reply_sink& out) {
  if (auto* slot = std::get_if<reply_slot_ptr>(&out))
    return (*slot)->abandoned && (*slot)->abandoned->load();
  if (auto* ss = std::get_if<stream_sink_ptr>(&out))
    return (*ss)->abandoned.load();
  return false;
}

inline bool is_stream(const reply_sink& out) {
  return std::holds_alternative<stream_sink_ptr>(out);
}

} // namespace snakepit::actors::detail
