// Start-up failures: bad configuration fails before anything is spawned, with a
// message naming the field; a worker that cannot start reports its own error; no
// start failure leaves a process or a runtime directory behind.
#include <algorithm>
#include <cstdlib>
#include <fstream>

#include "harness.hpp"

using namespace std::chrono_literals;
using snakepit::errc;
using namespace snakepit::testing;

namespace {

std::string env_or(const char* name, const char* fallback) {
  auto* v = std::getenv(name);
  return v ? v : fallback;
}

/// The parent of `pid` (0 when gone).
int parent_of(int pid) {
  std::ifstream stat{"/proc/" + std::to_string(pid) + "/stat"};
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');
  if (close == std::string::npos || close + 4 > line.size())
    return 0;
  return std::atoi(line.c_str() + close + 4); // after ") S "
}

/// Worker processes this test process started (tests running beside it in
/// parallel start their own, which must not count).
size_t runtime_dirs() {
  auto pids = processes_with("snakepit_bridge");
  return static_cast<size_t>(std::count_if(pids.begin(), pids.end(), [](int pid) {
    for (int p = parent_of(pid); p > 1; p = parent_of(p))
      if (p == ::getpid())
        return true;
    return false;
  }));
}

} // namespace

TEST_SUITE("integration.startup") {

  TEST_CASE("a missing interpreter fails fast, naming the field, and spawns nothing") {
    auto cfg = small_config(1);
    cfg.python = "/nonexistent/python3";
    auto before = runtime_dirs();
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_FALSE(rt);
    CHECK(is_error(rt.error(), errc::invalid_config));
    auto text = snakepit::describe(rt.error());
    CHECK(text.find("python") != std::string::npos);
    CHECK(text.find("/nonexistent/python3") != std::string::npos);
    CHECK(runtime_dirs() == before);
  }

  TEST_CASE(
    "an interpreter that cannot import grpc is rejected before any worker starts") {
    char tmpl[] = "/tmp/snakepit-nogrpc-XXXXXX";
    REQUIRE(::mkdtemp(tmpl));
    std::string dir = tmpl;
    ::mkdir((dir + "/grpc").c_str(), 0700);
    {
      std::ofstream f{dir + "/grpc/__init__.py"};
      f << "raise ImportError('grpc is not installed here')\n";
    }
    auto cfg = small_config(1);
    cfg.python_path = {dir, env_or("SNAKEPIT_SOURCE_DIR", ".") + std::string{"/python"},
                       env_or("SNAKEPIT_BUILD_DIR", "build") + std::string{"/python"}};
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_FALSE(rt);
    CHECK(is_error(rt.error(), errc::invalid_config));
    CHECK(snakepit::describe(rt.error()).find("grpc") != std::string::npos);
    std::remove((dir + "/grpc/__init__.py").c_str());
    ::rmdir((dir + "/grpc").c_str());
    ::rmdir(dir.c_str());
  }

  TEST_CASE("invalid pool settings are rejected with the field's name") {
    auto cfg = small_config(1);
    cfg.pools[0].pool_size = 0;
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_FALSE(rt);
    CHECK(is_error(rt.error(), errc::invalid_config));
    CHECK(snakepit::describe(rt.error()).find("pool_size") != std::string::npos);

    auto cfg2 = small_config(1);
    cfg2.pools[0].adapter = "NoDots";
    auto rt2 = snakepit::runtime::start(cfg2);
    REQUIRE_FALSE(rt2);
    CHECK(snakepit::describe(rt2.error()).find("adapter") != std::string::npos);

    auto cfg3 = small_config(1);
    cfg3.pools.push_back(cfg3.pools[0]);
    auto rt3 = snakepit::runtime::start(cfg3);
    REQUIRE_FALSE(rt3);
    CHECK(snakepit::describe(rt3.error()).find("duplicate") != std::string::npos);

    auto cfg4 = small_config(1);
    cfg4.pools.clear();
    CHECK(cfg4.validate());
  }

  TEST_CASE("an adapter that does not import fails the start with the worker's own error "
            "and leaves nothing") {
    auto cfg = small_config(2);
    cfg.pools[0].adapter = "snakepit_no_such_module.Adapter";
    auto before = processes_with("snakepit_no_such_module");
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_FALSE(rt);
    CHECK(is_error(rt.error(), errc::start_failed));
    auto text = snakepit::describe(rt.error());
    CHECK_MSG(text.find("snakepit_no_such_module") != std::string::npos, text);
    CHECK_MSG(text.find("ModuleNotFoundError") != std::string::npos, text);
    CHECK(
      eventually([&] { return processes_with("snakepit_no_such_module").empty(); }, 5s));
    CHECK(before.empty());
  }

  TEST_CASE("run_as_script starts, runs the function and stops everything") {
    int seen_pid = 0;
    std::string dir;
    auto err = snakepit::run_as_script(small_config(1), [&](snakepit::runtime& rt) {
      auto info = rt.execute("info");
      REQUIRE(info);
      seen_pid = info->result.at("pid").get<int>();
      dir = rt.runtime_dir();
      CHECK(pid_alive(seen_pid));
    });
    CHECK_FALSE(err);
    CHECK(seen_pid > 0);
    CHECK_FALSE(pid_alive(seen_pid));
    CHECK_FALSE(path_exists(dir));
  }

  TEST_CASE(
    "a start removes runtime directories left by hosts that died, and only those") {
    std::string parent;
    {
      auto rt = snakepit::runtime::start(small_config(1));
      REQUIRE_OK(rt);
      auto dir = (*rt)->runtime_dir();
      parent = dir.substr(0, dir.rfind('/'));
      CHECK(path_exists(dir + "/owner"));
      stop_and_check(**rt);
    }
    auto make_dir = [&](const std::string& owner_line) {
      std::string tmpl = parent + "/snakepit-testXXXXXX";
      std::vector<char> buf(tmpl.begin(), tmpl.end());
      buf.push_back('\0');
      REQUIRE(::mkdtemp(buf.data()) != nullptr);
      std::string dir = buf.data();
      std::ofstream{dir + "/owner"} << owner_line;
      std::ofstream{dir + "/w1.ready"} << "unix:" << dir << "/w1.sock";
      return dir;
    };
    // A host that is gone: a pid that has exited (reaped) with its old start time.
    auto dead = make_dir("999999999 12345\n");
    // A host that is alive: this test process, with a wrong start time (pid reuse).
    auto reused = make_dir(std::to_string(::getpid()) + " 1\n");
    // A directory without an owner file is not ours to judge.
    std::string foreign = make_dir("");
    std::remove((foreign + "/owner").c_str());
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    CHECK_FALSE(path_exists(dead));
    CHECK_FALSE(path_exists(reused));
    CHECK(path_exists(foreign));
    stop_and_check(**rt);
    std::remove((foreign + "/w1.ready").c_str());
    ::rmdir(foreign.c_str());
  }

  TEST_CASE("calls after stop fail with a typed error instead of hanging") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    stop_and_check(**rt);
    auto res = (*rt)->execute("ping");
    REQUIRE_FALSE(res);
    CHECK((is_error(res.error(), errc::pool_not_found) ||
           is_error(res.error(), errc::shutting_down)));
  }

  TEST_CASE("when start returns, every worker's tools are registered with the host") {
    // A host that decides how to call a tool from its registration (the CLI's exec
    // picks a stream for a streaming tool) must find it as soon as start returns.
    auto rt = snakepit::runtime::start(small_config(2));
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto ws = serving_workers(r);
    REQUIRE(ws);
    REQUIRE(ws->size() == 2);
    auto tools = r.list_tools();
    REQUIRE(tools);
    auto stream = std::find_if(tools->begin(), tools->end(),
                               [](const auto& t) { return t.name == "stream_progress"; });
    REQUIRE(stream != tools->end());
    CHECK(stream->supports_streaming);
    for (auto& w : *ws)
      CHECK(std::find(stream->workers.begin(), stream->workers.end(), w.id) !=
            stream->workers.end());
    stop_and_check(r);
  }

} // TEST_SUITE
