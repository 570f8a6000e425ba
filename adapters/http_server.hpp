// A minimal HTTP/1.1 server for GET, HEAD and POST requests, on a TCP or unix socket,
// with its own thread: one poll loop reads every open connection at once (one request
// each), and the handler answers complete requests in turn. Each request is bounded in
// size, header count, body and time (http_limits), so a slow or huge request holds
// neither the thread nor memory. It serves the Prometheus metrics endpoint and the
// control socket; neither needs more. Plus the matching client for unix sockets (the
// CLI's `stats`, `workers` and `scale`).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <caf/expected.hpp>

namespace snakepit::adapters {

/// What a handler answers.
struct http_response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

/// What one request may take; past a limit the server answers the status named and
/// closes the connection (docs/observability.md, "Limits of the endpoints").
struct http_limits {
  /// Request line plus headers, in bytes (431 beyond).
  size_t max_head_bytes = 16 * 1024;
  /// Header lines (431 beyond).
  size_t max_headers = 100;
  /// Content-Length of a body (413 beyond; a chunked body gets 501). A body within it
  /// is read and dropped: nothing served needs one.
  size_t max_body_bytes = 1024 * 1024;
  /// From the connection's accept to its complete request, and again to send the
  /// reply (408 when the request is not complete by then). A client dripping bytes
  /// gains nothing: this is a deadline, not an idle timer.
  std::chrono::milliseconds request_timeout{5000};
  /// Connections open at once; one more closes the oldest still sending its request
  /// (503) rather than wait for it.
  size_t max_connections = 64;
};

/// What a handler is asked. Request bodies are not passed on (nothing served needs one).
struct http_request {
  std::string method; ///< "GET", "HEAD" or "POST" (others are refused with 405)
  std::string path;   ///< the target without its query string
  std::string query;  ///< after the '?', not decoded; empty if none

  /// The value of `key` in the query ("a=1&b=2"), if present.
  std::optional<std::string> param(const std::string& key) const;
};

/// Reads a request head (the bytes up to and including the blank line, or whatever
/// the client sent before it gave up): the request for the handler, or the response
/// that refuses it (400 for a malformed request line, 405 for another method). Pure,
/// so that it can be fuzzed (tests/fuzz).
std::variant<http_request, http_response> parse_http_request(std::string_view head);

/// Called on the server's thread; it may block briefly (it asks actors with a
/// timeout), never on a CAF thread. A HEAD request's body is dropped.
using http_handler = std::function<http_response(const http_request& req)>;

/// A listening server; stops (and joins its thread) on `stop()` or destruction.
class http_server {
 public:
  /// Listens on TCP `address` = "host:port" (IPv6 as "[::1]:port"; port 0 picks a
  /// free one). Errors: invalid_config for a malformed address, start_failed when
  /// the address cannot be bound.
  static caf::expected<std::unique_ptr<http_server>>
  listen_tcp(const std::string& address, http_handler handler, http_limits limits = {});

  /// Listens on a unix socket at `path` (created with mode 0600, removed on stop).
  static caf::expected<std::unique_ptr<http_server>>
  listen_unix(const std::string& path, http_handler handler, http_limits limits = {});

  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  /// Stops accepting, finishes the request being answered, joins the thread.
  /// Idempotent.
  void stop();

  /// The bound address: "host:port" with the real port, or the socket path.
  const std::string& address() const;

  struct impl;

 private:
  explicit http_server(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// A reply read by `http_get_unix`.
struct http_reply {
  int status = 0;
  std::string body;
};

/// Parses a whole reply as `http_request_unix` reads it (to EOF). Errors: internal for
/// a malformed reply (`origin` names the server in the message).
caf::expected<http_reply> parse_http_reply(std::string_view reply,
                                           const std::string& origin);

/// Sends `method target` to the server on the unix socket `path` (connect, send,
/// read to EOF within `timeout`). Errors: unavailable when nothing listens there,
/// timeout, internal for a malformed reply.
caf::expected<http_reply> http_request_unix(const std::string& path,
                                            const std::string& method,
                                            const std::string& target,
                                            std::chrono::milliseconds timeout);

/// `http_request_unix(path, "GET", target, timeout)`.
caf::expected<http_reply> http_get_unix(const std::string& path,
                                        const std::string& target,
                                        std::chrono::milliseconds timeout);

} // namespace snakepit::adapters
