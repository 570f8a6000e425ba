// The chaos suite's adapter (tests/integration/chaos_py: the showcase tools plus
// spawn_grandchild), for the chaos tests and the host helper binary alike.
#pragma once

#include <string>

#include "actors/runtime/runtime.hpp"

/// Points pool 0 at chaos_adapter.ChaosAdapter: the build's Python path (which setting
/// `python_path` would otherwise replace) plus the chaos adapter's folder.
inline void use_chaos_adapter(snakepit::config& cfg) {
  cfg.pools[0].adapter = "chaos_adapter.ChaosAdapter";
  std::string path = cfg.effective_python_path();
  for (size_t pos = 0; pos <= path.size();) {
    auto end = path.find(':', pos);
    if (end == std::string::npos)
      end = path.size();
    if (end > pos)
      cfg.python_path.push_back(path.substr(pos, end - pos));
    pos = end + 1;
  }
  cfg.python_path.emplace_back(SNAKEPIT_CHAOS_PY_DIR);
}
