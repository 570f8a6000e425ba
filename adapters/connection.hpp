// What the pool and the worker actor need of the connection to one worker process,
// whatever carries it: gRPC (bridge_client.hpp) or framed JSON over the process's
// stdin/stdout (stdio_client.hpp). Upstream's GRPCWorker talks to `Snakepit.GRPC.Client`
// only; its seed's stdio workers (`Snakepit.Adapter`, `uses_grpc?` false) are this
// interface's second implementation. No gRPC, protobuf or CAF actor header here.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <nlohmann/json.hpp>

#include "adapters/errors.hpp"

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
  /// What a transport puts behind the handle.
  struct backend {
    virtual ~backend() = default;
    /// See `stream_control::resume`.
    virtual void resume() = 0;
    /// See `stream_control::cancel`.
    virtual void cancel() = 0;
    /// See `stream_control::send`; transports without telemetry ignore it.
    virtual void send(const telemetry_control&) {}
  };

  /// A handle that controls nothing.
  stream_control() = default;
  /// A handle to `impl`.
  explicit stream_control(std::shared_ptr<backend> impl) : impl_(std::move(impl)) {}

  /// Reads the next chunk if the stream is paused (or will be paused next).
  void resume() const {
    if (impl_)
      impl_->resume();
  }
  /// Cancels the stream; `done` fires once with `errc::cancelled`.
  void cancel() const {
    if (impl_)
      impl_->cancel();
  }
  /// StreamTelemetry only: sends `ctl` to the worker as three TelemetryControl
  /// messages (toggle, sampling, filter), written in order after those sent before;
  /// does nothing on other streams or once the stream ended.
  void send(const telemetry_control& ctl) const {
    if (impl_)
      impl_->send(ctl);
  }

 private:
  std::shared_ptr<backend> impl_;
};

/// The connection to one worker process. Every callback fires EXACTLY once, on a
/// thread of the transport's runtime (at once on the caller's thread once that runtime
/// shut down); many calls may be in flight at once. Implementations are thread-safe.
class worker_connection {
 public:
  virtual ~worker_connection() = default;

  /// Where the worker is reached ("unix:/...", "127.0.0.1:port", "stdio:<pid>").
  virtual const std::string& target() const = 0;

  /// Readiness and heartbeat check; yields the worker's answer as text.
  virtual void ping(std::string message, std::chrono::milliseconds timeout,
                    std::function<void(caf::expected<std::string>)> done) = 0;

  /// One tool call. In-band failures become tool_error / unknown_tool /
  /// invalid_argument.
  virtual void execute(tool_call call, std::chrono::milliseconds timeout,
                       std::function<void(caf::expected<tool_reply>)> done) = 0;

  /// The same call, waited for on the calling thread (the direct lane of a blocking
  /// caller); never call it from a CAF scheduler or transport thread.
  virtual caf::expected<tool_reply> call(const tool_call& call,
                                         std::chrono::milliseconds timeout) = 0;

  /// A streaming call with flow control: `on_chunk` may return `stream_step::pause`,
  /// after which no further chunk is delivered until `stream_control::resume()`;
  /// `halt` ends the stream (`done` then gets none). `done` gets none after a clean
  /// end, else the error.
  virtual stream_control
  execute_stream(tool_call call, std::chrono::milliseconds timeout,
                 std::function<stream_step(nlohmann::json chunk, bool is_final)> on_chunk,
                 std::function<void(caf::error)> done) = 0;

  /// The worker's event stream (StreamTelemetry), open until the worker ends it or it
  /// is cancelled; transports without one fire `done` at once with `unknown_tool`.
  virtual stream_control stream_telemetry(std::function<void(python_event)> on_event,
                                          std::function<void(caf::error)> done) = 0;

  /// Whether `execute_stream` is supported at all (a stdio bridge declares it).
  virtual bool supports_streaming() const { return true; }

  /// Fails every call in flight (their callbacks fire with `cancelled` unless they
  /// completed first).
  virtual void cancel_all() = 0;

  /// Calls started and not yet completed.
  virtual size_t in_flight() const = 0;

  /// Why the connection broke for good (a stdio worker that broke the protocol or
  /// closed its output); none while it works or when the transport cannot tell.
  virtual caf::error broken() const { return caf::none; }
};

/// A shared connection: the worker actor owns it, the pool and blocking callers
/// borrow it.
using connection_ptr = std::shared_ptr<worker_connection>;

} // namespace snakepit::adapters
