// The soak run (docs/reliability.md "Soak"): one runtime with two pools under mixed
// load for N minutes — plain calls, session calls whose state lives in the host,
// streams halted early, calls into a host tool, binary payloads — while a worker is
// killed every few seconds, recycling by max_requests and heartbeats are on. Every
// sample period it records the host's RSS, open descriptors and threads, the
// runtime's processes against its listed workers and the period's latency p50/p99,
// writes them to <out>/soak.json and judges them (goals below). Exit 0 when every
// goal holds, 1 when one does not, 2 when the runtime cannot start.
//
//   snakepit_soak --minutes 30 --out build/soak [--sample-seconds 10]
//                 [--kill-seconds 3 (0: no kills)] [--arena-max 2 (0: glibc's)]
#include <dirent.h>
#include <malloc.h>
#include <signal.h>
#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "actors/observability/histogram.hpp"
#include "actors/runtime/runtime.hpp"
#include "adapters/errors.hpp"

using namespace std::chrono_literals;
using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;

namespace {

/// The kinds of call in the mix, in the order `one_call` cycles through them.
constexpr std::array<const char*, 5> kind_names{"plain", "session", "stream", "host_tool",
                                                "binary"};

struct options {
  double minutes = 30;
  int sample_seconds = 10;
  double kill_seconds = 3;               // 0: no kills
  int arena_max = 2;                     // config::malloc_arena_max; 0: glibc's default
  int max_requests = 400;                // recycling.max_requests of both pools; 0: none
  std::vector<int> kinds{0, 1, 2, 3, 4}; // indexes into kind_names
  std::string out = "build/soak";
};

[[noreturn]] void usage(const std::string& why) {
  fmt::print(
    stderr,
    "soak: {}\n"
    "usage: snakepit_soak [--minutes N] [--sample-seconds S] [--kill-seconds K]\n"
    "                     [--arena-max A] [--max-requests R] [--kinds LIST] "
    "[--out DIR]\n"
    "  LIST: a comma-separated subset of {}\n",
    why, fmt::join(kind_names, ","));
  std::exit(2);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--help" || k == "-h")
      usage("a long run under mixed load (docs/reliability.md \"Soak\")");
    if (i + 1 >= argc)
      usage(fmt::format("{} needs a value", k));
    std::string v = argv[i + 1];
    try {
      if (k == "--minutes")
        o.minutes = std::stod(v);
      else if (k == "--sample-seconds")
        o.sample_seconds = std::stoi(v);
      else if (k == "--arena-max")
        o.arena_max = std::stoi(v);
      else if (k == "--kill-seconds")
        o.kill_seconds = std::stod(v);
      else if (k == "--max-requests")
        o.max_requests = std::stoi(v);
      else if (k == "--out")
        o.out = v;
      else if (k == "--kinds") {
        o.kinds.clear();
        std::stringstream in{v};
        for (std::string name; std::getline(in, name, ',');) {
          auto at = std::find(kind_names.begin(), kind_names.end(), name);
          if (at == kind_names.end())
            usage(fmt::format("unknown kind of call '{}'", name));
          o.kinds.push_back(static_cast<int>(at - kind_names.begin()));
        }
      } else
        usage(fmt::format("unknown option '{}'", k));
    } catch (const std::logic_error&) { // std::sto* on a value that is no number
      usage(fmt::format("{} takes a number, not '{}'", k, v));
    }
  }
  if (o.kinds.empty() || o.sample_seconds <= 0 || o.minutes <= 0)
    usage("nothing to run");
  return o;
}

/// A number from /proc/self/status ("VmRSS", "Threads").
long status_field(const std::string& key) {
  std::ifstream in{"/proc/self/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0)
      return std::stol(line.substr(key.size() + 1));
  return -1;
}

long open_fds() {
  long n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d) != nullptr)
      ++n;
    ::closedir(d);
  }
  return n - 3; // ".", ".." and the directory's own descriptor
}

/// The allocator's view (all arenas): bytes handed out and not yet freed, and bytes
/// freed but kept by the allocator. RSS growth with a flat `in_use` is memory the
/// allocator holds, not state that accumulates.
struct heap_figures {
  long in_use_kb;
  long free_kb;
};

heap_figures heap() {
  auto m = ::mallinfo2();
  return {static_cast<long>((m.uordblks + m.hblkhd) / 1024),
          static_cast<long>(m.fordblks / 1024)};
}

std::string command_line(int pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/cmdline"};
  std::string s{std::istreambuf_iterator<char>{in}, {}};
  std::replace(s.begin(), s.end(), '\0', ' ');
  return s;
}

/// What the load threads share: outcome counters and this period's latencies.
struct tally {
  std::atomic<long> ok{0};
  std::atomic<long> typed_errors{0};
  std::atomic<long> untyped_errors{0};
  std::atomic<long> in_flight{0};
  std::atomic<long> session_mismatches{0};
  std::mutex mtx;
  snakepit::latency_histogram period;
  /// The same per kind of call (`kind_names`), to tell which one sets the p99.
  std::array<snakepit::latency_histogram, 5> period_by_kind;

  void record(int kind, clock_type::time_point started, bool ok_call,
              const caf::error& err) {
    auto us =
      std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - started);
    if (ok_call)
      ++ok;
    else if (snakepit::errc_of(err))
      ++typed_errors;
    else
      ++untyped_errors;
    std::lock_guard<std::mutex> g{mtx};
    period.record(us.count());
    period_by_kind[kind].record(us.count());
  }
};

constexpr long kPlainWorkers = 3;
constexpr long kPoolWorkers = 5; // in both pools

snakepit::config soak_config(const options& opts) {
  snakepit::config cfg;
  // A long-running host's setting (docs/reliability.md "Soak"): without it each of
  // the ~30 threads may fragment an arena of its own.
  cfg.malloc_arena_max = opts.arena_max;
  auto& plain = cfg.pools[0];
  plain.name = "plain";
  plain.pool_size = kPlainWorkers;
  plain.adapter = "snakepit_bridge.adapters.showcase.ShowcaseAdapter";
  plain.recycling.max_requests = opts.max_requests;
  plain.heartbeat.enabled = true;
  plain.heartbeat.interval = 1000ms;
  auto mixed = plain;
  mixed.name = "mixed";
  mixed.pool_size = kPoolWorkers - kPlainWorkers;
  mixed.adapter = "showcase_adapter.ShowcaseAdapter";
  cfg.pools.push_back(mixed);
  // The showcase's adapter directory first, then the bundled package's entries.
  std::stringstream defaults{cfg.effective_python_path()};
  cfg.python_path = {std::string{SNAKEPIT_REPO_DIR} + "/examples/showcase/python"};
  for (std::string entry; std::getline(defaults, entry, ':');)
    if (!entry.empty())
      cfg.python_path.push_back(entry);
  return cfg;
}

/// One call of kind `kind` (`kind_names`); `i` varies its arguments.
void one_call(snakepit::runtime& rt, tally& t, int thread, long i, int kind) {
  snakepit::execute_options plain;
  plain.pool = "plain";
  snakepit::execute_options mixed;
  mixed.pool = "mixed";
  auto started = clock_type::now();
  ++t.in_flight;
  caf::error err;
  bool ok = false;
  switch (kind) {
  case 0: { // a plain call
    auto r = rt.execute("add", {{"a", i}, {"b", 1}}, plain);
    ok = r && r->result == json(i + 1);
    err = r ? caf::error{} : r.error();
    break;
  }
  case 1: { // session state in the host: a counter per thread's session
    auto sid = fmt::format("soak-{}", thread);
    auto r = rt.execute_in_session(sid, "increment_counter", {{"by", 1}}, mixed);
    ok = static_cast<bool>(r);
    err = r ? caf::error{} : r.error();
    if (r && !r->result.contains("value"))
      ++t.session_mismatches;
    break;
  }
  case 2: { // a stream halted after three chunks
    int seen = 0;
    err = rt.execute_stream(
      "stream_progress", {{"steps", 20}}, [&](const json&, bool) { return ++seen < 3; },
      plain);
    ok = !err && seen == 3;
    break;
  }
  case 3: { // Python calls a host tool
    auto r =
      rt.execute_in_session(fmt::format("soak-{}", thread), "ask_host",
                            {{"name", "soak_double"}, {"args", {{"x", i}}}}, mixed);
    ok = r && r->result.at("result") == json(2 * i);
    err = r ? caf::error{} : r.error();
    break;
  }
  default: { // 64 KiB of binary parameters
    snakepit::execute_options bin = plain;
    bin.binary_args["blob"] = std::string(64 * 1024, static_cast<char>('a' + i % 26));
    auto r = rt.execute("bytes_echo", json::object(), bin);
    ok = static_cast<bool>(r);
    err = r ? caf::error{} : r.error();
    break;
  }
  }
  --t.in_flight;
  t.record(kind, started, ok, err);
}

/// Kills a random serving worker (of either pool) with SIGKILL.
void kill_one(snakepit::runtime& rt, std::mt19937& rng) {
  std::vector<int> pids;
  if (auto all = rt.list_all_workers())
    for (auto& [pool, ws] : *all)
      for (auto& w : ws)
        if (w.pid > 0 && w.state != "draining")
          pids.push_back(w.pid);
  if (!pids.empty())
    ::kill(pids[std::uniform_int_distribution<size_t>{0, pids.size() - 1}(rng)], SIGKILL);
}

/// One period's figures. Kept as plain numbers in storage reserved at the start, so
/// that the soak's own record does not show up as growth in the bytes it measures
/// (as JSON, some 2.5 KB a sample, 15 KB a minute: it did).
struct sample_row {
  double t_s = 0;
  long rss_kb = 0, rss_anon_kb = 0, rss_file_kb = 0;
  long heap_in_use_kb = 0, heap_free_kb = 0, sqlite_kb = 0;
  long fds = 0, threads = 0, processes = 0, workers = 0;
  uint64_t calls = 0;
  double p50_ms = 0, p99_ms = 0;
  std::array<double, kind_names.size()> p99_ms_by_kind{};
  long ok = 0, typed_errors = 0;
  bool after_load = false;
};

json to_json(const sample_row& x) {
  json by_kind = json::object();
  for (size_t k = 0; k < kind_names.size(); ++k)
    by_kind[kind_names[k]] = x.p99_ms_by_kind[k];
  json out{{"t_s", x.t_s},
           {"rss_kb", x.rss_kb},
           {"rss_anon_kb", x.rss_anon_kb},
           {"rss_file_kb", x.rss_file_kb},
           {"heap_in_use_kb", x.heap_in_use_kb},
           {"heap_free_kb", x.heap_free_kb},
           // (part of the bytes in use: the process registry's page cache and
           // statements, capped by SQLite's cache_size)
           {"sqlite_kb", x.sqlite_kb},
           {"fds", x.fds},
           {"threads", x.threads},
           {"processes", x.processes},
           {"workers", x.workers},
           {"calls", x.calls},
           {"p50_ms", x.p50_ms},
           {"p99_ms", x.p99_ms},
           {"p99_ms_by_kind", by_kind},
           {"ok", x.ok},
           {"typed_errors", x.typed_errors}};
  if (x.after_load)
    out["after_load"] = true;
  return out;
}

sample_row sample(snakepit::runtime& rt, tally& t, double t_s) {
  sample_row x;
  x.t_s = t_s;
  snakepit::latency_histogram h;
  {
    std::lock_guard<std::mutex> g{t.mtx};
    h = t.period;
    t.period = {};
    for (size_t k = 0; k < kind_names.size(); ++k) {
      x.p99_ms_by_kind[k] = t.period_by_kind[k].quantile_us(0.99) / 1000.0;
      t.period_by_kind[k] = {};
    }
  }
  if (auto all = rt.list_all_workers())
    for (auto& [pool, ws] : *all)
      for (auto& w : ws)
        x.workers += w.pid > 0 ? 1 : 0;
  long templates = 0;
  auto pids = rt.live_processes();
  for (auto pid : pids)
    templates +=
      command_line(pid).find("snakepit_bridge.forkserver") != std::string::npos;
  auto h_now = heap();
  x.rss_kb = status_field("VmRSS");
  x.rss_anon_kb = status_field("RssAnon");
  x.rss_file_kb = status_field("RssFile");
  x.heap_in_use_kb = h_now.in_use_kb;
  x.heap_free_kb = h_now.free_kb;
  x.sqlite_kb = static_cast<long>(sqlite3_memory_used() / 1024);
  x.fds = open_fds();
  x.threads = status_field("Threads");
  x.processes = static_cast<long>(pids.size()) - templates;
  x.calls = h.count();
  x.p50_ms = h.quantile_us(0.5) / 1000.0;
  x.p99_ms = h.quantile_us(0.99) / 1000.0;
  x.ok = t.ok.load();
  x.typed_errors = t.typed_errors.load();
  return x;
}

double mean_of(const std::vector<json>& xs, const char* key) {
  double s = 0;
  for (auto& x : xs)
    s += x[key].get<double>();
  return xs.empty() ? 0 : s / static_cast<double>(xs.size());
}

/// The median of `key` over samples [from, to).
double median_of(const std::vector<json>& xs, size_t from, size_t to, const char* key) {
  std::vector<double> v;
  for (size_t i = from; i < to; ++i)
    v.push_back(xs[i][key].get<double>());
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

/// The goals, over the samples after the first minute. "Flat" means no trend: for
/// memory, the median of the last third of the samples against that of the first
/// third; for descriptors and threads, the lowest sample of each third (a sample
/// may catch a worker being replaced, with its descriptors and threads not yet
/// closed; in the two-minute form a third is two samples).
json judge(const std::vector<json>& samples, const tally& t, long unanswered) {
  std::vector<json> steady;
  for (auto& s : samples) // (under load: the last sample is taken after it)
    if (s["t_s"].get<double>() >= 60 && !s.value("after_load", false))
      steady.push_back(s);
  json v;
  if (steady.size() < 3)
    return json{{"ok", false},
                {"why", "fewer than three samples after the first minute"}};
  auto n = steady.size();
  auto third = std::max<size_t>(1, n / 3);
  auto drift = [&](const char* key) {
    return median_of(steady, n - third, n, key) - median_of(steady, 0, third, key);
  };
  auto growth = [&](const char* key) {
    return drift(key) / median_of(steady, 0, third, key);
  };
  auto floor_of = [&](size_t from, size_t to, const char* key) {
    auto m = steady[from][key].get<double>();
    for (size_t i = from; i < to; ++i)
      m = std::min(m, steady[i][key].get<double>());
    return m;
  };
  // A leak raises the floor; a worker being replaced adds descriptors and
  // threads for a moment and may land in either third, so the counts are judged
  // by the lowest sample of each third, and only upward.
  auto floor_drift = [&](const char* key) {
    return floor_of(n - third, n, key) - floor_of(0, third, key);
  };
  auto span = [&](const char* key) {
    auto [lo, hi] =
      std::minmax_element(steady.begin(), steady.end(), [&](auto& a, auto& b) {
        return a[key].template get<double>() < b[key].template get<double>();
      });
    return (*hi)[key].get<double>() - (*lo)[key].get<double>();
  };
  v["rss_growth"] = growth("rss_kb");
  v["heap_in_use_growth"] = growth("heap_in_use_kb");
  v["fd_drift"] = drift("fds");
  v["fd_floor_drift"] = floor_drift("fds");
  v["fd_span"] = span("fds");
  v["thread_drift"] = drift("threads");
  v["thread_floor_drift"] = floor_drift("threads");
  v["thread_span"] = span("threads");
  v["unanswered"] = unanswered;
  v["untyped_errors"] = t.untyped_errors.load();
  std::vector<json> first_half(steady.begin(), steady.begin() + n / 2);
  std::vector<json> second_half(steady.begin() + n / 2, steady.end());
  v["p99_first_half_ms"] = mean_of(first_half, "p99_ms");
  v["p99_second_half_ms"] = mean_of(second_half, "p99_ms");
  v["final_processes_match"] =
    samples.back()["processes"].get<long>() == samples.back()["workers"].get<long>();
  v["ok"] = v["rss_growth"].get<double>() <= 0.05 &&
            v["fd_floor_drift"].get<double>() <= 2 &&
            v["thread_floor_drift"].get<double>() <= 2 && unanswered == 0 &&
            t.untyped_errors.load() == 0 && v["final_processes_match"].get<bool>() &&
            v["p99_second_half_ms"].get<double>() <=
              1.5 * v["p99_first_half_ms"].get<double>() + 5.0;
  return v;
}

} // namespace

int main(int argc, char** argv) {
  auto opts = parse(argc, argv);
  auto rt = snakepit::runtime::start(soak_config(opts));
  if (!rt) {
    fmt::print(stderr, "soak: {}\n", snakepit::describe(rt.error()));
    return 2;
  }
  auto& r = **rt;
  r.register_host_tool("soak_double",
                       [](const json& a) { return json(2 * a.at("x").get<long>()); });
  tally t;
  std::atomic<bool> stop{false};
  std::vector<std::thread> load;
  for (int i = 0; i < 6; ++i)
    load.emplace_back([&, i] {
      for (long n = i; !stop; n += 6)
        one_call(r, t, i, n, opts.kinds[static_cast<size_t>(n) % opts.kinds.size()]);
    });
  std::thread killer([&] {
    std::mt19937 rng{42};
    auto every = std::chrono::duration<double>(opts.kill_seconds);
    while (!stop && opts.kill_seconds > 0) {
      std::this_thread::sleep_for(every);
      if (!stop)
        kill_one(r, rng);
    }
  });
  std::vector<sample_row> rows;
  rows.reserve(static_cast<size_t>(opts.minutes * 60 / opts.sample_seconds) + 4);
  auto start = clock_type::now();
  auto end = start + std::chrono::duration_cast<clock_type::duration>(
                       std::chrono::duration<double>(opts.minutes * 60));
  while (clock_type::now() < end) {
    std::this_thread::sleep_for(std::chrono::seconds{opts.sample_seconds});
    auto t_s = std::chrono::duration<double>(clock_type::now() - start).count();
    rows.push_back(sample(r, t, t_s));
    fmt::print("{}\n", to_json(rows.back()).dump());
    std::fflush(stdout);
  }
  stop = true;
  killer.join();
  // Every call must come back: give the last ones their budget, then count.
  auto deadline = clock_type::now() + 90s;
  while (t.in_flight > 0 && clock_type::now() < deadline)
    std::this_thread::sleep_for(50ms);
  long unanswered = t.in_flight.load();
  if (unanswered == 0)
    for (auto& th : load)
      th.join();
  // The last workers killed come back (a loaded machine may take seconds): the
  // final sample is the first in which every listed worker has its process and
  // no process is unlisted, or the one taken after 30 s.
  auto settled = clock_type::now() + 30s;
  sample_row last;
  do {
    std::this_thread::sleep_for(250ms);
    last = sample(r, t, std::chrono::duration<double>(clock_type::now() - start).count());
  } while ((last.processes != last.workers || last.workers != kPoolWorkers) &&
           clock_type::now() < settled);
  last.after_load = true;
  rows.push_back(last);
  std::vector<json> samples;
  for (auto& x : rows)
    samples.push_back(to_json(x));
  auto verdict = judge(samples, t, unanswered);
  auto stop_err = r.stop();
  json out{{"minutes", opts.minutes},
           {"kill_seconds", opts.kill_seconds},
           {"arena_max", opts.arena_max},
           {"glibc_tunables",
            std::getenv("GLIBC_TUNABLES") ? std::getenv("GLIBC_TUNABLES") : ""},
           {"sample_seconds", opts.sample_seconds},
           {"samples", samples},
           {"ok_calls", t.ok.load()},
           {"typed_errors", t.typed_errors.load()},
           {"verdict", verdict},
           {"stopped_cleanly", !stop_err}};
  std::filesystem::create_directories(opts.out);
  std::ofstream{opts.out + "/soak.json"} << out.dump(2) << "\n";
  fmt::print("verdict: {}\n", verdict.dump());
  if (unanswered > 0) {
    fmt::print(stderr, "soak: {} calls never came back\n", unanswered);
    std::_Exit(1); // (their threads still wait)
  }
  return verdict["ok"].get<bool>() && !stop_err ? 0 : 1;
}
