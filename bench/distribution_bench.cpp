// Distribution benchmark (docs/distribution.md): a pool served by a `snakepit node`
// process on this machine beside the same pool local, side by side in one run:
//   1. sequential `ping` latency, remote vs local, interleaved call by call
//      (latency.remote_vs_local_p50; goal <= 1.5)
//   2. throughput of 4 workers under 16 blocking callers, remote vs local, in
//      alternating rounds (throughput.remote_vs_local; goal >= 0.8), with the host's
//      CPU per call on each path (the routing cost of a remote call)
//   3. SIGKILL of a node with a call running there -> that call's node_down, the
//      median of several kills (recovery.node_loss_detect_ms; goal <= 2000)
//   4. placement cost: one pick from a node directory of 1, 10, 100 and 1000
//      connected nodes (the scaling model's input)
// Adds "distribution" (raw figures) and the three keys to the benchmark JSON.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "actors/distribution/node_link.hpp"
#include "actors/runtime/runtime.hpp"
#include "adapters/errors.hpp"
#include "bench/measure.hpp"
#include "bench/results_file.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
using json = nlohmann::json;
using snakepit::bench::host_cpu_us;
using snakepit::bench::median;
using namespace std::chrono_literals;

double micros_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::micro>(clock_type::now() - t0).count();
}

double pct(std::vector<double> xs, double p) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  return xs[std::min(xs.size() - 1,
                     static_cast<size_t>(p * static_cast<double>(xs.size())))];
}

/// A `snakepit node` child process serving pool `remote` of `workers` workers on a
/// free loopback port; SIGKILLed at scope exit and with this process.
class node_process {
 public:
  explicit node_process(size_t workers) {
    dir_ = std::filesystem::temp_directory_path() /
           fmt::format("snakepit-bench-node-{}-{}", ::getpid(), counter_++);
    std::filesystem::create_directories(dir_);
    auto config = (dir_ / "node.toml").string();
    std::ofstream{config} << fmt::format(R"(node_heartbeat_ms = 200
node_timeout_ms = 1500
[[pools]]
name = "remote"
adapter = "snakepit_bridge.adapters.showcase.ShowcaseAdapter"
pool_size = {}
graceful_shutdown_timeout_ms = 1000
)",
                                         workers);
    int out[2];
    if (::pipe(out) != 0)
      throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::dup2(out[1], 1);
      ::close(out[0]);
      ::close(out[1]);
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 2);
      ::execl(SNAKEPIT_CLI_BINARY, SNAKEPIT_CLI_BINARY, "node", "--listen", "127.0.0.1:0",
              "--config", config.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(out[1]);
    out_ = ::fdopen(out[0], "r");
    char line[2048];
    std::string marker = "node listening on ";
    while (out_ && std::fgets(line, sizeof(line), out_) != nullptr) {
      std::string text = line;
      if (auto at = text.find(marker); at != std::string::npos) {
        auto rest = text.substr(at + marker.size());
        address_ = rest.substr(0, rest.find(' '));
        break;
      }
    }
    if (address_.empty())
      throw std::runtime_error("the node did not start");
  }

  ~node_process() {
    kill();
    if (out_)
      std::fclose(out_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  node_process(const node_process&) = delete;
  node_process& operator=(const node_process&) = delete;

  void kill() {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  const std::string& address() const { return address_; }

 private:
  static inline int counter_ = 0;
  std::filesystem::path dir_;
  int pid_ = -1;
  FILE* out_ = nullptr;
  std::string address_;
};

snakepit::pool_config pool_of(const std::string& name, size_t n) {
  snakepit::pool_config p;
  p.name = name;
  p.pool_size = n;
  p.startup.ready_timeout = std::chrono::seconds{120};
  return p;
}

/// A host with a one-worker local pool `default` and the nodes at `addresses`.
snakepit::config host_of(const std::vector<std::string>& addresses) {
  snakepit::config cfg;
  cfg.pools = {pool_of("default", 1)};
  cfg.node_heartbeat = 200ms;
  cfg.node_timeout = 1500ms;
  cfg.node_connect_timeout = 10s;
  int i = 0;
  for (auto& a : addresses)
    cfg.nodes.push_back({fmt::format("n{}", ++i), a});
  return cfg;
}

snakepit::execute_options on_remote() {
  snakepit::execute_options o;
  o.pool = "remote";
  return o;
}

bool connected(snakepit::runtime& rt) {
  auto deadline = clock_type::now() + 30s;
  while (clock_type::now() < deadline) {
    bool all = true;
    for (auto& v : rt.nodes())
      all = all && v.state == snakepit::distribution::node_state::connected &&
            !v.pools.empty() && v.pools.front().capacity > 0;
    if (all)
      return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

/// `callers` threads each run blocking `ping`s until `total` are done: calls/s and
/// the host's CPU per call (µs).
std::pair<double, double> closed_loop(snakepit::runtime& rt, size_t callers,
                                      size_t total) {
  std::atomic<size_t> next{0};
  std::atomic<size_t> failed{0};
  auto cpu0 = host_cpu_us();
  auto t0 = clock_type::now();
  std::vector<std::thread> threads;
  for (size_t c = 0; c < callers; ++c)
    threads.emplace_back([&] {
      while (next.fetch_add(1) < total)
        if (!rt.execute("ping", json::object(), on_remote()))
          failed.fetch_add(1);
    });
  for (auto& t : threads)
    t.join();
  auto secs = micros_since(t0) / 1e6;
  auto cpu = host_cpu_us() - cpu0;
  if (failed > 0)
    fmt::print(stderr, "distribution bench: {} calls failed\n", failed.load());
  return {static_cast<double>(total) / secs, cpu / static_cast<double>(total)};
}

/// SIGKILL of a node with a call running there -> that call's node_down (ms).
double node_loss_detect_ms() {
  node_process node{1};
  auto rt = snakepit::runtime::start(host_of({node.address()}));
  if (!rt || !connected(**rt))
    return -1;
  std::atomic<bool> done{false};
  clock_type::time_point failed_at;
  auto opts = on_remote();
  opts.timeout = 60s;
  (*rt)->execute_async("sleep", {{"ms", 30000}}, opts, [&](snakepit::execute_result res) {
    failed_at = clock_type::now();
    if (res || res.error() != snakepit::errc::node_down)
      fmt::print(stderr, "distribution bench: the lost call ended with {}\n",
                 res ? "a result" : snakepit::describe(res.error()));
    done = true;
  });
  // Wait until it runs on the node's worker.
  auto deadline = clock_type::now() + 30s;
  while (clock_type::now() < deadline) {
    auto nodes = (*rt)->nodes();
    if (!nodes.empty() && !nodes[0].pools.empty() && nodes[0].pools[0].load == 1)
      break;
    std::this_thread::sleep_for(10ms);
  }
  auto killed_at = clock_type::now();
  node.kill();
  while (!done && clock_type::now() < killed_at + 30s)
    std::this_thread::sleep_for(1ms);
  auto ms =
    done ? std::chrono::duration<double, std::milli>(failed_at - killed_at).count() : -1;
  (*rt)->stop();
  return ms;
}

/// One pick (with its reservation released) from a directory of `n` connected
/// nodes that all serve the pool, in ns.
double pick_ns(size_t n) {
  snakepit::distribution::node_directory dir;
  for (size_t i = 0; i < n; ++i) {
    auto name = fmt::format("n{}", i);
    dir.add(name, fmt::format("10.0.0.{}:7400", i % 250), caf::actor{});
    dir.set_loads(name, {snakepit::distribution::pool_load{
                          "remote", 8, static_cast<uint32_t>(i % 8), 0, 60000}});
    dir.set_state(name, snakepit::distribution::node_state::connected);
  }
  size_t rounds = std::max<size_t>(2000, 200000 / std::max<size_t>(n, 1));
  auto t0 = clock_type::now();
  for (size_t i = 0; i < rounds; ++i) {
    auto r = dir.pick("remote", {}, true);
    dir.end_call(r->node, "remote", false);
  }
  return micros_since(t0) * 1000.0 / static_cast<double>(rounds);
}

} // namespace

int main(int argc, char** argv) {
  std::string out = argc > 1 ? argv[1] : "results.json";
  size_t n_seq = argc > 2 ? std::stoul(argv[2]) : 2000;
  size_t n_tput = argc > 3 ? std::stoul(argv[3]) : 8000;
  auto results = snakepit::bench::read_results(out);
  json raw;

  // 1 and 2: one node of 4 workers beside a local runtime with the same pool.
  {
    node_process node{4};
    snakepit::config local_cfg;
    local_cfg.pools = {pool_of("remote", 4)};
    snakepit::start_options slow;
    slow.timeout = std::chrono::minutes{5};
    auto local = snakepit::runtime::start(local_cfg, slow);
    auto remote = snakepit::runtime::start(host_of({node.address()}), slow);
    if (!local || !remote || !connected(**remote)) {
      fmt::print(stderr, "distribution bench: cannot start ({})\n",
                 !local    ? snakepit::describe(local.error())
                 : !remote ? snakepit::describe(remote.error())
                           : "the node did not connect");
      return 1;
    }
    for (int i = 0; i < 200; ++i) { // warm both paths
      (*local)->execute("ping", json::object(), on_remote());
      (*remote)->execute("ping", json::object(), on_remote());
    }
    std::vector<double> local_us, remote_us;
    for (size_t i = 0; i < n_seq; ++i) {
      auto t0 = clock_type::now();
      (*local)->execute("ping", json::object(), on_remote());
      local_us.push_back(micros_since(t0));
      t0 = clock_type::now();
      (*remote)->execute("ping", json::object(), on_remote());
      remote_us.push_back(micros_since(t0));
    }
    raw["local_ping_p50_us"] = pct(local_us, 0.5);
    raw["remote_ping_p50_us"] = pct(remote_us, 0.5);
    raw["local_ping_p99_us"] = pct(local_us, 0.99);
    raw["remote_ping_p99_us"] = pct(remote_us, 0.99);
    results["latency"]["remote_vs_local_p50"] =
      raw["remote_ping_p50_us"].get<double>() / raw["local_ping_p50_us"].get<double>();

    std::vector<double> local_rate, remote_rate, local_cpu, remote_cpu;
    for (int round = 0; round < 3; ++round) {
      auto [lr, lc] = closed_loop(**local, 16, n_tput);
      auto [rr, rc] = closed_loop(**remote, 16, n_tput);
      local_rate.push_back(lr);
      local_cpu.push_back(lc);
      remote_rate.push_back(rr);
      remote_cpu.push_back(rc);
    }
    raw["local_throughput"] = median(local_rate);
    raw["remote_throughput"] = median(remote_rate);
    raw["local_host_cpu_us_per_call"] = median(local_cpu);
    raw["remote_host_cpu_us_per_call"] = median(remote_cpu);
    results["throughput"]["remote_vs_local"] =
      raw["remote_throughput"].get<double>() / raw["local_throughput"].get<double>();
    (*remote)->stop();
    (*local)->stop();
  }

  // 3: several kills; the median.
  std::vector<double> detect;
  for (int i = 0; i < 3; ++i)
    detect.push_back(node_loss_detect_ms());
  raw["node_loss_detect_ms_runs"] = detect;
  results["recovery"]["node_loss_detect_ms"] = median(detect);

  // 4: placement cost by directory size.
  for (size_t n : {1, 10, 100, 1000})
    raw["pick_ns"][std::to_string(n)] = pick_ns(n);

  results["distribution"] = raw;
  snakepit::bench::write_results(out, results);
  fmt::print(
    "{}\n",
    json{{"latency.remote_vs_local_p50", results["latency"]["remote_vs_local_p50"]},
         {"throughput.remote_vs_local", results["throughput"]["remote_vs_local"]},
         {"recovery.node_loss_detect_ms", results["recovery"]["node_loss_detect_ms"]},
         {"distribution", raw}}
      .dump(2));
  return 0;
}
