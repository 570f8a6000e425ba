// Benchmark suite: a trivial `ping` tool through the pool, side by side with its
// anchors in the same run on the same machine:
//   1. pool (facade), sequential, 1 caller           -> p50/p99
//   2. direct C++ gRPC client to the same Python worker, no pool (transport floor)
//   3. throughput, 4 workers, 16 concurrent callers: pool vs direct clients
//   4. Python's multiprocessing.Pool(4): apply p50, apply_async throughput
// Prints a table and writes the figures and ratios (ours / anchor) as JSON.
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "actors/runtime/runtime.hpp"
#include "adapters/errors.hpp"
#include "bench/measure.hpp"
#include "snakepit_bridge.grpc.pb.h"

namespace {

using clock_type = std::chrono::steady_clock;
using json = nlohmann::json;
using snakepit::bench::run_mp_anchor;
namespace bridge = snakepit::bridge;

struct latencies {
  std::vector<double> ms;
  double pct(double p) {
    std::sort(ms.begin(), ms.end());
    if (ms.empty())
      return 0;
    auto idx =
      std::min(ms.size() - 1, static_cast<size_t>(p * static_cast<double>(ms.size())));
    return ms[idx];
  }
};

double since_ms(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

/// CPU time of this process so far (all threads, user + system), microseconds.
double process_cpu_us() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto us = [](const timeval& tv) {
    return tv.tv_sec * 1e6 + static_cast<double>(tv.tv_usec);
  };
  return us(ru.ru_utime) + us(ru.ru_stime);
}

bridge::ExecuteToolRequest ping_request() {
  bridge::ExecuteToolRequest req;
  req.set_tool_name("ping");
  req.set_session_id("bench");
  return req;
}

bool direct_ping(bridge::BridgeService::Stub& stub, const bridge::ExecuteToolRequest& req,
                 const std::string& correlation_id = {}) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds{10});
  if (!correlation_id.empty())
    ctx.AddMetadata("x-snakepit-correlation-id", correlation_id);
  bridge::ExecuteToolResponse resp;
  auto status = stub.ExecuteTool(&ctx, req, &resp);
  return status.ok() && resp.success();
}

/// Reads one whole stream with a synchronous stub; returns chunks and bytes.
std::pair<size_t, size_t> direct_stream(bridge::BridgeService::Stub& stub, int steps,
                                        int size) {
  bridge::ExecuteToolRequest req;
  req.set_tool_name("stream_record");
  req.set_stream(true);
  google::protobuf::Any steps_any, size_any;
  steps_any.set_type_url("type.googleapis.com/google.protobuf.StringValue");
  steps_any.set_value(std::to_string(steps));
  size_any.set_type_url("type.googleapis.com/google.protobuf.StringValue");
  size_any.set_value(std::to_string(size));
  (*req.mutable_parameters())["steps"] = steps_any;
  (*req.mutable_parameters())["size"] = size_any;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds{60});
  auto reader = stub.ExecuteStreamingTool(&ctx, req);
  bridge::ToolChunk chunk;
  size_t chunks = 0, bytes = 0;
  while (reader->Read(&chunk)) {
    // Decode like any user of the chunk would (the pool hands over decoded JSON).
    auto decoded = json::parse(chunk.data(), nullptr, false);
    ++chunks;
    bytes += decoded.is_object() ? decoded.size() : 0;
  }
  reader->Finish();
  return {chunks, bytes};
}

/// Runs `fn` from `callers` threads until `total` calls are done; calls per second.
template<class F>
double closed_loop(size_t callers, size_t total, F fn) {
  std::atomic<size_t> next{0};
  std::atomic<size_t> failures{0};
  auto t0 = clock_type::now();
  std::vector<std::thread> threads;
  for (size_t c = 0; c < callers; ++c)
    threads.emplace_back([&, c] {
      while (next.fetch_add(1) < total)
        if (!fn(c))
          ++failures;
    });
  for (auto& t : threads)
    t.join();
  auto secs = since_ms(t0) / 1000.0;
  if (failures > 0)
    fmt::print(stderr, "warning: {} failed calls\n", failures.load());
  return static_cast<double>(total) / secs;
}

/// What a call in a session costs over the same call outside one.
struct affinity_cost {
  double overhead_us = 0; // median of paired differences
  double iqr_us = 0;      // interquartile range of those differences
  double session_cpu_us = 0, plain_cpu_us = 0;
};

/// In-session and plain calls interleaved call by call, in random order within each
/// pair, so both see the same machine; the median of the paired differences resolves
/// a few microseconds where the difference of two medians (each with the VM's drift)
/// did not. Host CPU per call beside it, from alternating blocks.
affinity_cost measure_affinity(snakepit::runtime& pool, size_t n) {
  std::mt19937 rng{7};
  latencies diffs;
  for (size_t i = 0; i < n; ++i) {
    double plain = 0, session = 0;
    bool session_first = rng() % 2 == 0;
    for (auto kind : {session_first, !session_first}) {
      auto t0 = clock_type::now();
      if (kind)
        pool.execute_in_session("bench_session", "ping");
      else
        pool.execute("ping");
      (kind ? session : plain) = since_ms(t0) * 1000.0;
    }
    diffs.ms.push_back(session - plain);
  }
  affinity_cost cost;
  cost.overhead_us = diffs.pct(0.5);
  cost.iqr_us = diffs.pct(0.75) - diffs.pct(0.25);
  const size_t block = 250, blocks = std::max<size_t>(2, n / block / 2);
  for (size_t b = 0; b < blocks; ++b) {
    auto c0 = process_cpu_us();
    for (size_t i = 0; i < block; ++i)
      pool.execute_in_session("bench_session", "ping");
    auto c1 = process_cpu_us();
    for (size_t i = 0; i < block; ++i)
      pool.execute("ping");
    auto c2 = process_cpu_us();
    cost.session_cpu_us += (c1 - c0) / static_cast<double>(block * blocks);
    cost.plain_cpu_us += (c2 - c1) / static_cast<double>(block * blocks);
  }
  return cost;
}

/// Kills the `index`-th listed worker with SIGKILL; ms until a replacement under the
/// same id is listed with another pid (-1: none within 10 s).
double kill_to_ready(snakepit::runtime& pool, size_t index) {
  auto before = pool.list_workers();
  if (!before || before->size() <= index)
    return -1;
  auto victim = (*before)[index];
  auto t0 = clock_type::now();
  ::kill(victim.pid, SIGKILL);
  while (since_ms(t0) < 10000) {
    if (auto now = pool.list_workers())
      for (auto& w : *now)
        if (w.id == victim.id && w.pid > 0 && w.pid != victim.pid &&
            w.state != "starting")
          return since_ms(t0);
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  }
  return -1;
}

} // namespace

int main(int argc, char** argv) {
  if (argc > 1 && argv[1][0] == '-') {
    fmt::print("usage: {} [results.json] [sequential calls] [throughput calls]\n",
               argv[0]);
    return argv[1] == std::string{"--help"} ? 0 : 2;
  }
  std::string out_path = argc > 1 ? argv[1] : "build/bench/results.json";
  size_t n_seq = argc > 2 ? std::stoul(argv[2]) : 3000;
  size_t n_tput = argc > 3 ? std::stoul(argv[3]) : 20000;
  constexpr size_t workers = 4;
  constexpr size_t callers = 16;

  snakepit::config cfg;
  cfg.pools[0].pool_size = workers;
  // 16 direct callers keep up to 4 calls in flight per worker; give the pool the
  // same per-worker concurrency (thread profile, 4 per worker) so both sides run
  // the same load.
  cfg.pools[0].worker_profile = snakepit::worker_profile::thread;
  cfg.pools[0].threads_per_worker = 4;
  auto rt = snakepit::runtime::start(cfg);
  if (!rt) {
    fmt::print(stderr, "start failed: {}\n", snakepit::describe(rt.error()));
    return 1;
  }
  auto& pool = **rt;
  auto ws = pool.list_workers();
  if (!ws || ws->size() != workers) {
    fmt::print(stderr, "expected {} workers\n", workers);
    return 1;
  }
  std::vector<std::unique_ptr<bridge::BridgeService::Stub>> stubs;
  for (auto& w : *ws) {
    auto target = "unix:" + pool.runtime_dir() + "/" + w.id + ".sock";
    stubs.push_back(bridge::BridgeService::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials())));
  }
  auto req = ping_request();
  // Warm-up both paths.
  for (int i = 0; i < 300; ++i) {
    pool.execute("ping");
    direct_ping(*stubs[0], req);
  }

  // One call through the pool and worker actors (the asynchronous API, whose
  // caller waits on a future): what every call cost before the direct lane.
  auto actor_ping = [&pool] {
    std::promise<bool> done;
    pool.execute_async("ping", json::object(), {}, [&done](snakepit::execute_result res) {
      done.set_value(bool(res));
    });
    return done.get_future().get();
  };
  for (int i = 0; i < 300; ++i)
    actor_ping();

  // 1 + 2: sequential latency, interleaved call by call so drift hits all alike. The
  // direct client calls the same Python worker the pool's calls went to (the pool
  // prefers its most recently used worker): Python processes on a shared VM differ
  // in speed by more than the pool's own cost.
  latencies pool_lat, direct_lat, actor_lat, same_req_lat;
  // The request the pool sends for the same call: a fresh correlation id in the
  // header and the metadata (the budget is the deadline, as in `direct_ping`).
  auto pool_like = [n = 0u](bridge::ExecuteToolRequest& out) mutable {
    out.Clear();
    out.set_tool_name("ping");
    ++n;
    auto cid = fmt::format("default-{:x}-{:08x}", n, 0x5eed0000u + n);
    (*out.mutable_metadata())["correlation_id"] = cid;
    return cid;
  };
  bridge::ExecuteToolRequest same_req;
  auto stub_of = [&](const std::string& worker_id) -> bridge::BridgeService::Stub& {
    for (size_t k = 0; k < ws->size(); ++k)
      if ((*ws)[k].id == worker_id)
        return *stubs[k];
    return *stubs[0];
  };
  std::string pool_worker = (*ws)[0].id;
  // One call of each kind per step, in an order that changes every step: this VM's
  // speed drifts by tens of per cent within seconds, and blocks of calls of one kind
  // would each see a different machine.
  auto one_call = [&](size_t kind) {
    auto t0 = clock_type::now();
    switch (kind) {
    case 0:
      actor_ping();
      actor_lat.ms.push_back(since_ms(t0));
      break;
    case 1: {
      auto res = pool.execute("ping");
      pool_lat.ms.push_back(since_ms(t0));
      if (!res)
        fmt::print(stderr, "pool error: {}\n", snakepit::describe(res.error()));
      else
        pool_worker = res->worker_id;
      break;
    }
    case 2:
      direct_ping(stub_of(pool_worker), req);
      direct_lat.ms.push_back(since_ms(t0));
      break;
    default: {
      auto cid = pool_like(same_req);
      direct_ping(stub_of(pool_worker), same_req, cid);
      same_req_lat.ms.push_back(since_ms(t0));
    }
    }
  };
  // A fresh random order each step: a fixed rotation would make every kind follow
  // mostly the same other kind (a call on another connection, or on the same one).
  std::mt19937 order_rng{42};
  std::array<size_t, 4> order{0, 1, 2, 3};
  for (size_t i = 0; i < n_seq; ++i) {
    std::shuffle(order.begin(), order.end(), order_rng);
    for (auto kind : order)
      one_call(kind);
  }

  // Host CPU per sequential call (all of this process's threads, user + system),
  // pool vs direct client: the pool's own cost, less exposed to the VM's drift
  // than wall-clock latency. Alternating blocks of 250 calls.
  double pool_cpu_us = 0, direct_cpu_us = 0;
  {
    const size_t block = 250, blocks = std::max<size_t>(2, n_seq / block / 2);
    for (size_t b = 0; b < blocks; ++b) {
      auto c0 = process_cpu_us();
      for (size_t i = 0; i < block; ++i)
        pool.execute("ping");
      auto c1 = process_cpu_us();
      for (size_t i = 0; i < block; ++i)
        direct_ping(stub_of(pool_worker), req);
      auto c2 = process_cpu_us();
      pool_cpu_us += (c1 - c0) / static_cast<double>(block * blocks);
      direct_cpu_us += (c2 - c1) / static_cast<double>(block * blocks);
    }
  }

  // 3: throughput, 16 callers over 4 workers.
  auto direct_tput = closed_loop(
    callers, n_tput, [&](size_t c) { return direct_ping(*stubs[c % workers], req); });
  auto pool_tput = closed_loop(
    callers, n_tput, [&](size_t) { return static_cast<bool>(pool.execute("ping")); });
  auto direct_tput2 = closed_loop(
    callers, n_tput, [&](size_t c) { return direct_ping(*stubs[c % workers], req); });
  auto pool_tput2 = closed_loop(
    callers, n_tput, [&](size_t) { return static_cast<bool>(pool.execute("ping")); });
  direct_tput = (direct_tput + direct_tput2) / 2;
  pool_tput = (pool_tput + pool_tput2) / 2;
  auto affinity = measure_affinity(pool, n_seq);

  // Streaming: small chunks (chunks/s) and 64 KiB chunks (MB/s), pool vs direct,
  // plus time to first chunk through the pool.
  auto stream_rate = [&](int steps, int size, bool through_pool) {
    auto t0 = clock_type::now();
    size_t chunks = 0, bytes = 0;
    if (through_pool) {
      pool.execute_stream("stream_record", {{"steps", steps}, {"size", size}},
                          [&](const json& c, bool) {
                            ++chunks;
                            bytes += c.size(); // touch the decoded chunk
                            return true;
                          });
    } else {
      std::tie(chunks, bytes) = direct_stream(*stubs[0], steps, size);
    }
    auto secs = since_ms(t0) / 1000.0;
    (void)bytes;
    auto payload = static_cast<double>(chunks) * (size + 16);
    return std::make_pair(static_cast<double>(chunks) / secs, payload / secs / 1e6);
  };
  stream_rate(200, 0, true); // warm-up
  stream_rate(200, 0, false);
  auto small_pool = stream_rate(5000, 0, true).first;
  auto small_direct = stream_rate(5000, 0, false).first;
  auto big_pool = stream_rate(400, 65536, true).second;
  auto big_direct = stream_rate(400, 65536, false).second;
  latencies first_chunk;
  for (int i = 0; i < 50; ++i) {
    auto t0 = clock_type::now();
    bool first = true;
    pool.execute_stream("stream_progress", {{"steps", 1}}, [&](const json&, bool) {
      if (first)
        first_chunk.ms.push_back(since_ms(t0));
      first = false;
      return true;
    });
  }

  // Recovery: kill -9 a worker, time until its replacement serves; several kills.
  latencies kills;
  for (size_t k = 0; k < 7; ++k) {
    if (auto ms = kill_to_ready(pool, k % workers); ms > 0)
      kills.ms.push_back(ms);
    std::this_thread::sleep_for(std::chrono::milliseconds{300});
  }
  double kill_to_ready_ms = kills.pct(0.5);
  stubs.clear();
  auto stop_err = pool.stop();

  // Startup time to ready for 4 workers (fresh runtime).
  double startup_4_ms = 0;
  {
    snakepit::config c4;
    c4.pools[0].pool_size = 4;
    auto t0 = clock_type::now();
    auto rt4 = snakepit::runtime::start(c4);
    startup_4_ms = since_ms(t0);
    if (rt4)
      (*rt4)->stop();
  }

  // 4: multiprocessing.Pool(4), after our workers are gone.
  auto mp = run_mp_anchor(n_seq, n_tput);
  double mp_p50 = mp.is_object() ? mp.value("apply_p50_ms", 0.0) : 0.0;
  double mp_p99 = mp.is_object() ? mp.value("apply_p99_ms", 0.0) : 0.0;
  double mp_tput = mp.is_object() ? mp.value("async_throughput", 0.0) : 0.0;

  auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
  json results = {
    {"config",
     {{"workers", workers},
      {"callers", callers},
      {"sequential_calls", n_seq},
      {"throughput_calls", n_tput},
      {"tool", "ping"},
      {"cores", std::thread::hardware_concurrency()}}},
    {"raw",
     {{"pool_p50_ms", pool_lat.pct(0.50)},
      {"pool_p99_ms", pool_lat.pct(0.99)},
      {"direct_p50_ms", direct_lat.pct(0.50)},
      {"direct_p99_ms", direct_lat.pct(0.99)},
      {"actor_path_p50_ms", actor_lat.pct(0.50)},
      {"direct_same_request_p50_ms", same_req_lat.pct(0.50)},
      {"actor_path_p99_ms", actor_lat.pct(0.99)},
      {"pool_host_cpu_us_per_call", pool_cpu_us},
      {"direct_host_cpu_us_per_call", direct_cpu_us},
      {"pool_throughput", pool_tput},
      {"direct_throughput", direct_tput},
      {"mp_apply_p50_ms", mp_p50},
      {"mp_apply_p99_ms", mp_p99},
      {"mp_async_throughput", mp_tput}}},
    {"latency",
     {{"pool_vs_direct_p50", ratio(pool_lat.pct(0.50), direct_lat.pct(0.50))},
      {"pool_vs_direct_p99", ratio(pool_lat.pct(0.99), direct_lat.pct(0.99))},
      {"actor_path_vs_direct_p50", ratio(actor_lat.pct(0.50), direct_lat.pct(0.50))},
      {"pool_vs_direct_same_request_p50",
       ratio(pool_lat.pct(0.50), same_req_lat.pct(0.50))},
      {"pool_vs_mp_apply_p50", ratio(pool_lat.pct(0.50), mp_p50)},
      {"pool_vs_direct_host_cpu", ratio(pool_cpu_us, direct_cpu_us)}}},
    {"throughput",
     {{"pool_vs_direct", ratio(pool_tput, direct_tput)},
      {"pool_vs_mp_async", ratio(pool_tput, mp_tput)},
      {"stream_chunks_vs_direct", ratio(small_pool, small_direct)},
      {"stream_mbps_vs_direct", ratio(big_pool, big_direct)}}},
    {"streaming",
     {{"pool_chunks_per_s", small_pool},
      {"direct_chunks_per_s", small_direct},
      {"pool_mb_per_s_64k", big_pool},
      {"direct_mb_per_s_64k", big_direct},
      {"time_to_first_chunk_p50_ms", first_chunk.pct(0.5)}}},
    {"recovery",
     {{"kill_to_ready_ms", kill_to_ready_ms},
      {"kill_to_ready_min_ms", kills.pct(0.0)},
      {"kill_to_ready_max_ms", kills.pct(1.0)},
      {"kills", kills.ms.size()}}},
    {"startup", {{"workers_4_ms", startup_4_ms}}},
  };
  results["latency"]["session_affinity_overhead_us"] = affinity.overhead_us;
  results["latency"]["session_affinity_overhead_iqr_us"] = affinity.iqr_us;
  results["raw"]["session_host_cpu_us_per_call"] = affinity.session_cpu_us;
  results["raw"]["plain_host_cpu_us_per_call"] = affinity.plain_cpu_us;
  fmt::print("\n{:<44} {:>12} {:>12}\n", "benchmark (ping tool)", "p50 ms", "p99 ms");
  fmt::print("{:<44} {:>12.3f} {:>12.3f}\n", "pool, sequential, 1 caller",
             pool_lat.pct(0.5), pool_lat.pct(0.99));
  fmt::print("{:<44} {:>12.3f} {:>12.3f}\n", "direct gRPC client, same worker",
             direct_lat.pct(0.5), direct_lat.pct(0.99));
  fmt::print("{:<44} {:>12.3f} {:>12.3f}\n", "direct, the pool's request (cid)",
             same_req_lat.pct(0.5), same_req_lat.pct(0.99));
  fmt::print("{:<44} {:>12.3f} {:>12.3f}\n", "pool, actor path (execute_async + wait)",
             actor_lat.pct(0.5), actor_lat.pct(0.99));
  fmt::print("{:<44} {:>12.3f} {:>12.3f}\n", "multiprocessing.Pool(4).apply", mp_p50,
             mp_p99);
  fmt::print("\n{:<44} {:>12.1f} {:>12.1f}\n", "host CPU us per call (pool, direct)",
             pool_cpu_us, direct_cpu_us);
  fmt::print("\n{:<44} {:>12}\n", "throughput, 4 workers, 16 callers", "calls/s");
  fmt::print("{:<44} {:>12.0f}\n", "pool", pool_tput);
  fmt::print("{:<44} {:>12.0f}\n", "direct gRPC clients", direct_tput);
  fmt::print("{:<44} {:>12.0f}\n", "multiprocessing.Pool(4).apply_async", mp_tput);
  fmt::print("\n{:<44} {:>12.0f} {:>12.0f}\n", "stream chunks/s (pool, direct)",
             small_pool, small_direct);
  fmt::print("{:<44} {:>12.1f} {:>12.1f}\n", "stream MB/s, 64 KiB chunks (pool, direct)",
             big_pool, big_direct);
  fmt::print("{:<44} {:>12.3f}\n", "time to first chunk p50 ms", first_chunk.pct(0.5));
  fmt::print("{:<44} {:>12.1f} {:>12.1f}\n", "session affinity overhead us (median, IQR)",
             affinity.overhead_us, affinity.iqr_us);
  fmt::print("{:<44} {:>12.1f} {:>12.1f}\n", "host CPU us per call (session, plain)",
             affinity.session_cpu_us, affinity.plain_cpu_us);
  fmt::print("{:<44} {:>12.1f} {:>5.0f}-{:.0f}\n", "kill -9 to replacement ready ms",
             kill_to_ready_ms, kills.pct(0.0), kills.pct(1.0));
  fmt::print("{:<44} {:>12.1f}\n", "startup, 4 workers, ms", startup_4_ms);
  fmt::print(
    "\nratios (ours / anchor): {}\n",
    json{{"latency", results["latency"]}, {"throughput", results["throughput"]}}.dump(2));
  std::ofstream out{out_path};
  out << results.dump(2) << "\n";
  fmt::print("wrote {}\n", out_path);
  return stop_err ? 1 : 0;
}
