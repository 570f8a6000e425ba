// What a caller may send into a pool (actors/pool/input_checks.hpp, upstream
// Snakepit.Validation): each rule refuses with invalid_argument naming it, and the
// name in the message is escaped and cut, never raw or whole.
#include <doctest/doctest.h>

#include <string>

#include "actors/pool/input_checks.hpp"
#include "adapters/errors.hpp"

using snakepit::errc;
using snakepit::execute_request;
using snakepit::json;
using snakepit::pool_input_limits;
using snakepit::actors::check_input;
using snakepit::actors::printable_command;
using snakepit::actors::printable_name;

namespace {

execute_request request(std::string command, json args = json::object()) {
  return execute_request{std::move(command), std::move(args), {}};
}

/// The message of the refusal of `req` under the default limits ("" if accepted).
std::string refusal(const execute_request& req, pool_input_limits limits = {}) {
  auto err = check_input(limits, req);
  if (!err)
    return {};
  CHECK(err == errc::invalid_argument);
  return snakepit::message_of(err);
}

/// {"x": {"x": ... 1}}: `depth` objects.
json nested(int depth) {
  json root = json::object();
  json* cur = &root;
  for (int i = 1; i < depth; ++i)
    cur = &((*cur)["x"] = json::object());
  (*cur)["x"] = 1;
  return root;
}

} // namespace

TEST_SUITE("actors.input_checks") {

  TEST_CASE("the defaults are upstream's bounds") {
    pool_input_limits d;
    CHECK(d.max_command_bytes == 999);
    CHECK(d.max_arg_keys == 100);
    CHECK(d.max_arg_depth == 32);
    CHECK(d.max_arg_values == 1000000);
  }

  TEST_CASE("ordinary requests pass") {
    CHECK(refusal(request("echo", {{"x", 1}, {"y", {1, 2, 3}}})).empty());
    CHECK(refusal(request("stream_progress")).empty());
    CHECK(refusal(request("ümlaut_tool.v2", json::array({1, "a"}))).empty());
    CHECK(refusal(request("add", json(nullptr))).empty());
    CHECK(refusal(request(std::string(999, 'a'))).empty());
  }

  TEST_CASE("a command name must be printable: control bytes and bad UTF-8 are shown "
            "escaped") {
    CHECK_FALSE(printable_command(""));
    CHECK_FALSE(printable_command("ec\x01ho"));
    CHECK_FALSE(printable_command("echo\n"));
    CHECK_FALSE(printable_command("a\x7f"));
    CHECK_FALSE(printable_command("\xc2\x85"));     // U+0085, a C1 control
    CHECK_FALSE(printable_command("\xff\xfe"));     // not UTF-8
    CHECK_FALSE(printable_command("\xe2\x82"));     // cut sequence
    CHECK_FALSE(printable_command("\xc0\xaf"));     // overlong
    CHECK_FALSE(printable_command("\xed\xa0\x80")); // surrogate
    CHECK(printable_command("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\x8d"));
    auto msg = refusal(request("ec\x01ho"));
    CHECK(msg == "command name is not printable UTF-8: 'ec\\x01ho'");
    CHECK(msg.find('\x01') == std::string::npos);
    CHECK(refusal(request("")) == "command name is empty");
    CHECK(refusal(request(std::string{"a\0b", 3})) ==
          "command name is not printable UTF-8: 'a\\x00b'");
  }

  TEST_CASE("a command name longer than max_command_bytes is refused and shown cut") {
    auto msg = refusal(request(std::string(5000, 'n')));
    CHECK(msg.rfind("command name of 5000 bytes exceeds max_command_bytes (999): '", 0) ==
          0);
    CHECK(msg.find(std::string(64, 'n') + "... (5000 bytes)'") != std::string::npos);
    CHECK(msg.find(std::string(65, 'n')) == std::string::npos);
    CHECK(msg.size() < 200);
    pool_input_limits small;
    small.max_command_bytes = 4;
    CHECK(refusal(request("echo"), small).empty());
    CHECK_FALSE(refusal(request("echo2"), small).empty());
  }

  TEST_CASE("printable_name escapes and cuts, and never splits a character") {
    CHECK(printable_name("echo") == "echo");
    CHECK(printable_name("a\tb") == "a\\x09b");
    CHECK(printable_name("\xff") == "\\xff");
    // 63 ASCII bytes then a 2-byte character that would straddle the cut at 64.
    auto name = std::string(63, 'a') + "\xc3\xa9" + "tail";
    CHECK(printable_name(name) == std::string(63, 'a') + "... (69 bytes)");
  }

  TEST_CASE("arguments with more than max_arg_keys top-level keys are refused") {
    json args = json::object();
    for (int i = 0; i < 100; ++i)
      args["k" + std::to_string(i)] = i;
    CHECK(refusal(request("echo", args)).empty());
    args["one_more"] = 1;
    CHECK(refusal(request("echo", args)) ==
          "arguments of 'echo' have 101 top-level keys; max_arg_keys is 100");
    // Only the top level counts (nested objects are bounded by depth and values).
    CHECK(refusal(request("echo", {{"inner", args}})).empty());
  }

  TEST_CASE("arguments nested deeper than max_arg_depth are refused") {
    CHECK(refusal(request("echo", nested(32))).empty());
    CHECK(refusal(request("echo", nested(33))) ==
          "arguments of 'echo' nest deeper than max_arg_depth (32)");
    json deep_array = json::array();
    for (int i = 0; i < 40; ++i)
      deep_array = json::array({deep_array});
    CHECK(refusal(request("echo", {{"a", deep_array}})).find("max_arg_depth") !=
          std::string::npos);
    // A very deep value is refused without walking all of it.
    CHECK_FALSE(refusal(request("echo", nested(20000))).empty());
  }

  TEST_CASE(
    "arguments with more than max_arg_values values are refused, and 0 lifts it") {
    pool_input_limits limits;
    limits.max_arg_values = 10;
    // The object itself, its key's array and 8 numbers: 10 values.
    json args{{"v", json::array({1, 2, 3, 4, 5, 6, 7, 8})}};
    CHECK(refusal(request("echo", args), limits).empty());
    args["v"].push_back(9);
    CHECK(refusal(request("echo", args), limits) ==
          "arguments of 'echo' hold more than max_arg_values (10) values");
    limits.max_arg_values = 0;
    CHECK(refusal(request("echo", args), limits).empty());
  }

} // TEST_SUITE
