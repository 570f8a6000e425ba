// Collects the runtime's telemetry events (docs/telemetry.md) for tests that check
// what was emitted: attached through `start_options`, read from the test's thread.
#pragma once

#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "actors/runtime/runtime.hpp"
#include "tests/support/eventually.hpp"

namespace snakepit::testing {

/// Telemetry events under one or more prefixes, in the order they were emitted.
class event_capture {
 public:
  /// Collects the events whose name starts with `prefix` ("" for all).
  void attach_to(start_options& opts, const std::string& prefix) {
    opts.telemetry_handlers.emplace_back(prefix,
                                         [this](const telemetry::event& ev) { add(ev); });
  }

  /// Start options that collect the events under `prefix` here.
  start_options options(const std::string& prefix) {
    start_options opts;
    attach_to(opts, prefix);
    return opts;
  }

  /// Records one event (the handler `attach_to` installs).
  void add(const telemetry::event& ev) {
    std::lock_guard<std::mutex> guard{mtx_};
    events_.push_back(ev);
  }

  /// The events named `name` so far.
  std::vector<telemetry::event> named(const std::string& name) {
    std::lock_guard<std::mutex> guard{mtx_};
    std::vector<telemetry::event> out;
    for (auto& ev : events_)
      if (ev.name == name)
        out.push_back(ev);
    return out;
  }

  /// How many events named `name` so far.
  size_t count(const std::string& name) { return named(name).size(); }

  /// The first event named `name` for which `pred` holds, waiting up to 20 s.
  template<class Pred>
  std::optional<telemetry::event> wait_for(const std::string& name, Pred pred) {
    std::optional<telemetry::event> found;
    eventually([&] {
      for (auto& ev : named(name))
        if (pred(ev)) {
          found = ev;
          return true;
        }
      return false;
    });
    return found;
  }

  /// Every event so far as "name metadata" lines (for failure messages).
  std::string dump() {
    std::lock_guard<std::mutex> guard{mtx_};
    std::string out;
    for (auto& ev : events_)
      out += ev.name + " " + ev.metadata.dump() + "\n";
    return out;
  }

 private:
  std::mutex mtx_;
  std::vector<telemetry::event> events_;
};

} // namespace snakepit::testing
