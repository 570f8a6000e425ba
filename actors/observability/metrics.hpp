// Stats as numbers others read: derived figures (quantiles, error rate), the sum over
// pools, JSON for the control socket and the CLI, and the Prometheus text exposition
// format (0.0.4) for the metrics endpoint. Pure functions: no actors, no I/O.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "actors/types.hpp"

namespace snakepit {

/// Fills the derived fields of `s` (error_rate, latency quantiles) from its
/// counters and histogram.
void derive_stats(pool_stats& s);

/// Adds up `pools` into one `pool_stats` named "total" (histograms merged exactly,
/// derived fields recomputed).
pool_stats sum_stats(const std::vector<pool_stats>& pools);

/// JSON object of one pool's stats (histogram summarised as count/sum/min/max).
json to_json(const pool_stats& s);

/// JSON of every pool and the total: {"pools": [...], "total": {...}}.
json to_json(const runtime_stats& s);

/// JSON object of one worker.
json to_json(const worker_info& w);

/// Prometheus text exposition format 0.0.4: counters, gauges and a latency summary
/// per pool (label `pool`), with HELP and TYPE lines. `workers` (pool -> workers)
/// adds per-worker gauges; it may be empty.
std::string
render_prometheus(const runtime_stats& s,
                  const std::map<std::string, std::vector<worker_info>>& workers = {});

} // namespace snakepit
