// The benchmark programs share one results file (build/bench/results.json): each
// reads what the earlier ones wrote, adds its own keys, and writes it back.
#pragma once

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace snakepit::bench {

/// The results written so far; an empty object when there are none (or unreadable).
inline nlohmann::json read_results(const std::string& path) {
  if (std::ifstream in{path}; in) {
    auto parsed = nlohmann::json::parse(in, nullptr, false);
    if (parsed.is_object())
      return parsed;
  }
  return nlohmann::json::object();
}

/// Writes `results` to `path`, indented.
inline void write_results(const std::string& path, const nlohmann::json& results) {
  std::ofstream out{path};
  out << results.dump(2) << "\n";
}

} // namespace snakepit::bench
