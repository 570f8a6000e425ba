// Checks on errors of the "snakepit" category, for tests that expect a given code.
#pragma once

#include <string>

#include "adapters/errors.hpp"

namespace snakepit::testing {

/// True if `err` is of the snakepit category and carries `code` (context ignored).
inline bool is_error(const caf::error& err, errc code) {
  return errc_of(err) == code;
}

/// Both our rendering and CAF's of an error, for failure messages.
inline std::string explain(const caf::error& err) {
  return describe(err) + " [" + caf::to_string(err) + "]";
}

/// True if `err` is of the snakepit category, whatever its code.
inline bool is_snakepit_error(const caf::error& err) {
  return errc_of(err).has_value();
}

} // namespace snakepit::testing
