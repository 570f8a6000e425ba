#include "actors/observability/control.hpp"

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

} // namespace

void control_servers::stop() {
  if (control)
    control->stop();
  if (metrics)
    metrics->stop();
}

adapters::http_response answer(runtime& rt, const std::string& path, bool control) {
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
    return {200, json_type, to_json(*st).dump() + "\n"};
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
          control ? "not found; try /stats, /workers, /metrics or /health\n"
                  : "not found; try /metrics\n"};
}

caf::expected<control_servers> start_control_servers(runtime& rt, const config& cfg) {
  control_servers out;
  if (cfg.control_socket) {
    auto srv = adapters::http_server::listen_unix(
      rt.runtime_dir() + "/control.sock",
      [&rt](const std::string& path) { return answer(rt, path, true); });
    if (!srv)
      return srv.error();
    out.control = std::move(*srv);
  }
  if (!cfg.metrics.address.empty()) {
    auto srv = adapters::http_server::listen_tcp(
      cfg.metrics.address,
      [&rt](const std::string& path) { return answer(rt, path, false); });
    if (!srv) {
      out.stop();
      return srv.error();
    }
    out.metrics = std::move(*srv);
  }
  return out;
}

} // namespace snakepit::actors
