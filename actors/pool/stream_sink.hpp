// Where the chunks of a streaming call go (upstream execute_stream's callback). The
// gRPC thread feeds chunks straight into the sink, which answers with flow control
// (more / pause / halt); the end of the stream is delivered exactly once, either by
// the gRPC thread or by the pool (worker crash, queue timeout, shutdown).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <iterator>
#include <memory>
#include <mutex>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/error.hpp>

#include "actors/types.hpp"
#include "adapters/bridge_client.hpp"
#include "adapters/errors.hpp"

namespace snakepit::actors {

class stream_sink {
 public:
  virtual ~stream_sink() = default;

  /// One chunk, on the gRPC thread, in order. Return `pause` to stop reading from
  /// the worker until `control().resume()`, `halt` to cancel the stream.
  virtual adapters::stream_step on_chunk(json chunk, bool is_final) = 0;

  /// The end of the stream (none after a clean end or a halt).
  virtual void on_end(caf::error err) = 0;

  /// Called by the worker once the RPC started.
  virtual void attach(adapters::stream_control ctl) = 0;

  /// Ends the stream exactly once; true if this call ended it.
  bool end(caf::error err) {
    if (!claim_end())
      return false;
    on_end(std::move(err));
    return true;
  }

  /// Takes the right to end the stream (then call on_end); true for one caller.
  bool claim_end() noexcept { return !ended_.exchange(true); }

  bool ended() const noexcept { return ended_.load(); }

  /// Set by a caller that stopped waiting: a queued stream is dropped.
  std::atomic<bool> abandoned{false};

 private:
  std::atomic<bool> ended_{false};
};

using stream_sink_ptr = std::shared_ptr<stream_sink>;

/// A stream whose consumer acknowledges what it took: at most `window` chunks are
/// out and not yet acknowledged (`ack`); at the limit no further chunk is read from
/// the worker, so HTTP/2 flow control holds the producer back instead of a mailbox
/// (or a connection to another node) filling up. Subclasses say where chunks and
/// the end go; both are called on the transport's thread.
class windowed_stream_sink : public stream_sink {
 public:
  explicit windowed_stream_sink(uint32_t window)
    : window_(std::max<uint32_t>(window, 1)) {}

  adapters::stream_step on_chunk(json chunk, bool is_final) final {
    std::lock_guard<std::mutex> guard{mtx_};
    if (halted_)
      return adapters::stream_step::halt;
    emit_chunk(std::move(chunk), is_final);
    if (++outstanding_ >= window_) {
      paused_ = true;
      return adapters::stream_step::pause;
    }
    return adapters::stream_step::more;
  }

  void on_end(caf::error err) final {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      // A halt cancels the RPC on purpose: a clean end for the consumer, unless it
      // was the deadline.
      if (halted_ && err == errc::cancelled)
        err = expired_
                ? caf::make_error(errc::timeout, "stream did not end within its budget")
                : caf::error{};
    }
    emit_end(std::move(err));
  }

  void attach(adapters::stream_control ctl) final {
    std::lock_guard<std::mutex> guard{mtx_};
    control_ = std::move(ctl);
    if (halted_)
      stop_locked();
  }

  /// The consumer took `n` more chunks.
  void ack(uint32_t n) {
    std::lock_guard<std::mutex> guard{mtx_};
    outstanding_ -= std::min(n, outstanding_);
    if (paused_ && outstanding_ < window_) {
      paused_ = false;
      control_.resume();
    }
  }

  /// Cancels the RPC (`expired`: because its deadline passed); the end follows.
  void halt(bool expired) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (halted_)
      return;
    halted_ = true;
    expired_ = expired;
    stop_locked();
  }

 protected:
  /// Sends one chunk on (under the sink's lock: in order).
  virtual void emit_chunk(json chunk, bool is_final) = 0;
  /// Sends the end on (exactly once).
  virtual void emit_end(caf::error err) = 0;

 private:
  void stop_locked() {
    control_.cancel();
    if (paused_) {
      paused_ = false;
      control_.resume(); // the pending read fails after the cancel; the stream ends
    }
  }

  uint32_t window_;
  std::mutex mtx_;
  adapters::stream_control control_;
  uint32_t outstanding_ = 0;
  bool paused_ = false;
  bool halted_ = false;
  bool expired_ = false;
};

// Streams kept by id and held weakly (whoever runs a stream holds its sink), as the
// pool, a node's gateway and a pool router keep their windowed streams.

/// The sink of stream `id` in `streams` if it still runs; an ended one is forgotten.
template<class Map>
auto find_live(Map& streams, uint64_t id) -> decltype(streams.begin()->second.lock()) {
  auto i = streams.find(id);
  if (i == streams.end())
    return nullptr;
  auto sink = i->second.lock();
  if (!sink)
    streams.erase(i);
  return sink;
}

/// Forgets the streams of `streams` that ended.
template<class Map>
void forget_ended(Map& streams) {
  for (auto i = streams.begin(); i != streams.end();)
    i = i->second.expired() ? streams.erase(i) : std::next(i);
}

} // namespace snakepit::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::actors::stream_sink_ptr)
