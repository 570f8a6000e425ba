// Test-only adapters and other test folders on a runtime's Python path, the way a host
// adds its own adapter package beside snakepit_bridge.
#pragma once

#include <string>

#include "actors/config/config.hpp"
#include "tests/support/python.hpp"

namespace snakepit::testing {

/// Adds `dir` to the Python path of `cfg`, keeping the build's entries (which setting
/// `python_path` would otherwise replace).
inline void add_python_dir(config& cfg, const std::string& dir) {
  if (cfg.python_path.empty()) {
    std::string path = cfg.effective_python_path();
    for (size_t pos = 0; pos <= path.size();) {
      auto end = path.find(':', pos);
      if (end == std::string::npos)
        end = path.size();
      if (end > pos)
        cfg.python_path.push_back(path.substr(pos, end - pos));
      pos = end + 1;
    }
  }
  cfg.python_path.push_back(dir);
}

/// Points `pool` (one of `cfg`'s pools) at a test-only adapter, e.g.
/// "broken_adapter.BrokenAdapter".
inline void use_test_adapter(config& cfg, pool_config& pool, const std::string& adapter) {
  pool.adapter = adapter;
  add_python_dir(cfg, test_adapters_dir());
}

} // namespace snakepit::testing
