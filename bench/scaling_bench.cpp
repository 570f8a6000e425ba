// Scaling benchmark: pool throughput with 1..16 process workers under the same
// closed-loop load, the thread profile against the process profile for an
// I/O-bound tool at equal total capacity, and startup time to ready for 4, 16, 32 and
// 64 workers. Adds a "scaling" section to the benchmark JSON.
#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "actors/runtime/runtime.hpp"
#include "adapters/errors.hpp"
#include "bench/results_file.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
using json = nlohmann::json;

double since_ms(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

/// `callers` threads run `command` until `total` calls are done; calls per second.
double closed_loop(snakepit::runtime& rt, size_t callers, size_t total,
                   const std::string& command, const json& args) {
  std::atomic<size_t> next{0};
  auto t0 = clock_type::now();
  std::vector<std::thread> threads;
  for (size_t c = 0; c < callers; ++c)
    threads.emplace_back([&] {
      while (next.fetch_add(1) < total)
        rt.execute(command, args);
    });
  for (auto& t : threads)
    t.join();
  return static_cast<double>(total) / (since_ms(t0) / 1000.0);
}

snakepit::config
pool_of(size_t n, snakepit::worker_profile profile = snakepit::worker_profile::process,
        size_t threads = 4) {
  snakepit::config cfg;
  cfg.pools[0].pool_size = n;
  cfg.pools[0].worker_profile = profile;
  cfg.pools[0].threads_per_worker = threads;
  cfg.pools[0].startup.ready_timeout = std::chrono::seconds{120};
  return cfg;
}

} // namespace

int main(int argc, char** argv) {
  std::string out_path = argc > 1 ? argv[1] : "build/bench/results.json";
  size_t calls = argc > 2 ? std::stoul(argv[2]) : 3000;
  json scaling;
  snakepit::start_options slow_start;
  slow_start.timeout = std::chrono::minutes{5};

  // 1. Throughput of 1, 2, 4, 8, 16 process workers, 16 callers, ping.
  json curve = json::object();
  for (size_t n : {1, 2, 4, 8, 16}) {
    auto rt = snakepit::runtime::start(pool_of(n), slow_start);
    if (!rt) {
      fmt::print(stderr, "start of {} workers failed: {}\n", n,
                 snakepit::describe(rt.error()));
      return 1;
    }
    closed_loop(**rt, 16, 200, "ping", json::object()); // warm-up
    auto tput = closed_loop(**rt, 16, calls, "ping", json::object());
    curve[std::to_string(n)] = tput;
    fmt::print("{:>2} process workers, 16 callers: {:>8.0f} calls/s\n", n, tput);
    (*rt)->stop();
  }
  scaling["process_workers_throughput"] = curve;

  // 2. I/O-bound tool (sleep 10 ms) at equal total capacity 8: 8 process workers
  //    vs 2 thread workers x 4.
  json sleep_args = {{"ms", 10}};
  double proc_tput = 0, thread_tput = 0;
  {
    auto rt = snakepit::runtime::start(pool_of(8), slow_start);
    if (rt) {
      proc_tput = closed_loop(**rt, 16, 800, "sleep", sleep_args);
      (*rt)->stop();
    }
  }
  {
    auto rt = snakepit::runtime::start(pool_of(2, snakepit::worker_profile::thread, 4),
                                       slow_start);
    if (rt) {
      thread_tput = closed_loop(**rt, 16, 800, "sleep", sleep_args);
      (*rt)->stop();
    }
  }
  fmt::print("sleep 10 ms, capacity 8: process 8x1 {:.0f}/s, thread 2x4 {:.0f}/s\n",
             proc_tput, thread_tput);
  scaling["io_bound_sleep10ms"] = {
    {"process_8x1_per_s", proc_tput},
    {"thread_2x4_per_s", thread_tput},
    {"thread_vs_process", proc_tput > 0 ? thread_tput / proc_tput : 0.0}};

  // 3. Startup time to ready.
  json startup = json::object();
  for (size_t n : {4, 16, 32, 64}) {
    auto t0 = clock_type::now();
    auto rt = snakepit::runtime::start(pool_of(n), slow_start);
    auto ms = since_ms(t0);
    if (!rt) {
      fmt::print(stderr, "start of {} workers failed: {}\n", n,
                 snakepit::describe(rt.error()));
      continue;
    }
    startup[std::to_string(n)] = ms;
    fmt::print("startup of {:>2} workers to ready: {:>8.0f} ms\n", n, ms);
    (*rt)->stop();
  }
  scaling["startup_ms"] = startup;

  auto results = snakepit::bench::read_results(out_path);
  results["scaling"] = scaling;
  snakepit::bench::write_results(out_path, results);
  fmt::print("wrote scaling figures to {}\n", out_path);
  return 0;
}
