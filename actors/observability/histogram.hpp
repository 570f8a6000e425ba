// A fixed-memory streaming histogram of latencies (HdrHistogram's log-linear buckets):
// every power of two is split into 32 equal sub-buckets, so a quantile read from it is
// within 1/64 (1.6 %) of the true sample value, whatever the number of samples.
// Replaces upstream's list of recent durations; two histograms merge exactly.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace snakepit {

/// Latency histogram over microseconds, 1024 counters (8 KiB), no allocation.
class latency_histogram {
 public:
  /// Sub-buckets per power of two, as a power of two (32).
  static constexpr unsigned sub_bits = 5;
  /// Values at or above 2^max_bits µs (about 19 hours) count in the last bucket.
  static constexpr unsigned max_bits = 36;
  /// Number of counters.
  static constexpr size_t bucket_count =
    (size_t{1} << sub_bits) * (max_bits - sub_bits + 1);

  /// Records one value (negative values count as 0).
  void record(int64_t us);

  /// Adds every count of `other` (exact: both use the same buckets).
  void merge(const latency_histogram& other);

  /// A histogram rebuilt from its non-empty buckets (`index[i]` holds `counts[i]`
  /// values) and the sum and extremes of its values, as `bucket` and the accessors
  /// give them (e.g. from another node). Indices out of range and a length
  /// mismatch are ignored (the shorter length counts).
  static latency_histogram from_buckets(const std::vector<uint32_t>& index,
                                        const std::vector<uint64_t>& counts,
                                        uint64_t sum_us, uint64_t min_us,
                                        uint64_t max_us);

  /// Value at quantile `q` in [0, 1] by nearest rank, in µs: the midpoint of the
  /// bucket holding the ceil(q·count)-th smallest value, clamped to [min, max].
  /// 0 when empty.
  double quantile_us(double q) const;

  /// Recorded values.
  uint64_t count() const { return count_; }
  /// Sum of the recorded values in µs.
  uint64_t sum_us() const { return sum_; }
  /// Smallest recorded value (0 when empty).
  uint64_t min_us() const { return count_ ? min_ : 0; }
  /// Largest recorded value (0 when empty).
  uint64_t max_us() const { return max_; }

  /// Bucket of a value.
  static size_t bucket_of(uint64_t us);
  /// Smallest value of bucket `i`.
  static uint64_t bucket_low(size_t i);
  /// Largest value of bucket `i` (inclusive; the last bucket is open-ended).
  static uint64_t bucket_high(size_t i);
  /// Count in bucket `i`.
  uint64_t bucket(size_t i) const { return counts_[i]; }

 private:
  std::array<uint64_t, bucket_count> counts_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
};

} // namespace snakepit
