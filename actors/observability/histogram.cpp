#include "actors/observability/histogram.hpp"

#include <algorithm>
#include <cmath>

namespace snakepit {

namespace {

constexpr uint64_t sub_count = uint64_t{1} << latency_histogram::sub_bits;

unsigned msb(uint64_t x) {
  unsigned r = 0;
  while (x >>= 1)
    ++r;
  return r;
}

} // namespace

size_t latency_histogram::bucket_of(uint64_t us) {
  if (us < sub_count)
    return static_cast<size_t>(us);
  auto e = msb(us);
  if (e >= max_bits)
    return bucket_count - 1;
  // Octave e (values [2^e, 2^(e+1))) holds sub_count buckets of width 2^(e - sub_bits).
  auto sub = (us >> (e - sub_bits)) & (sub_count - 1);
  return static_cast<size_t>(sub_count * (e - sub_bits + 1) + sub);
}

uint64_t latency_histogram::bucket_low(size_t i) {
  if (i < sub_count)
    return i;
  auto octave = i / sub_count - 1; // 0 for [2^sub_bits, 2^(sub_bits+1))
  auto sub = i % sub_count;
  auto e = octave + sub_bits;
  return (uint64_t{1} << e) + (sub << (e - sub_bits));
}

uint64_t latency_histogram::bucket_high(size_t i) {
  if (i + 1 >= bucket_count)
    return UINT64_MAX;
  return bucket_low(i + 1) - 1;
}

void latency_histogram::record(int64_t us) {
  auto v = us < 0 ? uint64_t{0} : static_cast<uint64_t>(us);
  ++counts_[bucket_of(v)];
  ++count_;
  sum_ += v;
  min_ = std::min(min_, v);
  max_ = std::max(max_, v);
}

void latency_histogram::merge(const latency_histogram& other) {
  for (size_t i = 0; i < bucket_count; ++i)
    counts_[i] += other.counts_[i];
  count_ += other.count_;
  sum_ += other.sum_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

latency_histogram latency_histogram::from_buckets(const std::vector<uint32_t>& index,
                                                  const std::vector<uint64_t>& counts,
                                                  uint64_t sum_us, uint64_t min_us,
                                                  uint64_t max_us) {
  latency_histogram out;
  auto n = std::min(index.size(), counts.size());
  for (size_t i = 0; i < n; ++i) {
    if (index[i] >= bucket_count)
      continue;
    out.counts_[index[i]] += counts[i];
    out.count_ += counts[i];
  }
  if (out.count_ > 0) {
    out.sum_ = sum_us;
    out.min_ = min_us;
    out.max_ = max_us;
  }
  return out;
}

double latency_histogram::quantile_us(double q) const {
  if (count_ == 0)
    return 0;
  q = std::clamp(q, 0.0, 1.0);
  auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (size_t i = 0; i < bucket_count; ++i) {
    seen += counts_[i];
    if (seen < rank)
      continue;
    auto lo = bucket_low(i);
    auto hi = i + 1 >= bucket_count ? max_ : bucket_high(i);
    auto mid = static_cast<double>(lo) + static_cast<double>(hi - lo) / 2.0;
    return std::clamp(mid, static_cast<double>(min_us()), static_cast<double>(max_));
  }
  return static_cast<double>(max_);
}

} // namespace snakepit
