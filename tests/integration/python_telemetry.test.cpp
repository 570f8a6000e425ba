// Python-side telemetry relayed through StreamTelemetry onto the host's bus as
// snakepit.python.*, with real workers: adapter events from unary and streaming calls,
// correlation ids, a restarted worker's stream, and a stop the open stream never holds.
#include <mutex>
#include <vector>

#include "actors/observability/telemetry.hpp"
#include "harness.hpp"
#include "tests/support/event_capture.hpp"

using namespace std::chrono_literals;
using snakepit::json;
using namespace snakepit::testing;

namespace {

std::string md(const snakepit::telemetry::event& ev, const char* key) {
  auto i = ev.metadata.find(key);
  return i != ev.metadata.end() && i->is_string() ? i->get<std::string>() : std::string{};
}

} // namespace

TEST_SUITE("integration.python_telemetry") {

  TEST_CASE(
    "events a Python tool emits reach the bus as snakepit.python.* with worker and "
    "correlation ids") {
    event_capture seen;
    auto rt = snakepit::runtime::start(small_config(1), seen.options("snakepit.python"));
    REQUIRE_OK(rt);
    auto& r = **rt;

    snakepit::execute_options given;
    given.correlation_id = "cid-pytel-1";
    auto res = r.execute("emit_event",
                         {{"name", "model.loaded"},
                          {"measurements", {{"size", 3}, {"ratio", 0.5}, {"label", "x"}}},
                          {"metadata", {{"stage", "warm"}}}},
                         given);
    REQUIRE_OK(res);
    CHECK(res->result == true);
    auto ev = seen.wait_for("snakepit.python.model.loaded", [](auto&) { return true; });
    REQUIRE_MSG(ev, seen.dump());
    CHECK(ev->measurements["size"] == 3);
    CHECK(ev->measurements["ratio"] == 0.5);
    CHECK(ev->measurements["label"] == "x");
    CHECK(md(*ev, "stage") == "warm");
    CHECK(md(*ev, "worker_id") == res->worker_id);
    CHECK(md(*ev, "pool") == "default");
    CHECK(md(*ev, "correlation_id") == "cid-pytel-1");
    CHECK(ev->metadata["python_timestamp_ns"].get<int64_t>() > 0);

    // From a streaming tool: each event carries the stream's correlation id.
    snakepit::execute_options streamed;
    streamed.correlation_id = "cid-pytel-stream";
    auto err = r.execute_stream(
      "stream_log", {{"message", "m"}, {"steps", 2}},
      [](const json&, bool) { return true; }, streamed);
    REQUIRE_OK(err);
    for (int step : {1, 2}) {
      auto sev = seen.wait_for("snakepit.python.showcase.stream_step", [&](auto& e) {
        return e.measurements.value("step", 0) == step;
      });
      REQUIRE_MSG(sev, seen.dump());
      CHECK(md(*sev, "correlation_id") == "cid-pytel-stream");
      CHECK(md(*sev, "worker_id") == res->worker_id);
      CHECK(md(*sev, "message") == "m");
    }
    // A generated id reaches the events too.
    res = r.execute("emit_event", {{"name", "no.cid.given"}});
    REQUIRE_OK(res);
    auto gen = seen.wait_for("snakepit.python.no.cid.given", [](auto&) { return true; });
    REQUIRE_MSG(gen, seen.dump());
    CHECK(md(*gen, "correlation_id").rfind("default-", 0) == 0);

    // Upstream's python.* names are not doubled; invalid names are refused in Python.
    res = r.execute("emit_event", {{"name", "python.memory.sampled"},
                                   {"measurements", {{"rss_mb", 12.5}}}});
    REQUIRE_OK(res);
    CHECK(seen.wait_for("snakepit.python.memory.sampled", [](auto&) { return true; }));
    res = r.execute("emit_event", {{"name", "not a name!"}});
    REQUIRE_OK(res);
    CHECK(res->result == false);
    stop_and_check(r);
  }

  TEST_CASE("a restarted worker relays again and the open stream never holds a stop") {
    event_capture seen;
    auto cfg = small_config(1);
    // Python's grace period would be 9.5 s: a stop held by the stream would show.
    cfg.pools[0].graceful_shutdown_timeout = 10s;
    auto rt = snakepit::runtime::start(cfg, seen.options("snakepit.python"));
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto pid = serving_workers(r)->front().pid;
    ::kill(pid, SIGKILL);
    REQUIRE(eventually([&] {
      auto ws = serving_workers(r);
      return ws && ws->size() == 1 && ws->front().pid != pid;
    }));
    auto res = r.execute("emit_event", {{"name", "after.restart"}});
    REQUIRE_OK(res);
    CHECK(seen.wait_for("snakepit.python.after.restart", [](auto&) { return true; }));
    auto started = std::chrono::steady_clock::now();
    stop_and_check(r);
    auto took = std::chrono::steady_clock::now() - started;
    CHECK_MSG(
      took < 8s,
      "stop took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                   << " ms");
  }

  TEST_CASE(
    "set_python_telemetry switches, filters and samples the workers' events, also "
    "after a restart") {
    event_capture seen;
    auto rt = snakepit::runtime::start(small_config(1), seen.options("snakepit.python"));
    REQUIRE_OK(rt);
    auto& r = **rt;
    // The tool returns whether its worker queued the event, so the worker's view of
    // the settings is observable without waiting for absent events.
    auto queued = [&](const std::string& name) {
      auto res = r.execute("emit_event", {{"name", name}});
      REQUIRE_OK(res);
      return res->result.get<bool>();
    };
    snakepit::adapters::telemetry_control off;
    off.enabled = false;
    REQUIRE_FALSE(r.set_python_telemetry(off));
    CHECK(eventually([&] { return !queued("off.probe"); }));
    CHECK_FALSE(queued("off.final"));

    snakepit::adapters::telemetry_control filtered;
    filtered.deny = {"noisy.*"};
    REQUIRE_FALSE(r.set_python_telemetry(filtered));
    CHECK(eventually([&] { return queued("kept.one"); }));
    CHECK_FALSE(queued("noisy.one"));
    CHECK(seen.wait_for("snakepit.python.kept.one", [](auto&) { return true; }));

    snakepit::adapters::telemetry_control sampled;
    sampled.sampling_rate = 0.0;
    sampled.sampling_patterns = {"sampled.*"};
    REQUIRE_FALSE(r.set_python_telemetry(sampled));
    CHECK(eventually([&] { return !queued("sampled.probe"); }));
    CHECK_FALSE(queued("sampled.final"));
    CHECK(queued("other.one")); // the filter of before was replaced: nothing denied now
    CHECK(queued("noisy.two"));

    // A restarted worker gets the settings without being told again.
    REQUIRE_FALSE(r.set_python_telemetry(off));
    CHECK(eventually([&] { return !queued("off.probe"); }));
    auto pid = serving_workers(r)->front().pid;
    ::kill(pid, SIGKILL);
    REQUIRE(eventually([&] {
      auto ws = serving_workers(r);
      return ws && ws->size() == 1 && ws->front().pid != pid;
    }));
    CHECK(eventually([&] {
      auto res = r.execute("emit_event", {{"name", "off.restarted"}});
      return res && !res->result.get<bool>();
    }));

    snakepit::adapters::telemetry_control bad;
    bad.sampling_rate = 1.5;
    CHECK(r.set_python_telemetry(bad) == snakepit::errc::invalid_argument);

    CHECK(r.telemetry().flush(5s));
    for (auto name : {"snakepit.python.off.final", "snakepit.python.noisy.one",
                      "snakepit.python.sampled.final"}) {
      CHECK_MSG(seen.count(name) == 0, name);
    }
    stop_and_check(r);
  }
} // TEST_SUITE
