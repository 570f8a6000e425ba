// Fuzz target `names`: the validators every outside name passes: session ids
// (validate_session_id), tool names (validate_tool_name), command names and their
// printable form in messages (printable_command, printable_name), and the request
// check of a pool (check_input, with the rest of the input as JSON arguments). The
// input's first line is the name. Each validator must keep the promise its header
// makes, checked here against a plain restatement of it.
#include <algorithm>
#include <string>

#include "actors/pool/input_checks.hpp"
#include "actors/sessions/session_store.hpp"
#include "actors/sessions/tool_registry.hpp"
#include "adapters/errors.hpp"
#include "tests/fuzz/fuzz_target.hpp"

namespace {

using snakepit::fuzz::require;

bool alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

void session_id(const std::string& id) {
  bool expected = !id.empty() && id.size() <= snakepit::actors::max_session_id_length &&
                  std::all_of(id.begin(), id.end(),
                              [](char c) { return alnum(c) || c == '_' || c == '-'; });
  auto err = snakepit::actors::validate_session_id(id);
  require(!err == expected, "validate_session_id keeps [A-Za-z0-9_-]{1,128}");
  if (err)
    require(err == snakepit::errc::invalid_session_id, "a bad id is invalid_session_id");
}

void tool_name(const std::string& name) {
  bool expected = !name.empty() &&
                  name.size() <= snakepit::actors::max_tool_name_length &&
                  alnum(name[0]) && std::all_of(name.begin(), name.end(), [](char c) {
                    return alnum(c) || c == '_' || c == '-' || c == '.';
                  });
  auto err = snakepit::actors::validate_tool_name(name);
  require(!err == expected, "validate_tool_name keeps [A-Za-z0-9][A-Za-z0-9_.-]{0,63}");
}

void command(const std::string& name, const std::string& rest) {
  using namespace snakepit::actors;
  bool printable = printable_command(name);
  auto shown = printable_name(name);
  require(std::none_of(shown.begin(), shown.end(),
                       [](char c) { return (c >= 0 && c < 0x20) || c == 0x7f; }),
          "printable_name shows no control byte");
  require(shown.size() <= 64 * 4 + 32, "printable_name is short");
  if (printable && name.size() <= 64)
    require(shown == name, "a short printable name is shown as it is");
  snakepit::execute_request req;
  req.command = name;
  auto args = nlohmann::json::parse(rest, nullptr, false);
  if (!args.is_discarded())
    req.args = std::move(args);
  snakepit::pool_input_limits limits;
  auto err = check_input(limits, req);
  if (!printable || name.size() > limits.max_command_bytes)
    require(err == snakepit::errc::invalid_argument, "a bad command name is refused");
  if (err)
    require(err == snakepit::errc::invalid_argument, "a refusal is invalid_argument");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto text = snakepit::fuzz::text_of(data, size);
  auto eol = text.find('\n');
  std::string name{text.substr(0, eol)};
  std::string rest{eol == text.npos ? std::string_view{} : text.substr(eol + 1)};
  session_id(name);
  tool_name(name);
  command(name, rest);
  return 0;
}
