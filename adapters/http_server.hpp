// A minimal HTTP/1.1 server for GET, HEAD and body-less POST requests, on a TCP or
// unix socket, with its own thread (poll-based; one request per connection,
// answered in turn). It serves the Prometheus metrics endpoint and the control
// socket; neither needs more. Plus the matching client for unix sockets (the CLI's
// `stats`, `workers` and `scale`).
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

/// What a handler is asked. Request bodies are not read (nothing served needs one).
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
  listen_tcp(const std::string& address, http_handler handler);

  /// Listens on a unix socket at `path` (created with mode 0600, removed on stop).
  static caf::expected<std::unique_ptr<http_server>> listen_unix(const std::string& path,
                                                                 http_handler handler);

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
