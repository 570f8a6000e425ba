// The actor API of streaming calls (upstream execute_stream with a pid as the
// callback): chunks go to the host actor as messages, with or without flow
// control. Fed on the gRPC thread, so they only ever `anon_send`.
#pragma once

#include <caf/actor.hpp>
#include <caf/send.hpp>

#include "actors/atoms.hpp"
#include "actors/pool/stream_sink.hpp"
#include "adapters/errors.hpp"

namespace snakepit::actors::detail {

/// Sends the chunks of a stream to a host actor (the actor API of execute_stream).
class actor_stream_sink final : public stream_sink {
 public:
  explicit actor_stream_sink(caf::actor dest) : dest_(std::move(dest)) {}

  adapters::stream_step on_chunk(json chunk, bool is_final) override {
    caf::anon_send(dest_, stream_chunk_atom::value, std::move(chunk), is_final);
    return adapters::stream_step::more;
  }

  void on_end(caf::error err) override {
    caf::anon_send(dest_, stream_end_atom::value, std::move(err));
  }

  void attach(adapters::stream_control) override {}

 private:
  caf::actor dest_;
};

/// The actor API with flow control: chunks and the end go to the host actor with the
/// stream's id; it acknowledges them with stream_ack_atom.
class windowed_actor_stream_sink final : public windowed_stream_sink {
 public:
  windowed_actor_stream_sink(caf::actor dest, uint64_t id, uint32_t window)
    : windowed_stream_sink(window), dest_(std::move(dest)), id_(id) {}

 protected:
  void emit_chunk(json chunk, bool is_final) override {
    caf::anon_send(dest_, stream_chunk_atom::value, id_, std::move(chunk), is_final);
  }

  void emit_end(caf::error err) override {
    caf::anon_send(dest_, stream_end_atom::value, id_, std::move(err));
  }

 private:
  caf::actor dest_;
  uint64_t id_;
};

} // namespace snakepit::actors::detail
