// Open-loop overload: calls arrive on a fixed schedule whatever the pool answers, at
// 0.5x, 1x, 2x and 4x the pool's measured capacity, for a fixed time each. Shows how
// the pool degrades past capacity: host memory bounded by the queue, calls beyond the
// queue refused at once with pool_saturated, accepted calls done within queue_timeout +
// service time, calls that timed out in the queue never run, and latency back to the
// light-load level soon after the load stops. Adds "overload" to results.json.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
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
using std::chrono::milliseconds;

constexpr int service_ms = 10;
constexpr size_t workers = 2;
constexpr size_t max_queue = 64; // drains in more than queue_timeout at 2 workers
constexpr milliseconds queue_timeout{250};

double ms_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

double pct(std::vector<double> xs, double p) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  return xs[std::min(xs.size() - 1,
                     static_cast<size_t>(p * static_cast<double>(xs.size())))];
}

long rss_kb() {
  std::ifstream in{"/proc/self/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0)
      return std::stol(line.substr(6));
  return 0;
}

/// The outcomes of one phase, filled by callbacks on CAF threads.
struct phase_tally {
  std::mutex mtx;
  std::vector<double> ok_ms, reject_ms;
  std::vector<long> timed_out_ids;
  size_t other_errors = 0;
  std::atomic<size_t> outstanding{0};
};

struct phase_result {
  double factor, rate, seconds;
  size_t offered, ok, rejected, timed_out, other;
  double ok_p50_ms, ok_p99_ms, ok_max_ms, reject_p99_ms, rss_first_mb, rss_last_mb,
    rss_peak_mb, recovery_ms;
  std::vector<long> timed_out_ids;
};

class overload_run {
 public:
  overload_run(snakepit::runtime& rt, std::string record_path)
    : rt_(rt), record_(std::move(record_path)) {}

  /// Capacity in calls/s: closed loop, 4 callers per worker, `seconds` long.
  double capacity(double seconds) {
    std::atomic<size_t> done{0};
    std::atomic<bool> stop{false};
    std::vector<std::thread> callers;
    auto t0 = clock_type::now();
    for (size_t c = 0; c < workers * 4; ++c)
      callers.emplace_back([&] {
        while (!stop)
          if (rt_.execute("slow_probe", args(-1)))
            ++done;
      });
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop = true;
    for (auto& t : callers)
      t.join();
    return static_cast<double>(done) / (ms_between(t0, clock_type::now()) / 1000.0);
  }

  /// Arrivals at `rate` for `seconds`. With `recovery_level_ms` > 0, `recovery_ms` is
  /// measured from the moment arrivals stop (the queue still full).
  phase_result phase(double factor, double rate, double seconds,
                     double recovery_level_ms = 0) {
    phase_tally tally;
    phase_result r{};
    r.factor = factor;
    r.rate = rate;
    r.seconds = seconds;
    std::vector<long> rss;
    auto t0 = clock_type::now();
    auto next_sample = t0;
    auto interval = std::chrono::duration<double>(1.0 / rate);
    for (size_t k = 0;; ++k) {
      auto due = t0 + std::chrono::duration_cast<clock_type::duration>(interval * k);
      if (ms_between(t0, due) >= seconds * 1000)
        break;
      std::this_thread::sleep_until(due);
      if (clock_type::now() >= next_sample) {
        rss.push_back(rss_kb());
        next_sample += std::chrono::seconds{1};
      }
      submit(tally, next_id_++);
      ++r.offered;
    }
    r.recovery_ms = recovery_level_ms > 0 ? recovery(recovery_level_ms) : -1;
    while (tally.outstanding > 0)
      std::this_thread::sleep_for(milliseconds{5});
    std::lock_guard<std::mutex> g{tally.mtx};
    r.ok = tally.ok_ms.size();
    r.rejected = tally.reject_ms.size();
    r.timed_out = tally.timed_out_ids.size();
    r.other = tally.other_errors;
    r.ok_p50_ms = pct(tally.ok_ms, 0.5);
    r.ok_p99_ms = pct(tally.ok_ms, 0.99);
    r.ok_max_ms = pct(tally.ok_ms, 1.0);
    r.reject_p99_ms = pct(tally.reject_ms, 0.99);
    r.timed_out_ids = std::move(tally.timed_out_ids);
    summarise_rss(rss, r);
    return r;
  }

  /// Milliseconds from the end of a phase until three sequential calls in a row take
  /// no more than `level_ms`; -1 if that does not happen within 5 s.
  double recovery(double level_ms) {
    auto t_end = clock_type::now();
    int in_a_row = 0;
    double first_good = -1;
    while (ms_between(t_end, clock_type::now()) < 5000) {
      auto t0 = clock_type::now();
      bool ok = static_cast<bool>(rt_.execute("slow_probe", args(-1)));
      auto ms = ms_between(t0, clock_type::now());
      if (ok && ms <= level_ms) {
        if (in_a_row++ == 0)
          first_good = ms_between(t_end, t0);
        if (in_a_row == 3)
          return first_good;
      } else {
        in_a_row = 0;
      }
    }
    return -1;
  }

  /// Call ids the tool recorded (every call that ran, ids >= 0).
  std::set<long> ran() const {
    std::set<long> ids;
    std::ifstream in{record_};
    for (long id; in >> id;)
      ids.insert(id);
    return ids;
  }

 private:
  json args(long id) const {
    return {{"path", record_}, {"value", id}, {"ms", service_ms}};
  }

  void submit(phase_tally& tally, long id) {
    ++tally.outstanding;
    auto t0 = clock_type::now();
    snakepit::execute_options opts;
    opts.timeout = std::chrono::seconds{10};
    rt_.execute_async("slow_probe", args(id), opts,
                      [&tally, t0, id](snakepit::execute_result res) {
                        auto ms = ms_between(t0, clock_type::now());
                        std::lock_guard<std::mutex> g{tally.mtx};
                        if (res) {
                          tally.ok_ms.push_back(ms);
                        } else {
                          auto code = snakepit::errc_of(res.error());
                          if (code == snakepit::errc::pool_saturated)
                            tally.reject_ms.push_back(ms);
                          else if (code == snakepit::errc::queue_timeout)
                            tally.timed_out_ids.push_back(id);
                          else
                            ++tally.other_errors;
                        }
                        --tally.outstanding;
                      });
  }

  static void summarise_rss(const std::vector<long>& rss, phase_result& r) {
    if (rss.empty())
      return;
    // The first seconds fill the queue; compare the next samples with the last ones.
    auto mean = [&](size_t from, size_t to) {
      double sum = 0;
      for (size_t i = from; i < to; ++i)
        sum += static_cast<double>(rss[i]);
      return to > from ? sum / static_cast<double>(to - from) / 1024.0 : 0.0;
    };
    size_t n = rss.size(), w = std::max<size_t>(1, std::min<size_t>(5, n / 3));
    r.rss_first_mb = mean(std::min(n - w, w), std::min(n - w, w) + w);
    r.rss_last_mb = mean(n - w, n);
    r.rss_peak_mb =
      static_cast<double>(*std::max_element(rss.begin(), rss.end())) / 1024.0;
  }

  snakepit::runtime& rt_;
  std::string record_;
  long next_id_ = 0;
};

json to_json(const phase_result& r) {
  return {{"factor", r.factor},
          {"rate_per_s", r.rate},
          {"offered", r.offered},
          {"ok", r.ok},
          {"rejected", r.rejected},
          {"queue_timeouts", r.timed_out},
          {"other_errors", r.other},
          {"ok_p50_ms", r.ok_p50_ms},
          {"ok_p99_ms", r.ok_p99_ms},
          {"ok_max_ms", r.ok_max_ms},
          {"reject_p99_ms", r.reject_p99_ms},
          {"rss_first_mb", r.rss_first_mb},
          {"rss_last_mb", r.rss_last_mb},
          {"rss_peak_mb", r.rss_peak_mb}};
}

} // namespace

int main(int argc, char** argv) {
  if (argc > 1 && argv[1][0] == '-') {
    fmt::print("usage: {} [results.json] [seconds per phase]\n", argv[0]);
    return argv[1] == std::string{"--help"} ? 0 : 2;
  }
  std::string out_path = argc > 1 ? argv[1] : "build/bench/results.json";
  double seconds = argc > 2 ? std::stod(argv[2]) : 30;

  char dir_template[] = "/tmp/snakepit-overload-XXXXXX";
  if (!::mkdtemp(dir_template)) {
    std::perror("mkdtemp");
    return 1;
  }
  std::filesystem::path dir{dir_template};
  snakepit::config cfg;
  cfg.pools[0].pool_size = workers;
  cfg.pools[0].queue.max_size = max_queue;
  cfg.pools[0].queue.timeout = queue_timeout;
  auto rt = snakepit::runtime::start(cfg);
  if (!rt) {
    fmt::print(stderr, "start failed: {}\n", snakepit::describe(rt.error()));
    std::filesystem::remove_all(dir);
    return 1;
  }
  overload_run run{**rt, (dir / "ran.txt").string()};
  run.capacity(1); // warm-up
  auto capacity = run.capacity(std::max(3.0, seconds / 5));
  fmt::print("capacity: {:.0f} calls/s ({} workers, {} ms tool, queue {} / {} ms)\n",
             capacity, workers, service_ms, max_queue, queue_timeout.count());

  std::vector<phase_result> phases;
  double recovery_ms = -1;
  for (double factor : {0.5, 1.0, 2.0, 4.0}) {
    // Back to the light-load level: 1.5 x the 0.5x phase's p50.
    auto level = factor == 4.0 ? 1.5 * phases.front().ok_p50_ms : 0.0;
    phases.push_back(run.phase(factor, factor * capacity, seconds, level));
    auto& r = phases.back();
    fmt::print(
      "{:>4.1f}x {:>6.0f}/s: ok {:>6} rejected {:>6} queue_timeout {:>5} other {:>3}"
      "  ok p50 {:>6.1f} p99 {:>6.1f} max {:>6.1f} ms  reject p99 {:.3f} ms"
      "  rss {:.1f} -> {:.1f} MB\n",
      factor, r.rate, r.ok, r.rejected, r.timed_out, r.other, r.ok_p50_ms, r.ok_p99_ms,
      r.ok_max_ms, r.reject_p99_ms, r.rss_first_mb, r.rss_last_mb);
    if (factor == 4.0)
      recovery_ms = r.recovery_ms;
  }
  auto stop_err = (*rt)->stop();

  // A call that timed out in the queue must never have run.
  auto ran = run.ran();
  size_t timed_out_ran = 0;
  json phase_list = json::array();
  double reject_p99 = 0, worst_ok_max = 0, rss_growth_mb = 0;
  for (auto& r : phases) {
    for (auto id : r.timed_out_ids)
      timed_out_ran += ran.count(id);
    phase_list.push_back(to_json(r));
    reject_p99 = std::max(reject_p99, r.reject_p99_ms);
    worst_ok_max = std::max(worst_ok_max, r.ok_max_ms);
    if (r.factor >= 2)
      rss_growth_mb = std::max(rss_growth_mb, r.rss_last_mb - r.rss_first_mb);
  }
  std::filesystem::remove_all(dir);
  json overload = {
    {"config",
     {{"workers", workers},
      {"service_ms", service_ms},
      {"max_queue_size", max_queue},
      {"queue_timeout_ms", queue_timeout.count()},
      {"seconds_per_phase", seconds}}},
    {"capacity_per_s", capacity},
    {"phases", phase_list},
    {"reject_p99_ms", reject_p99},
    {"recovery_ms", recovery_ms},
    {"accepted_max_ms", worst_ok_max},
    {"accepted_bound_ms", static_cast<double>(queue_timeout.count() + service_ms)},
    {"queue_timeout_ran", timed_out_ran},
    {"rss_growth_mb_overloaded", rss_growth_mb}};
  fmt::print(
    "reject p99 {:.3f} ms, recovery {:.0f} ms, accepted max {:.1f} ms (bound {} + "
    "service), timed out yet ran: {}, rss growth at 2x/4x: {:.2f} MB\n",
    reject_p99, recovery_ms, worst_ok_max, queue_timeout.count(), timed_out_ran,
    rss_growth_mb);

  auto results = snakepit::bench::read_results(out_path);
  results["overload"] = overload;
  snakepit::bench::write_results(out_path, results);
  fmt::print("wrote overload figures to {}\n", out_path);
  return stop_err ? 1 : 0;
}
