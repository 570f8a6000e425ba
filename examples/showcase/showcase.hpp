// The showcase application (examples/showcase): a host that runs one Python adapter
// organised by handler groups and walks through the library's features, one demo per
// group. Each demo checks its own results; a failed check makes the program exit 1.
// The C++ counterpart of upstream's `snakepit_showcase` Mix project.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include <caf/expected.hpp>
#include <fmt/format.h>

#include "actors/snakepit.hpp"

namespace showcase {

using snakepit::json;

/// Counts and prints the checks of one run.
class checker {
 public:
  /// Prints `[ok] what` or `[FAIL] what`; returns `ok`.
  bool that(bool ok, std::string_view what);

  /// A call that must succeed: on error prints what failed and the typed error.
  template<class T>
  bool ok(const caf::expected<T>& x, std::string_view what) {
    if (x)
      return true;
    return that(false, fmt::format("{}: {}", what, snakepit::describe(x.error())));
  }

  /// Number of failed checks so far.
  int failures() const { return failures_; }

 private:
  int failures_ = 0;
};

/// What every demo gets: the running runtime, its configuration and the checker.
struct app {
  snakepit::runtime& rt;
  const snakepit::config& cfg;
  checker& ck;
};

// --- Demos (one file each) -----------------------------------------------------------

/// Stateless vs session vs streaming calls, timed, with their trade-offs.
void run_modes(app& a);
/// Host-owned session state: counters, a registered model, calls on several workers.
void run_sessions(app& a);
/// Load a data set, train with streamed progress, evaluate; state in the session.
void run_ml(app& a);
/// A numpy array as bytes, the JSON alternative, and the message-size limit.
void run_binary(app& a);
/// Many parallel calls, then the pool's stats and its workers.
void run_concurrency(app& a);
/// Typed errors, Python exception types, a timeout with a fallback, failing streams.
void run_errors(app& a);
/// Host tools called from Python.
void run_host_tools(app& a);

/// Registers the host tools the Python side calls (label_names, host_checksum,
/// host_fail).
caf::error register_host_tools(snakepit::runtime& rt);

/// FNV-1a 64 of `text` as 16 hex digits (the host_checksum tool).
std::string fnv1a_hex(std::string_view text);

// --- Helpers --------------------------------------------------------------------------

/// Prints a demo's heading.
void section(std::string_view title);

/// Milliseconds (fractional) since `t0`.
double ms_since(std::chrono::steady_clock::time_point t0);

/// The value under `key` in session `sid`, read from the host's session store (not
/// through Python); nullopt when absent. Note: the store creates a missing session.
std::optional<json> host_state(snakepit::runtime& rt, const std::string& sid,
                               const std::string& key);

/// Stores `value` under `key` in session `sid` through the host's session store.
void put_host_state(snakepit::runtime& rt, const std::string& sid, const std::string& key,
                    const json& value);

/// Creates a session (generated id, metadata `demo`) for a demo; nullopt after a
/// failed check.
std::optional<std::string> new_session(app& a, const std::string& demo);

/// Removes a demo's session and checks that it is gone.
void drop_session(app& a, const std::string& sid);

} // namespace showcase
