// The actor API of streaming calls (upstream execute_stream with a pid as the
// callback): chunks go to the host actor as messages, with or without flow
// control. Fed on the gRPC thread, so they only ever `anon_send`.
#pragma once

#include <algorithm>
#include <mutex>

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

/// The actor API with flow control: at most `window` chunks are sent to the host
/// actor and not yet acknowledged (stream_ack_atom); at the limit no further chunk
/// is read from the worker, so HTTP/2 flow control holds the Python producer back
/// instead of the host actor's mailbox growing.
class windowed_actor_stream_sink final : public stream_sink {
 public:
  windowed_actor_stream_sink(caf::actor dest, uint64_t id, uint32_t window)
    : dest_(std::move(dest)), id_(id), window_(window) {}

  adapters::stream_step on_chunk(json chunk, bool is_final) override {
    std::lock_guard<std::mutex> guard{mtx_};
    if (halted_)
      return adapters::stream_step::halt;
    caf::anon_send(dest_, stream_chunk_atom::value, id_, std::move(chunk), is_final);
    if (++outstanding_ >= window_) {
      paused_ = true;
      return adapters::stream_step::pause;
    }
    return adapters::stream_step::more;
  }

  void on_end(caf::error err) override {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      // A halt cancels the RPC on purpose: a clean end for the host, unless it
      // was the deadline.
      if (halted_ && err == errc::cancelled)
        err = expired_
                ? caf::make_error(errc::timeout, "stream did not end within its budget")
                : caf::error{};
    }
    caf::anon_send(dest_, stream_end_atom::value, id_, std::move(err));
  }

  void attach(adapters::stream_control ctl) override {
    std::lock_guard<std::mutex> guard{mtx_};
    control_ = std::move(ctl);
    if (halted_)
      stop_locked();
  }

  /// The host consumed `n` chunks.
  void ack(uint32_t n) {
    std::lock_guard<std::mutex> guard{mtx_};
    outstanding_ -= std::min(n, outstanding_);
    if (paused_ && outstanding_ < window_) {
      paused_ = false;
      control_.resume();
    }
  }

  /// Cancels the RPC (`expired`: because its deadline passed).
  void halt(bool expired) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (halted_)
      return;
    halted_ = true;
    expired_ = expired;
    stop_locked();
  }

 private:
  void stop_locked() {
    control_.cancel();
    if (paused_) {
      paused_ = false;
      control_.resume(); // the pending read fails after the cancel; the stream ends
    }
  }

  caf::actor dest_;
  uint64_t id_;
  uint32_t window_;
  std::mutex mtx_;
  adapters::stream_control control_;
  uint32_t outstanding_ = 0;
  bool paused_ = false;
  bool halted_ = false;
  bool expired_ = false;
};

} // namespace snakepit::actors::detail
