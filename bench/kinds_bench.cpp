// Worker kinds benchmark (docs/workers.md): the stdio kind beside the gRPC kind and
// beside Python's own multiprocessing.Pool(4), side by side in one run:
//   1. sequential latency through the pool, stdio Python vs gRPC Python (interleaved
//      call by call): the protocol `ping` and a no-op tool call (`echo {}`)
//   2. throughput of 4 stdio Python workers (and 4 stdio Node workers, 4 gRPC Python
//      workers) in the best of a few configurations vs
//      multiprocessing.Pool(4).apply_async of a no-op, with the CPU each call costs in
//      the host and in the workers
//   3. startup to ready of 4 and 64 stdio workers beside 4 and 64 gRPC workers
//   4. resident memory of one idle worker of each kind, and the host's per worker
// Adds "kinds" (raw figures) and ratio keys under "latency", "throughput", "startup" and
// "memory" to the benchmark JSON, keeping what is already there.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "actors/runtime/runtime.hpp"
#include "adapters/errors.hpp"
#include "bench/measure.hpp"
#include "bench/results_file.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
using json = nlohmann::json;
using snakepit::bench::host_cpu_us;
using snakepit::bench::run_mp_anchor;

double since_ms(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

/// CPU time of process `pid` (user + system) in microseconds, from /proc.
double process_cpu_us(int pid) {
  std::ifstream in{fmt::format("/proc/{}/stat", pid)};
  std::string stat;
  std::getline(in, stat);
  auto close = stat.rfind(')');
  if (close == std::string::npos)
    return 0;
  std::istringstream ss{stat.substr(close + 2)};
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && ss >> field; ++i) {
    if (i == 14)
      utime = std::stod(field);
    if (i == 15)
      stime = std::stod(field);
  }
  return (utime + stime) * 1e6 / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

struct latencies {
  std::vector<double> ms;
  double pct(double p) {
    if (ms.empty())
      return 0;
    std::sort(ms.begin(), ms.end());
    auto idx =
      std::min(ms.size() - 1, static_cast<size_t>(p * static_cast<double>(ms.size())));
    return ms[idx];
  }
};

const std::string node_bridge = std::string{SNAKEPIT_REPO_DIR} + "/node/bridge.js";

/// A pool named `name` of `n` workers of one kind ("grpc", "stdio-python",
/// "stdio-node"), with `capacity` calls in flight per worker.
snakepit::pool_config pool_of(const std::string& name, const std::string& kind, size_t n,
                              size_t capacity = 1) {
  snakepit::pool_config p;
  p.name = name;
  p.pool_size = n;
  if (kind != "grpc")
    p.kind = snakepit::worker_kind::stdio;
  if (kind == "stdio-node")
    p.command = {"node", node_bridge};
  if (capacity > 1) {
    p.worker_profile = snakepit::worker_profile::thread;
    p.threads_per_worker = capacity;
  }
  p.startup.ready_timeout = std::chrono::seconds{120};
  return p;
}

snakepit::config config_of(std::vector<snakepit::pool_config> pools) {
  snakepit::config cfg;
  cfg.pools = std::move(pools);
  return cfg;
}

snakepit::start_options slow_start() {
  snakepit::start_options o;
  o.timeout = std::chrono::minutes{5};
  return o;
}

snakepit::execute_options on_pool(const std::string& pool) {
  snakepit::execute_options o;
  o.pool = pool;
  return o;
}

/// `callers` threads each run blocking calls until `total` are done; calls/s.
double closed_loop(snakepit::runtime& rt, const std::string& pool, size_t callers,
                   size_t total) {
  std::atomic<size_t> next{0};
  std::atomic<size_t> failed{0};
  auto t0 = clock_type::now();
  std::vector<std::thread> threads;
  for (size_t c = 0; c < callers; ++c)
    threads.emplace_back([&] {
      while (next.fetch_add(1) < total)
        if (!rt.execute("echo", json::object(), on_pool(pool)))
          ++failed;
    });
  for (auto& t : threads)
    t.join();
  if (failed > 0)
    fmt::print(stderr, "warning: {} failed calls\n", failed.load());
  return static_cast<double>(total) / (since_ms(t0) / 1000.0);
}

/// One thread keeps `window` asynchronous calls in flight (apply_async's shape: the
/// caller never waits for one call before issuing the next) until `total` are done.
double pipelined(snakepit::runtime& rt, const std::string& pool, size_t window,
                 size_t total) {
  std::mutex mtx;
  std::condition_variable cv;
  size_t in_flight = 0;
  size_t done = 0;
  size_t failed = 0;
  auto t0 = clock_type::now();
  for (size_t i = 0; i < total; ++i) {
    {
      std::unique_lock<std::mutex> lock{mtx};
      cv.wait(lock, [&] { return in_flight < window; });
      ++in_flight;
    }
    rt.execute_async("echo", json::object(), on_pool(pool),
                     [&](snakepit::execute_result res) {
                       std::lock_guard<std::mutex> lock{mtx};
                       --in_flight;
                       ++done;
                       if (!res)
                         ++failed;
                       cv.notify_all();
                     });
  }
  std::unique_lock<std::mutex> lock{mtx};
  cv.wait(lock, [&] { return done == total; });
  if (failed > 0)
    fmt::print(stderr, "warning: {} failed calls\n", failed);
  return static_cast<double>(total) / (since_ms(t0) / 1000.0);
}

/// The best throughput of 4 workers of `kind` over a few configurations (1, 4 or 16
/// calls in flight per worker; 16 blocking callers, or one caller keeping 64 or 256
/// asynchronous calls in flight), with what won.
std::pair<double, std::string> best_throughput(const std::string& kind, size_t total,
                                               json& tried) {
  double best = 0;
  std::string best_name;
  for (size_t capacity : {1, 4, 16}) {
    auto rt = snakepit::runtime::start(config_of({pool_of("tput", kind, 4, capacity)}),
                                       slow_start());
    if (!rt) {
      fmt::print(stderr, "start of 4 {} workers failed: {}\n", kind,
                 snakepit::describe(rt.error()));
      continue;
    }
    closed_loop(**rt, "tput", 16, 500); // warm-up
    std::vector<int> pids;
    if (auto ws = (*rt)->list_workers("tput"))
      for (auto& w : *ws)
        pids.push_back(w.pid);
    auto workers_cpu = [&] {
      double sum = 0;
      for (auto pid : pids)
        sum += process_cpu_us(pid);
      return sum;
    };
    double host0 = 0, work0 = 0;
    auto mark = [&] {
      host0 = host_cpu_us();
      work0 = workers_cpu();
    };
    auto run = [&](const std::string& name, double tput) {
      // Where the time goes: CPU per call in the host and in the workers.
      auto host_us = (host_cpu_us() - host0) / static_cast<double>(total);
      auto work_us = (workers_cpu() - work0) / static_cast<double>(total);
      tried[name] = {{"calls_per_s", tput},
                     {"host_cpu_us_per_call", host_us},
                     {"worker_cpu_us_per_call", work_us}};
      fmt::print(
        "  {:<40} {:>10.0f} calls/s  cpu/call: host {:>5.1f} us, workers {:>5.1f} us\n",
        name, tput, host_us, work_us);
      if (tput > best) {
        best = tput;
        best_name = name;
      }
    };
    mark();
    auto blocking = closed_loop(**rt, "tput", 16, total);
    run(fmt::format("{} cap{} 16 blocking callers", kind, capacity), blocking);
    mark();
    auto piped = pipelined(**rt, "tput", 64, total);
    run(fmt::format("{} cap{} pipelined window 64", kind, capacity), piped);
    mark();
    auto deep = pipelined(**rt, "tput", 256, total);
    run(fmt::format("{} cap{} pipelined window 256", kind, capacity), deep);
    (*rt)->stop();
  }
  return {best, best_name};
}

/// This process's resident set in kB (VmRSS).
double self_rss_kb();

/// Milliseconds from `runtime::start` to every worker of one pool ready; `host_kb`
/// gets the host's resident set once they are.
double startup_ms(const std::string& kind, size_t n, double* host_kb = nullptr,
                  snakepit::start_method how = snakepit::start_method::automatic) {
  auto pool = pool_of("start", kind, n);
  pool.start_method = how;
  auto t0 = clock_type::now();
  auto rt = snakepit::runtime::start(config_of({pool}), slow_start());
  auto ms = since_ms(t0);
  if (!rt) {
    fmt::print(stderr, "start of {} {} workers failed: {}\n", n, kind,
               snakepit::describe(rt.error()));
    return 0;
  }
  if (host_kb)
    *host_kb = self_rss_kb();
  (*rt)->stop();
  return ms;
}

/// Resident set of `pid` in MB (VmRSS), 0 if unknown.
double rss_mb(int pid) {
  std::ifstream in{fmt::format("/proc/{}/status", pid)};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) {
      std::istringstream ss{line.substr(6)};
      double kb = 0;
      ss >> kb;
      return kb / 1024.0;
    }
  return 0;
}

double self_rss_kb() {
  return rss_mb(static_cast<int>(::getpid())) * 1024.0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc > 1 && argv[1][0] == '-') {
    fmt::print("usage: {} [results.json] [sequential calls] [throughput calls]\n",
               argv[0]);
    return argv[1] == std::string{"--help"} ? 0 : 2;
  }
  std::string out_path = argc > 1 ? argv[1] : "build/bench/results.json";
  size_t n_seq = argc > 2 ? std::stoul(argv[2]) : 2000;
  size_t n_tput = argc > 3 ? std::stoul(argv[3]) : 20000;
  auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
  json raw;

  // 1 + 4: one gRPC, one stdio Python and one stdio Node worker in one runtime; calls
  // interleaved in a fresh random order each step (this VM's speed drifts).
  latencies grpc_ping, stdio_ping, grpc_echo, stdio_echo, node_echo;
  double grpc_rss = 0, stdio_rss = 0, node_rss = 0;
  {
    auto rt = snakepit::runtime::start(
      config_of({pool_of("grpc", "grpc", 1), pool_of("stdio", "stdio-python", 1),
                 pool_of("node", "stdio-node", 1)}),
      slow_start());
    if (!rt) {
      fmt::print(stderr, "start failed: {}\n", snakepit::describe(rt.error()));
      return 1;
    }
    auto& pool = **rt;
    auto timed = [&](latencies& into, const char* pool_name, const char* command) {
      auto t0 = clock_type::now();
      auto res = pool.execute(command, json::object(), on_pool(pool_name));
      into.ms.push_back(since_ms(t0));
      if (!res)
        fmt::print(stderr, "{} {}: {}\n", pool_name, command,
                   snakepit::describe(res.error()));
    };
    for (int i = 0; i < 300; ++i) // warm-up
      for (auto* p : {"grpc", "stdio", "node"})
        pool.execute("echo", json::object(), on_pool(p));
    std::mt19937 rng{42};
    std::array<int, 5> order{0, 1, 2, 3, 4};
    for (size_t i = 0; i < n_seq; ++i) {
      std::shuffle(order.begin(), order.end(), rng);
      for (auto k : order)
        switch (k) {
        case 0:
          timed(grpc_ping, "grpc", "ping");
          break;
        case 1:
          timed(stdio_ping, "stdio", "ping");
          break;
        case 2:
          timed(grpc_echo, "grpc", "echo");
          break;
        case 3:
          timed(stdio_echo, "stdio", "echo");
          break;
        default:
          timed(node_echo, "node", "echo");
        }
    }
    auto all = pool.list_all_workers();
    if (all) {
      auto first_rss = [&](const char* name) {
        auto it = all->find(name);
        return it != all->end() && !it->second.empty() ? rss_mb(it->second[0].pid) : 0.0;
      };
      grpc_rss = first_rss("grpc");
      stdio_rss = first_rss("stdio");
      node_rss = first_rss("node");
    }
    pool.stop();
  }
  fmt::print("\n{:<44} {:>10} {:>10}\n", "sequential, 1 caller", "p50 ms", "p99 ms");
  for (auto& [name, l] : std::vector<std::pair<const char*, latencies*>>{
         {"gRPC Python, ping", &grpc_ping},
         {"stdio Python, ping", &stdio_ping},
         {"gRPC Python, echo {}", &grpc_echo},
         {"stdio Python, echo {}", &stdio_echo},
         {"stdio Node, echo {}", &node_echo}})
    fmt::print("{:<44} {:>10.3f} {:>10.3f}\n", name, l->pct(0.5), l->pct(0.99));
  raw["grpc_ping_p50_ms"] = grpc_ping.pct(0.5);
  raw["stdio_ping_p50_ms"] = stdio_ping.pct(0.5);
  raw["grpc_echo_p50_ms"] = grpc_echo.pct(0.5);
  raw["stdio_echo_p50_ms"] = stdio_echo.pct(0.5);
  raw["node_echo_p50_ms"] = node_echo.pct(0.5);
  raw["stdio_echo_p99_ms"] = stdio_echo.pct(0.99);
  raw["grpc_echo_p99_ms"] = grpc_echo.pct(0.99);

  // 2: throughput, 4 workers, best configuration; then the anchor.
  fmt::print("\nthroughput, 4 workers, echo {{}}\n");
  json tried = json::object();
  auto [stdio_tput, stdio_how] = best_throughput("stdio-python", n_tput, tried);
  auto [node_tput, node_how] = best_throughput("stdio-node", n_tput, tried);
  // (gRPC workers are ~8x slower per call: a quarter of the calls keeps the run short.)
  auto [grpc_tput, grpc_how] = best_throughput("grpc", n_tput / 4, tried);
  auto mp = run_mp_anchor(200, n_tput);
  double mp_tput = mp.is_object() ? mp.value("async_throughput", 0.0) : 0.0;
  fmt::print("  {:<40} {:>10.0f} calls/s\n", "multiprocessing.Pool(4).apply_async",
             mp_tput);
  raw["throughput_tried"] = tried;
  raw["stdio_python_throughput"] = stdio_tput;
  raw["stdio_python_best"] = stdio_how;
  raw["stdio_node_throughput"] = node_tput;
  raw["stdio_node_best"] = node_how;
  raw["grpc_python_throughput"] = grpc_tput;
  raw["grpc_python_best"] = grpc_how;
  raw["mp_async_throughput"] = mp_tput;

  // 3: startup to ready.
  auto stdio_4 = startup_ms("stdio-python", 4);
  auto stdio_64 = startup_ms("stdio-python", 64);
  auto node_4 = startup_ms("stdio-node", 4);
  double host_kb_4 = 0, host_kb_64 = 0;
  auto grpc_4 = startup_ms("grpc", 4, &host_kb_4);
  auto grpc_64 = startup_ms("grpc", 64, &host_kb_64);
  auto host_kb_per_worker = (host_kb_64 - host_kb_4) / 60.0;
  // The same without the template: every worker a fresh interpreter.
  auto grpc_spawn_4 = startup_ms("grpc", 4, nullptr, snakepit::start_method::spawn);
  auto grpc_spawn_64 = startup_ms("grpc", 64, nullptr, snakepit::start_method::spawn);
  fmt::print("gRPC Python spawned instead of copied from the template: 4: {:.0f} ms, "
             "64: {:.0f} ms\n",
             grpc_spawn_4, grpc_spawn_64);
  fmt::print(
    "\nstartup to ready: stdio Python 4: {:.0f} ms, 64: {:.0f} ms; stdio Node 4: "
    "{:.0f} ms; gRPC Python 4: {:.0f} ms\n",
    stdio_4, stdio_64, node_4, grpc_4);
  fmt::print(
    "gRPC Python 64: {:.0f} ms; host RSS {:.0f} kB with 4 workers, {:.0f} kB with "
    "64: {:.0f} kB per worker\n",
    grpc_64, host_kb_4, host_kb_64, host_kb_per_worker);
  fmt::print("idle worker RSS: gRPC Python {:.1f} MB, stdio Python {:.1f} MB, stdio Node "
             "{:.1f} MB\n",
             grpc_rss, stdio_rss, node_rss);

  auto results = snakepit::bench::read_results(out_path);
  results["kinds"] = raw;
  results["latency"]["stdio_vs_grpc_p50"] =
    ratio(stdio_ping.pct(0.5), grpc_ping.pct(0.5));
  results["latency"]["stdio_vs_grpc_tool_call_p50"] =
    ratio(stdio_echo.pct(0.5), grpc_echo.pct(0.5));
  results["throughput"]["stdio_vs_mp_async"] = ratio(stdio_tput, mp_tput);
  results["throughput"]["stdio_node_vs_mp_async"] = ratio(node_tput, mp_tput);
  results["throughput"]["grpc_best_vs_mp_async"] = ratio(grpc_tput, mp_tput);
  results["startup"]["stdio_workers_4_ms"] = stdio_4;
  results["startup"]["stdio_workers_64_ms"] = stdio_64;
  results["startup"]["stdio_node_workers_4_ms"] = node_4;
  results["startup"]["grpc_workers_4_ms"] = grpc_4;
  results["startup"]["grpc_workers_64_ms"] = grpc_64;
  results["startup"]["grpc_spawned_workers_4_ms"] = grpc_spawn_4;
  results["startup"]["grpc_spawned_workers_64_ms"] = grpc_spawn_64;
  results["startup"]["grpc_forkserver_vs_spawn_64"] = ratio(grpc_64, grpc_spawn_64);
  results["memory"]["host_kb_per_worker"] = host_kb_per_worker;
  results["memory"]["stdio_python_worker_rss_mb"] = stdio_rss;
  results["memory"]["grpc_python_worker_rss_mb"] = grpc_rss;
  results["memory"]["stdio_node_worker_rss_mb"] = node_rss;
  fmt::print("\n{}\n", json{{"latency", results["latency"]},
                            {"throughput", results["throughput"]},
                            {"startup", results["startup"]},
                            {"memory", results["memory"]}}
                         .dump(2));
  snakepit::bench::write_results(out_path, results);
  fmt::print("wrote worker kinds figures to {}\n", out_path);
  return 0;
}
