#include "actors/observability/metrics.hpp"

#include <fmt/format.h>

namespace snakepit {

void derive_stats(pool_stats& s) {
  auto answered = s.completed + s.errors;
  s.error_rate =
    answered ? static_cast<double>(s.errors) / static_cast<double>(answered) : 0;
  s.latency_p50_ms = s.latency.quantile_us(0.50) / 1000.0;
  s.latency_p95_ms = s.latency.quantile_us(0.95) / 1000.0;
  s.latency_p99_ms = s.latency.quantile_us(0.99) / 1000.0;
  auto n = s.latency.count();
  s.avg_response_time_ms =
    n ? static_cast<double>(s.latency.sum_us()) / static_cast<double>(n) / 1000.0 : 0;
}

pool_stats sum_stats(const std::vector<pool_stats>& pools) {
  pool_stats t;
  t.pool = "total";
  for (auto& s : pools) {
    t.workers += s.workers;
    t.starting += s.starting;
    t.available += s.available;
    t.busy += s.busy;
    t.in_flight += s.in_flight;
    t.capacity += s.capacity;
    t.requests += s.requests;
    t.direct += s.direct;
    t.completed += s.completed;
    t.errors += s.errors;
    t.queued += s.queued;
    t.queue_depth += s.queue_depth;
    t.queue_timeouts += s.queue_timeouts;
    t.saturations += s.saturations;
    t.worker_crashes += s.worker_crashes;
    t.restarts += s.restarts;
    t.recycles += s.recycles;
    t.latency.merge(s.latency);
  }
  derive_stats(t);
  return t;
}

json to_json(const pool_stats& s) {
  return json{
    {"pool", s.pool},
    {"workers",
     {{"ready", s.workers},
      {"starting", s.starting},
      {"available", s.available},
      {"busy", s.busy}}},
    {"in_flight", s.in_flight},
    {"capacity", s.capacity},
    {"requests", s.requests},
    {"direct", s.direct},
    {"completed", s.completed},
    {"errors", s.errors},
    {"error_rate", s.error_rate},
    {"queued", s.queued},
    {"queue_depth", s.queue_depth},
    {"queue_timeouts", s.queue_timeouts},
    {"saturations", s.saturations},
    {"worker_crashes", s.worker_crashes},
    {"restarts", s.restarts},
    {"recycles", s.recycles},
    {"avg_response_time_ms", s.avg_response_time_ms},
    {"latency_ms",
     {{"p50", s.latency_p50_ms},
      {"p95", s.latency_p95_ms},
      {"p99", s.latency_p99_ms},
      {"count", s.latency.count()},
      {"sum", static_cast<double>(s.latency.sum_us()) / 1000.0},
      {"min", static_cast<double>(s.latency.min_us()) / 1000.0},
      {"max", static_cast<double>(s.latency.max_us()) / 1000.0}}},
  };
}

json to_json(const runtime_stats& s) {
  auto pools = json::array();
  for (auto& p : s.pools)
    pools.push_back(to_json(p));
  return json{{"pools", std::move(pools)}, {"total", to_json(s.total)}};
}

json to_json(const worker_info& w) {
  return json{{"id", w.id},
              {"pid", w.pid},
              {"state", w.state},
              {"load", w.load},
              {"capacity", w.capacity},
              {"requests", w.requests},
              {"uptime_ms", w.uptime.count()},
              {"tainted", w.tainted}};
}

namespace {

/// Label value escaping of the text format: backslash, double quote, newline.
std::string escape(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

void family(std::string& out, const char* name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

template<class T>
void sample(std::string& out, const char* name, const std::string& labels, T value) {
  out += fmt::format("{}{{{}}} {}\n", name, labels, value);
}

std::string pool_label(const pool_stats& p) {
  return fmt::format("pool=\"{}\"", escape(p.pool));
}

/// Workers by state, capacity, in flight, queue depth.
void render_gauges(std::string& out, const runtime_stats& s) {
  family(out, "snakepit_pool_workers", "gauge",
         "Workers of the pool by state (ready = handshake done; available and busy are "
         "subsets of ready and overlap for multi-request workers).");
  for (auto& p : s.pools) {
    auto l = pool_label(p);
    sample(out, "snakepit_pool_workers", l + ",state=\"ready\"", p.workers);
    sample(out, "snakepit_pool_workers", l + ",state=\"starting\"", p.starting);
    sample(out, "snakepit_pool_workers", l + ",state=\"available\"", p.available);
    sample(out, "snakepit_pool_workers", l + ",state=\"busy\"", p.busy);
  }
  struct gauge_def {
    const char* name;
    const char* help;
    size_t pool_stats::*field;
  };
  for (auto g :
       {gauge_def{"snakepit_pool_capacity", "Requests the ready workers may run at once.",
                  &pool_stats::capacity},
        gauge_def{"snakepit_pool_in_flight", "Requests running on workers now.",
                  &pool_stats::in_flight},
        gauge_def{"snakepit_pool_queue_depth", "Requests waiting in the queue now.",
                  &pool_stats::queue_depth}}) {
    family(out, g.name, "gauge", g.help);
    for (auto& p : s.pools)
      sample(out, g.name, pool_label(p), p.*g.field);
  }
}

/// The request and worker counters of every pool.
void render_counters(std::string& out, const runtime_stats& s) {
  struct counter_def {
    const char* name;
    const char* help;
    uint64_t pool_stats::*field;
  };
  for (auto c :
       {counter_def{"snakepit_requests_total",
                    "Requests accepted (dispatched or queued).", &pool_stats::requests},
        counter_def{"snakepit_requests_direct_total",
                    "Requests blocking callers ran on the direct lane.",
                    &pool_stats::direct},
        counter_def{"snakepit_requests_completed_total",
                    "Requests answered with a result.", &pool_stats::completed},
        counter_def{"snakepit_request_errors_total", "Requests answered with an error.",
                    &pool_stats::errors},
        counter_def{"snakepit_requests_queued_total",
                    "Requests that waited in the queue.", &pool_stats::queued},
        counter_def{"snakepit_queue_timeouts_total",
                    "Requests that timed out in the queue.", &pool_stats::queue_timeouts},
        counter_def{"snakepit_pool_saturations_total",
                    "Requests rejected because the queue was full.",
                    &pool_stats::saturations},
        counter_def{"snakepit_worker_crashes_total", "Ready workers that went down.",
                    &pool_stats::worker_crashes},
        counter_def{"snakepit_worker_restarts_total",
                    "Workers that became ready again after going down.",
                    &pool_stats::restarts},
        counter_def{"snakepit_worker_recycles_total", "Workers replaced on purpose.",
                    &pool_stats::recycles}}) {
    family(out, c.name, "counter", c.help);
    for (auto& p : s.pools)
      sample(out, c.name, pool_label(p), p.*c.field);
  }
}

/// Error ratio and the latency summary of every pool.
void render_latency(std::string& out, const runtime_stats& s) {
  family(out, "snakepit_request_error_ratio", "gauge",
         "Errors over answered requests since start.");
  for (auto& p : s.pools)
    sample(out, "snakepit_request_error_ratio", pool_label(p), p.error_rate);
  family(out, "snakepit_request_duration_seconds", "summary",
         "Latency of completed requests, queue time included (streaming histogram, "
         "quantiles within 1.6 %).");
  for (auto& p : s.pools) {
    auto l = pool_label(p);
    for (double q : {0.5, 0.95, 0.99})
      sample(out, "snakepit_request_duration_seconds",
             fmt::format("{},quantile=\"{}\"", l, q), p.latency.quantile_us(q) / 1e6);
    out += fmt::format("snakepit_request_duration_seconds_sum{{{}}} {}\n", l,
                       static_cast<double>(p.latency.sum_us()) / 1e6);
    out += fmt::format("snakepit_request_duration_seconds_count{{{}}} {}\n", l,
                       p.latency.count());
  }
}

/// Per-worker load and requests.
void render_workers(std::string& out,
                    const std::map<std::string, std::vector<worker_info>>& workers) {
  if (workers.empty())
    return;
  family(out, "snakepit_worker_load", "gauge", "Requests running on the worker now.");
  for (auto& [pool, ws] : workers)
    for (auto& w : ws)
      sample(out, "snakepit_worker_load",
             fmt::format("pool=\"{}\",worker=\"{}\"", escape(pool), escape(w.id)),
             w.load);
  family(out, "snakepit_worker_requests_total", "counter",
         "Requests the worker (this incarnation) has served.");
  for (auto& [pool, ws] : workers)
    for (auto& w : ws)
      sample(out, "snakepit_worker_requests_total",
             fmt::format("pool=\"{}\",worker=\"{}\"", escape(pool), escape(w.id)),
             w.requests);
}

} // namespace

std::string
render_prometheus(const runtime_stats& s,
                  const std::map<std::string, std::vector<worker_info>>& workers) {
  std::string out;
  render_gauges(out, s);
  render_counters(out, s);
  render_latency(out, s);
  render_workers(out, workers);
  return out;
}

} // namespace snakepit
