// Host tools: C++ functions registered with the runtime and called from Python tools
// (SessionContext.call_host_tool). A throwing tool reaches Python as HostToolError.
#include "showcase.hpp"

#include <cstdint>
#include <stdexcept>

namespace showcase {

std::string fnv1a_hex(std::string_view text) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : text)
    h = (h ^ c) * 1099511628211ull;
  return fmt::format("{:016x}", h);
}

caf::error register_host_tools(snakepit::runtime& rt) {
  if (auto err = rt.register_host_tool(
        "label_names",
        [](const json&) {
          return json{"setosa", "versicolor", "virginica"};
        },
        "Class names of the ML demo's data set"))
    return err;
  if (auto err = rt.register_host_tool(
        "host_checksum",
        [](const json& args) {
          auto text = args.value("text", std::string{});
          return json{{"fnv1a", fnv1a_hex(text)}, {"length", text.size()}};
        },
        "FNV-1a 64 checksum of `text`, computed in C++"))
    return err;
  return rt.register_host_tool(
    "host_fail",
    [](const json&) -> json {
      throw std::runtime_error("inventory service unavailable");
    },
    "Always fails (shows a host tool error in Python)");
}

void run_host_tools(app& a) {
  section("Host tools called from Python");
  auto names = a.rt.execute("host_tool_names");
  if (a.ck.ok(names, "host_tool_names"))
    a.ck.that(names->result == json({"host_checksum", "host_fail", "label_names"}),
              fmt::format("Python sees the host tools {}", names->result.dump()));
  auto sum = a.rt.execute("ask_host",
                          {{"name", "host_checksum"}, {"args", {{"text", "snakepit"}}}});
  if (a.ck.ok(sum, "ask_host(host_checksum)")) {
    fmt::print("   {} [{}]\n", sum->result.dump(), sum->worker_id);
    a.ck.that(sum->result["result"].value("fnv1a", "") == fnv1a_hex("snakepit"),
              "Python got the checksum the C++ function computed");
  }
  auto bad = a.rt.execute("ask_host", {{"name", "host_fail"}});
  auto py = bad ? std::nullopt : snakepit::python_error_of(bad.error());
  fmt::print("   host_fail -> {}\n",
             bad ? "succeeded?" : snakepit::describe(bad.error()));
  a.ck.that(
    py && py->type == "HostToolError" &&
      py->message.find("inventory service unavailable") != std::string::npos,
    "a throwing host tool surfaces as tool_error (HostToolError) with its message");
}

} // namespace showcase
