// Asynchronous gRPC client to ONE Python worker's BridgeService, driven by a completion
// queue on threads the runtime owns; results come back through callbacks.
// Mirrors upstream Snakepit's `Snakepit.GRPC.Client` / `client_impl.ex` (ping,
// execute_tool, execute_streaming_tool). No gRPC or protobuf header is included here
// (pimpl).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "adapters/connection.hpp"

namespace snakepit::adapters {

namespace detail {
struct runtime_state;
struct client_state;
} // namespace detail

/// Owns one grpc::CompletionQueue and its poller thread(s). Every callback of every
/// bridge_client created on it runs on these threads. Not copyable, not movable.
class grpc_runtime {
 public:
  /// Starts `threads` poller threads (at least one).
  explicit grpc_runtime(size_t threads = 1);
  /// Calls shutdown().
  ~grpc_runtime();
  grpc_runtime(const grpc_runtime&) = delete;
  grpc_runtime& operator=(const grpc_runtime&) = delete;

  /// Cancels every in-flight call (callbacks fire with errc::shutting_down), drains the
  /// queue and joins the threads. Idempotent. Blocks: never call it from a callback or a
  /// CAF scheduler thread of a running actor (called from a callback it only cancels).
  void shutdown();

  /// Number of calls started and not yet completed.
  size_t in_flight() const;

  /// Implementation access for bridge_client.
  const std::shared_ptr<detail::runtime_state>& state() const { return state_; }

 private:
  std::shared_ptr<detail::runtime_state> state_;
};

/// Client for one worker endpoint. A cheap, movable handle (shared state inside); many
/// calls may be in flight at once (HTTP/2 multiplexing). Every callback fires EXACTLY
/// once, on a runtime thread; after the runtime shut down it fires at once on the
/// caller's thread with errc::shutting_down. In-flight calls keep the connection alive
/// even if the handle is dropped. As a `worker_connection` it is the gRPC kind's.
class bridge_client final : public worker_connection {
 public:
  /// An empty handle; every call fails with errc::internal.
  bridge_client() = default;
  /// `target` is "unix:<path>", an absolute socket path ("/..." becomes "unix:/..."),
  /// or "host:port". Connecting is lazy: nothing blocks here.
  bridge_client(grpc_runtime& runtime, std::string target);

  /// The gRPC target string actually used.
  const std::string& target() const override;

  /// Ping RPC; yields the worker's reply message.
  void ping(std::string message, std::chrono::milliseconds timeout,
            std::function<void(caf::expected<std::string>)> done) override;

  /// ExecuteTool RPC. In-band failures become tool_error / unknown_tool /
  /// invalid_argument.
  void execute(tool_call call, std::chrono::milliseconds timeout,
               std::function<void(caf::expected<tool_reply>)> done) override;

  /// ExecuteTool on the calling thread: the same request, reply and errors as
  /// `execute`, without the completion thread (the direct lane of a blocking
  /// caller, docs/architecture.md). Blocks until the reply, the deadline, or
  /// `cancel_all`; never call it from a CAF scheduler or gRPC runtime thread.
  caf::expected<tool_reply> call(const tool_call& call,
                                 std::chrono::milliseconds timeout) override;

  /// ExecuteStreamingTool RPC. `on_chunk` gets each decoded chunk (see decode_chunk) and
  /// returns false to halt, which cancels the RPC; `done` then fires with no error.
  /// `done` gets none after a clean end of stream, else the mapped error.
  void execute_stream(tool_call call, std::chrono::milliseconds timeout,
                      std::function<bool(nlohmann::json chunk, bool is_final)> on_chunk,
                      std::function<void(caf::error)> done);

  /// The same with end-to-end flow control: `on_chunk` may return
  /// `stream_step::pause`, after which no further chunk is read from the worker (so
  /// HTTP/2 flow control holds the producer back) until `stream_control::resume()`.
  /// `stream_control::cancel()` ends the stream early (`done` gets `cancelled`).
  stream_control
  execute_stream(tool_call call, std::chrono::milliseconds timeout,
                 std::function<stream_step(nlohmann::json chunk, bool is_final)> on_chunk,
                 std::function<void(caf::error)> done) override;

  /// StreamTelemetry RPC, open until the worker ends it or `cancel()` is called on the
  /// returned control (no deadline). `on_event` gets every relayed event on a runtime
  /// thread; `done` fires once: none after the worker ended the stream, cancelled after
  /// `cancel()`, else the mapped error (unimplemented for a worker without telemetry).
  /// `stream_control::send` writes control messages on it.
  stream_control stream_telemetry(std::function<void(python_event)> on_event,
                                  std::function<void(caf::error)> done) override;

  /// TryCancel every in-flight call of this client (blocking `call`s included); their
  /// callbacks still fire exactly once, with errc::cancelled (unless they completed
  /// first).
  void cancel_all() override;

  /// Number of this client's calls started and not yet completed.
  size_t in_flight() const override;

 private:
  std::shared_ptr<detail::client_state> state_;
};

} // namespace snakepit::adapters
