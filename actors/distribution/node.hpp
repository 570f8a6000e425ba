// A worker node (docs/distribution.md): a runtime with its pools in an actor system
// that loads CAF's middleman, and the gateway published on a TCP port, so that
// hosts naming this node in their `config::nodes` run calls on its pools.
// `snakepit node --listen HOST:PORT --config pools.toml` is this class.
//
//   auto n = snakepit::distribution::node::start(cfg, {"127.0.0.1", 7000});
//   if (!n) return fail(n.error());
//   ... (*n)->address() ...   // "127.0.0.1:7000"
//   (*n)->stop();             // unpublished, every worker gone
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "actors/config/config.hpp"
#include "actors/runtime/runtime.hpp"

namespace snakepit::distribution {

struct node_options {
  /// Address to listen on. Anything but loopback needs TLS, `allow_insecure` or the
  /// configuration's `node_allow_insecure` (BASP authenticates nobody;
  /// docs/distribution.md "Security").
  std::string host = "127.0.0.1";
  /// TCP port; 0 picks a free one (see `node::port`).
  uint16_t port = 0;
  /// Listen on a non-loopback address without TLS (logged as a warning).
  bool allow_insecure = false;
  /// How often each connected host gets the pools' load.
  std::chrono::milliseconds load_interval{250};
};

/// A running worker node: its runtime, its actor system and its published gateway.
class node {
 public:
  /// Validates `opts`, starts the runtime (`cfg`, `sopts` as runtime::start) and
  /// publishes the gateway. Errors: invalid_config (an insecure address, a bad
  /// configuration), unavailable (the port cannot be bound), the runtime's start
  /// errors.
  static caf::expected<std::unique_ptr<node>> start(config cfg, node_options opts,
                                                    start_options sopts = {});

  ~node();
  node(const node&) = delete;
  node& operator=(const node&) = delete;

  /// Unpublishes the gateway, then stops the runtime (every worker gone).
  /// Idempotent.
  caf::error stop();

  /// The bound port.
  uint16_t port() const;

  /// "host:port", as hosts name the node.
  std::string address() const;

  /// The node's runtime (stats, workers, its own calls).
  snakepit::runtime& runtime();

  struct impl;

 private:
  explicit node(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace snakepit::distribution
