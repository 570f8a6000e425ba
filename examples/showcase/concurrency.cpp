// Many parallel calls through the asynchronous API, then the pool's statistics and
// its workers: how the calls spread and what they cost.
#include "showcase.hpp"

#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

namespace showcase {

namespace {

/// Results of a batch of asynchronous calls, filled in from runtime threads.
struct batch {
  std::mutex mu;
  std::condition_variable cv;
  int pending = 0;
  int failed = 0;
  std::set<int> pids;
  std::string first_error;
};

/// Starts `n` calls of `tool` at once and waits for all of them; wall time in ms.
double run_batch(app& a, batch& b, const std::string& tool, int n, json args) {
  b.pending = n;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    args["task_id"] = i;
    a.rt.execute_async(tool, args, {}, [&b](snakepit::execute_result r) {
      std::lock_guard<std::mutex> guard{b.mu};
      if (r)
        b.pids.insert(r->result.value("pid", 0));
      else if (++b.failed == 1)
        b.first_error = snakepit::describe(r.error());
      if (--b.pending == 0)
        b.cv.notify_all();
    });
  }
  std::unique_lock<std::mutex> lock{b.mu};
  b.cv.wait(lock, [&] { return b.pending == 0; });
  return ms_since(t0);
}

void print_stats(app& a, uint64_t completed_before, int expected) {
  auto s = a.rt.get_stats();
  if (!a.ck.ok(s, "get_stats"))
    return;
  fmt::print("   pool '{}': {} workers, requests {}, completed {}, errors {}, "
             "ever queued {}\n   latency p50 {:.2f} ms, p95 {:.2f} ms, p99 {:.2f} ms\n",
             s->pool, s->workers, s->requests, s->completed, s->errors, s->queued,
             s->latency_p50_ms, s->latency_p95_ms, s->latency_p99_ms);
  a.ck.that(s->completed >= completed_before + expected,
            fmt::format("the stats count the {} calls as completed", expected));
  if (auto ws = a.rt.list_workers())
    for (auto& w : *ws)
      fmt::print("   {:<20} pid {:<8} {:<9} served {}\n", w.id, w.pid, w.state,
                 w.requests);
}

} // namespace

void run_concurrency(app& a) {
  section("Concurrency: many parallel calls, then the pool's stats");
  auto before = a.rt.get_stats();
  uint64_t completed_before = before ? before->completed : 0;
  constexpr int n = 48;
  batch io;
  double wall = run_batch(a, io, "io_task", n, {{"ms", 25}});
  fmt::print("   {} io_task calls of 25 ms: {:.0f} ms wall ({} ms one after another), "
             "on {} processes\n",
             n, wall, n * 25, io.pids.size());
  a.ck.that(io.failed == 0, fmt::format("all {} succeeded {}", n, io.first_error));
  a.ck.that(io.pids.size() >= 2, "the calls spread over several worker processes");
  batch cpu;
  wall = run_batch(a, cpu, "cpu_task", 8, {{"n", 300000}});
  fmt::print("   8 cpu_task calls: {:.0f} ms wall on {} processes (separate processes, "
             "separate GILs; this machine has {} cores)\n",
             wall, cpu.pids.size(), std::thread::hardware_concurrency());
  a.ck.that(cpu.failed == 0,
            fmt::format("all 8 cpu tasks succeeded {}", cpu.first_error));
  print_stats(a, completed_before, n + 8);
}

} // namespace showcase
