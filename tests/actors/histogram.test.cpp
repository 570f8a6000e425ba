// The streaming latency histogram: quantiles against a sorted sample, exact merge,
// bucket boundaries, fixed memory; and the stats rendering built on it (sum over
// pools, Prometheus text format).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "actors/observability/histogram.hpp"
#include "actors/observability/metrics.hpp"

using snakepit::latency_histogram;

namespace {

/// Nearest-rank quantile of a sorted sample (the definition the histogram follows).
uint64_t nearest_rank(const std::vector<uint64_t>& sorted, double q) {
  auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

std::vector<uint64_t> lognormal_sample(size_t n, unsigned seed) {
  std::mt19937_64 rng{seed};
  // Median about 3 ms, long tail up to seconds: what request latencies look like.
  std::lognormal_distribution<double> dist{8.0, 1.5};
  std::vector<uint64_t> out;
  for (size_t i = 0; i < n; ++i)
    out.push_back(static_cast<uint64_t>(dist(rng)));
  return out;
}

size_t occurrences(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (auto pos = text.find(part); pos != std::string::npos;
       pos = text.find(part, pos + 1))
    ++n;
  return n;
}

} // namespace

TEST_SUITE("actors.histogram") {

  TEST_CASE("an empty histogram reports zeros") {
    latency_histogram h;
    CHECK(h.count() == 0);
    CHECK(h.quantile_us(0.5) == 0);
    CHECK(h.min_us() == 0);
    CHECK(h.max_us() == 0);
  }

  TEST_CASE("quantiles stay within 1/64 of the sorted sample's nearest-rank values") {
    for (unsigned seed : {1u, 2u, 3u}) {
      auto sample = lognormal_sample(50000, seed);
      latency_histogram h;
      for (auto v : sample)
        h.record(static_cast<int64_t>(v));
      std::sort(sample.begin(), sample.end());
      for (double q : {0.01, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0}) {
        auto exact = static_cast<double>(nearest_rank(sample, q));
        auto approx = h.quantile_us(q);
        CAPTURE(seed);
        CAPTURE(q);
        CAPTURE(exact);
        CAPTURE(approx);
        CHECK(std::abs(approx - exact) <= exact / 64.0 + 0.5);
      }
      CHECK(h.count() == sample.size());
      CHECK(h.min_us() == sample.front());
      CHECK(h.max_us() == sample.back());
      uint64_t sum = 0;
      for (auto v : sample)
        sum += v;
      CHECK(h.sum_us() == sum);
    }
  }

  TEST_CASE("values below 32 µs are exact and a single value is returned as is") {
    latency_histogram h;
    for (int v = 0; v < 32; ++v)
      h.record(v);
    CHECK(h.quantile_us(0.5) == 15); // rank 16 of 0..31
    CHECK(h.quantile_us(1.0) == 31);
    latency_histogram one;
    one.record(123456);
    for (double q : {0.0, 0.5, 1.0})
      CHECK(one.quantile_us(q) == 123456);
  }

  TEST_CASE("every bucket's bounds map back to the bucket and buckets tile the range") {
    for (size_t i = 0; i + 1 < latency_histogram::bucket_count; ++i) {
      CAPTURE(i);
      REQUIRE(latency_histogram::bucket_of(latency_histogram::bucket_low(i)) == i);
      REQUIRE(latency_histogram::bucket_of(latency_histogram::bucket_high(i)) == i);
      REQUIRE(latency_histogram::bucket_low(i + 1) ==
              latency_histogram::bucket_high(i) + 1);
    }
    // Beyond the range everything lands in the last bucket; min/max stay exact.
    latency_histogram h;
    h.record(int64_t{1} << 50);
    CHECK(h.bucket(latency_histogram::bucket_count - 1) == 1);
    CHECK(h.quantile_us(0.5) == static_cast<double>(int64_t{1} << 50));
    // Negative durations (a clock step) count as zero rather than wrapping.
    latency_histogram neg;
    neg.record(-5);
    CHECK(neg.bucket(0) == 1);
    CHECK(neg.max_us() == 0);
  }

  TEST_CASE("merging equals recording everything into one histogram") {
    auto a = lognormal_sample(10000, 7);
    auto b = lognormal_sample(3000, 8);
    latency_histogram ha, hb, all;
    for (auto v : a) {
      ha.record(static_cast<int64_t>(v));
      all.record(static_cast<int64_t>(v));
    }
    for (auto v : b) {
      hb.record(static_cast<int64_t>(v) * 10);
      all.record(static_cast<int64_t>(v) * 10);
    }
    ha.merge(hb);
    CHECK(ha.count() == all.count());
    CHECK(ha.sum_us() == all.sum_us());
    CHECK(ha.min_us() == all.min_us());
    CHECK(ha.max_us() == all.max_us());
    for (size_t i = 0; i < latency_histogram::bucket_count; ++i)
      REQUIRE(ha.bucket(i) == all.bucket(i));
    for (double q : {0.5, 0.95, 0.99})
      CHECK(ha.quantile_us(q) == all.quantile_us(q));
    // Merging an empty histogram changes nothing (its min must not leak in).
    latency_histogram empty;
    auto before_min = ha.min_us();
    ha.merge(empty);
    CHECK(ha.min_us() == before_min);
  }

  TEST_CASE("a histogram rebuilt from its non-empty buckets equals the original") {
    latency_histogram h;
    for (auto v : lognormal_sample(5000, 11))
      h.record(static_cast<int64_t>(v));
    std::vector<uint32_t> index;
    std::vector<uint64_t> counts;
    for (size_t i = 0; i < latency_histogram::bucket_count; ++i)
      if (h.bucket(i) > 0) {
        index.push_back(static_cast<uint32_t>(i));
        counts.push_back(h.bucket(i));
      }
    auto back =
      latency_histogram::from_buckets(index, counts, h.sum_us(), h.min_us(), h.max_us());
    CHECK(back.count() == h.count());
    CHECK(back.sum_us() == h.sum_us());
    CHECK(back.min_us() == h.min_us());
    CHECK(back.max_us() == h.max_us());
    for (size_t i = 0; i < latency_histogram::bucket_count; ++i)
      REQUIRE(back.bucket(i) == h.bucket(i));
    // Out-of-range indices and surplus entries are ignored; nothing counted, nothing
    // reported (an empty histogram's min stays 0).
    auto odd = latency_histogram::from_buckets(
      {static_cast<uint32_t>(latency_histogram::bucket_count)}, {5, 6}, 100, 1, 2);
    CHECK(odd.count() == 0);
    CHECK(odd.sum_us() == 0);
    CHECK(odd.min_us() == 0);
    CHECK(odd.max_us() == 0);
  }

  TEST_CASE("memory is fixed: no allocation, the same size after a million values") {
    static_assert(sizeof(latency_histogram) <= 8 * 1024 + 64,
                  "histogram must stay small");
    static_assert(std::is_trivially_copyable<latency_histogram>::value,
                  "histogram holds no heap memory");
    latency_histogram h;
    std::mt19937_64 rng{42};
    for (int i = 0; i < 1000000; ++i)
      h.record(static_cast<int64_t>(rng() % 10000000));
    CHECK(h.count() == 1000000);
    auto p99 = h.quantile_us(0.99);
    CHECK(p99 == doctest::Approx(9900000).epsilon(0.02));
  }

} // TEST_SUITE

TEST_SUITE("actors.metrics") {

  snakepit::pool_stats sample_pool(const std::string& name, uint64_t base) {
    snakepit::pool_stats s;
    s.pool = name;
    s.workers = 2;
    s.available = 1;
    s.busy = 1;
    s.capacity = 2;
    s.requests = base + 10;
    s.completed = base + 8;
    s.errors = 2;
    s.saturations = 1;
    s.restarts = 1;
    for (uint64_t i = 1; i <= base + 8; ++i)
      s.latency.record(static_cast<int64_t>(i * 1000));
    snakepit::derive_stats(s);
    return s;
  }

  TEST_CASE("derived figures: error rate and quantiles in milliseconds") {
    auto s = sample_pool("a", 92); // 100 completed, 2 errors
    CHECK(s.error_rate == doctest::Approx(2.0 / 102.0));
    CHECK(s.latency_p50_ms == doctest::Approx(50).epsilon(0.02));
    CHECK(s.latency_p95_ms == doctest::Approx(95).epsilon(0.02));
    CHECK(s.latency_p99_ms == doctest::Approx(99).epsilon(0.02));
    CHECK(s.avg_response_time_ms == doctest::Approx(50.5)); // mean of 1..100 ms
  }

  TEST_CASE("the total adds counters and merges histograms") {
    auto a = sample_pool("a", 92);
    auto b = sample_pool("b", 0);
    auto t = snakepit::sum_stats({a, b});
    CHECK(t.pool == "total");
    CHECK(t.workers == 4);
    CHECK(t.requests == a.requests + b.requests);
    CHECK(t.errors == 4);
    CHECK(t.restarts == 2);
    CHECK(t.latency.count() == a.latency.count() + b.latency.count());
    CHECK(t.error_rate == doctest::Approx(4.0 / (4.0 + a.completed + b.completed)));
    auto j = snakepit::to_json(t);
    CHECK(j["workers"]["ready"] == 4);
    CHECK(j["latency_ms"]["count"] == t.latency.count());
  }

  TEST_CASE(
    "Prometheus text: HELP and TYPE once per family, labels escaped, summary parts") {
    snakepit::runtime_stats rs;
    rs.pools = {sample_pool("a", 92), sample_pool("we\"ird\\", 0)};
    rs.total = snakepit::sum_stats(rs.pools);
    std::map<std::string, std::vector<snakepit::worker_info>> ws;
    ws["a"].push_back(snakepit::worker_info{"a_worker_1", 42, "busy", 7, {}, 1, 1});
    auto text = snakepit::render_prometheus(rs, ws);
    CHECK(occurrences(text, "# TYPE snakepit_requests_total counter\n") == 1);
    CHECK(occurrences(text, "# HELP snakepit_requests_total ") == 1);
    CHECK(occurrences(text, "# TYPE snakepit_request_duration_seconds summary\n") == 1);
    CHECK(occurrences(text, "snakepit_requests_total{pool=\"a\"} 102\n") == 1);
    CHECK(occurrences(text, "snakepit_requests_total{pool=\"we\\\"ird\\\\\"} 10\n") == 1);
    CHECK(occurrences(text,
                      "snakepit_request_duration_seconds_count{pool=\"a\"} 100\n") == 1);
    CHECK(occurrences(
            text, "snakepit_request_duration_seconds{pool=\"a\",quantile=\"0.95\"}") ==
          1);
    CHECK(occurrences(text, "snakepit_pool_workers{pool=\"a\",state=\"busy\"} 1\n") == 1);
    CHECK(occurrences(
            text,
            "snakepit_worker_requests_total{pool=\"a\",worker=\"a_worker_1\"} 7\n") == 1);
    CHECK(occurrences(text, "snakepit_worker_recycles_total{pool=\"a\"} 0\n") == 1);
    // Every non-comment line is `name{labels} value`.
    size_t start = 0;
    while (start < text.size()) {
      auto end = text.find('\n', start);
      REQUIRE(end != std::string::npos);
      auto line = text.substr(start, end - start);
      start = end + 1;
      if (line.rfind("# ", 0) == 0)
        continue;
      CAPTURE(line);
      CHECK(line.find("{") != std::string::npos);
      CHECK(line.rfind("} ") != std::string::npos);
    }
  }

} // TEST_SUITE
