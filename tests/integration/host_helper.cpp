// A minimal host for the chaos tests: starts a runtime with N workers (registry in the
// given data directory), optionally has the workers start grandchildren, prints what it
// started and then waits to be killed. Usage:
//   snakepit_host_helper <data_dir> <workers> [grandchildren]
// Output, one item per line: "run <id>", "worker <pid>"..., "grandchild <pid>"...,
// "ready". Exits 2 if the runtime does not start. With SNAKEPIT_HELPER_ROGUE=1 the
// workers are instead the rogue stdio bridge in its `ignore-signals` mode (a foreign
// program that ignores EOF, SIGTERM and the lifeline; grandchildren are not supported).
// With SNAKEPIT_HELPER_LAUNCH=upstream the workers are launched by upstream Snakepit's
// convention (TCP port, ready file with the port).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "actors/runtime/runtime.hpp"
#include "adapters/errors.hpp"
#include "chaos_adapter.hpp"
#include "tests/support/python.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s <data_dir> <workers> [grandchildren]\n", argv[0]);
    return 64;
  }
  snakepit::config cfg;
  cfg.data_dir = argv[1];
  cfg.pools[0].pool_size = static_cast<size_t>(std::atoi(argv[2]));
  cfg.pools[0].graceful_shutdown_timeout = std::chrono::milliseconds{2000};
  use_chaos_adapter(cfg);
  if (auto launch = std::getenv("SNAKEPIT_HELPER_LAUNCH");
      launch && std::string{launch} == "upstream")
    cfg.pools[0].launch = snakepit::launch_convention::upstream;
  if (auto rogue = std::getenv("SNAKEPIT_HELPER_ROGUE"); rogue && *rogue == '1') {
    auto& p = cfg.pools[0];
    p.kind = snakepit::worker_kind::stdio;
    p.adapter.clear();
    p.command = {"/usr/bin/python3",
                 snakepit::testing::test_adapters_dir() + "/rogue_stdio_bridge.py",
                 "ignore-signals"};
  }
  if (auto hb = std::getenv("SNAKEPIT_HELPER_HEARTBEAT_MS")) {
    // Fast heartbeats both ways (the host-stopped test).
    auto ms = std::chrono::milliseconds{std::atoi(hb)};
    cfg.pools[0].heartbeat.interval = ms;
    cfg.pools[0].heartbeat.timeout = 2 * ms;
    cfg.pools[0].heartbeat.max_missed = 2;
  }
  auto grandchildren = argc > 3 ? std::atoi(argv[3]) : 0;
  auto rt = snakepit::runtime::start(cfg);
  if (!rt) {
    std::fprintf(stderr, "host_helper: %s\n", snakepit::describe(rt.error()).c_str());
    return 2;
  }
  std::printf("run %s\n", (*rt)->run_id().c_str());
  auto workers = (*rt)->list_workers(); // (all ready after start)
  for (auto pid : (*rt)->live_processes()) {
    bool worker = false;
    for (auto& w : workers ? *workers : std::vector<snakepit::worker_info>{})
      worker = worker || w.pid == pid;
    // The rest are worker templates (pool_config::start_method).
    std::printf("%s %d\n", worker ? "worker" : "template", pid);
  }
  for (int i = 0; i < grandchildren; ++i) {
    snakepit::execute_options opts;
    opts.timeout = std::chrono::seconds{30};
    auto res = (*rt)->execute("spawn_grandchild", snakepit::json::object(), opts);
    if (!res) {
      std::fprintf(stderr, "host_helper: %s\n", snakepit::describe(res.error()).c_str());
      return 3;
    }
    std::printf("grandchild %d\n", res->result.at("pid").get<int>());
  }
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;)
    ::pause();
}
