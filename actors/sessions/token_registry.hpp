// The secrets that admit a process to the host's bridge server (docs/security.md): one
// per worker process, issued when it is launched and revoked once it is gone, plus
// those the host takes for itself. No OTP counterpart: Erlang distribution's cookie is
// the nearest, but a cookie is one per node and never expires.
#pragma once

#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

namespace snakepit::actors {

/// The metadata key under which a bridge caller sends its token.
inline constexpr const char* bridge_token_header = "x-snakepit-token";

/// The environment variable a worker finds its token in.
inline constexpr const char* bridge_token_env = "SNAKEPIT_BRIDGE_TOKEN";

/// The live tokens of one runtime. Thread-safe: gRPC threads check, worker actors
/// issue and the exit watcher revokes.
class token_registry {
 public:
  /// A fresh token (32 bytes from getrandom, as 64 hex digits), live until revoked.
  /// Error: internal when the kernel gives no random bytes.
  caf::expected<std::string> issue();

  /// Ends `token` (idempotent; an unknown token is ignored).
  void revoke(const std::string& token);

  /// Whether `token` is live. Compares against every live token in constant time per
  /// token, so the time taken says nothing about how much of a guess was right.
  bool valid(std::string_view token) const;

  /// How many tokens are live.
  size_t size() const;

 private:
  mutable std::mutex mtx_;
  std::vector<std::string> live_;
};

} // namespace snakepit::actors
