// Input validation on every entry into a pool (actors/pool/input_checks.hpp): a
// command name that is not printable or too long, too many top-level argument keys,
// arguments nested too deep or with too many values are refused with
// invalid_argument naming the rule, on the blocking (direct lane), asynchronous,
// session, streaming and actor paths, and nothing reaches a worker.
#include <future>
#include <string>
#include <vector>

#include <caf/scoped_actor.hpp>

#include "actors/observability/telemetry.hpp"
#include "actors/pool/pool.hpp"
#include "harness.hpp"
#include "tests/support/event_capture.hpp"

using namespace std::chrono_literals;
using snakepit::errc;
using snakepit::json;
using namespace snakepit::testing;

namespace {

struct bad_input {
  const char* rule; // what the message must name
  std::string command;
  json args;
};

std::vector<bad_input> bad_inputs() {
  json many = json::object();
  for (int i = 0; i < 101; ++i)
    many["k" + std::to_string(i)] = i;
  json deep = 1;
  for (int i = 0; i < 40; ++i)
    deep = json::array({deep});
  return {
    {"not printable", "ec\x01ho", json::object()},
    {"max_command_bytes", std::string(5000, 'e'), json::object()},
    {"max_arg_keys", "echo", many},
    {"max_arg_depth", "echo", {{"a", deep}}},
    {"max_arg_values", "echo", {{"v", std::vector<int>(60, 7)}}},
  };
}

/// The refusal says invalid_argument and the rule, and never carries the raw name.
void check_refusal(const caf::error& err, const bad_input& in) {
  CAPTURE(in.rule);
  REQUIRE_MSG(err, "accepted");
  CHECK_MSG(err == errc::invalid_argument, explain(err));
  auto text = snakepit::describe(err);
  CHECK_MSG(text.find(in.rule) != std::string::npos, text);
  CHECK(text.find('\x01') == std::string::npos);
  CHECK(text.size() < 300);
}

} // namespace

TEST_SUITE("integration.input_validation") {

  TEST_CASE("bad input is refused on every entry with invalid_argument naming the rule, "
            "and nothing is dispatched") {
    auto cfg = small_config(1);
    cfg.pools[0].input.max_arg_values = 50; // the deep case has 42 values
    event_capture events;
    auto rt = snakepit::runtime::start(cfg, events.options("snakepit.request"));
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE_FALSE(r.await_ready(30s));
    auto session = r.create_session("validation-session");
    REQUIRE(session);
    auto no_chunks = [](const json&, bool) {
      FAIL_CHECK("a chunk of a refused stream");
      return true;
    };
    caf::scoped_actor self{r.system()};
    auto pool = snakepit::actors::pool_handle(r.pool());
    for (auto& in : bad_inputs()) {
      auto blocking = r.execute(in.command, in.args);
      check_refusal(blocking ? caf::error{} : blocking.error(), in);
      auto in_session = r.execute_in_session(*session, in.command, in.args);
      check_refusal(in_session ? caf::error{} : in_session.error(), in);
      std::promise<snakepit::execute_result> done;
      r.execute_async(in.command, in.args, {},
                      [&](snakepit::execute_result res) { done.set_value(res); });
      auto async = done.get_future().get();
      check_refusal(async ? caf::error{} : async.error(), in);
      check_refusal(r.execute_stream(in.command, in.args, no_chunks), in);
      check_refusal(r.execute_in_session_stream(*session, in.command, in.args, no_chunks),
                    in);
      caf::error actor_err;
      snakepit::actors::execute(self, pool,
                                snakepit::execute_request{in.command, in.args, {}}, 10s)
        .receive([&](snakepit::execute_reply&) {},
                 [&](caf::error& err) { actor_err = std::move(err); });
      check_refusal(actor_err, in);
    }
    // No worker ran anything, the pool accepted nothing, no request started.
    auto workers = r.list_workers();
    REQUIRE(workers);
    REQUIRE(workers->size() == 1);
    CHECK(workers->front().requests == 0);
    CHECK(r.get_stats()->requests == 0);
    CHECK(r.telemetry().flush(5s));
    CHECK(events.count("snakepit.request.start") == 0);
    // The pool still serves good calls.
    auto ok = r.execute("echo", {{"x", 1}});
    CHECK_OK(ok);
    CHECK(r.list_workers()->front().requests == 1);
    stop_and_check(r);
  }

  TEST_CASE("the limits come from the pool's config") {
    auto cfg = small_config(1);
    cfg.pools[0].input.max_command_bytes = 4;
    cfg.pools[0].input.max_arg_keys = 2;
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    CHECK(r.execute("echo", {{"a", 1}, {"b", 2}}));
    auto keys = r.execute("echo", {{"a", 1}, {"b", 2}, {"c", 3}});
    REQUIRE_FALSE(keys);
    CHECK(snakepit::message_of(keys.error()) ==
          "arguments of 'echo' have 3 top-level keys; max_arg_keys is 2");
    auto name = r.execute("sleep", {{"ms", 1}});
    REQUIRE_FALSE(name);
    CHECK(snakepit::message_of(name.error()) ==
          "command name of 5 bytes exceeds max_command_bytes (4): 'sleep'");
    stop_and_check(r);
  }

} // TEST_SUITE
