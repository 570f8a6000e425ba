// docs/workers.md's host adapter example, built and run by the test suite so it stays
// true: a pool of Node.js workers whose calls a host-side adapter checks, completes
// and post-processes. Usage: snakepit_host_adapter_example [repository root]
#include <fmt/format.h>

#include "actors/pool/adapter.hpp"
#include "actors/snakepit.hpp"

namespace {

/// Only `add` and `echo`, with numbers checked before anything reaches a worker.
class calculator_adapter : public snakepit::adapter {
 public:
  std::optional<std::vector<std::string>> supported_commands() const override {
    return std::vector<std::string>{"add", "echo"};
  }

  std::optional<bool> supports_streaming() const override { return false; }

  caf::error validate_command(const std::string& command,
                              const nlohmann::json& args) const override {
    if (auto err = adapter::validate_command(command, args)) // unknown_tool
      return err;
    if (command == "add" && !(args.contains("a") && args["a"].is_number()))
      return caf::make_error(snakepit::errc::invalid_argument,
                             "add: 'a' must be a number");
    return caf::none;
  }

  // `b` defaults to 1.
  nlohmann::json prepare_args(const std::string& command,
                              nlohmann::json args) const override {
    if (command == "add" && !args.contains("b"))
      args["b"] = 1;
    return args;
  }

  // Results come back wrapped, with the command that produced them.
  nlohmann::json process_response(const std::string& command,
                                  nlohmann::json result) const override {
    return {{"command", command}, {"value", std::move(result)}};
  }

  std::chrono::milliseconds command_timeout(const std::string&,
                                            const nlohmann::json&) const override {
    return std::chrono::seconds{5};
  }
};

} // namespace

int main(int argc, char** argv) {
  std::string root = argc > 1 ? argv[1] : ".";
  snakepit::config cfg;
  auto& pool = cfg.pools[0];
  pool.name = "calc";
  pool.pool_size = 2;
  pool.kind = snakepit::worker_kind::stdio;
  pool.command = {"node", root + "/node/bridge.js"};
  pool.host_adapter = std::make_shared<calculator_adapter>();
  auto rt = snakepit::runtime::start(cfg);
  if (!rt)
    return fmt::print(stderr, "{}\n", snakepit::describe(rt.error())), 1;
  int failures = 0;
  auto expect = [&](bool ok, const std::string& what) {
    fmt::print("{} {}\n", ok ? "ok  " : "FAIL", what);
    failures += ok ? 0 : 1;
  };
  auto sum = (*rt)->execute("add", {{"a", 41}}); // b = 1 added by prepare_args
  expect(sum && sum->result == nlohmann::json{{"command", "add"}, {"value", 42}},
         sum ? "add {a: 41} -> " + sum->result.dump() : snakepit::describe(sum.error()));
  auto bad = (*rt)->execute("add", {{"a", "x"}});
  expect(!bad && bad.error() == snakepit::errc::invalid_argument,
         "add {a: 'x'} -> " +
           (bad ? bad->result.dump() : snakepit::describe(bad.error())));
  auto other = (*rt)->execute("sleep", {{"ms", 1}}); // served by the bridge, not allowed
  expect(!other && other.error() == snakepit::errc::unknown_tool,
         "sleep -> " +
           (other ? other->result.dump() : snakepit::describe(other.error())));
  auto err = (*rt)->stop();
  expect(!err, "stop");
  return failures == 0 ? 0 : 1;
}
