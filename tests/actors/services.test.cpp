// The runtime's service stack without Python: services start in the order they were
// added and stop in reverse; a start that fails in the middle stops exactly the
// services started before it, in reverse; stop runs each stop once.
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "actors/runtime/detail/service_stack.hpp"
#include "adapters/errors.hpp"

using snakepit::errc;
using snakepit::detail::service_stack;

namespace {

using log_t = std::vector<std::string>;

/// A stack of `names` whose starts and stops append "start <name>" / "stop <name>"
/// to `log`; the service named `failing` fails its start.
void add_services(service_stack& stack, log_t& log, const std::vector<std::string>& names,
                  const std::string& failing = {}) {
  for (auto& name : names)
    stack.add(
      name,
      [&log, name, failing]() -> caf::error {
        log.push_back("start " + name);
        if (name == failing)
          return caf::make_error(errc::start_failed, name);
        return caf::none;
      },
      [&log, name]() -> caf::error {
        log.push_back("stop " + name);
        return caf::none;
      });
}

} // namespace

TEST_SUITE("actors.service_stack") {

  TEST_CASE("services start in the order they were added") {
    service_stack stack;
    log_t log;
    add_services(stack, log, {"dir", "registry", "bridge", "tree"});
    REQUIRE(!stack.start());
    CHECK(log == log_t{"start dir", "start registry", "start bridge", "start tree"});
    CHECK(stack.running() ==
          std::vector<std::string>{"dir", "registry", "bridge", "tree"});
  }

  TEST_CASE("stop stops every service in reverse start order") {
    service_stack stack;
    log_t log;
    add_services(stack, log, {"dir", "registry", "bridge", "tree"});
    REQUIRE(!stack.start());
    log.clear();
    CHECK(!stack.stop());
    CHECK(log == log_t{"stop tree", "stop bridge", "stop registry", "stop dir"});
    CHECK(stack.running().empty());
  }

  TEST_CASE(
    "a start that fails in the middle stops exactly the earlier services in reverse") {
    service_stack stack;
    log_t log;
    add_services(stack, log, {"dir", "registry", "bridge", "tree", "endpoint"}, "bridge");
    auto err = stack.start();
    CHECK(err == errc::start_failed);
    CHECK(log == log_t{"start dir", "start registry", "start bridge", "stop registry",
                       "stop dir"});
    CHECK(stack.running().empty());
    log.clear();
    CHECK(!stack.stop());
    CHECK(log.empty());
  }

  TEST_CASE("a failing first start stops nothing") {
    service_stack stack;
    log_t log;
    add_services(stack, log, {"dir", "registry"}, "dir");
    CHECK(stack.start() == errc::start_failed);
    CHECK(log == log_t{"start dir"});
  }

  TEST_CASE("a failing last start stops every other service in reverse") {
    service_stack stack;
    log_t log;
    add_services(stack, log, {"dir", "registry", "endpoint"}, "endpoint");
    CHECK(stack.start() == errc::start_failed);
    CHECK(log == log_t{"start dir", "start registry", "start endpoint", "stop registry",
                       "stop dir"});
  }

  TEST_CASE("stop is idempotent: a second stop runs no stop again") {
    service_stack stack;
    log_t log;
    add_services(stack, log, {"dir", "registry"});
    REQUIRE(!stack.start());
    CHECK(!stack.stop());
    log.clear();
    CHECK(!stack.stop());
    CHECK(log.empty());
  }

  TEST_CASE("stop before start stops nothing") {
    service_stack stack;
    log_t log;
    add_services(stack, log, {"dir", "registry"});
    CHECK(!stack.stop());
    CHECK(log.empty());
  }

  TEST_CASE("a failing stop does not stop the others, stop returns the first error") {
    service_stack stack;
    log_t log;
    add_services(stack, log, {"dir"});
    stack.add(
      "tree", [] { return caf::error{}; },
      [&log] {
        log.push_back("stop tree");
        return caf::make_error(errc::timeout, "tree");
      });
    stack.add(
      "bridge", [] { return caf::error{}; },
      [&log] {
        log.push_back("stop bridge");
        return caf::make_error(errc::shutting_down, "bridge");
      });
    REQUIRE(!stack.start());
    log.clear();
    CHECK(stack.stop() == errc::shutting_down);
    CHECK(log == log_t{"stop bridge", "stop tree", "stop dir"});
  }

  TEST_CASE("a service without a stop is only started") {
    service_stack stack;
    log_t log;
    add_services(stack, log, {"dir"});
    stack.add(
      "flag",
      [&log] {
        log.push_back("start flag");
        return caf::error{};
      },
      nullptr);
    add_services(stack, log, {"tree"});
    REQUIRE(!stack.start());
    CHECK(stack.running() == std::vector<std::string>{"dir", "flag", "tree"});
    log.clear();
    CHECK(!stack.stop());
    CHECK(log == log_t{"stop tree", "stop dir"});
  }

} // TEST_SUITE
