#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
namespace ztrace {
inline std::atomic<int64_t> t[8];
inline std::atomic<int64_t> sum[8];
inline std::atomic<int64_t> n{0};
inline int64_t now() { return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
inline void mark(int i) { t[i] = now(); }
inline void done() { for (int i = 1; i < 6; ++i) sum[i] += t[i] - t[i-1]; sum[6] += t[6]-t[3]; sum[7] += t[7]-t[6]; sum[0] += t[4]-t[7]; ++n; }
inline std::atomic<int64_t> esum[4]; inline std::atomic<int64_t> en{0}; inline std::atomic<int64_t> dsum[3]; inline std::atomic<int64_t> dn{0};
}
