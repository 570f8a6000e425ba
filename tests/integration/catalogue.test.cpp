// The telemetry catalogue, checked against the code: every event listed in
// docs/telemetry.md is emitted by some scenario with real Python workers, and every
// event the runtime emits is listed there.
#include <fstream>
#include <future>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>

#include "actors/observability/telemetry.hpp"
#include "harness.hpp"

using namespace std::chrono_literals;
using snakepit::errc;
using snakepit::json;
using namespace snakepit::testing;

namespace {

/// The event names of the catalogue table in docs/telemetry.md ("| `snakepit.x.y` |").
/// A name ending in `<name>` stands for a prefix ("snakepit.python.").
std::set<std::string> catalogue_names() {
  std::ifstream in{std::string{SNAKEPIT_DOCS_DIR} + "/telemetry.md"};
  std::set<std::string> out;
  std::string line;
  std::regex row{R"(^\| `(snakepit\.[a-z_.]+(<name>)?)` \|)"};
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, row)) {
      auto name = m[1].str();
      if (auto pos = name.find("<name>"); pos != std::string::npos)
        name.erase(pos);
      // Node events need nodes: the distribution suite checks that each is emitted.
      if (name.rfind("snakepit.node.", 0) == 0)
        continue;
      out.insert(name);
    }
  }
  return out;
}

bool listed(const std::set<std::string>& catalogue, const std::string& name) {
  for (auto& entry : catalogue)
    if (entry == name || (entry.back() == '.' && name.rfind(entry, 0) == 0))
      return true;
  return false;
}

struct seen_names {
  std::mutex mtx;
  std::set<std::string> names;

  void add(const std::string& name) {
    std::lock_guard<std::mutex> g{mtx};
    names.insert(name);
  }
  bool has(const std::string& prefix_or_name) {
    std::lock_guard<std::mutex> g{mtx};
    if (prefix_or_name.back() != '.')
      return names.count(prefix_or_name) > 0;
    for (auto& n : names)
      if (n.rfind(prefix_or_name, 0) == 0)
        return true;
    return false;
  }
};

} // namespace

TEST_SUITE("integration.telemetry_catalogue") {

  TEST_CASE(
    "every event in docs/telemetry.md is emitted, and every emitted event is listed") {
    auto catalogue = catalogue_names();
    REQUIRE_MSG(catalogue.size() >= 30, "catalogue table not found in docs/telemetry.md");

    char marker[] = "/tmp/snakepit-catalogue-XXXXXX";
    int fd = ::mkstemp(marker);
    REQUIRE(fd >= 0);
    ::close(fd);
    ::unlink(marker); // absent: the flaky pool's workers start

    auto cfg = small_config(2);
    auto& main = cfg.pools[0];
    main.name = "main";
    main.queue.max_size = 1;
    main.queue.timeout = 150ms;
    main.capacity_strategy = snakepit::capacity_strategy::hybrid;
    main.taint.causes = {"segfault"};
    main.taint.duration = 300ms;
    main.retry.max_attempts = 1;
    main.retry.backoff = {20ms};
    main.heartbeat.interval = 200ms;
    main.heartbeat.timeout = 1000ms;
    main.heartbeat.max_missed = 2;
    main.restart.max_restarts = 20;
    main.restart.max_seconds = std::chrono::seconds{10};
    snakepit::pool_config flaky;
    flaky.name = "flaky";
    flaky.pool_size = 1;
    use_test_adapter(cfg, flaky, "flaky_start_adapter.FlakyStartAdapter");
    flaky.adapter_env = {{"SNAKEPIT_FLAKY_START_FILE", marker}};
    flaky.circuit.threshold = 2;
    flaky.circuit.reset = 500ms;
    flaky.restart.max_restarts = 20;
    flaky.restart.max_seconds = std::chrono::seconds{10};
    flaky.graceful_shutdown_timeout = 2000ms;
    cfg.pools.push_back(flaky);
    cfg.sessions.ttl = std::chrono::seconds{1};
    cfg.sessions.sweep_interval = 200ms;
    cfg.sessions.max = 5;

    seen_names seen;
    snakepit::start_options opts;
    opts.telemetry_handlers.emplace_back(
      "", [&](const snakepit::telemetry::event& ev) { seen.add(ev.name); });
    auto rt = snakepit::runtime::start(cfg, opts);
    REQUIRE_OK(rt);
    auto& r = **rt;
    snakepit::execute_options on_main;
    on_main.pool = "main";

    // Requests: a success and a Python exception (hybrid: each reaches capacity 1).
    CHECK(r.execute("echo", {{"x", 1}}, on_main));
    CHECK_FALSE(r.execute("fail", json::object(), on_main));

    // Both workers busy: one call waits and times out, the next finds the queue full.
    std::vector<std::future<snakepit::execute_result>> calls;
    auto async_call = [&](std::string tool, json args) {
      auto p = std::make_shared<std::promise<snakepit::execute_result>>();
      calls.push_back(p->get_future());
      r.execute_async(
        std::move(tool), std::move(args), on_main,
        [p](snakepit::execute_result res) { p->set_value(std::move(res)); });
    };
    async_call("sleep", {{"ms", 600}});
    async_call("sleep", {{"ms", 600}});
    REQUIRE(eventually([&] { return r.get_stats("main")->busy == 2; }));
    async_call("ping", json::object());
    async_call("ping", json::object());
    for (auto& c : calls)
      c.wait();
    calls.clear();
    // A queued call that is dequeued in time.
    async_call("sleep", {{"ms", 30}});
    async_call("sleep", {{"ms", 30}});
    async_call("ping", json::object());
    for (auto& c : calls)
      c.wait();
    calls.clear();

    // A stream and an event from Python.
    CHECK_FALSE(r.execute_stream(
      "stream_progress", {{"steps", 3}}, [](const json&, bool) { return true; },
      on_main));
    CHECK(r.execute("emit_event", {{"name", "catalogue.check"}}, on_main));

    // Sessions: created up to the warning mark, one cleaned up, the rest expire.
    for (int i = 0; i < 4; ++i)
      CHECK(r.create_session("catalogue-" + std::to_string(i)));
    CHECK(r.cleanup_session("catalogue-0"));

    // A segfault: crash, taint, terminated, restarted.
    CHECK_ERROR(r.execute("crash_signal", {{"signal", SIGSEGV}}, on_main),
                errc::worker_crashed);
    CHECK(eventually([&] { return seen.has("snakepit.worker.restarted"); }));
    // An idempotent call whose worker dies is retried once, then fails.
    auto idem = on_main;
    idem.idempotent = true;
    idem.timeout = 20s;
    CHECK_ERROR(r.execute("crash", {{"code", 3}}, idem), errc::worker_crashed);
    // A manual recycle.
    REQUIRE(eventually([&] { return serving_workers(r, "main")->size() == 2; }));
    CHECK_FALSE(r.recycle_worker(serving_workers(r, "main")->front().id, "main"));
    CHECK(eventually([&] { return seen.has("snakepit.worker.recycled"); }));
    // The main pool grows by one and shrinks back: resized, a worker drains.
    REQUIRE(eventually([&] { return serving_workers(r, "main")->size() == 2; }));
    CHECK_FALSE(r.resize_pool("main", 3));
    CHECK(eventually([&] { return serving_workers(r, "main")->size() == 3; }, 30s));
    CHECK_FALSE(r.resize_pool("main", 2));
    CHECK(eventually([&] { return seen.has("snakepit.worker.draining"); }));
    CHECK(seen.has("snakepit.pool.resized"));
    // A stopped worker misses its heartbeats and is killed.
    REQUIRE(eventually([&] { return serving_workers(r, "main")->size() == 2; }));
    auto stopped = serving_workers(r, "main")->front().pid;
    REQUIRE(::kill(stopped, SIGSTOP) == 0);
    CHECK(eventually([&] { return seen.has("snakepit.heartbeat.timeout"); }, 15s));

    // The flaky pool's starts fail: the circuit opens, probes half-open, then closes.
    { std::ofstream{marker} << "refuse\n"; }
    auto flaky_workers = serving_workers(r, "flaky");
    REQUIRE(flaky_workers);
    for (auto& w : *flaky_workers)
      ::kill(w.pid, SIGKILL);
    CHECK(
      eventually([&] { return seen.has("snakepit.circuit_breaker.half_open"); }, 15s));
    ::unlink(marker);
    CHECK(eventually([&] { return seen.has("snakepit.circuit_breaker.closed"); }, 15s));

    CHECK(eventually([&] { return seen.has("snakepit.session.expired"); }, 10s));
    CHECK(r.telemetry().flush(5s));

    for (auto& name : catalogue)
      CHECK_MSG(seen.has(name),
                "listed in docs/telemetry.md but never emitted: " << name);
    {
      std::lock_guard<std::mutex> g{seen.mtx};
      for (auto& name : seen.names)
        CHECK_MSG(listed(catalogue, name),
                  "emitted but missing from docs/telemetry.md: " << name);
    }
    stop_and_check(r);
  }

} // TEST_SUITE
