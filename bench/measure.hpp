// Measurement helpers the benchmark programs share: this process's CPU time, the
// median of a sample, and the multiprocessing.Pool anchor run as a child process.
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace snakepit::bench {

/// CPU time of this process (all threads, user + system) in microseconds.
inline double host_cpu_us() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto us = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_usec);
  };
  return us(ru.ru_utime) + us(ru.ru_stime);
}

/// The upper median of `xs` (0 when empty).
inline double median(std::vector<double> xs) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  return xs[xs.size() / 2];
}

#ifdef SNAKEPIT_BENCH_DIR
/// Runs bench/mp_anchor.py (multiprocessing.Pool with the same work) with Debian's
/// Python and returns what it printed as JSON (discarded when it failed).
inline nlohmann::json run_mp_anchor(size_t n_seq, size_t n_async) {
  auto cmd = fmt::format("/usr/bin/python3 {}/mp_anchor.py {} {}", SNAKEPIT_BENCH_DIR,
                         n_seq, n_async);
  std::string out;
  if (auto* pipe = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    while (auto n = ::fread(buf, 1, sizeof(buf), pipe))
      out.append(buf, n);
    ::pclose(pipe);
  }
  return nlohmann::json::parse(out, nullptr, false);
}
#endif

} // namespace snakepit::bench
