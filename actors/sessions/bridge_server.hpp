// The host's gRPC server (upstream Snakepit.GRPC.BridgeServer): Python workers call
// back into the host through it — sessions (InitializeSession, GetSession,
// Heartbeat, CleanupSession), session state, tool registration and host tools
// (GetExposedElixirTools, ExecuteElixirTool). It listens only on a unix socket inside
// the runtime's private directory and answers from the session_store and
// tool_registry actors with bounded waits. Every call must carry a live token of the
// runtime's token_registry (metadata "x-snakepit-token", docs/security.md), else it is
// refused with UNAUTHENTICATED. gRPC headers stay in the .cpp.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/expected.hpp>

#include "actors/sessions/token_registry.hpp"

namespace caf {
class actor_system;
} // namespace caf

namespace snakepit::actors {

/// What the server needs: where to listen and how to reach the actors.
struct bridge_server_options {
  /// Absolute path of the unix socket (< 108 bytes); a stale file there is replaced.
  std::string socket_path;
  /// The actor system of the session_store and tool_registry actors.
  caf::actor_system* system = nullptr;
  /// The current session_store actor (looked up per call: it may have restarted).
  /// Dynamically typed because name tables and supervisors keep `caf::actor`; the
  /// server views it as `session_store_actor`.
  std::function<caf::actor()> session_store;
  /// The current tool_registry actor (viewed as `tool_registry_actor`).
  std::function<caf::actor()> tool_registry;
  /// The tokens that admit a caller; a fresh, empty registry when null.
  std::shared_ptr<token_registry> tokens;
  /// Longest a handler thread waits for one actor reply.
  std::chrono::milliseconds actor_timeout{5000};
};

/// A running bridge server. Handlers run on gRPC's threads, never on CAF threads,
/// so a host tool may block; they wait for actors at most `actor_timeout`.
class bridge_server {
 public:
  /// Binds the socket (mode 0600) and starts serving.
  static caf::expected<std::unique_ptr<bridge_server>> start(bridge_server_options opts);

  /// Stops (see stop()).
  ~bridge_server();
  bridge_server(const bridge_server&) = delete;
  bridge_server& operator=(const bridge_server&) = delete;

  /// Stops accepting calls, cancels those still running after `grace`, waits for
  /// the handlers and removes the socket. Idempotent.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds{2000});

  /// The gRPC target workers dial: "unix:<socket path>".
  const std::string& address() const;

  /// The tokens this server admits (workers' tokens are issued and revoked there).
  const std::shared_ptr<token_registry>& tokens() const;

  struct impl;

 private:
  explicit bridge_server(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace snakepit::actors
