// The structured logger (text and JSON lines, levels, fields, files) and the stderr
// pump with real child processes writing to their stderr pipes.
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "adapters/errors.hpp"
#include "adapters/log.hpp"
#include "adapters/process.hpp"
#include "adapters/stderr_pump.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/files.hpp"
#include "tests/support/log_capture.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using namespace snakepit::adapters;
using snakepit::testing::capture_sink;
using snakepit::testing::eventually;
using snakepit::testing::read_file;

namespace {

std::shared_ptr<logger> make_logger(std::shared_ptr<capture_sink> sink, log_level lvl,
                                    log_format fmt) {
  log_options opts;
  opts.level = lvl;
  opts.format = fmt;
  opts.to_stderr = false;
  opts.sinks.push_back(sink);
  auto lg = logger::create(std::move(opts));
  REQUIRE(lg);
  return *lg;
}

/// Open fds of this process, after the process-wide ones (exit watcher, lifeline
/// pipe) exist: they are created once, on the first spawn.
size_t open_fds() {
  static bool warm = [] {
    process_spec spec;
    spec.executable = "/bin/true";
    spec.pass_lifeline = false;
    if (auto proc = spawn_process(spec))
      wait_for_exit(proc->pid(), 20s);
    return true;
  }();
  (void)warm;
  size_t n = 0;
  if (auto* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d) != nullptr)
      ++n;
    ::closedir(d);
  }
  return n;
}

/// Runs `script` under /bin/sh with its stderr on a pump pipe; waits for the exit.
void run_with_pump(stderr_pump& pump, const std::string& script, json fields) {
  auto fd = pump.open(std::move(fields));
  REQUIRE(fd);
  process_spec spec;
  spec.executable = "/bin/sh";
  spec.args = {"-c", script};
  spec.pass_lifeline = false;
  spec.stderr_fd = *fd;
  auto proc = spawn_process(spec);
  ::close(*fd);
  REQUIRE(proc);
  auto status = wait_for_exit(proc->pid(), 20s);
  REQUIRE(status);
  CHECK(status->code == 0);
}

} // namespace

TEST_SUITE("adapters.log") {

  TEST_CASE("level and format names parse and anything else is refused") {
    CHECK(parse_log_level("trace") == log_level::trace);
    CHECK(parse_log_level("warning") == log_level::warn);
    CHECK(parse_log_level("off") == log_level::off);
    CHECK_FALSE(parse_log_level("verbose"));
    CHECK_FALSE(parse_log_level("INFO"));
    CHECK(parse_log_format("json") == log_format::json);
    CHECK_FALSE(parse_log_format("xml"));
    CHECK(std::string{to_string(log_level::warn)} == "warn");
  }

  TEST_CASE(
    "text lines carry the message and the fields as key=value quoted when needed") {
    auto sink = std::make_shared<capture_sink>();
    auto lg = make_logger(sink, log_level::debug, log_format::text);
    lg->info("request completed", {{"pool", "default"},
                                   {"worker_id", "default-1"},
                                   {"command", "two words"},
                                   {"duration_ms", 3},
                                   {"session_id", ""}});
    auto lines = sink->lines();
    REQUIRE(lines.size() == 1);
    CHECK(lines[0] ==
          "request completed pool=default worker_id=default-1 command=\"two words\" "
          "duration_ms=3");
  }

  TEST_CASE(
    "JSON lines are one object with ts and level and logger and msg and the fields") {
    auto sink = std::make_shared<capture_sink>();
    auto lg = make_logger(sink, log_level::info, log_format::json);
    lg->warn("queue timeout",
             {{"pool", "p"}, {"correlation_id", "c-1"}, {"msg", "ignored"}});
    // Invalid UTF-8 (a Python line may carry anything) is replaced, never thrown.
    lg->info(std::string{"bad \xff byte"}, {{"raw", std::string{"\xc3\x28"}}});
    auto recs = sink->records();
    REQUIRE(recs.size() == 2);
    CHECK(recs[0]["level"] == "warn");
    CHECK(recs[0]["logger"] == "snakepit");
    CHECK(recs[0]["msg"] == "queue timeout");
    CHECK(recs[0]["pool"] == "p");
    CHECK(recs[0]["correlation_id"] == "c-1");
    auto ts = recs[0]["ts"].get<std::string>();
    CHECK(ts.size() == 24);
    CHECK(ts.back() == 'Z');
    CHECK(recs[1]["msg"].get<std::string>().rfind("bad ", 0) == 0);
  }

  TEST_CASE("lines below the level are dropped and the level can change at run time") {
    auto sink = std::make_shared<capture_sink>();
    auto lg = make_logger(sink, log_level::warn, log_format::text);
    CHECK_FALSE(lg->enabled(log_level::info));
    lg->info("hidden");
    lg->debug("hidden");
    lg->error("shown");
    lg->set_level(log_level::debug);
    lg->debug("now shown");
    lg->set_level(log_level::off);
    lg->error("off hides everything");
    CHECK(sink->lines() == std::vector<std::string>{"shown", "now shown"});
  }

  TEST_CASE(
    "a log file gets timestamped lines and an unopenable file is a config error") {
    auto dir = runtime_dir::create("logtest");
    REQUIRE(dir);
    log_options opts;
    opts.to_stderr = false;
    opts.level = log_level::info;
    opts.file = dir->file("host.log");
    auto lg = logger::create(opts);
    REQUIRE(lg);
    (*lg)->info("hello", {{"worker_id", "w-1"}});
    (*lg)->flush();
    auto text = read_file(dir->file("host.log"));
    CHECK(text.find(" info snakepit: hello worker_id=w-1\n") != std::string::npos);
    // (spdlog creates missing parent directories; a regular file as parent fails.)
    opts.file = dir->file("host.log/nested.log");
    auto bad = logger::create(opts);
    REQUIRE_FALSE(bad);
    CHECK(bad.error() == snakepit::errc::invalid_config);
    CHECK(snakepit::describe(bad.error()).find("host.log/nested.log") !=
          std::string::npos);
  }

  TEST_CASE(
    "a Python JSON record keeps its level and logger and correlation id and exception") {
    auto sink = std::make_shared<capture_sink>();
    auto lg = make_logger(sink, log_level::debug, log_format::json);
    json tags{{"pool", "p"}, {"worker_id", "p-1"}};
    log_worker_line(
      *lg, log_level::warn, tags,
      R"({"ts":"x","level":"ERROR","logger":"app","msg":"it broke",)"
      R"("worker_id":"p-1","correlation_id":"c-9","pid":42,"exc":"Traceback"})");
    log_worker_line(
      *lg, log_level::warn, tags,
      R"({"level":"DEBUG","logger":"app","msg":"quiet","correlation_id":"-"})");
    auto recs = sink->records();
    REQUIRE(recs.size() == 2);
    CHECK(recs[0]["level"] == "error");
    CHECK(recs[0]["msg"] == "it broke");
    CHECK(recs[0]["python_logger"] == "app");
    CHECK(recs[0]["correlation_id"] == "c-9");
    CHECK(recs[0]["worker_id"] == "p-1");
    CHECK(recs[0]["pool"] == "p");
    CHECK(recs[0]["source"] == "python");
    CHECK(recs[0]["pid"] == 42);
    CHECK(recs[0]["exc"] == "Traceback");
    CHECK(recs[1]["level"] == "debug");
    CHECK_FALSE(recs[1].contains("correlation_id"));
  }

  TEST_CASE("other stderr lines are logged raw at the raw level with a cid= if present") {
    auto sink = std::make_shared<capture_sink>();
    auto lg = make_logger(sink, log_level::info, log_format::json);
    json tags{{"worker_id", "w"}};
    log_worker_line(*lg, log_level::info, tags, "Traceback (most recent call last):\r");
    log_worker_line(*lg, log_level::info, tags,
                    "2026 INFO snakepit_bridge[1] worker=w cid=abc-1 x: hi");
    log_worker_line(*lg, log_level::info, tags, "{not json");
    log_worker_line(*lg, log_level::info, tags, "");
    log_worker_line(*lg, log_level::debug, tags, "below the level");
    auto recs = sink->records();
    REQUIRE(recs.size() == 3);
    CHECK(recs[0]["msg"] == "Traceback (most recent call last):");
    CHECK(recs[0]["stream"] == "stderr");
    CHECK(recs[0]["worker_id"] == "w");
    CHECK(recs[1]["correlation_id"] == "abc-1");
    CHECK(recs[2]["msg"] == "{not json");
  }

  TEST_CASE(
    "the pump logs a child's stderr line by line and flushes the last line at exit") {
    auto sink = std::make_shared<capture_sink>();
    auto lg = make_logger(sink, log_level::info, log_format::json);
    auto fds_before = open_fds();
    {
      stderr_pump pump{lg, log_level::info};
      run_with_pump(pump, "echo one >&2; printf 'two\\nthree' >&2",
                    {{"worker_id", "sh-1"}});
      REQUIRE(eventually([&] { return pump.open_pipes() == 0; }));
      auto recs = sink->records();
      REQUIRE(recs.size() == 3);
      CHECK(recs[0]["msg"] == "one");
      CHECK(recs[1]["msg"] == "two");
      CHECK(recs[2]["msg"] == "three");
      for (auto& r : recs)
        CHECK(r["worker_id"] == "sh-1");
    }
    CHECK(open_fds() == fds_before);
  }

  TEST_CASE("a child writing megabytes to stderr is never blocked and nothing is lost") {
    auto sink = std::make_shared<capture_sink>();
    auto lg = make_logger(sink, log_level::info, log_format::text);
    stderr_pump pump{lg, log_level::info};
    // 20000 lines of ~100 bytes: far more than a pipe buffer holds.
    run_with_pump(
      pump,
      "i=0; while [ $i -lt 20000 ]; do "
      "echo \"line $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
      "xxxxxxxxxxxxxxxxxxxx\" >&2; i=$((i+1)); done",
      {{"worker_id", "big"}});
    REQUIRE(eventually([&] { return pump.open_pipes() == 0; }));
    auto lines = sink->lines();
    REQUIRE(lines.size() == 20000);
    CHECK(lines.front().rfind("line 0 ", 0) == 0);
    CHECK(lines.back().rfind("line 19999 ", 0) == 0);
  }

  TEST_CASE(
    "several children share one pump and stop logs what is left and closes every pipe") {
    auto sink = std::make_shared<capture_sink>();
    auto lg = make_logger(sink, log_level::info, log_format::json);
    auto fds_before = open_fds();
    std::optional<stderr_pump> holder;
    holder.emplace(lg, log_level::info);
    auto& pump = *holder;
    for (int i = 0; i < 4; ++i)
      run_with_pump(pump, "echo hello-" + std::to_string(i) + " >&2",
                    {{"worker_id", "w" + std::to_string(i)}});
    // A writer that is still alive when the pump stops: its pipe is closed anyway.
    auto fd = pump.open({{"worker_id", "late"}});
    REQUIRE(fd);
    CHECK(::write(*fd, "unterminated", 12) == 12);
    pump.stop();
    ::close(*fd);
    CHECK(pump.open_pipes() == 0);
    CHECK_FALSE(pump.open({}));
    holder.reset();
    CHECK(open_fds() == fds_before);
    auto recs = sink->records();
    REQUIRE(recs.size() == 5);
    std::vector<std::string> seen;
    for (auto& r : recs)
      seen.push_back(r["worker_id"].get<std::string>() + ":" +
                     r["msg"].get<std::string>());
    std::sort(seen.begin(), seen.end());
    CHECK(seen == std::vector<std::string>{"late:unterminated", "w0:hello-0",
                                           "w1:hello-1", "w2:hello-2", "w3:hello-3"});
  }

  TEST_CASE("startup output that several starting workers of a pool print is logged "
            "once, and a started worker's lines are all logged") {
    auto sink = std::make_shared<capture_sink>();
    auto lg = make_logger(sink, log_level::info, log_format::json);
    stderr_pump pump{lg, log_level::warn};
    const std::string traceback = "Traceback (most recent call last):\n"
                                  "  File \"<frozen>\", line 1, in _find\n"
                                  "  File \"<frozen>\", line 1, in _find\n"
                                  "ModuleNotFoundError: No module named 'no'\n";
    auto write_all = [&](const char* worker,
                         std::shared_ptr<std::atomic<bool>> starting) {
      auto fd = pump.open({{"pool", "p"}, {"worker_id", worker}}, {},
                          snakepit::adapters::pipe_options{"p", std::move(starting)});
      REQUIRE(fd);
      CHECK(::write(*fd, traceback.data(), traceback.size()) ==
            static_cast<ssize_t>(traceback.size()));
      ::close(*fd);
      REQUIRE(eventually([&] { return pump.open_pipes() == 0; }));
    };
    auto count = [&](const std::string& msg, const char* worker) {
      size_t n = 0;
      for (auto& r : sink->records())
        if (r["msg"] == msg && r["worker_id"] == worker)
          ++n;
      return n;
    };
    write_all("p_worker_1", std::make_shared<std::atomic<bool>>(true));
    write_all("p_worker_2", std::make_shared<std::atomic<bool>>(true));
    write_all("p_worker_3", nullptr); // no flag: starting
    // The first worker's output whole (its own repeated frame line included) ...
    CHECK(count("Traceback (most recent call last):", "p_worker_1") == 1);
    CHECK(count("  File \"<frozen>\", line 1, in _find", "p_worker_1") == 2);
    CHECK(count("ModuleNotFoundError: No module named 'no'", "p_worker_1") == 1);
    // ... the others' copies not, but one line each saying so.
    for (auto w : {"p_worker_2", "p_worker_3"}) {
      CAPTURE(w);
      CHECK(count("Traceback (most recent call last):", w) == 0);
      CHECK(count("ModuleNotFoundError: No module named 'no'", w) == 0);
      size_t notes = 0;
      for (auto& r : sink->records())
        if (r["worker_id"] == w && r.value("first_worker", "") == "p_worker_1")
          ++notes;
      CHECK(notes == 1);
    }
    // A worker that is ready logs everything; another pool is another group.
    write_all("p_worker_4", std::make_shared<std::atomic<bool>>(false));
    CHECK(count("Traceback (most recent call last):", "p_worker_4") == 1);
    auto fd = pump.open({{"worker_id", "q_worker_1"}}, {},
                        snakepit::adapters::pipe_options{"q", nullptr});
    REQUIRE(fd);
    CHECK(::write(*fd, traceback.data(), traceback.size()) > 0);
    ::close(*fd);
    REQUIRE(eventually([&] { return pump.open_pipes() == 0; }));
    CHECK(count("ModuleNotFoundError: No module named 'no'", "q_worker_1") == 1);
    // Python log records are the same when message and exception text are, whatever
    // their time and pid.
    for (auto [w, pid] : {std::pair{"r_worker_1", 11}, std::pair{"r_worker_2", 12}}) {
      auto rec = json{{"ts", std::to_string(pid)},
                      {"level", "error"},
                      {"pid", pid},
                      {"msg", "import failed"},
                      {"exc", "Traceback ...\nImportError: x"}}
                   .dump() +
                 "\n";
      auto rfd =
        pump.open({{"worker_id", w}}, {}, snakepit::adapters::pipe_options{"r", nullptr});
      REQUIRE(rfd);
      CHECK(::write(*rfd, rec.data(), rec.size()) == static_cast<ssize_t>(rec.size()));
      ::close(*rfd);
      REQUIRE(eventually([&] { return pump.open_pipes() == 0; }));
    }
    CHECK(count("import failed", "r_worker_1") == 1);
    CHECK(count("import failed", "r_worker_2") == 0);
  }

} // TEST_SUITE
