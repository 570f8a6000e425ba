// Where the tests find Python code: the test-only adapters (tests/support/python:
// broken_adapter, flaky_start_adapter), and a Python path with them beside the
// snakepit_bridge package and the build's generated modules, for configs written as
// TOML. python_config.hpp puts them on a `snakepit::config`.
#pragma once

#include <string>
#include <vector>

namespace snakepit::testing {

/// The folder of the test-only Python adapters.
inline std::string test_adapters_dir() {
  return SNAKEPIT_TEST_ADAPTERS_DIR;
}

/// A complete Python path: the package, the generated modules, the test adapters.
inline std::vector<std::string> test_python_path() {
  return {SNAKEPIT_TEST_PYTHON_SOURCE_DIR, SNAKEPIT_TEST_PYTHON_GEN_DIR,
          test_adapters_dir()};
}

} // namespace snakepit::testing
