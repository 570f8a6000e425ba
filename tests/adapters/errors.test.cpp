#include "adapters/errors.hpp"

#include <set>

#include <doctest/doctest.h>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/sec.hpp>

using namespace snakepit;

namespace {

python_error sample_error() {
  python_error e;
  e.type = "ValueError";
  e.message = "boom";
  e.traceback =
    "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: boom";
  e.stacktrace = {"x.py:1 in f", "y.py:2 in g"};
  e.context_json = R"({"tool_name":"t"})";
  return e;
}

} // namespace

TEST_SUITE("adapters.errors") {

  TEST_CASE("every errc value has a distinct name") {
    std::set<std::string> names;
    for (int i = 0; i <= static_cast<int>(errc::node_down); ++i) {
      auto name = to_string(static_cast<errc>(i));
      CHECK(name.find("errc(") == std::string::npos);
      names.insert(name);
    }
    CHECK(names.size() == static_cast<size_t>(errc::node_down) + 1);
    CHECK(to_string(errc::node_down) == "node_down");
    CHECK(to_string(errc::tool_error) == "tool_error");
    CHECK(to_string(errc::session_worker_unavailable) == "session_worker_unavailable");
  }

  TEST_CASE("a tool error carries the python details and gives them back") {
    auto err = make_tool_error(sample_error());
    CHECK(err == errc::tool_error);
    CHECK(err != errc::timeout);
    CHECK(errc_of(err) == errc::tool_error);
    auto back = python_error_of(err);
    REQUIRE(back.has_value());
    CHECK(*back == sample_error());
    CHECK(message_of(err) == "boom");
    CHECK(describe(err) == "tool_error: ValueError: boom");
  }

  TEST_CASE("plain errors describe themselves with code and message") {
    auto err = make_error(errc::timeout, "deadline of 5000 ms exceeded");
    CHECK(err == errc::timeout);
    CHECK(describe(err) == "timeout: deadline of 5000 ms exceeded");
    CHECK_FALSE(python_error_of(err).has_value());
    CHECK(describe(make_error(errc::not_ready, "")) == "not_ready");
    CHECK(describe(caf::error{}) == "none");
  }

  TEST_CASE("unknown_tool built from python details describes only the message") {
    auto details = sample_error();
    details.type = "UnknownToolError";
    details.message = "no tool 'x'";
    auto err = make_error(errc::unknown_tool, details);
    CHECK(describe(err) == "unknown_tool: no tool 'x'");
    CHECK(python_error_of(err)->type == "UnknownToolError");
  }

  TEST_CASE(
    "errors made by caf::make_error with several parts join them in the message") {
    auto err =
      caf::make_error(errc::start_failed, std::string{"pool-a"}, "no worker started");
    CHECK(err == errc::start_failed);
    CHECK(message_of(err) == "pool-a: no worker started");
    CHECK(describe(err) == "start_failed: pool-a: no worker started");
    CHECK(describe(caf::make_error(errc::timeout, 42)) == "timeout: 42");
  }

  TEST_CASE("foreign errors are not mistaken for ours") {
    caf::error err = caf::sec::request_timeout;
    CHECK_FALSE(errc_of(err).has_value());
    CHECK_FALSE(python_error_of(err).has_value());
    CHECK(err != errc::timeout);
    CHECK(describe(err).find("request_timeout") != std::string::npos);
  }

  TEST_CASE("errc converts implicitly into caf::expected") {
    caf::expected<int> x = errc::pool_saturated;
    REQUIRE_FALSE(x);
    CHECK(x.error() == errc::pool_saturated);
  }

  TEST_CASE("the registered category renders errc names in actor_system::render") {
    caf::actor_system_config cfg;
    register_error_category(cfg);
    cfg.set("scheduler.max-threads", 1);
    caf::actor_system sys{cfg};
    auto text = sys.render(make_tool_error(sample_error()));
    CHECK(text.find("tool_error") != std::string::npos);
    CHECK(text.find("ValueError: boom") != std::string::npos);
  }

  TEST_CASE("a correlation id rides along without changing what the error says") {
    auto plain = make_error(errc::queue_timeout, "pool default: waited 100 ms");
    auto tagged = with_correlation_id(plain, "cid-1");
    CHECK(tagged == errc::queue_timeout);
    CHECK(correlation_id_of(tagged) == "cid-1");
    CHECK(correlation_id_of(plain).empty());
    CHECK(message_of(tagged) == message_of(plain));
    CHECK(describe(tagged) == describe(plain));
    // Attaching again replaces the id instead of stacking a second one.
    auto again = with_correlation_id(tagged, "cid-2");
    CHECK(correlation_id_of(again) == "cid-2");
    CHECK(again.context().size() == tagged.context().size());
    // Python details survive the tag.
    auto py = with_correlation_id(make_tool_error(sample_error()), "cid-3");
    auto details = python_error_of(py);
    REQUIRE(details);
    CHECK(*details == sample_error());
    CHECK(describe(py) == "tool_error: ValueError: boom");
    CHECK(correlation_id_of(py) == "cid-3");
    // Nothing to attach to, or nothing to attach: unchanged.
    CHECK_FALSE(with_correlation_id(caf::error{}, "cid-4"));
    auto foreign = caf::make_error(caf::sec::request_timeout);
    CHECK(with_correlation_id(foreign, "cid-5") == foreign);
    CHECK(correlation_id_of(with_correlation_id(plain, "")).empty());
  }
  TEST_CASE("nested supervision errors read as one line: the innermost cause, the child "
            "id only when the cause does not name it") {
    // supervision::sup_errc::failed_to_start_child (code 1, category "snake_sup"),
    // built by hand: this layer does not link the supervision library.
    auto wrap = [](std::string id, caf::error inner) {
      return caf::error{uint8_t{1}, caf::atom("snake_sup"),
                        caf::make_message(std::move(id), std::move(inner))};
    };
    auto cause = make_error(
      errc::start_failed, "worker x_worker_1: ModuleNotFoundError: No module named 'no'");
    auto nested = wrap("x_worker_1", wrap("x_worker_1", wrap("x_worker_1", cause)));
    CHECK(describe(nested) ==
          "start_failed: worker x_worker_1: ModuleNotFoundError: No module named 'no'");
    CHECK(describe(nested).find("error(") == std::string::npos);
    CHECK(root_cause(nested) == cause);
    CHECK(root_cause(cause) == cause);
    // A cause that does not name the child gets its id after the code.
    auto anonymous = wrap("x_worker_2", make_error(errc::start_failed, "exec failed"));
    CHECK(describe(anonymous) == "start_failed: x_worker_2: exec failed");
    auto foreign = wrap("w", caf::make_error(caf::sec::request_timeout));
    CHECK(describe(foreign).rfind("w: ", 0) == 0);
    // Other supervision errors by name, with their string parts.
    CHECK(describe(caf::error{uint8_t{9}, caf::atom("snake_sup"),
                              caf::make_message(std::string{"x_worker_1"})}) ==
          "start_timeout: x_worker_1");
    CHECK(describe(caf::error{uint8_t{7}, caf::atom("snake_sup")}) == "max_children");
  }

} // TEST_SUITE
