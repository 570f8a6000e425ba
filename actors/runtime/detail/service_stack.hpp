// The runtime's subsystems as an ordered stack of services (Seastar's `start()` /
// `stop()` per service, stopped in reverse order; OTP's application start order):
// each service has a start that can fail and a stop, the stack starts them in order
// and stops the started ones in reverse, also when a start in the middle fails.
//
//   detail::service_stack stack;
//   stack.add("runtime_dir", make_dir, remove_dir);     // caf::error() each
//   stack.add("bridge_server", start_bridge, stop_bridge);
//   if (auto err = stack.start())  // bridge failed: runtime_dir is stopped already
//     return err;
//   stack.stop();                  // bridge_server, then runtime_dir
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <caf/error.hpp>

namespace snakepit::detail {

/// One subsystem: `start` brings it up or returns why not (and then leaves nothing
/// behind); `stop` takes it down and runs only after a successful `start`.
struct service {
  /// Name for logs and tests ("process_registry", "supervision_tree", …).
  std::string name;
  /// Brings the service up; an error means it did not start.
  std::function<caf::error()> start;
  /// Takes the service down; its error is reported, the stop goes on.
  std::function<caf::error()> stop;
};

/// Services started in the order they were added and stopped in reverse. Not
/// thread-safe: the owner serialises `start` and `stop`.
class service_stack {
 public:
  service_stack() = default;
  service_stack(const service_stack&) = delete;
  service_stack& operator=(const service_stack&) = delete;

  /// Appends a service; it starts after every service added before it.
  void add(service svc);

  /// Appends a service built from its parts.
  void add(std::string name, std::function<caf::error()> start,
           std::function<caf::error()> stop);

  /// Starts every service not yet started, in order. When one fails, every started
  /// service is stopped in reverse order and the failed start's error is returned.
  caf::error start();

  /// Stops every started service in reverse order, each exactly once. Returns the
  /// first stop error (every stop still runs). Idempotent: a second call does nothing.
  caf::error stop();

  /// Names of the started services, in start order.
  std::vector<std::string> running() const;

  /// Number of services added.
  size_t size() const { return services_.size(); }

 private:
  /// Stops the started services among the first `end`, last first; the first error.
  caf::error stop_below(size_t end);

  std::vector<service> services_;
  std::vector<bool> started_;
};

} // namespace snakepit::detail
