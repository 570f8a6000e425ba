// Worker lifecycle with real Python workers: recycling on max_requests, TTL and the
// Python process's resident memory (replacement first, then drain), manual
// recycling, the crash barrier (classified crashes taint a worker), idempotent
// retries with backoff, and the circuit breaker over failing worker starts.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "actors/observability/telemetry.hpp"
#include "harness.hpp"
#include "tests/support/event_capture.hpp"

using namespace std::chrono_literals;
using snakepit::errc;
using snakepit::json;
using namespace snakepit::testing;

namespace {

std::set<int> worker_pids(snakepit::runtime& rt) {
  std::set<int> out;
  if (auto ws = serving_workers(rt))
    for (auto& w : *ws)
      out.insert(w.pid);
  return out;
}

bool all_available(snakepit::runtime& rt, size_t n) {
  auto ws = serving_workers(rt);
  if (!ws || ws->size() != n)
    return false;
  for (auto& w : *ws)
    if (w.state != "ready")
      return false;
  return live_worker_processes(rt).size() == n;
}

} // namespace

TEST_SUITE("integration.recycling") {

  TEST_CASE(
    "max_requests recycles every worker, with a replacement first and no failed call") {
    // The scenario: max_requests 50 (jitter 0.1) on 4 workers, 1000 requests.
    auto cfg = small_config(4);
    cfg.pools[0].recycling.max_requests = 50;
    event_capture rec;
    snakepit::start_options opts;
    rec.attach_to(opts, "snakepit.worker");
    auto rt = snakepit::runtime::start(cfg, opts);
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto first = worker_pids(r);
    // Sample the pool while it recycles: it never has fewer than 4 ready workers.
    std::atomic<bool> done{false};
    std::atomic<size_t> fewest{100};
    std::thread sampler{[&] {
      while (!done) {
        if (auto ws = serving_workers(r); ws && ws->size() < fewest)
          fewest = ws->size();
        std::this_thread::sleep_for(5ms);
      }
    }};
    std::vector<std::future<snakepit::execute_result>> calls;
    for (int i = 0; i < 8; ++i)
      calls.push_back(std::async(std::launch::async, [&] {
        snakepit::execute_result last = caf::make_error(errc::internal, "no call");
        for (int k = 0; k < 125; ++k) {
          last = r.execute("echo", {{"k", k}});
          if (!last)
            return last;
        }
        return last;
      }));
    for (auto& c : calls) {
      auto res = c.get();
      CHECK_OK(res);
    }
    // 1000 calls over limits of 45-50: every first worker went (each keeps serving
    // until its replacement is ready, so it takes more than its limit).
    CHECK(eventually([&] { return rec.count("snakepit.worker.recycled") >= 4; }, 30s));
    CHECK(eventually([&] { return all_available(r, 4); }, 20s));
    done = true;
    sampler.join();
    CHECK(fewest.load() >= 4);
    for (auto& ev : rec.named("snakepit.worker.recycled")) {
      CHECK(ev.metadata.at("reason") == "max_requests");
      CHECK(ev.measurements.at("requests").get<uint64_t>() >= 45);
    }
    for (auto pid : first)
      CHECK_MSG(eventually([&] { return !pid_alive(pid); }), "recycled pid " << pid);
    auto stats = r.get_stats();
    REQUIRE(stats);
    CHECK(stats->recycles >= 4);
    CHECK(stats->worker_crashes == 0);
    CHECK(stats->errors == 0);
    CHECK(stats->completed == 1000);
    stop_and_check(r);
  }

  TEST_CASE("ttl recycling drains: the call in flight finishes on the old worker") {
    auto cfg = small_config(1);
    cfg.pools[0].recycling.ttl = 700ms;
    cfg.pools[0].recycling.check_interval = 50ms;
    event_capture rec;
    snakepit::start_options opts;
    rec.attach_to(opts, "snakepit.worker.recycled");
    auto rt = snakepit::runtime::start(cfg, opts);
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto old_pid = *worker_pids(r).begin();
    // Runs across the TTL, the replacement's start and the drain.
    auto res = r.execute("sleep", {{"ms", 1500}});
    REQUIRE_OK(res);
    CHECK(res->result.at("pid") == old_pid);
    CHECK(eventually([&] { return rec.count("snakepit.worker.recycled") >= 1; }, 10s));
    auto ev = rec.named("snakepit.worker.recycled").front();
    CHECK(ev.metadata.at("reason") == "ttl");
    CHECK(ev.measurements.at("uptime_ms").get<int64_t>() >= 700);
    CHECK(eventually([&] { return !pid_alive(old_pid); }));
    auto next = r.execute("info");
    REQUIRE(next);
    CHECK(next->result.at("pid") != old_pid);
    stop_and_check(r);
  }

  TEST_CASE("a worker whose Python process holds too much memory is recycled") {
    auto cfg = small_config(1);
    cfg.pools[0].recycling.max_memory_mb = 150;
    cfg.pools[0].recycling.check_interval = 50ms;
    event_capture rec;
    snakepit::start_options opts;
    rec.attach_to(opts, "snakepit.worker.recycled");
    auto rt = snakepit::runtime::start(cfg, opts);
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto old_pid = *worker_pids(r).begin();
    std::this_thread::sleep_for(300ms);
    CHECK(rec.count("snakepit.worker.recycled") == 0); // an idle worker is far below
    auto held = r.execute("hold_memory", {{"mb", 200}});
    REQUIRE_OK(held);
    CHECK(eventually([&] { return rec.count("snakepit.worker.recycled") == 1; }, 10s));
    auto ev = rec.named("snakepit.worker.recycled").front();
    CHECK(ev.metadata.at("reason") == "memory");
    CHECK(ev.measurements.at("memory_mb").get<double>() > 150);
    CHECK(eventually([&] { return !pid_alive(old_pid); }));
    CHECK(eventually([&] { return all_available(r, 1); }));
    auto next = r.execute("info");
    REQUIRE(next);
    CHECK(next->result.at("pid") != old_pid);
    stop_and_check(r);
  }

  TEST_CASE("recycle_worker replaces one worker on demand") {
    auto rt = snakepit::runtime::start(small_config(2));
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto before = serving_workers(r);
    REQUIRE(before);
    auto victim = before->front();
    CHECK_FALSE(r.recycle_worker(victim.id));
    CHECK(eventually([&] {
      auto ws = serving_workers(r);
      return ws && ws->size() == 2 &&
             std::none_of(ws->begin(), ws->end(), [&](const snakepit::worker_info& w) {
               return w.id == victim.id;
             });
    }));
    CHECK(eventually([&] { return !pid_alive(victim.pid); }));
    // Its tools list the live workers only: the replaced one's id is gone.
    CHECK(eventually([&] {
      auto tools = r.list_tools();
      auto ws = serving_workers(r);
      if (!tools || !ws || tools->empty())
        return false;
      for (auto& t : *tools) {
        if (t.kind != "python")
          continue;
        if (std::find(t.workers.begin(), t.workers.end(), victim.id) != t.workers.end() ||
            t.workers.size() != ws->size())
          return false;
      }
      return true;
    }));
    auto err = r.recycle_worker("no_such_worker");
    CHECK(err == errc::invalid_argument);
    CHECK(r.get_stats()->recycles == 1);
    stop_and_check(r);
  }

} // TEST_SUITE

TEST_SUITE("integration.crash_barrier") {

  TEST_CASE(
    "a segfaulted worker is tainted: new calls go elsewhere until the taint ends") {
    auto cfg = small_config(2);
    const auto taint = 10000ms;
    cfg.pools[0].taint.duration = taint;
    event_capture rec;
    snakepit::start_options opts;
    rec.attach_to(opts, "snakepit.worker");
    auto rt = snakepit::runtime::start(cfg, opts);
    REQUIRE_OK(rt);
    auto& r = **rt;
    // The taint starts when the pool learns of the crash, after this: until
    // crash_sent + taint the worker is surely tainted.
    auto crash_sent = std::chrono::steady_clock::now();
    auto crashed = r.execute("crash_signal", {{"signal", SIGSEGV}});
    REQUIRE_FALSE(crashed);
    CHECK_ERROR(crashed, errc::worker_crashed);
    CHECK(eventually([&] { return rec.count("snakepit.worker.tainted") == 1; }));
    auto crash = rec.named("snakepit.worker.crash");
    REQUIRE(crash.size() == 1);
    CHECK(crash[0].metadata.at("cause") == "segfault");
    auto bad = crash[0].metadata.at("worker_id").get<std::string>();
    // Its restart is listed as tainted and gets no new work while the other serves.
    REQUIRE(eventually([&] {
      auto ws = serving_workers(r);
      return ws && ws->size() == 2 &&
             std::any_of(ws->begin(), ws->end(), [&](const snakepit::worker_info& w) {
               return w.id == bad && w.tainted && w.pid > 0;
             });
    }));
    for (int i = 0; i < 10; ++i) {
      auto res = r.execute("info");
      REQUIRE(res);
      CHECK(res->worker_id != bad);
    }
    // Those calls only prove the taint if they all ran within it.
    REQUIRE_MSG(std::chrono::steady_clock::now() - crash_sent < taint,
                "the restart and 10 calls took longer than the 10 s taint");
    // Once the taint is over it is listed untainted and serves again.
    CHECK(eventually(
      [&] {
        auto ws = serving_workers(r);
        return ws && ws->size() == 2 &&
               std::none_of(ws->begin(), ws->end(),
                            [](const snakepit::worker_info& w) { return w.tainted; });
      },
      20s));
    CHECK(eventually(
      [&] {
        std::vector<std::future<snakepit::execute_result>> calls;
        for (int i = 0; i < 4; ++i)
          calls.push_back(std::async(std::launch::async, [&] {
            return r.execute("sleep", {{"ms", 100}});
          }));
        bool served = false;
        for (auto& c : calls)
          if (auto res = c.get(); res && res->worker_id == bad)
            served = true;
        return served;
      },
      20s));
    stop_and_check(r);
  }

  TEST_CASE("a killed worker is not tainted by default, and an exit code can be") {
    auto cfg = small_config(2);
    cfg.pools[0].taint.causes = {"exit_7"};
    event_capture rec;
    snakepit::start_options opts;
    rec.attach_to(opts, "snakepit.worker");
    auto rt = snakepit::runtime::start(cfg, opts);
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto pid = serving_workers(r)->front().pid;
    ::kill(pid, SIGKILL);
    CHECK(eventually([&] { return rec.count("snakepit.worker.crash") == 1; }));
    CHECK(rec.named("snakepit.worker.crash")[0].metadata.at("cause") == "killed");
    CHECK_ERROR(r.execute("crash", {{"code", 7}}), errc::worker_crashed);
    CHECK(eventually([&] { return rec.count("snakepit.worker.crash") == 2; }));
    CHECK(rec.named("snakepit.worker.crash")[1].metadata.at("cause") == "exit_7");
    CHECK(eventually([&] { return rec.count("snakepit.worker.tainted") == 1; }));
    stop_and_check(r);
  }

  TEST_CASE("an idempotent call is retried with backoff up to retry_max_attempts") {
    auto cfg = small_config(2);
    cfg.pools[0].retry.max_attempts = 2;
    cfg.pools[0].retry.backoff = {100ms, 200ms};
    cfg.pools[0].taint.causes = {};
    event_capture rec;
    snakepit::start_options opts;
    rec.attach_to(opts, "snakepit");
    auto rt = snakepit::runtime::start(cfg, opts);
    REQUIRE_OK(rt);
    auto& r = **rt;
    snakepit::execute_options o;
    o.idempotent = true;
    o.timeout = 20s;
    auto started = std::chrono::steady_clock::now();
    // A call that crashes every worker it runs on: three runs, then worker_crashed.
    auto res = r.execute("crash", {{"code", 3}}, o);
    auto took = std::chrono::steady_clock::now() - started;
    REQUIRE_FALSE(res);
    CHECK_ERROR(res, errc::worker_crashed);
    CHECK(took >= 75ms + 150ms); // both backoffs (with -25 % jitter) were waited out
    auto retried = rec.named("snakepit.request.retried");
    REQUIRE(retried.size() == 2);
    CHECK(retried[0].measurements.at("attempt") == 1);
    CHECK(retried[1].measurements.at("attempt") == 2);
    CHECK(retried[0].measurements.at("delay_ms").get<int>() >= 75);
    CHECK(retried[1].measurements.at("delay_ms").get<int>() >= 150);
    CHECK(eventually([&] { return rec.count("snakepit.worker.crash") == 3; }));
    // Not idempotent: one run, one crash.
    CHECK_ERROR(r.execute("crash", {{"code", 3}}), errc::worker_crashed);
    CHECK(eventually([&] { return rec.count("snakepit.worker.crash") == 4; }));
    std::this_thread::sleep_for(300ms);
    CHECK(rec.count("snakepit.worker.crash") == 4);
    CHECK(eventually([&] { return all_available(r, 2); }));
    stop_and_check(r);
  }

} // TEST_SUITE

TEST_SUITE("integration.circuit_breaker") {

  TEST_CASE("workers that keep failing to start open the circuit: fail fast, no storm, "
            "recovery") {
    char marker[] = "/tmp/snakepit-flaky-XXXXXX";
    int fd = ::mkstemp(marker);
    REQUIRE(fd >= 0);
    ::close(fd);
    ::unlink(marker); // absent: workers start
    auto cfg = small_config(2);
    use_test_adapter(cfg, cfg.pools[0], "flaky_start_adapter.FlakyStartAdapter");
    cfg.pools[0].adapter_env = {{"SNAKEPIT_FLAKY_START_FILE", marker}};
    cfg.pools[0].circuit.threshold = 3;
    cfg.pools[0].circuit.reset = 1000ms;
    // Spawned workers: with template copies (which fail within ~50 ms) a probe was
    // seen to start two workers; kept out of this count until that is understood.
    cfg.pools[0].start_method = snakepit::start_method::spawn;
    cfg.pools[0].restart.max_restarts = 20;
    cfg.pools[0].restart.max_seconds = std::chrono::seconds{10};
    event_capture rec;
    snakepit::start_options opts;
    rec.attach_to(opts, "snakepit");
    auto rt = snakepit::runtime::start(cfg, opts);
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(r.execute("ping"));
    { std::ofstream{marker} << "refuse\n"; }
    for (auto pid : worker_pids(r))
      ::kill(pid, SIGKILL);
    REQUIRE(
      eventually([&] { return rec.count("snakepit.circuit_breaker.opened") == 1; }, 15s));
    CHECK(eventually([&] { return serving_workers(r)->empty(); }));
    // Fail fast instead of waiting out the queue timeout.
    auto t0 = std::chrono::steady_clock::now();
    auto res = r.execute("ping");
    REQUIRE_FALSE(res);
    CHECK_ERROR(res, errc::circuit_open);
    CHECK(std::chrono::steady_clock::now() - t0 < 200ms);
    // No storm: while open, at most the half-open probes start workers. Both counts
    // are read after a flush of the bus, probes first at the start and last at the
    // end: a probe between the two reads then never counts its start without itself.
    REQUIRE(r.telemetry().flush(5s));
    auto probes = rec.count("snakepit.circuit_breaker.half_open");
    auto spawned = rec.count("snakepit.worker.spawned");
    std::this_thread::sleep_for(2500ms);
    REQUIRE(r.telemetry().flush(5s));
    auto new_spawns = rec.count("snakepit.worker.spawned") - spawned;
    auto new_probes = rec.count("snakepit.circuit_breaker.half_open") - probes;
    CHECK(new_probes >= 1);
    // One start per half-open probe, and probes only once per reset interval: 2.5 s
    // of 1 s resets. Besides them, a start already under way when the circuit opened
    // may still spawn its process: the worker supervisor can have begun a restart
    // before the pool's retire reaches it (at most one per worker of the pool, 2
    // here; seen in a fresh-clone run: 4 spawns for 3 probes). Nothing else starts.
    CHECK(new_probes <= 3);
    CHECK(new_spawns <= new_probes + 2);
    // Starts work again: the next probe closes the circuit and the pool refills.
    ::unlink(marker);
    CHECK(
      eventually([&] { return rec.count("snakepit.circuit_breaker.closed") == 1; }, 10s));
    CHECK(eventually([&] { return all_available(r, 2); }, 15s));
    auto ok = r.execute("ping");
    CHECK_OK(ok);
    stop_and_check(r);
  }

  TEST_CASE(
    "start storm: an adapter that never imports opens the circuit, spawns stay bounded") {
    auto cfg = small_config(2);
    use_test_adapter(cfg, cfg.pools[0], "broken_adapter.BrokenAdapter");
    cfg.pools[0].circuit.threshold = 2;
    cfg.pools[0].circuit.reset = 700ms;
    event_capture rec;
    snakepit::start_options opts;
    opts.wait_ready = false;
    rec.attach_to(opts, "snakepit");
    auto rt = snakepit::runtime::start(cfg, opts);
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(
      eventually([&] { return rec.count("snakepit.circuit_breaker.opened") >= 1; }));
    // Callers get a typed error at once (the pool's start error names the cause).
    auto t0 = std::chrono::steady_clock::now();
    auto res = r.execute("ping");
    REQUIRE_FALSE(res);
    CHECK_MSG((res.error() == errc::start_failed || res.error() == errc::circuit_open),
              explain(res.error()));
    CHECK(std::chrono::steady_clock::now() - t0 < 500ms);
    // Over 3 s: the 2 initial starts plus at most one probe per reset period.
    std::this_thread::sleep_for(3s);
    auto spawned = rec.count("snakepit.worker.spawned");
    CHECK(spawned >= 3); // the probes do run
    CHECK(spawned <= 2 + 6);
    CHECK(rec.count("snakepit.circuit_breaker.half_open") >= 2);
    CHECK(rec.count("snakepit.circuit_breaker.closed") == 0);
    CHECK(serving_workers(r)->empty());
    stop_and_check(r);
  }

  TEST_CASE("calls that keep timing out open the circuit for calls, a trial closes it") {
    auto cfg = small_config(2);
    cfg.pools[0].circuit.call_failures = 3;
    cfg.pools[0].circuit.reset = 500ms;
    event_capture rec;
    snakepit::start_options opts;
    rec.attach_to(opts, "snakepit.circuit_breaker");
    auto rt = snakepit::runtime::start(cfg, opts);
    REQUIRE_OK(rt);
    auto& r = **rt;
    snakepit::execute_options o;
    o.timeout = 100ms;
    // Blocking callers on an idle pool run on the direct lane: the run counts there.
    for (int i = 0; i < 3; ++i)
      REQUIRE_ERROR(r.execute("async_sleep", {{"ms", 5000}}, o), errc::timeout);
    auto refused = r.execute("echo", {{"x", 1}});
    REQUIRE_FALSE(refused);
    CHECK(refused.error() == errc::circuit_open);
    CHECK(snakepit::describe(refused.error()).find("pool default") != std::string::npos);
    CHECK(eventually([&] { return rec.count("snakepit.circuit_breaker.opened") == 1; }));
    CHECK(eventually(
      [&] {
        return static_cast<bool>(r.execute("echo", {{"x", 2}}));
      },
      5s));
    CHECK(
      eventually([&] { return rec.count("snakepit.circuit_breaker.half_open") == 1; }));
    CHECK(eventually([&] { return rec.count("snakepit.circuit_breaker.closed") == 1; }));
    for (int i = 0; i < 5; ++i)
      CHECK(r.execute("echo", {{"x", i}}));
    stop_and_check(r);
  }

} // TEST_SUITE

TEST_SUITE("integration.cancel_grace") {

  TEST_CASE("a sync tool that ignores its cancellation gets its worker restarted") {
    auto cfg = small_config(1);
    cfg.pools[0].cancel_grace = 300ms;
    event_capture rec;
    snakepit::start_options opts;
    rec.attach_to(opts, "snakepit.worker");
    auto rt = snakepit::runtime::start(cfg, opts);
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto pid = *worker_pids(r).begin();
    snakepit::execute_options o;
    o.timeout = 300ms;
    auto t0 = std::chrono::steady_clock::now();
    auto res = r.execute("sleep", {{"ms", 30000}}, o);
    REQUIRE_FALSE(res);
    CHECK_ERROR(res, errc::timeout);
    CHECK(std::chrono::steady_clock::now() - t0 < 2s); // the caller does not wait for it
    CHECK(eventually([&] { return rec.count("snakepit.worker.crash") == 1; }, 10s));
    CHECK(rec.named("snakepit.worker.crash")[0].metadata.at("cause") == "exit_86");
    CHECK(eventually([&] { return !pid_alive(pid); }));
    CHECK(eventually([&] { return all_available(r, 1); }));
    auto next = r.execute("info");
    REQUIRE(next);
    CHECK(next->result.at("pid") != pid);
    stop_and_check(r);
  }

  TEST_CASE(
    "cancelled async tools and sync tools that finish in time keep their worker") {
    auto cfg = small_config(1);
    cfg.pools[0].cancel_grace = 1500ms;
    event_capture rec;
    snakepit::start_options opts;
    rec.attach_to(opts, "snakepit.worker");
    auto rt = snakepit::runtime::start(cfg, opts);
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto pid = *worker_pids(r).begin();
    snakepit::execute_options o;
    o.timeout = 200ms;
    CHECK_ERROR(r.execute("async_sleep", {{"ms", 30000}}, o), errc::timeout);
    CHECK_ERROR(r.execute("sleep", {{"ms", 600}}, o), errc::timeout);
    std::this_thread::sleep_for(2500ms);
    CHECK(rec.count("snakepit.worker.crash") == 0);
    CHECK(worker_pids(r) == std::set<int>{pid});
    stop_and_check(r);
  }

} // TEST_SUITE
