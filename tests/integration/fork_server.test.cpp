// Starting gRPC Python workers as copies of a template (python/snakepit_bridge/
// forkserver.py, adapters/fork_server.hpp): the copies are the host's own children with
// their own command line and process group, a failed template falls back to spawning,
// and nothing outlives the runtime.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include <doctest/doctest.h>

#include "tests/integration/harness.hpp"

using namespace std::chrono_literals;
using namespace snakepit;
using namespace snakepit::testing;

namespace {

/// Field `n` (1-based, as in proc(5)) of /proc/<pid>/stat; 0 if unreadable.
long stat_field(int pid, int n) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string line;
  std::getline(in, line);
  auto close = line.rfind(')');
  if (close == std::string::npos)
    return 0;
  std::istringstream rest{line.substr(close + 2)};
  std::string field;
  for (int i = 3; i <= n && rest >> field; ++i)
    if (i == n)
      return std::atol(field.c_str());
  return 0;
}

/// Whether worker `victim.id` runs again under a new pid and is available (and the
/// pool has `size` workers, when given).
bool replaced(runtime& r, const worker_info& victim, size_t size = 0) {
  auto now = serving_workers(r);
  if (!now || (size > 0 && now->size() != size))
    return false;
  for (auto& w : *now)
    if (w.id == victim.id)
      return w.pid != victim.pid && w.state == "ready";
  return false;
}

std::vector<int> templates_of(const runtime& rt) {
  std::vector<int> out;
  for (auto pid : rt.live_processes())
    if (is_worker_template(pid))
      out.push_back(pid);
  return out;
}

} // namespace

TEST_SUITE("integration.fork_server") {

  TEST_CASE(
    "gRPC Python workers are copies of one template, yet the host's own children") {
    auto cfg = small_config(3);
    auto rt = runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto templates = templates_of(r);
    REQUIRE(templates.size() == 1);
    auto ws = serving_workers(r);
    REQUIRE(ws);
    REQUIRE(ws->size() == 3);
    std::set<int> groups;
    for (auto& w : *ws) {
      CAPTURE(w.id);
      // Parent: the host (CLONE_PARENT), not the template.
      CHECK(stat_field(w.pid, 4) == ::getpid());
      // Own process group, as a spawned worker has.
      CHECK(stat_field(w.pid, 5) == w.pid);
      groups.insert(static_cast<int>(stat_field(w.pid, 5)));
      // Its own command line: what ps, pgrep and the sweep by run id look for.
      auto cmd = command_line(w.pid);
      CHECK(cmd.find("-m snakepit_bridge --adapter") != std::string::npos);
      CHECK(cmd.find("--worker-id " + w.id) != std::string::npos);
      CHECK(cmd.find("--snakepit-run-id " + r.run_id()) != std::string::npos);
    }
    CHECK(groups.size() == 3);
    // The copies serve calls.
    auto a = r.execute("echo", {{"x", 1}});
    REQUIRE_OK(a);
    CHECK(a->result == json{{"x", 1}});
    // A crashed copy is replaced by a new copy of the same template.
    auto victim = ws->front();
    ::kill(victim.pid, SIGKILL);
    CHECK(eventually([&] { return replaced(r, victim, 3); }, 20s));
    CHECK(templates_of(r) == templates);
    stop_and_check(r);
    CHECK_FALSE(pid_alive(templates.front()));
  }

  TEST_CASE("start_method = spawn starts no template") {
    auto cfg = small_config(2);
    cfg.pools[0].start_method = start_method::spawn;
    auto rt = runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    CHECK(templates_of(r).empty());
    CHECK(r.live_processes().size() == 2);
    auto a = r.execute("echo", {{"x", 2}});
    REQUIRE_OK(a);
    stop_and_check(r);
  }

  TEST_CASE("a template that dies leaves the pool to spawning: restarts still work") {
    auto cfg = small_config(2);
    auto rt = runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto templates = templates_of(r);
    REQUIRE(templates.size() == 1);
    ::kill(templates.front(), SIGKILL);
    REQUIRE(eventually([&] { return templates_of(r).empty(); }, 5s));
    auto ws = serving_workers(r);
    REQUIRE(ws);
    REQUIRE_FALSE(ws->empty());
    auto victim = ws->front();
    ::kill(victim.pid, SIGKILL);
    CHECK(eventually([&] { return replaced(r, victim); }, 20s));
    // The replacement was spawned: its parent is the host, its command line its own.
    auto after = serving_workers(r);
    REQUIRE(after);
    for (auto& w : *after)
      if (w.id == victim.id) {
        CHECK(stat_field(w.pid, 4) == ::getpid());
        CHECK(command_line(w.pid).find("--worker-id " + w.id) != std::string::npos);
      }
    auto a = r.execute("echo", {{"x", 3}});
    CHECK_OK(a);
    stop_and_check(r);
  }

  TEST_CASE("start_method = forkserver is refused where no template applies") {
    auto cfg = small_config(1);
    cfg.pools[0].start_method = start_method::forkserver;
    cfg.pools[0].kind = worker_kind::stdio;
    auto err = cfg.validate();
    REQUIRE(err);
    CHECK(describe(err).find("pools[default].start_method") != std::string::npos);
    cfg.pools[0].kind = worker_kind::grpc;
    cfg.pools[0].command = {"/bin/true"};
    CHECK(cfg.validate());
  }
}
