// describe() renders the supervision area's errors by the names supervision/errors.hpp
// gives them (adapters/errors.cpp keeps its own copy of the names, since that layer
// does not depend on supervision; this keeps the two from drifting).
#include <doctest/doctest.h>

#include <string>

#include <caf/error.hpp>

#include "adapters/errors.hpp"
#include "supervision/errors.hpp"

using snakepit::supervision::sup_errc;

TEST_SUITE("actors.errors") {

  TEST_CASE("every supervision error is described by its own name") {
    for (auto code = static_cast<uint8_t>(sup_errc::failed_to_start_child);
         code <= static_cast<uint8_t>(sup_errc::stop_timeout); ++code) {
      auto x = static_cast<sup_errc>(code);
      CAPTURE(snakepit::supervision::to_string(x));
      CHECK(snakepit::describe(caf::make_error(x)) ==
            snakepit::supervision::to_string(x));
    }
  }

  TEST_CASE("a supervisor chain's failed start reads as the worker's own error") {
    auto cause = caf::make_error(snakepit::errc::start_failed,
                                 "worker p_worker_1: ModuleNotFoundError: No module");
    auto chain = caf::make_error(
      sup_errc::failed_to_start_child, std::string{"p_worker_1"},
      caf::make_error(sup_errc::failed_to_start_child, std::string{"p_worker_1"}, cause));
    CHECK(snakepit::describe(chain) ==
          "start_failed: worker p_worker_1: ModuleNotFoundError: No module");
    CHECK(snakepit::root_cause(chain) == snakepit::errc::start_failed);
  }

} // TEST_SUITE
