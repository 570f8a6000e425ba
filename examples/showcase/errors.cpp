// Error handling patterns: match on the typed error, on a Python exception's type, a
// timeout answered with a fallback, a stream that fails midway and one the consumer
// halts.
#include "showcase.hpp"

#include <thread>

namespace showcase {

namespace {

using snakepit::errc;

/// What a caller does with each kind of failure.
std::string handle(const caf::error& err) {
  if (err == errc::unknown_tool)
    return "no such tool: fix the caller";
  if (err == errc::invalid_argument)
    return "arguments rejected before the tool ran: fix the request";
  if (err == errc::timeout)
    return "deadline passed: use a fallback";
  if (auto py = snakepit::python_error_of(err)) {
    if (py->type == "ZeroDivisionError")
      return "Python ZeroDivisionError: report 'undefined'";
    if (py->type == "ShowcaseError")
      return "application error: show the message '" + py->message + "'";
    return "other Python exception " + py->type + ": log it with its traceback";
  }
  return "unexpected: " + snakepit::describe(err);
}

/// Calls `tool` expecting a failure with `code` (and Python type `type`, if given).
void expect_failure(app& a, const std::string& tool, json args, errc code,
                    const std::string& type = {}) {
  auto r = a.rt.execute(tool, args);
  if (!a.ck.that(!r, fmt::format("{}({}) fails", tool, args.dump())))
    return;
  auto py = snakepit::python_error_of(r.error());
  fmt::print("     {}\n     cid {} -> {}\n", snakepit::describe(r.error()),
             snakepit::correlation_id_of(r.error()), handle(r.error()));
  a.ck.that(r.error() == code && (type.empty() || (py && py->type == type)),
            fmt::format("as {}{}", snakepit::to_string(code),
                        type.empty() ? "" : " with Python type " + type));
}

void timeout_with_fallback(app& a) {
  snakepit::execute_options opts;
  opts.timeout = std::chrono::milliseconds{300};
  auto t0 = std::chrono::steady_clock::now();
  auto r = a.rt.execute("slow", {{"ms", 1500}}, opts);
  json value = r ? r->result : json{{"slept_ms", 0}, {"fallback", true}};
  fmt::print("   slow(1500 ms) with a 300 ms budget: {} after {:.0f} ms -> {}\n",
             r ? "answered" : snakepit::describe(r.error()), ms_since(t0), value.dump());
  a.ck.that(!r && r.error() == errc::timeout, "the call ends with timeout");
  a.ck.that(value.value("fallback", false), "and the caller continues with its fallback");
}

void failing_stream(app& a) {
  int chunks = 0;
  auto err = a.rt.execute_stream("stream_then_fail", {{"after", 3}},
                                 [&](const json&, bool) { return ++chunks, true; });
  auto py = snakepit::python_error_of(err);
  fmt::print("   stream_then_fail: {} chunks, then {}\n", chunks,
             snakepit::describe(err));
  a.ck.that(chunks == 3 && err == errc::tool_error && py && py->type == "RuntimeError",
            "3 chunks arrive, then the stream fails with tool_error (RuntimeError)");
}

/// Waits until the generator's `finally` recorded where it stopped.
std::optional<json> wait_closed(app& a, const std::string& sid) {
  for (int i = 0; i < 250; ++i) {
    if (auto at = host_state(a.rt, sid, "stream_closed_at"))
      return at;
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
  return std::nullopt;
}

void halted_stream(app& a) {
  auto sid = new_session(a, "errors");
  if (!sid)
    return;
  int chunks = 0;
  auto err = a.rt.execute_in_session_stream(
    *sid, "stream_readings", {{"delay_ms", 10}}, [&](const json& c, bool) {
      ++chunks;
      return c.value("valid", true); // halt at the first invalid reading
    });
  auto closed = wait_closed(a, *sid);
  fmt::print("   stream_readings: halted at the invalid reading {} ({}); Python closed "
             "the generator at reading {}\n   (the producer may run ahead of the "
             "consumer by what the queues between them hold)\n",
             chunks, snakepit::describe(err), closed ? closed->dump() : "?");
  a.ck.that(!err && chunks == 4,
            "halting (on_chunk returns false) ends the call cleanly");
  a.ck.that(closed.has_value(), "the generator's finally ran in Python (closed)");
  drop_session(a, *sid);
}

} // namespace

void run_errors(app& a) {
  section("Error handling patterns");
  fmt::print("   -- match on the typed error\n");
  expect_failure(a, "no_such_tool", json::object(), errc::unknown_tool);
  expect_failure(a, "compute", {{"op", "add"}, {"a", 1}}, errc::invalid_argument);
  fmt::print("   -- match on the Python exception's type\n");
  expect_failure(a, "compute", {{"op", "div"}, {"a", 1}, {"b", 0}}, errc::tool_error,
                 "ZeroDivisionError");
  expect_failure(a, "error_demo", {{"kind", "showcase"}}, errc::tool_error,
                 "ShowcaseError");
  fmt::print("   -- a timeout with a fallback\n");
  timeout_with_fallback(a);
  fmt::print("   -- streams: one fails midway, one is halted by its consumer\n");
  failing_stream(a);
  halted_stream(a);
}

} // namespace showcase
