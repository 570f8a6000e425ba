// A spdlog sink that keeps every line it is given, for tests that check what the
// runtime (or one adapters::logger) logged.
#pragma once

#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/base_sink.h>

#include "tests/support/checks.hpp"
#include "tests/support/eventually.hpp"

namespace snakepit::testing {

/// Collects the message part of every line (the JSON object in JSON format).
class capture_sink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  /// Every line so far.
  std::vector<std::string> lines() {
    std::lock_guard<std::mutex> guard{mutex_};
    return lines_;
  }

  /// Every line so far, one per line of text (for failure messages).
  std::string dump() {
    std::string out;
    for (auto& l : lines())
      out += l + "\n";
    return out;
  }

  /// Every line parsed as JSON (a line that does not parse fails the test).
  std::vector<nlohmann::json> records() {
    std::vector<nlohmann::json> out;
    for (auto& l : lines()) {
      auto rec = nlohmann::json::parse(l, nullptr, false);
      CHECK_MSG(rec.is_object(), "not a JSON object: " << l);
      if (rec.is_object())
        out.push_back(std::move(rec));
    }
    return out;
  }

  /// The first record for which `pred` holds, waiting for it up to 20 s.
  template<class Pred>
  std::optional<nlohmann::json> wait_for(Pred pred) {
    std::optional<nlohmann::json> found;
    eventually([&] {
      for (auto& r : records())
        if (pred(r)) {
          found = r;
          return true;
        }
      return false;
    });
    return found;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    lines_.emplace_back(msg.payload.data(), msg.payload.size());
  }

  void flush_() override {}

 private:
  std::vector<std::string> lines_;
};

} // namespace snakepit::testing
