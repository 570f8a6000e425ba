// snakepit_showcase [all|list|<demo>...] [--python-dir DIR]
//
// Starts one pool of Python workers running examples/showcase/python's
// showcase_adapter.ShowcaseAdapter, runs the chosen demos (all by default), stops the
// runtime and checks that no worker process is left. Exit status: 0 when every check
// passed, 1 when one failed, 2 for a usage error or a runtime that did not start.
#include <signal.h>

#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "showcase.hpp"

#ifndef SNAKEPIT_SHOWCASE_PYTHON_DIR
#define SNAKEPIT_SHOWCASE_PYTHON_DIR ""
#endif

namespace {

using showcase::app;

struct demo {
  const char* name;
  const char* summary;
  void (*run)(app&);
};

const std::vector<demo> demos = {
  {"modes", "stateless vs session vs streaming, timed, with trade-offs",
   showcase::run_modes},
  {"sessions", "host-owned session state across workers", showcase::run_sessions},
  {"ml", "numpy workflow: load, train (streamed progress), evaluate", showcase::run_ml},
  {"binary", "a numpy array as bytes and the message-size limit", showcase::run_binary},
  {"concurrency", "many parallel calls, then the pool's stats",
   showcase::run_concurrency},
  {"errors", "typed errors, Python exception types, timeout fallback, failing streams",
   showcase::run_errors},
  {"tools", "host tools called from Python", showcase::run_host_tools},
};

struct options {
  std::vector<const demo*> chosen;
  std::string python_dir;
  /// Set when the program should exit at once (0 after `list`, 2 on a usage error).
  std::optional<int> exit_now;
};

const demo* find_demo(const std::string& name) {
  for (auto& d : demos)
    if (name == d.name)
      return &d;
  return nullptr;
}

void usage() {
  fmt::print("usage: snakepit_showcase [all|list|<demo>...] [--python-dir DIR]\n"
             "demos:\n");
  for (auto& d : demos)
    fmt::print("  {:<12} {}\n", d.name, d.summary);
  fmt::print("The adapter package is looked up in --python-dir, else "
             "$SNAKEPIT_SHOWCASE_PYTHON_DIR,\nelse {}\n",
             SNAKEPIT_SHOWCASE_PYTHON_DIR);
}

/// Parses the command line.
options parse(int argc, char** argv) {
  options out;
  if (auto env = std::getenv("SNAKEPIT_SHOWCASE_PYTHON_DIR"); env && *env)
    out.python_dir = env;
  else
    out.python_dir = SNAKEPIT_SHOWCASE_PYTHON_DIR;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--python-dir" && i + 1 < argc) {
      out.python_dir = argv[++i];
    } else if (arg == "all") {
      for (auto& d : demos)
        out.chosen.push_back(&d);
    } else if (auto d = find_demo(arg)) {
      out.chosen.push_back(d);
    } else {
      bool asked = arg == "list" || arg == "--help" || arg == "-h";
      if (!asked)
        fmt::print(stderr, "unknown demo or option '{}'\n", arg);
      usage();
      out.exit_now = asked ? 0 : 2;
      return out;
    }
  }
  if (out.chosen.empty())
    for (auto& d : demos)
      out.chosen.push_back(&d);
  return out;
}

/// The showcase's pool: four workers of the showcase adapter, found through the
/// adapter directory placed before the library's own PYTHONPATH entries.
snakepit::config make_config(const std::string& python_dir) {
  snakepit::config cfg;
  std::stringstream defaults{cfg.effective_python_path()};
  cfg.python_path = {python_dir};
  for (std::string entry; std::getline(defaults, entry, ':');)
    cfg.python_path.push_back(entry);
  auto& pool = cfg.pools[0];
  pool.name = "showcase";
  pool.pool_size = 4;
  pool.adapter = "showcase_adapter.ShowcaseAdapter";
  pool.max_message_bytes = 16u << 20; // the binary demo shows the limit (default 100 MiB)
  cfg.log.level = snakepit::adapters::log_level::error;
  return cfg;
}

/// Stops the runtime and counts the worker processes still alive afterwards.
int stop_and_count_leftovers(snakepit::runtime& rt, showcase::checker& ck) {
  showcase::section("stop");
  auto pids = rt.live_processes();
  auto err = rt.stop();
  ck.that(!err, fmt::format("stop: {}", snakepit::describe(err)));
  int alive = 0;
  for (auto pid : pids)
    if (::kill(pid, 0) == 0)
      ++alive;
  ck.that(alive == 0,
          fmt::format("{} of {} worker processes alive after stop", alive, pids.size()));
  return alive;
}

/// Runs the chosen demos on a started runtime, then stops it; the number of failed
/// checks.
int run_demos(snakepit::runtime& rt, const snakepit::config& cfg,
              const std::vector<const demo*>& chosen) {
  showcase::checker ck;
  if (auto err = showcase::register_host_tools(rt))
    ck.that(false, fmt::format("register host tools: {}", snakepit::describe(err)));
  app a{rt, cfg, ck};
  for (auto* d : chosen)
    d->run(a);
  stop_and_count_leftovers(rt, ck);
  return ck.failures();
}

} // namespace

int main(int argc, char** argv) {
  auto opts = parse(argc, argv);
  if (opts.exit_now)
    return *opts.exit_now;
  auto package = opts.python_dir + "/showcase_adapter/__init__.py";
  if (::access(package.c_str(), R_OK) != 0) {
    fmt::print(stderr, "no adapter package at {} (give --python-dir)\n", package);
    return 2;
  }
  auto cfg = make_config(opts.python_dir);
  fmt::print("snakepit showcase: {} workers of {} (from {})\n", cfg.pools[0].pool_size,
             cfg.pools[0].adapter, opts.python_dir);
  auto t0 = std::chrono::steady_clock::now();
  auto started = snakepit::runtime::start(cfg);
  if (!started) {
    fmt::print(stderr, "start failed: {}\n", snakepit::describe(started.error()));
    return 2;
  }
  fmt::print("ready in {:.0f} ms\n", showcase::ms_since(t0));
  if (int failed = run_demos(**started, cfg, opts.chosen)) {
    fmt::print(stderr, "\nshowcase: {} check(s) FAILED (see [FAIL] lines above)\n",
               failed);
    return 1;
  }
  fmt::print("\nshowcase: every check passed\n");
  return 0;
}
