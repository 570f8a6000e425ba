// A running runtime's pools change, with real Python workers: resizing under load
// answers every call, the removed workers' processes go, the worker list and init
// status tell the truth along the way; pools are added and removed at run time
// (docs/pool.md "Resizing", "Adding and removing pools").
#include <atomic>
#include <future>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace std::chrono_literals;
using snakepit::errc;
using snakepit::errc_of;
using snakepit::json;
using namespace snakepit::testing;

namespace {

/// Callers that run `sleep` calls back to back until stopped, counting failures.
struct load {
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::vector<std::string> errors;
  std::mutex mtx;
  std::vector<std::thread> threads;

  load(snakepit::runtime& rt, int callers) {
    for (int i = 0; i < callers; ++i)
      threads.emplace_back([this, &rt] {
        while (!stop) {
          auto res = rt.execute("sleep", {{"ms", 20}});
          if (res) {
            ++ok;
          } else {
            ++failed;
            std::lock_guard<std::mutex> g{mtx};
            errors.push_back(explain(res.error()));
          }
        }
      });
  }
  void finish() {
    stop = true;
    for (auto& t : threads)
      t.join();
  }
};

size_t serving_count(snakepit::runtime& rt) {
  auto ws = serving_workers(rt);
  return ws ? ws->size() : 0;
}

} // namespace

TEST_SUITE("integration.resize") {

  TEST_CASE("a pool grows and shrinks under load and no call fails") {
    auto rt = snakepit::runtime::start(small_config(2));
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto before = live_worker_processes(r);
    load l{r, 6};
    std::this_thread::sleep_for(300ms);
    REQUIRE_FALSE(r.resize_pool("default", 4));
    CHECK(eventually([&] { return serving_count(r) == 4; }, 30s));
    CHECK(live_worker_processes(r).size() == 4);
    std::this_thread::sleep_for(300ms);
    auto ok_before_shrink = l.ok.load();
    REQUIRE_FALSE(r.resize_pool("default", 1));
    CHECK(eventually(
      [&] {
        auto ws = r.list_workers();
        return ws && ws->size() == 1 && live_worker_processes(r).size() == 1;
      },
      15s));
    std::this_thread::sleep_for(300ms);
    l.finish();
    CHECK(l.ok > ok_before_shrink); // calls kept running through the shrink
    CHECK_MSG(l.failed == 0, (l.errors.empty() ? "" : l.errors.front()));
    auto s = r.get_stats();
    REQUIRE(s);
    CHECK(s->errors == 0);
    CHECK(s->worker_crashes == 0);
    CHECK(s->workers == 1);
    // The processes that went are gone for good.
    for (auto pid : before)
      if (pid != live_worker_processes(r).front())
        CHECK_FALSE(pid_alive(pid));
    stop_and_check(r);
  }

  TEST_CASE("resize_pool's errors: bad sizes, unknown pools, a stopped runtime") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto& r = **rt;
    CHECK(errc_of(r.resize_pool("default", 0)) == errc::invalid_argument);
    CHECK(errc_of(r.resize_pool("default", 2000)) == errc::invalid_argument);
    CHECK(errc_of(r.resize_pool("nope", 2)) == errc::pool_not_found);
    CHECK_FALSE(r.stop());
    CHECK(errc_of(r.resize_pool("default", 2)) == errc::shutting_down);
  }

  TEST_CASE("list_workers shows a starting worker, init status follows it") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto first = r.list_workers()->front().id;
    CHECK(r.get_init_status(first)->state == "ready");
    CHECK(r.get_init_status("default_worker_99")->state == "not_found");
    REQUIRE_FALSE(r.resize_pool("default", 2));
    auto ws = r.list_workers();
    REQUIRE(ws);
    REQUIRE(ws->size() == 2);
    auto added = ws->at(0).id == first ? ws->at(1) : ws->at(0);
    // (A Python worker takes far longer to start than this look.)
    CHECK(added.state == "starting");
    CHECK(added.pid == 0);
    CHECK(r.get_init_status(added.id)->state == "initializing");
    CHECK(eventually([&] { return r.get_init_status(added.id)->state == "ready"; }, 30s));
    stop_and_check(r);
  }

} // TEST_SUITE

TEST_SUITE("integration.add_remove_pool") {

  TEST_CASE("a pool added at run time serves, is listed, and goes with nothing left") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto extra = small_config(2).pools[0];
    extra.name = "extra";
    REQUIRE_FALSE(r.add_pool(extra));
    CHECK(r.pool_names() == std::vector<std::string>{"default", "extra"});
    snakepit::execute_options on_extra;
    on_extra.pool = "extra";
    auto res = r.execute("echo", {{"x", 1}}, on_extra);
    REQUIRE_OK(res);
    CHECK(res->worker_id.rfind("extra_worker_", 0) == 0);
    auto all = r.get_all_stats();
    REQUIRE(all);
    CHECK(all->pools.size() == 2);
    auto extra_pids = serving_workers(r, "extra");
    REQUIRE(extra_pids);
    REQUIRE(extra_pids->size() == 2);
    // A running call on the removed pool finishes; later ones find no pool.
    auto slow = std::async(std::launch::async, [&] {
      return r.execute("sleep", {{"ms", 300}}, on_extra);
    });
    std::this_thread::sleep_for(100ms);
    REQUIRE_FALSE(r.remove_pool("extra"));
    auto slow_res = slow.get();
    CHECK_OK(slow_res);
    CHECK_ERROR(r.execute("echo", {{"x", 2}}, on_extra), errc::pool_not_found);
    CHECK(r.pool_names() == std::vector<std::string>{"default"});
    for (auto& w : *extra_pids)
      CHECK(eventually([&] { return !pid_alive(w.pid); }));
    CHECK(r.execute("echo", {{"x", 3}})); // the other pool is untouched
    // The name is free again.
    REQUIRE_FALSE(r.add_pool(extra));
    CHECK(r.execute("echo", {{"x", 4}}, on_extra));
    stop_and_check(r);
  }

  TEST_CASE("add_pool and remove_pool refuse what cannot be done, and leave nothing") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto dup = small_config(1).pools[0];
    CHECK(errc_of(r.add_pool(dup)) == errc::invalid_config); // "default" exists
    auto bad = small_config(1).pools[0];
    bad.name = "bad";
    bad.pool_size = 0;
    CHECK(errc_of(r.add_pool(bad)) == errc::invalid_config);
    auto broken = small_config(2).pools[0];
    broken.name = "broken";
    broken.adapter = "no_such_module.Adapter";
    broken.circuit.threshold = 0;
    auto before = live_worker_processes(r).size();
    auto err = r.add_pool(broken, 30s);
    CHECK(errc_of(err) == errc::start_failed);
    CHECK(snakepit::describe(err).find("broken") != std::string::npos);
    CHECK(r.pool_names() == std::vector<std::string>{"default"});
    CHECK(eventually([&] { return live_worker_processes(r).size() == before; }));
    CHECK(errc_of(r.remove_pool("nope")) == errc::pool_not_found);
    CHECK(errc_of(r.remove_pool("default")) == errc::invalid_argument); // the only one
    stop_and_check(r);
    CHECK(errc_of(r.add_pool(bad)) == errc::shutting_down);
    CHECK(errc_of(r.remove_pool("default")) == errc::shutting_down);
  }

} // TEST_SUITE
