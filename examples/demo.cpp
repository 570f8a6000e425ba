// The main job of scripts/demo: a host application that starts a pool of four
// Python workers, runs round trips, shows a Python error as a typed error, kills a
// worker while requests keep flowing, prints the stats and stops cleanly.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "actors/snakepit.hpp"

using namespace std::chrono_literals;

namespace {

void print_workers(snakepit::runtime& rt) {
  auto ws = rt.list_workers();
  if (!ws)
    return;
  for (auto& w : *ws)
    fmt::print("    {:<18} pid {:<7} {:<9} served {}\n", w.id, w.pid, w.state,
               w.requests);
}

} // namespace

int main() {
  snakepit::config cfg;
  cfg.pools[0].pool_size = 4;
  fmt::print("== starting a pool of 4 Python workers\n");
  auto t0 = std::chrono::steady_clock::now();
  auto started = snakepit::runtime::start(cfg);
  if (!started) {
    fmt::print(stderr, "start failed: {}\n", snakepit::describe(started.error()));
    return 1;
  }
  auto& rt = **started;
  fmt::print("   ready in {} ms (run id {})\n",
             std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now() - t0)
               .count(),
             rt.run_id());
  print_workers(rt);

  fmt::print("\n== round trips\n");
  for (auto [cmd, args] : std::vector<std::pair<std::string, snakepit::json>>{
         {"ping", snakepit::json::object()},
         {"add", {{"a", 2}, {"b", 40}}},
         {"echo", {{"hello", "world"}, {"n", 3}}}}) {
    auto res = rt.execute(cmd, args);
    if (res)
      fmt::print("   {}({}) -> {}   [{}]\n", cmd, args.dump(), res->result.dump(),
                 res->worker_id);
    else
      fmt::print("   {}({}) -> error {}\n", cmd, args.dump(),
                 snakepit::describe(res.error()));
  }

  fmt::print("\n== a Python exception surfaces as a typed error\n");
  auto bad = rt.execute("fail", {{"message", "bad input"}});
  if (!bad) {
    fmt::print("   fail -> {}\n", snakepit::describe(bad.error()));
    if (auto py = snakepit::python_error_of(bad.error()))
      fmt::print("   python type={} message={}\n", py->type, py->message);
  }

  fmt::print("\n== kill -9 one worker while requests continue\n");
  auto before = rt.list_workers();
  std::atomic<int> ok{0}, failed{0};
  std::atomic<bool> run{true};
  std::thread load([&] {
    while (run) {
      auto r = rt.execute("sleep", {{"ms", 20}});
      (r ? ok : failed)++;
    }
  });
  std::this_thread::sleep_for(200ms);
  if (before && !before->empty()) {
    auto victim = before->front();
    fmt::print("   killing {} (pid {})\n", victim.id, victim.pid);
    ::kill(victim.pid, SIGKILL);
    for (int i = 0; i < 100; ++i) {
      std::this_thread::sleep_for(100ms);
      auto now = rt.list_workers();
      if (now && now->size() == before->size()) {
        bool replaced = true;
        for (auto& w : *now)
          if (w.pid == victim.pid)
            replaced = false;
        if (replaced) {
          fmt::print("   {} is back with a new process after {} ms\n", victim.id,
                     (i + 1) * 100);
          break;
        }
      }
    }
  }
  std::this_thread::sleep_for(200ms);
  run = false;
  load.join();
  fmt::print("   requests during the crash: {} succeeded, {} failed\n", ok.load(),
             failed.load());
  print_workers(rt);

  fmt::print("\n== stats\n");
  if (auto s = rt.get_stats())
    fmt::print(
      "   workers {} (available {}, busy {}), requests {}, completed {}, errors {},\n"
      "   queued {}, queue timeouts {}, saturations {}, worker crashes {},\n"
      "   latency p50 {:.2f} ms, p99 {:.2f} ms\n",
      s->workers, s->available, s->busy, s->requests, s->completed, s->errors, s->queued,
      s->queue_timeouts, s->saturations, s->worker_crashes, s->latency_p50_ms,
      s->latency_p99_ms);

  fmt::print("\n== stopping\n");
  auto pids = rt.live_processes();
  auto err = rt.stop();
  int alive = 0;
  for (auto pid : pids)
    if (::kill(pid, 0) == 0)
      ++alive;
  fmt::print("   stopped{}; {} of {} worker processes still alive\n",
             err ? " with error " + snakepit::describe(err) : std::string{}, alive,
             pids.size());
  return err || alive != 0 ? 1 : 0;
}
