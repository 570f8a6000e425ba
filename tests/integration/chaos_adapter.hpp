// The chaos suite's adapter (tests/integration/chaos_py: the showcase tools plus
// spawn_grandchild), for the chaos tests and the host helper binary alike.
#pragma once

#include "actors/runtime/runtime.hpp"
#include "tests/support/python_config.hpp"

/// Points pool 0 at chaos_adapter.ChaosAdapter, its folder added to the Python path.
inline void use_chaos_adapter(snakepit::config& cfg) {
  cfg.pools[0].adapter = "chaos_adapter.ChaosAdapter";
  snakepit::testing::add_python_dir(cfg, SNAKEPIT_CHAOS_PY_DIR);
}
