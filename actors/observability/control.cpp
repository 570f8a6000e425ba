#include "actors/observability/control.hpp"

#include <charconv>
#include <chrono>
#include <map>

#include "actors/observability/metrics.hpp"
#include "actors/runtime/runtime.hpp"
#include "adapters/errors.hpp"

namespace snakepit::actors {

namespace {

constexpr const char* json_type = "application/json";
constexpr const char* prometheus_type = "text/plain; version=0.0.4; charset=utf-8";

adapters::http_response failure(const caf::error& err) {
  return {503, json_type, json{{"error", describe(err)}}.dump() + "\n"};
}

adapters::http_response refusal(int status, const std::string& why) {
  return {status, json_type, json{{"error", why}}.dump() + "\n"};
}

/// One configured node as /stats shows it (docs/distribution.md).
json node_json(const distribution::node_view& v) {
  auto pools = json::array();
  for (auto& p : v.pools)
    pools.push_back(json{{"pool", p.pool},
                         {"capacity", p.capacity},
                         {"load", p.load},
                         {"queued", p.queued}});
  auto since =
    std::chrono::duration_cast<std::chrono::milliseconds>(v.since.time_since_epoch())
      .count();
  return json{{"name", v.name},
              {"address", v.address},
              {"state", distribution::to_string(v.state)},
              {"since_unix_ms", since},
              {"last_error", v.last_error},
              {"calls", v.calls},
              {"lost", v.failed},
              {"pools", std::move(pools)}};
}

/// POST /scale?pool=P&size=N: resizes pool P (empty or absent: the first pool).
adapters::http_response scale(runtime& rt, const adapters::http_request& req) {
  auto pool = req.param("pool").value_or("");
  auto size_text = req.param("size").value_or("");
  size_t n = 0;
  auto [end, ec] =
    std::from_chars(size_text.data(), size_text.data() + size_text.size(), n);
  if (size_text.empty() || ec != std::errc{} ||
      end != size_text.data() + size_text.size())
    return refusal(400, "size must be a whole number: POST /scale?pool=P&size=N");
  if (auto err = rt.resize_pool(pool, n)) {
    int status = err == errc::invalid_argument ? 400
                 : err == errc::pool_not_found ? 404
                                               : 503;
    return refusal(status, describe(err));
  }
  return {
    200, json_type,
    json{{"pool", pool.empty() ? rt.pool_names().front() : pool}, {"size", n}}.dump() +
      "\n"};
}

bool reads(const adapters::http_request& req) {
  return req.method == "GET" || req.method == "HEAD";
}

} // namespace

void control_servers::stop() {
  if (control)
    control->stop();
  if (metrics)
    metrics->stop();
}

adapters::http_response answer(runtime& rt, const adapters::http_request& req,
                               bool control) {
  auto& path = req.path;
  if (control && path == "/scale")
    return req.method == "POST" ? scale(rt, req)
                                : refusal(405, "POST /scale?pool=P&size=N");
  if (!reads(req))
    return refusal(405, "only GET and HEAD are served here");
  if (path == "/health")
    return {200, "text/plain; charset=utf-8", "ok\n"};
  if (path == "/metrics") {
    auto st = rt.get_all_stats();
    if (!st)
      return failure(st.error());
    auto ws = rt.list_all_workers();
    return {200, prometheus_type,
            render_prometheus(
              *st, ws ? *ws : std::map<std::string, std::vector<worker_info>>{})};
  }
  if (control && path == "/stats") {
    auto st = rt.get_all_stats();
    if (!st)
      return failure(st.error());
    auto body = to_json(*st);
    if (auto nodes = rt.nodes(); !nodes.empty()) {
      auto arr = json::array();
      for (auto& v : nodes)
        arr.push_back(node_json(v));
      body["nodes"] = std::move(arr);
    }
    return {200, json_type, body.dump() + "\n"};
  }
  if (control && path == "/workers") {
    auto ws = rt.list_all_workers();
    if (!ws)
      return failure(ws.error());
    auto pools = json::array();
    for (auto& [pool, list] : *ws) {
      auto arr = json::array();
      for (auto& w : list)
        arr.push_back(to_json(w));
      pools.push_back(json{{"pool", pool}, {"workers", std::move(arr)}});
    }
    return {200, json_type, json{{"pools", std::move(pools)}}.dump() + "\n"};
  }
  return {404, "text/plain; charset=utf-8",
          control ? "not found; try /stats, /workers, /metrics, /health or POST /scale\n"
                  : "not found; try /metrics\n"};
}

caf::expected<control_servers> start_control_servers(runtime& rt, const config& cfg) {
  control_servers out;
  if (cfg.control_socket) {
    auto srv = adapters::http_server::listen_unix(
      rt.runtime_dir() + "/control.sock",
      [&rt](const adapters::http_request& req) { return answer(rt, req, true); });
    if (!srv)
      return srv.error();
    out.control = std::move(*srv);
  }
  if (!cfg.metrics.address.empty()) {
    auto srv = adapters::http_server::listen_tcp(
      cfg.metrics.address,
      [&rt](const adapters::http_request& req) { return answer(rt, req, false); });
    if (!srv) {
      out.stop();
      return srv.error();
    }
    out.metrics = std::move(*srv);
  }
  return out;
}

} // namespace snakepit::actors
