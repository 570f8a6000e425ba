// The `snakepit` binary as a user runs it: output, exit codes (docs/cli.md) and a clean
// stop of `run` on SIGTERM. Each run is bounded by timeout(1).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/checks.hpp"
#include "tests/support/python.hpp"

namespace {

struct outcome {
  int code = -1;
  std::string out;
  std::string err;
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s)
    q += c == '\'' ? std::string{"'\\''"} : std::string(1, c);
  return q + "'";
}

std::filesystem::path scratch_dir() {
  auto dir = std::filesystem::temp_directory_path() /
             ("snakepit-cli-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir;
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in{p};
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// Runs the CLI with `args` (and `env`, "NAME=value" entries added to the
/// environment), stdout captured through popen, stderr through a file.
outcome run_cli(const std::vector<std::string>& args, int timeout_s = 90,
                const std::vector<std::string>& env = {}) {
  auto err_file = scratch_dir() / "stderr.txt";
  std::string cmd = "env";
  for (auto& e : env)
    cmd += " " + quote(e);
  cmd += " timeout -k 5 " + std::to_string(timeout_s) + " " + quote(SNAKEPIT_CLI_BINARY);
  for (auto& a : args)
    cmd += " " + quote(a);
  cmd += " 2>" + quote(err_file.string());
  outcome res;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0)
    res.out.append(buf, n);
  int status = ::pclose(pipe);
  res.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  res.err = slurp(err_file);
  return res;
}

/// Removes the scratch directory when the suite exits.
struct scratch_cleanup {
  ~scratch_cleanup() {
    std::error_code ec;
    std::filesystem::remove_all(scratch_dir(), ec);
  }
} cleanup_at_exit;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

} // namespace

TEST_SUITE("cli") {

  TEST_CASE("--help lists the commands and exits 0") {
    auto res = run_cli({"--help"});
    CHECK(res.code == 0);
    for (auto cmd :
         {"run", "exec", "tools", "doctor", "cleanup", "stats", "workers", "Exit codes"})
      CHECK_MSG(contains(res.out, cmd), std::string{cmd});
    auto sub = run_cli({"exec", "--help"});
    CHECK(sub.code == 0);
    CHECK(contains(sub.out, "TOOL"));
    CHECK(contains(sub.out, "--config"));
  }

  TEST_CASE("no command or an unknown option is a usage error (exit 2)") {
    CHECK(run_cli({}).code == 2);
    auto res = run_cli({"exec", "--no-such-option", "echo"});
    CHECK(res.code == 2);
    CHECK_FALSE(res.err.empty());
  }

  TEST_CASE("exec echo prints the JSON result with the built-in default pool") {
    auto res = run_cli({"exec", "echo", R"({"message":"hi"})"});
    CHECK_MSG(res.code == 0, res.err);
    CHECK(res.out == "{\"message\":\"hi\"}\n");
  }

  TEST_CASE("exec --log-level debug logs the request on stderr and leaves stdout alone") {
    auto res = run_cli({"exec", "--log-level", "debug", "--log-format", "json", "echo",
                        R"({"message":"hi"})"});
    CHECK_MSG(res.code == 0, res.err);
    CHECK(res.out == "{\"message\":\"hi\"}\n");
    std::string host_cid;
    std::string python_cid;
    std::istringstream lines{res.err};
    std::string line;
    while (std::getline(lines, line)) {
      auto rec = nlohmann::json::parse(line, nullptr, false);
      REQUIRE_MSG(rec.is_object(), line);
      if (rec.value("msg", "") == "request completed")
        host_cid = rec.value("correlation_id", "");
      if (rec.value("msg", "") == "tool echo started")
        python_cid = rec.value("correlation_id", "");
    }
    CHECK_MSG(!host_cid.empty(), res.err);
    CHECK(host_cid == python_cid);
    CHECK(run_cli({"exec", "--log-level", "loud", "echo"}).code == 2);
    CHECK(run_cli({"exec", "--log-format", "xml", "echo"}).code == 2);
  }

  TEST_CASE("exec of a streaming tool prints each chunk as a line as it arrives") {
    // Read stdout line by line: the first chunk must be there long before the last.
    auto err_file = scratch_dir() / "stream-stderr.txt";
    std::string cmd = "timeout -k 5 90 " + quote(SNAKEPIT_CLI_BINARY) +
                      R"( exec stream_progress '{"steps":3,"delay_ms":400}' 2>)" +
                      quote(err_file.string());
    FILE* pipe = ::popen(cmd.c_str(), "r");
    REQUIRE(pipe != nullptr);
    std::vector<std::string> lines;
    std::vector<std::chrono::steady_clock::time_point> at;
    char buf[4096];
    while (std::fgets(buf, sizeof(buf), pipe)) {
      lines.emplace_back(buf);
      at.push_back(std::chrono::steady_clock::now());
    }
    int status = ::pclose(pipe);
    CHECK(WIFEXITED(status));
    CHECK_MESSAGE(WEXITSTATUS(status) == 0, slurp(err_file));
    REQUIRE(lines.size() == 3);
    for (size_t i = 0; i < 3; ++i) {
      auto chunk = nlohmann::json::parse(lines[i]);
      CHECK(chunk.at("step") == i + 1);
      CHECK(chunk.at("total") == 3);
    }
    CHECK(at[2] - at[0] >= std::chrono::milliseconds{600});
  }

  TEST_CASE("exec of a stream that fails prints the chunks before it, then exits 5") {
    auto res = run_cli({"exec", "stream_fail", R"({"after":2})"});
    CHECK(res.code == 5);
    CHECK(res.out == "{\"step\":1}\n{\"step\":2}\n");
    CHECK(contains(res.err, "RuntimeError: failed after 2 chunks"));
  }

  TEST_CASE("exec --session runs the call in that session") {
    auto res = run_cli({"exec", "--session", "cli-session-1", "request_metadata"});
    CHECK_MSG(res.code == 0, res.err);
    auto reply = nlohmann::json::parse(res.out, nullptr, false);
    REQUIRE_MSG(reply.is_object(), res.out);
    CHECK(reply.at("session_id") == "cli-session-1");
    auto bad = run_cli({"exec", "--session", "bad id!", "ping"});
    CHECK(bad.code == 6);
    CHECK(contains(bad.err, "invalid_session_id"));
  }

  TEST_CASE("exec of an unknown tool exits 6 and names the tool on stderr") {
    auto res = run_cli({"exec", "no_such_tool"});
    CHECK(res.code == 6);
    CHECK(res.out.empty());
    CHECK(contains(res.err, "unknown_tool"));
    CHECK(contains(res.err, "no_such_tool"));
  }

  TEST_CASE("exec of a tool that raises exits 5 with the Python error") {
    auto res = run_cli({"exec", "fail", R"({"message":"nope"})"});
    CHECK(res.code == 5);
    CHECK(contains(res.err, "ValueError: nope"));
  }

  TEST_CASE("exec with arguments that are not a JSON object exits 2") {
    CHECK(run_cli({"exec", "echo", "[1,2]"}).code == 2);
    CHECK(run_cli({"exec", "echo", "{not json"}).code == 2);
  }

  TEST_CASE("a bad config file exits 3 and names the key") {
    auto file = scratch_dir() / "bad.toml";
    {
      std::ofstream out{file};
      out
        << "[[pools]]\nadapter = \"snakepit_bridge.adapters.showcase.ShowcaseAdapter\"\n"
           "pool_size = \"two\"\n";
    }
    auto res = run_cli({"exec", "--config", file.string(), "echo"});
    CHECK(res.code == 3);
    CHECK(contains(res.err, "pools[0].pool_size: expected integer, got string"));
    auto unknown = scratch_dir() / "unknown.toml";
    {
      std::ofstream out{unknown};
      out << "[[pools]]\nadapter = \"a.b.C\"\npool_sise = 2\n";
    }
    auto res2 = run_cli({"doctor", "--config", unknown.string()});
    CHECK(res2.code == 1);
    CHECK(contains(res2.out, "[FAIL] configuration"));
    CHECK(contains(res2.out, "pools[0].pool_sise"));
  }

  TEST_CASE("exec with a config file and a named pool runs there") {
    auto file = scratch_dir() / "two.toml";
    {
      std::ofstream out{file};
      out << "[[pools]]\nname = \"a\"\nadapter = "
             "\"snakepit_bridge.adapters.showcase.ShowcaseAdapter\"\npool_size = 1\n"
             "[[pools]]\nname = \"b\"\nadapter = "
             "\"snakepit_bridge.adapters.showcase.ShowcaseAdapter\"\npool_size = 1\n";
    }
    auto res = run_cli(
      {"exec", "--config", file.string(), "--pool", "b", "add", R"({"a": 2, "b": 40})"});
    CHECK_MSG(res.code == 0, res.err);
    CHECK(res.out == "42\n");
    auto missing = run_cli({"exec", "--config", file.string(), "--pool", "c", "ping"});
    CHECK(missing.code == 6);
    CHECK(contains(missing.err, "pool_not_found"));
  }

  TEST_CASE(
    "exec with an adapter that cannot be imported exits 4 with the worker's error") {
    auto file = scratch_dir() / "broken.toml";
    {
      std::ofstream out{file};
      out << "python_path = [";
      for (auto& dir : snakepit::testing::test_python_path())
        out << "\"" << dir << "\", ";
      out << "]\n[[pools]]\nadapter = \"broken_adapter.BrokenAdapter\"\npool_size = 1\n";
    }
    auto res = run_cli({"exec", "--config", file.string(), "ping"});
    CHECK(res.code == 4);
    CHECK(res.out.empty());
    CHECK(contains(res.err, "start_failed"));
    CHECK(contains(res.err, "ImportError"));
  }

  TEST_CASE("a pool whose adapter cannot be imported fails in one readable line, and "
            "its traceback is logged once, not once per worker") {
    auto file = scratch_dir() / "no_adapter.toml";
    {
      std::ofstream out{file};
      out << "[[pools]]\nname = \"x\"\nadapter = \"no.such.Adapter\"\npool_size = 3\n"
             "start_method = \"spawn\"\n";
    }
    auto res = run_cli({"exec", "--config", file.string(), "echo", "{}"});
    CHECK(res.code == 4);
    CHECK(res.out.empty());
    // The error: one line, the innermost cause, no nested CAF dump.
    auto last = res.err.substr(res.err.rfind("snakepit: start_failed"));
    CHECK_MSG(last.rfind("snakepit: start_failed: pool x: worker x_worker_", 0) == 0,
              res.err);
    CHECK(contains(last, "ModuleNotFoundError: No module named 'no'"));
    CHECK(std::count(last.begin(), last.end(), '\n') == 1);
    CHECK_FALSE(contains(res.err, "error(1, 'snake_sup'"));
    CHECK_FALSE(contains(res.err, "snake_sup"));
    // Three workers printed the same traceback; the log shows it once.
    size_t tracebacks = 0;
    for (auto at = res.err.find("Traceback (most recent call last)");
         at != std::string::npos;
         at = res.err.find("Traceback (most recent call last)", at + 1))
      ++tracebacks;
    CHECK_MSG(tracebacks == 1, res.err);
    CHECK(contains(res.err, "first_worker="));
    // Each worker's failure is still reported, with its own id.
    for (auto id : {"x_worker_1", "x_worker_2", "x_worker_3"})
      CHECK_MSG(
        contains(res.err, std::string{"worker failed to start pool=x worker_id="} + id),
        res.err);
  }

  TEST_CASE("doctor passes on this machine and prints each check") {
    auto res = run_cli({"doctor"});
    CHECK_MSG(res.code == 0, res.out);
    for (auto check : {"interpreter", "import grpc", "worker package",
                       "snakepit_bridge package", "generated modules", "node bridge",
                       "pool default: adapter", "runtime directory", "process registry"})
      CHECK_MSG(contains(res.out, std::string{"[ OK ] "} + check), std::string{check});
    // Run from the build tree: the source tree's package, imported from there.
    auto source = std::string{SNAKEPIT_TEST_PYTHON_SOURCE_DIR};
    CHECK_MSG(contains(res.out, "[ OK ] worker package: " + source + ":"), res.out);
    CHECK(contains(res.out, "(build tree)"));
    CHECK(contains(res.out, "[ OK ] snakepit_bridge package: " + source));
  }

  TEST_CASE("doctor names SNAKEPIT_PYTHON_PACKAGE_DIR when it points the workers "
            "elsewhere, and fails when it points at nothing") {
    auto dirs =
      std::string{SNAKEPIT_TEST_PYTHON_SOURCE_DIR} + ":" + SNAKEPIT_TEST_PYTHON_GEN_DIR;
    auto res = run_cli({"doctor"}, 90, {"SNAKEPIT_PYTHON_PACKAGE_DIR=" + dirs});
    CHECK_MSG(res.code == 0, res.out);
    CHECK(contains(res.out,
                   "[ OK ] worker package: " + dirs + " (SNAKEPIT_PYTHON_PACKAGE_DIR)"));
    auto empty = scratch_dir() / "no-package";
    std::filesystem::create_directories(empty);
    auto bad = run_cli({"doctor"}, 90, {"SNAKEPIT_PYTHON_PACKAGE_DIR=" + empty.string()});
    CHECK(bad.code == 1);
    CHECK_MSG(contains(bad.out, "[FAIL] snakepit_bridge package"), bad.out);
    auto exec = run_cli({"exec", "echo", R"({"message":"hi"})"}, 90,
                        {"SNAKEPIT_PYTHON_PACKAGE_DIR=" + empty.string()});
    CHECK(exec.code == 4);
    CHECK(contains(exec.err, "No module named"));
  }

  TEST_CASE("doctor fails with a fix when the adapter cannot be imported") {
    auto file = scratch_dir() / "noadapter.toml";
    {
      std::ofstream out{file};
      out << "[[pools]]\nadapter = \"no_such_pkg.mod.Adapter\"\n";
    }
    auto res = run_cli({"doctor", "--config", file.string()});
    CHECK(res.code == 1);
    CHECK(contains(res.out, "[FAIL] pool default: adapter no_such_pkg.mod.Adapter"));
    CHECK(contains(res.out, "fix:"));
  }

  TEST_CASE("doctor fails with a fix when the registry's data_dir cannot be created") {
    auto blocker = scratch_dir() / "a-file";
    { std::ofstream{blocker} << "not a directory\n"; }
    auto file = scratch_dir() / "baddata.toml";
    {
      std::ofstream out{file};
      out << "data_dir = \"" << (blocker / "state").string()
          << "\"\n[[pools]]\nadapter = "
             "\"snakepit_bridge.adapters.showcase.ShowcaseAdapter\"\n";
    }
    auto res = run_cli({"doctor", "--config", file.string()});
    CHECK(res.code == 1);
    CHECK_MSG(contains(res.out, "[FAIL] process registry"), res.out);
    CHECK(contains(res.out, "set `data_dir`"));
  }

  TEST_CASE("tools lists the showcase adapter's tools") {
    auto res = run_cli({"tools"});
    CHECK_MSG(res.code == 0, res.err);
    CHECK(contains(res.out, "echo("));
    CHECK(contains(res.out, "add(a, b)"));
    auto js = run_cli({"tools", "--json"});
    CHECK(js.code == 0);
    CHECK(contains(js.out, "\"name\": \"stream_progress\""));
  }

  TEST_CASE("exec and tools work with a pool of Node.js stdio workers") {
    auto file = scratch_dir() / "node.toml";
    {
      std::ofstream out{file};
      out << "[[pools]]\nname = \"node\"\nkind = \"stdio\"\npool_size = 1\n"
          << "command = [\"node\", \"" << SNAKEPIT_TEST_REPO_DIR
          << "/node/bridge.js\"]\n";
    }
    auto res = run_cli({"exec", "--config", file.string(), "echo", R"({"value":42})"});
    CHECK_MSG(res.code == 0, res.err);
    CHECK(contains(res.out, R"({"value":42})"));
    auto tools = run_cli({"tools", "--config", file.string()});
    CHECK_MSG(tools.code == 0, tools.err);
    CHECK_MSG(contains(tools.out, "stream_progress [stream]"), tools.out);
    auto js = run_cli({"tools", "--config", file.string(), "--json"});
    CHECK(js.code == 0);
    CHECK(contains(js.out, "\"name\": \"add\""));
  }

  TEST_CASE("cleanup with nothing left behind exits 0 and reports counts") {
    auto dir = scratch_dir() / "state";
    auto file = scratch_dir() / "cleanup.toml";
    {
      std::ofstream out{file};
      out << "data_dir = \"" << dir.string() << "\"\n[[pools]]\nadapter = \"a.b.C\"\n";
    }
    auto res = run_cli({"cleanup", "--config", file.string()});
    CHECK_MSG(res.code == 0, res.err);
    CHECK(contains(res.out, "0 killed"));
  }

  TEST_CASE("run serves until SIGTERM, then stops cleanly with exit 0") {
    int out_pipe[2];
    REQUIRE(::pipe(out_pipe) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::dup2(out_pipe[1], 1);
      ::close(out_pipe[0]);
      ::close(out_pipe[1]);
      ::execl(SNAKEPIT_CLI_BINARY, SNAKEPIT_CLI_BINARY, "run",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(out_pipe[1]);
    FILE* out = ::fdopen(out_pipe[0], "r");
    REQUIRE(out != nullptr);
    std::string text;
    char line[1024];
    // The binary prints "serving" once every worker is ready (or exits on failure).
    while (std::fgets(line, sizeof(line), out) != nullptr) {
      text += line;
      if (contains(line, "serving"))
        break;
    }
    CHECK(contains(text, "ready 1/2 worker"));
    CHECK(contains(text, "ready 2/2 worker"));
    REQUIRE(contains(text, "serving"));
    ::kill(pid, SIGTERM);
    while (std::fgets(line, sizeof(line), out) != nullptr)
      text += line;
    std::fclose(out);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(contains(text, "SIGTERM received, stopping"));
    CHECK(contains(text, "stopped"));
  }

  TEST_CASE("stats and workers read a running `run` through its control socket") {
    int out_pipe[2];
    REQUIRE(::pipe(out_pipe) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::dup2(out_pipe[1], 1);
      ::close(out_pipe[0]);
      ::close(out_pipe[1]);
      ::execl(SNAKEPIT_CLI_BINARY, SNAKEPIT_CLI_BINARY, "run",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(out_pipe[1]);
    FILE* out = ::fdopen(out_pipe[0], "r");
    REQUIRE(out != nullptr);
    std::string text;
    char line[1024];
    while (std::fgets(line, sizeof(line), out) != nullptr) {
      text += line;
      if (contains(line, "serving"))
        break;
    }
    REQUIRE(contains(text, "serving"));
    // "snakepit: control socket <dir>/control.sock (snakepit stats --pid N)"
    auto at = text.find("control socket ");
    REQUIRE(at != std::string::npos);
    auto sock = text.substr(at + 15, text.find(' ', at + 15) - at - 15);
    auto dir = std::filesystem::path{sock}.parent_path().string();
    CHECK(std::filesystem::exists(sock));
    auto pid_arg = std::to_string(pid);

    auto stats = run_cli({"stats", "--pid", pid_arg});
    CHECK(stats.code == 0);
    CHECK(contains(stats.out, "pool"));
    CHECK(contains(stats.out, "p95_ms"));
    CHECK(contains(stats.out, "\ndefault "));
    CHECK(contains(stats.out, "\ntotal "));
    auto stats_json = run_cli({"stats", "--pid", pid_arg, "--json"});
    CHECK(stats_json.code == 0);
    CHECK(contains(stats_json.out, "\"pools\":[{"));
    CHECK(contains(stats_json.out, "\"ready\":2"));
    CHECK(contains(stats_json.out, "\"total\":{"));
    auto by_dir = run_cli({"stats", "--runtime-dir", dir, "--json"});
    CHECK(by_dir.code == 0);
    CHECK(contains(by_dir.out, "\"ready\":2"));

    auto workers = run_cli({"workers", "--pid", pid_arg});
    CHECK(workers.code == 0);
    CHECK(contains(workers.out, "default_worker_1"));
    CHECK(contains(workers.out, "default_worker_2"));
    CHECK(contains(workers.out, "ready"));
    auto workers_json = run_cli({"workers", "--pid", pid_arg, "--json"});
    CHECK(workers_json.code == 0);
    CHECK(contains(workers_json.out, "\"id\":\"default_worker_1\""));
    CHECK(contains(workers_json.out, "\"pid\":"));

    // scale: grow to 3 (the third shows up at once, starting), then back to 2.
    auto grow = run_cli({"scale", "default", "3", "--pid", pid_arg});
    CHECK(grow.code == 0);
    CHECK(contains(grow.out, "pool default: resizing to 3 workers"));
    auto grown = run_cli({"workers", "--pid", pid_arg});
    CHECK(contains(grown.out, "default_worker_3"));
    auto unknown = run_cli({"scale", "nope", "3", "--pid", pid_arg});
    CHECK(unknown.code == 6);
    CHECK(contains(unknown.err, "nope"));
    auto zero = run_cli({"scale", "default", "0", "--pid", pid_arg});
    CHECK(zero.code == 2); // refused by the command line already
    auto shrink = run_cli({"scale", "default", "2", "--pid", pid_arg, "--json"});
    CHECK(shrink.code == 0);
    CHECK(contains(shrink.out, "\"size\":2"));
    bool two = false;
    for (int i = 0; i < 100 && !two; ++i) {
      auto ws = run_cli({"workers", "--pid", pid_arg, "--json"});
      auto body = nlohmann::json::parse(ws.out, nullptr, false);
      two = !body.is_discarded() && body["pools"][0]["workers"].size() == 2;
      if (!two)
        std::this_thread::sleep_for(std::chrono::milliseconds{100});
    }
    CHECK(two);
    auto get_scale = run_cli({"stats", "--pid", pid_arg}); // still answers after
    CHECK(get_scale.code == 0);

    ::kill(pid, SIGINT);
    while (std::fgets(line, sizeof(line), out) != nullptr)
      text += line;
    std::fclose(out);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(contains(text, "SIGINT received, stopping"));
    CHECK(contains(text, "stopped"));
    // The socket went with the runtime directory; the instance is no longer found.
    CHECK_FALSE(std::filesystem::exists(dir));
    auto gone = run_cli({"stats", "--pid", pid_arg});
    CHECK(gone.code == 8);
    CHECK(contains(gone.err, "no running snakepit instance with pid " + pid_arg));
  }

  TEST_CASE("stats without a reachable instance exits 8 with a clear message") {
    auto res =
      run_cli({"stats", "--runtime-dir", (scratch_dir() / "nothing-here").string()});
    CHECK(res.code == 8);
    CHECK(contains(res.err, "cannot reach the instance"));
    CHECK(res.out.empty());
    auto workers = run_cli({"workers", "--pid", "999999999"});
    CHECK(workers.code == 8);
    CHECK(contains(workers.err, "no running snakepit instance with pid 999999999"));
  }

  TEST_CASE("stats without --pid refuses to guess between several running instances") {
    struct running {
      pid_t pid = -1;
      FILE* out = nullptr;
    };
    auto cfg = scratch_dir() / "one.toml";
    {
      std::ofstream f{cfg};
      f << "[[pools]]\nadapter = \"snakepit_bridge.adapters.showcase.ShowcaseAdapter\"\n"
           "pool_size = 1\n";
    }
    auto start = [&cfg]() {
      int fds[2];
      REQUIRE(::pipe(fds) == 0);
      running r;
      r.pid = ::fork();
      REQUIRE(r.pid >= 0);
      if (r.pid == 0) {
        ::dup2(fds[1], 1);
        ::close(fds[0]);
        ::close(fds[1]);
        ::execl(SNAKEPIT_CLI_BINARY, SNAKEPIT_CLI_BINARY, "run", "--config", cfg.c_str(),
                static_cast<char*>(nullptr));
        ::_exit(127);
      }
      ::close(fds[1]);
      r.out = ::fdopen(fds[0], "r");
      REQUIRE(r.out != nullptr);
      char line[1024];
      std::string text;
      while (std::fgets(line, sizeof(line), r.out) != nullptr) {
        text += line;
        if (contains(line, "serving"))
          break;
      }
      CHECK(contains(text, "serving"));
      return r;
    };
    auto a = start();
    auto b = start();
    auto res = run_cli({"stats"});
    CHECK(res.code == 8);
    CHECK(contains(res.err, "running instances; choose one with --pid or --runtime-dir"));
    CHECK(contains(res.err, "pid " + std::to_string(a.pid) + " "));
    CHECK(contains(res.err, "pid " + std::to_string(b.pid) + " "));
    CHECK(res.out.empty());
    auto one = run_cli({"workers", "--pid", std::to_string(b.pid)});
    CHECK(one.code == 0);
    CHECK(contains(one.out, "default_worker_1"));
    for (auto& r : {a, b}) {
      ::kill(r.pid, SIGTERM);
      char line[1024];
      while (std::fgets(line, sizeof(line), r.out) != nullptr) {
      }
      std::fclose(r.out);
      int status = 0;
      REQUIRE(::waitpid(r.pid, &status, 0) == r.pid);
      CHECK(WIFEXITED(status));
      CHECK(WEXITSTATUS(status) == 0);
    }
  }

} // TEST_SUITE
