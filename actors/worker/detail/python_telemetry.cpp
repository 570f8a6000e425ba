#include "actors/worker/detail/python_telemetry.hpp"

#include <optional>
#include <utility>

#include "actors/observability/telemetry.hpp"
#include "actors/worker/detail/protocol.hpp"
#include "adapters/errors.hpp"

namespace snakepit::actors::detail {

namespace {

/// Puts one relayed event on the bus.
void relay(telemetry::bus& bus, const std::string& pool, const std::string& id,
           adapters::python_event ev) {
  json md = json::object();
  for (auto& [key, value] : ev.metadata)
    md[key] = std::move(value);
  md["pool"] = pool;
  md["worker_id"] = id;
  if (!ev.correlation_id.empty())
    md["correlation_id"] = std::move(ev.correlation_id);
  if (ev.timestamp_ns != 0)
    md["python_timestamp_ns"] = ev.timestamp_ns;
  bus.emit(relay_name(ev.name), std::move(ev.measurements), std::move(md));
}

} // namespace

std::string relay_name(const std::string& name) {
  if (name.rfind("python.", 0) == 0)
    return "snakepit." + name;
  return "snakepit.python." + name;
}

void python_telemetry_relay::open(adapters::worker_connection& client,
                                  const worker_args& args) {
  auto bus = args.env->telemetry;
  if (!bus)
    return;
  open_ = std::make_shared<std::atomic<bool>>(true);
  stream_ = client.stream_telemetry(
    [bus, pool = args.pool_cfg.name, id = args.id](adapters::python_event ev) {
      if (!ev.name.empty() && bus->active())
        relay(*bus, pool, id, std::move(ev));
    },
    [open = open_, log = args.env->log, fields = worker_fields(args)](caf::error err) {
      open->store(false);
      auto code = err ? errc_of(err) : std::optional<errc>{};
      if (!err || code == errc::cancelled || code == errc::shutting_down ||
          !log->enabled(adapters::log_level::debug))
        return;
      auto f = fields;
      f["error"] = describe(err);
      log->debug("python telemetry stream ended", f);
    });
  // Written once the stream is up, ahead of anything else the host sends on it.
  apply_settings(*args.env);
}

void python_telemetry_relay::apply_settings(const worker_env& env) const {
  if (auto ctl = env.python_telemetry->get())
    stream_.send(*ctl);
}

void python_telemetry_relay::close() const {
  stream_.cancel();
}

} // namespace snakepit::actors::detail
