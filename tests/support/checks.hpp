// Assertions whose failure message is built only when they fail. doctest's
// REQUIRE_MESSAGE / CHECK_MESSAGE keep the message as an INFO that it renders for every
// assertion it logs — passing ones too when run with -s, and while reporting a crash —
// so `REQUIRE_MESSAGE(res, explain(res.error()))` reads the error of a result that
// holds a value (undefined behaviour: doctest crashed and then deadlocked on it). Use
// these instead.
#pragma once

#include <string>

#include <doctest/doctest.h>

#include "tests/support/errors.hpp"

namespace snakepit::testing {

/// True if `err` is no error.
inline bool no_error(const caf::error& err) {
  return !err;
}

/// True if `x` holds a value.
template<class T>
bool no_error(const caf::expected<T>& x) {
  return static_cast<bool>(x);
}

/// The error itself; the name keeps the overload set uniform.
inline const caf::error& error_of(const caf::error& err) {
  return err;
}

/// The error of `x`. Precondition: `x` holds no value.
template<class T>
const caf::error& error_of(const caf::expected<T>& x) {
  return x.error();
}

/// What a failed REQUIRE_ERROR / CHECK_ERROR found instead of the expected code.
template<class T>
std::string unexpected_outcome(const T& x) {
  return no_error(x) ? std::string{"no error"} : explain(error_of(x));
}

} // namespace snakepit::testing

// Evaluates `holds` once; builds the message (`text`, then `...`) only if it is false.
#define SNAKEPIT_ASSERT_LAZY_(level, holds, text, ...)                                   \
  do {                                                                                   \
    const bool assertion_holds_ = static_cast<bool>(holds);                              \
    if (assertion_holds_) {                                                              \
      DOCTEST_##level##_MESSAGE(assertion_holds_, text);                                 \
    } else {                                                                             \
      DOCTEST_##level##_MESSAGE(assertion_holds_, text << ": " << __VA_ARGS__);          \
    }                                                                                    \
  } while (false)

#define SNAKEPIT_ASSERT_OK_(level, x)                                                    \
  do {                                                                                   \
    const auto& checked_ = (x);                                                          \
    SNAKEPIT_ASSERT_LAZY_(                                                               \
      level, ::snakepit::testing::no_error(checked_), #x,                                \
      ::snakepit::testing::explain(::snakepit::testing::error_of(checked_)));            \
  } while (false)

#define SNAKEPIT_ASSERT_ERROR_(level, x, code)                                           \
  do {                                                                                   \
    const auto& checked_ = (x);                                                          \
    SNAKEPIT_ASSERT_LAZY_(                                                               \
      level,                                                                             \
      !::snakepit::testing::no_error(checked_) &&                                        \
        ::snakepit::testing::is_error(::snakepit::testing::error_of(checked_), code),    \
      #x " fails with " #code, ::snakepit::testing::unexpected_outcome(checked_));       \
  } while (false)

/// `x` (a caf::expected or a caf::error) holds no error; a failure explains the error.
#define REQUIRE_OK(x) SNAKEPIT_ASSERT_OK_(REQUIRE, x)
/// @copydoc REQUIRE_OK
#define CHECK_OK(x) SNAKEPIT_ASSERT_OK_(CHECK, x)

/// `x` (a caf::expected or a caf::error) is an error of the snakepit category with
/// `code`; a failure says what it was instead (a value, another error).
#define REQUIRE_ERROR(x, code) SNAKEPIT_ASSERT_ERROR_(REQUIRE, x, code)
/// @copydoc REQUIRE_ERROR
#define CHECK_ERROR(x, code) SNAKEPIT_ASSERT_ERROR_(CHECK, x, code)

/// `cond` holds; the message (streamed with <<) is built only when it does not.
#define REQUIRE_MSG(cond, ...) SNAKEPIT_ASSERT_LAZY_(REQUIRE, cond, #cond, __VA_ARGS__)
/// @copydoc REQUIRE_MSG
#define CHECK_MSG(cond, ...) SNAKEPIT_ASSERT_LAZY_(CHECK, cond, #cond, __VA_ARGS__)
