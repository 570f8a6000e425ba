// The runtime's two HTTP endpoints: the opt-in, read-only Prometheus metrics
// endpoint (`config::metrics.address`) and the control socket
// `<runtime dir>/control.sock` that `snakepit stats` / `workers` / `scale` talk to. Both
// answer on their own thread by asking the pools with a timeout; no CAF scheduler thread
// ever waits on a socket.
#pragma once

#include <memory>
#include <string>

#include <caf/expected.hpp>

#include "actors/config/config.hpp"
#include "adapters/http_server.hpp"

namespace snakepit {
class runtime;
} // namespace snakepit

namespace snakepit::actors {

/// The endpoints a runtime serves (each may be absent).
struct control_servers {
  std::unique_ptr<adapters::http_server> metrics;
  std::unique_ptr<adapters::http_server> control;

  /// Stops both (joins their threads; the socket file goes). Idempotent.
  void stop();
};

/// Starts what `cfg` asks for, answering from `rt`. Errors: start_failed when an
/// address cannot be bound, invalid_config for a malformed one.
caf::expected<control_servers> start_control_servers(runtime& rt, const config& cfg);

/// The answer to a request on the control socket (`control` = true: GET /stats,
/// /workers, /metrics, /health; POST /scale?pool=P&size=N resizes pool P) or on the
/// metrics endpoint (GET /metrics, /health). Only the control socket (a private
/// unix socket, mode 0600) changes anything.
adapters::http_response answer(runtime& rt, const adapters::http_request& req,
                               bool control);

} // namespace snakepit::actors
