// Where the chunks of a streaming call go (upstream execute_stream's callback). The
// gRPC thread feeds chunks straight into the sink, which answers with flow control
// (more / pause / halt); the end of the stream is delivered exactly once, either by
// the gRPC thread or by the pool (worker crash, queue timeout, shutdown).
#pragma once

#include <atomic>
#include <memory>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/error.hpp>

#include "actors/types.hpp"
#include "adapters/bridge_client.hpp"

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

} // namespace snakepit::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::actors::stream_sink_ptr)
