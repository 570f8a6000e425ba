// The runtime's log with real Python workers: the same correlation id in the host's
// line and the worker's line of one request (unary and streaming, given and
// generated), worker stderr captured with the worker id, text lines in a log file.
#include <algorithm>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>

#include "adapters/log.hpp"
#include "adapters/process.hpp"
#include "harness.hpp"
#include "tests/support/log_capture.hpp"

using namespace std::chrono_literals;
using snakepit::json;
using namespace snakepit::testing;

namespace {

std::string str(const json& rec, const char* key) {
  auto i = rec.find(key);
  return i != rec.end() && i->is_string() ? i->get<std::string>() : std::string{};
}

snakepit::config json_debug_config() {
  auto cfg = small_config(1);
  cfg.log.level = snakepit::adapters::log_level::debug;
  cfg.log.format = snakepit::adapters::log_format::json;
  cfg.log.to_stderr = false;
  return cfg;
}

} // namespace

TEST_SUITE("integration.logging") {

  TEST_CASE("the correlation id of a unary call is in the host's line and the Python "
            "worker's line whether given or generated") {
    auto sink = std::make_shared<capture_sink>();
    snakepit::start_options opts;
    opts.log_sinks.push_back(sink);
    auto rt = snakepit::runtime::start(json_debug_config(), opts);
    REQUIRE_OK(rt);
    auto& r = **rt;

    snakepit::execute_options given;
    given.correlation_id = "cid-unary-given-1";
    auto res = r.execute("log", {{"message", "unary-given"}}, given);
    REQUIRE_OK(res);
    auto worker = res->worker_id;
    auto py =
      sink->wait_for([](const json& rec) { return str(rec, "msg") == "unary-given"; });
    REQUIRE_MSG(py, sink->dump());
    CHECK(str(*py, "correlation_id") == "cid-unary-given-1");
    CHECK(str(*py, "worker_id") == worker);
    CHECK(str(*py, "source") == "python");
    CHECK(str(*py, "level") == "info");
    CHECK(str(*py, "python_logger") == "snakepit_bridge.showcase");
    auto host = sink->wait_for([](const json& rec) {
      return str(rec, "msg") == "request completed" && str(rec, "command") == "log";
    });
    REQUIRE_MSG(host, sink->dump());
    CHECK(str(*host, "correlation_id") == "cid-unary-given-1");
    CHECK(str(*host, "worker_id") == worker);
    CHECK(str(*host, "pool") == "default");
    CHECK(str(*host, "level") == "debug");
    CHECK(host->at("duration_ms").is_number());
    CHECK(host->at("streaming") == false);
    // The servicer's own per-request line carries it too.
    CHECK(sink->wait_for([](const json& rec) {
      return str(rec, "msg") == "tool log started" &&
             str(rec, "correlation_id") == "cid-unary-given-1";
    }));

    res = r.execute("log", {{"message", "unary-generated"}});
    REQUIRE_OK(res);
    py = sink->wait_for(
      [](const json& rec) { return str(rec, "msg") == "unary-generated"; });
    REQUIRE_MSG(py, sink->dump());
    auto cid = str(*py, "correlation_id");
    CHECK(cid.rfind("default-", 0) == 0);
    host = sink->wait_for([&](const json& rec) {
      return str(rec, "msg") == "request completed" && str(rec, "correlation_id") == cid;
    });
    REQUIRE_MSG(host, "generated id " << cid << " not in a host line:\n" << sink->dump());
    CHECK(str(*host, "command") == "log");
    CHECK(str(*host, "worker_id") == res->worker_id);
    stop_and_check(r);
  }

  TEST_CASE("the correlation id of a streaming call is in the host's line and the Python "
            "worker's line whether given or generated") {
    auto sink = std::make_shared<capture_sink>();
    snakepit::start_options opts;
    opts.log_sinks.push_back(sink);
    auto rt = snakepit::runtime::start(json_debug_config(), opts);
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto count = 0;
    snakepit::execute_options given;
    given.correlation_id = "cid-stream-given-1";
    auto err = r.execute_stream(
      "stream_log", {{"message", "stream-given"}, {"steps", 2}},
      [&](const json&, bool) { return ++count, true; }, given);
    REQUIRE_OK(err);
    CHECK(count >= 2);
    auto host = sink->wait_for([](const json& rec) {
      return str(rec, "msg") == "request completed" &&
             str(rec, "correlation_id") == "cid-stream-given-1";
    });
    REQUIRE_MSG(host, sink->dump());
    for (auto step : {"stream-given step 1", "stream-given step 2"}) {
      auto py = sink->wait_for([&](const json& rec) { return str(rec, "msg") == step; });
      REQUIRE_MSG(py, sink->dump());
      CHECK(str(*py, "correlation_id") == "cid-stream-given-1");
      CHECK(str(*py, "worker_id") == str(*host, "worker_id"));
      CHECK(str(*py, "source") == "python");
    }
    CHECK(host->at("streaming") == true);
    CHECK(str(*host, "command") == "stream_log");

    err = r.execute_stream("stream_log", {{"message", "stream-generated"}, {"steps", 1}},
                           [&](const json&, bool) { return true; });
    REQUIRE_OK(err);
    auto py = sink->wait_for(
      [](const json& rec) { return str(rec, "msg") == "stream-generated step 1"; });
    REQUIRE_MSG(py, sink->dump());
    auto cid = str(*py, "correlation_id");
    CHECK(cid.rfind("default-", 0) == 0);
    host = sink->wait_for([&](const json& rec) {
      return str(rec, "msg") == "request completed" && str(rec, "correlation_id") == cid;
    });
    REQUIRE_MSG(host, "generated id " << cid << " not in a host line:\n" << sink->dump());
    CHECK(host->at("streaming") == true);
    CHECK(str(*host, "worker_id") == str(*py, "worker_id"));
    stop_and_check(r);
  }

  TEST_CASE("a tool's print to stderr becomes a host log line with the worker id") {
    auto sink = std::make_shared<capture_sink>();
    snakepit::start_options opts;
    opts.log_sinks.push_back(sink);
    auto cfg = small_config(2);
    cfg.log.level = snakepit::adapters::log_level::info;
    cfg.log.format = snakepit::adapters::log_format::json;
    cfg.log.to_stderr = false;
    auto rt = snakepit::runtime::start(cfg, opts);
    REQUIRE_OK(rt);
    auto& r = **rt;
    // At level debug the logging record is below the worker's level: only the print
    // reaches the host.
    snakepit::execute_options given;
    given.correlation_id = "cid-print-1";
    auto res = r.execute(
      "log", {{"message", "printed to stderr"}, {"level", "debug"}, {"raw", true}},
      given);
    REQUIRE_OK(res);
    auto line = sink->wait_for(
      [](const json& rec) { return str(rec, "msg") == "printed to stderr"; });
    REQUIRE_MSG(line, sink->dump());
    CHECK(str(*line, "worker_id") == res->worker_id);
    CHECK(str(*line, "pool") == "default");
    CHECK(str(*line, "stream") == "stderr");
    // The worker turns its prints into records that carry the request's id.
    CHECK(str(*line, "correlation_id") == "cid-print-1");
    CHECK(str(*line, "source") == "python");
    CHECK(str(*line, "level") == "warn");
    auto lines = sink->lines();
    CHECK(std::count_if(lines.begin(), lines.end(), [](const std::string& l) {
            return l.find("printed to stderr") != std::string::npos;
          }) == 1);
    // Nothing below info got through (no request lines, no tool-started lines).
    for (auto& rec : sink->records())
      CHECK_MSG(str(rec, "level") != "debug", rec.dump());
    CHECK(
      sink->wait_for([](const json& rec) { return str(rec, "msg") == "worker ready"; }));
    stop_and_check(r);
  }

  TEST_CASE(
    "text lines go to the log file for requests and the worker's lines and a crash") {
    auto dir = snakepit::adapters::runtime_dir::create("logtest");
    REQUIRE(dir);
    auto cfg = small_config(1);
    cfg.log.level = snakepit::adapters::log_level::debug;
    cfg.log.format = snakepit::adapters::log_format::text;
    cfg.log.to_stderr = false;
    cfg.log.file = dir->file("host.log");
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    snakepit::execute_options given;
    given.correlation_id = "cid-text-1";
    auto res = r.execute("log", {{"message", "text-format"}}, given);
    REQUIRE_OK(res);
    auto worker = res->worker_id;
    auto pid = serving_workers(r)->front().pid;
    CHECK_FALSE(r.execute("crash"));
    REQUIRE(eventually([&] {
      auto ws = serving_workers(r);
      return ws && ws->size() == 1 && ws->front().pid != pid;
    }));
    stop_and_check(r);
    auto text = read_file(dir->file("host.log"));
    auto has_line = [&](std::vector<std::string> parts) {
      std::istringstream in{text};
      std::string line;
      while (std::getline(in, line)) {
        bool all = true;
        for (auto& p : parts)
          all = all && line.find(p) != std::string::npos;
        if (all)
          return true;
      }
      return false;
    };
    CHECK_MSG(
      has_line({" debug snakepit: request completed ", "correlation_id=cid-text-1",
                "worker_id=" + worker, "command=log"}),
      text);
    CHECK_MSG(has_line({" info snakepit: text-format ", "correlation_id=cid-text-1",
                        "source=python", "worker_id=" + worker}),
              text);
    CHECK_MSG(has_line({" error snakepit: worker exited unexpectedly (exit code 1)",
                        "worker_id=" + worker}),
              text);
    CHECK_MSG(has_line({" info snakepit: worker ready ", "worker_id=" + worker}), text);
    CHECK_MSG(has_line({" info snakepit: runtime stopped "}), text);
  }

  TEST_CASE("a worker that cannot start leaves its Python error in the host log") {
    auto sink = std::make_shared<capture_sink>();
    snakepit::start_options opts;
    opts.log_sinks.push_back(sink);
    auto cfg = small_config(1);
    use_test_adapter(cfg, cfg.pools[0], "broken_adapter.BrokenAdapter");
    cfg.log.format = snakepit::adapters::log_format::json;
    cfg.log.to_stderr = false;
    auto rt = snakepit::runtime::start(cfg, opts);
    REQUIRE_FALSE(rt);
    auto recs = sink->records();
    auto from_python = std::count_if(recs.begin(), recs.end(), [](const json& rec) {
      return str(rec, "source") == "python" &&
             rec.dump().find("ImportError") != std::string::npos;
    });
    CHECK_MSG(from_python >= 1, sink->dump());
    auto failed = std::count_if(recs.begin(), recs.end(), [](const json& rec) {
      return str(rec, "msg") == "worker failed to start" && str(rec, "level") == "error";
    });
    CHECK_MSG(failed >= 1, sink->dump());
  }

  TEST_CASE("an invalid log setting fails the start with the key named") {
    auto cfg = small_config(1);
    cfg.log.level = static_cast<snakepit::adapters::log_level>(42);
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_FALSE(rt);
    CHECK(rt.error() == snakepit::errc::invalid_config);
    CHECK(snakepit::describe(rt.error()).find("log.level") != std::string::npos);
    cfg = small_config(1);
    cfg.log.file = "/dev/null/host.log";
    rt = snakepit::runtime::start(cfg);
    REQUIRE_FALSE(rt);
    CHECK(rt.error() == snakepit::errc::invalid_config);
    CHECK(snakepit::describe(rt.error()).find("/dev/null/host.log") != std::string::npos);
  }

} // TEST_SUITE
