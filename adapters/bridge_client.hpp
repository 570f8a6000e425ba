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

#include <nlohmann/json.hpp>

#include "adapters/errors.hpp"
#include <caf/error.hpp>
#include <caf/expected.hpp>

namespace snakepit::adapters {

/// One tool invocation.
struct tool_call {
  /// Session the call belongs to ("" for none).
  std::string session_id;
  /// Name of the tool on the worker.
  std::string tool_name;
  /// Arguments: each member becomes one parameter (JSON text in an Any).
  nlohmann::json args = nlohmann::json::object();
  /// Raw byte arguments (ExecuteToolRequest.binary_parameters).
  std::map<std::string, std::string> binary_args;
  /// Request metadata (e.g. "thread_sensitive", "binary_format:<name>").
  std::map<std::string, std::string> metadata;
  /// Sent as metadata "correlation_id" and header "x-snakepit-correlation-id" if
  /// non-empty.
  std::string correlation_id;
};

/// A successful tool result.
struct tool_reply {
  /// The decoded result (JSON value of Any.value).
  nlohmann::json result;
  /// Last segment of the result's type_url, e.g. "map", "float", "tensor.binary" ->
  /// "binary".
  std::string result_type;
  /// Raw bytes (binary_result), empty if none.
  std::string binary_result;
  /// Response metadata.
  std::map<std::string, std::string> metadata;
  /// Execution time as reported by the worker.
  int64_t execution_time_ms = 0;
};

/// One event a worker relays through StreamTelemetry (upstream `TelemetryEvent`).
struct python_event {
  /// Dotted name as the worker sent it (`event_parts` joined by '.').
  std::string name;
  /// Numbers (int or float) and strings, by key.
  nlohmann::json measurements = nlohmann::json::object();
  /// String metadata.
  std::map<std::string, std::string> metadata;
  /// When the worker emitted it (ns since the epoch; 0 if not sent).
  int64_t timestamp_ns = 0;
  /// The request it belongs to ("" for none).
  std::string correlation_id;
};

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
/// even if the handle is dropped.
/// What a stream consumer wants after a chunk.
enum class stream_step { more, pause, halt };

/// What a host may tell a worker's StreamTelemetry (upstream `TelemetryControl`):
/// switch relaying on or off, sample events, filter them by name (fnmatch patterns).
struct telemetry_control {
  /// TelemetryToggle: the worker drops its events while off.
  bool enabled = true;
  /// TelemetrySamplingUpdate: the share of events kept, in [0, 1], for the events
  /// matching `sampling_patterns` (all when empty).
  double sampling_rate = 1.0;
  std::vector<std::string> sampling_patterns;
  /// TelemetryEventFilter: only names matching one of `allow` (all when empty) and
  /// none of `deny`.
  std::vector<std::string> allow;
  std::vector<std::string> deny;
};

/// Handle to one stream's flow control; cheap to copy; safe from any thread, also
/// after the stream ended (then it does nothing).
class stream_control {
 public:
  /// Reads the next chunk if the stream is paused (or will be paused next).
  void resume() const;
  /// Cancels the stream; `done` fires once with `errc::cancelled`.
  void cancel() const;
  /// StreamTelemetry only: sends `ctl` to the worker as three TelemetryControl
  /// messages (toggle, sampling, filter), written in order after those sent before;
  /// does nothing on other streams or once the stream ended.
  void send(const telemetry_control& ctl) const;

  struct impl;
  std::shared_ptr<impl> impl_;
};

class bridge_client {
 public:
  /// An empty handle; every call fails with errc::internal.
  bridge_client() = default;
  /// `target` is "unix:<path>", an absolute socket path ("/..." becomes "unix:/..."),
  /// or "host:port". Connecting is lazy: nothing blocks here.
  bridge_client(grpc_runtime& runtime, std::string target);

  /// The gRPC target string actually used.
  const std::string& target() const;

  /// Ping RPC; yields the worker's reply message.
  void ping(std::string message, std::chrono::milliseconds timeout,
            std::function<void(caf::expected<std::string>)> done);

  /// ExecuteTool RPC. In-band failures become tool_error / unknown_tool /
  /// invalid_argument.
  void execute(tool_call call, std::chrono::milliseconds timeout,
               std::function<void(caf::expected<tool_reply>)> done);

  /// ExecuteTool on the calling thread: the same request, reply and errors as
  /// `execute`, without the completion thread (the direct lane of a blocking
  /// caller, docs/architecture.md). Blocks until the reply, the deadline, or
  /// `cancel_all`; never call it from a CAF scheduler or gRPC runtime thread.
  caf::expected<tool_reply> call(const tool_call& call,
                                 std::chrono::milliseconds timeout);

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
                 std::function<void(caf::error)> done);

  /// StreamTelemetry RPC, open until the worker ends it or `cancel()` is called on the
  /// returned control (no deadline). `on_event` gets every relayed event on a runtime
  /// thread; `done` fires once: none after the worker ended the stream, cancelled after
  /// `cancel()`, else the mapped error (unimplemented for a worker without telemetry).
  /// `stream_control::send` writes control messages on it.
  stream_control stream_telemetry(std::function<void(python_event)> on_event,
                                  std::function<void(caf::error)> done);

  /// TryCancel every in-flight call of this client (blocking `call`s included); their
  /// callbacks still fire exactly once, with errc::cancelled (unless they completed
  /// first).
  void cancel_all();

  /// Number of this client's calls started and not yet completed.
  size_t in_flight() const;

 private:
  std::shared_ptr<detail::client_state> state_;
};

} // namespace snakepit::adapters
