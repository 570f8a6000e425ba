// The stdio kind's connection to one worker process: length-prefixed JSON frames on
// the child's stdin (requests) and stdout (responses), many calls in flight, ids to
// correlate them, deadlines kept by the host (docs/workers.md has the wire format).
// Upstream's seed calls these workers "stdin/stdout" workers of an adapter whose
// `uses_grpc?` is false. One I/O thread serves every stdio worker of a runtime, as the
// gRPC kind's completion queue serves every gRPC worker. No CAF actor header here.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include <caf/error.hpp>

#include "adapters/connection.hpp"

namespace snakepit::adapters {

/// How one stdio connection behaves.
struct stdio_options {
  /// Largest frame accepted from the worker (and sent to it); a longer one from the
  /// worker is a protocol fault, a longer request fails with `payload_too_large`.
  size_t max_message_bytes = 100u << 20;
  /// A worker cannot be told to stop a call: when a call was given up (deadline,
  /// cancelled, halted stream) and the worker has not answered it this long after,
  /// the connection counts as broken (`on_broken`); 0: never.
  std::chrono::milliseconds cancel_grace{5000};
  /// Names the worker in messages ("worker default_w1").
  std::string name = "worker";
  /// Called once, on the I/O thread, when the worker broke the protocol, closed its
  /// output or kept a given-up call past the grace: the owner restarts the worker.
  /// The calls in flight have failed already (`protocol_error`, or `unavailable` at
  /// EOF so that a crash is reported as one).
  std::function<void(caf::error)> on_broken;
};

/// What a stdio bridge declared in its answer to the first `ping` (all optional).
struct stdio_capabilities {
  /// Whether the bridge sends chunk frames for streaming calls.
  bool streaming = false;
  /// Whether `tools` was given at all.
  bool tools_known = false;
  /// The tools it serves (for an early `unknown_tool`).
  std::vector<std::string> tools;
  /// The ping's `result` as the bridge sent it.
  nlohmann::json raw;
};

/// One I/O thread (epoll) for the stdio connections of one runtime: it reads every
/// worker's output, parses frames, completes calls, enforces deadlines and flushes
/// writes that did not fit into a pipe at once. Not copyable, not movable.
class stdio_runtime {
 public:
  /// Starts the I/O thread.
  stdio_runtime();
  /// Calls shutdown().
  ~stdio_runtime();
  stdio_runtime(const stdio_runtime&) = delete;
  stdio_runtime& operator=(const stdio_runtime&) = delete;

  /// Fails every call in flight with `shutting_down`, closes every connection and
  /// joins the thread. Idempotent; never call it from a callback.
  void shutdown();

  /// A connection over `to_worker` (the host's end of the child's stdin; a stream
  /// socket, written with MSG_NOSIGNAL) and `from_worker` (the read end of the child's
  /// stdout). Takes both descriptors; they are closed when the connection and its
  /// last call are gone, or at shutdown.
  std::shared_ptr<worker_connection> connect(int to_worker, int from_worker,
                                             stdio_options opts);

  /// What the worker behind `conn` (made by `connect`) declared in its last
  /// successful ping; empty before.
  static stdio_capabilities capabilities(const worker_connection& conn);

  /// Calls in flight on every connection.
  size_t in_flight() const;

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

/// Encodes one frame: the 4-byte big-endian length, then `body`.
std::string encode_frame(const std::string& body);

} // namespace snakepit::adapters
