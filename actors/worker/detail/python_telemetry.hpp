// The relay of a worker's StreamTelemetry (upstream Snakepit.Telemetry.GrpcStream):
// the events its Python process emits go onto the runtime's bus with the pool and
// worker id added, and the host's settings (sampling, filters) go the other way.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "actors/worker/worker.hpp"
#include "adapters/connection.hpp"

namespace snakepit::actors::detail {

/// `snakepit.python.<name>` (a leading `python.` of upstream's names is not doubled).
std::string relay_name(const std::string& name);

/// One worker's StreamTelemetry, open while the worker is ready.
class python_telemetry_relay {
 public:
  /// Opens the stream on `client` when the runtime has a bus, and writes the
  /// settings the host chose earlier (they apply to a restarted worker too).
  void open(adapters::worker_connection& client, const worker_args& args);

  /// Writes the current settings of `worker_env` on the stream.
  void apply_settings(const worker_env& env) const;

  /// Ends the stream (its end arrives later, on a gRPC thread).
  void close() const;

  /// Whether the stream is open (until its end arrived).
  bool is_open() const { return open_ && open_->load(); }

 private:
  adapters::stream_control stream_;
  std::shared_ptr<std::atomic<bool>> open_;
};

} // namespace snakepit::actors::detail
