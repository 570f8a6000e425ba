#include "actors/worker/detail/heartbeat.hpp"

#include <string>

#include <caf/send.hpp>

#include "actors/observability/telemetry.hpp"
#include "adapters/errors.hpp"

namespace snakepit::actors::detail {

heartbeat_settings heartbeat_settings::of(const pool_config& cfg) {
  return heartbeat_settings{cfg.heartbeat.enabled, cfg.heartbeat.interval,
                            cfg.heartbeat.timeout, cfg.heartbeat.max_missed,
                            cfg.heartbeat.dependent};
}

heartbeat_counter::verdict heartbeat_counter::on_result(const caf::error& err) {
  pending_ = false;
  if (!err) {
    missed_ = 0;
    return verdict::healthy;
  }
  ++missed_;
  return missed_ >= cfg_.max_missed && cfg_.dependent ? verdict::dead : verdict::missed;
}

void send_heartbeat(heartbeat_counter& hb, adapters::worker_connection& client,
                    const worker_private& self) {
  hb.sent();
  client.ping("heartbeat", hb.settings().timeout, [self](caf::expected<std::string> res) {
    caf::anon_send(self, heartbeat_result_atom::value,
                   res ? caf::error{} : std::move(res.error()));
  });
}

void report_heartbeat(const worker_args& args, const heartbeat_counter& hb,
                      heartbeat_counter::verdict v, const caf::error& err) {
  if (v == heartbeat_counter::verdict::healthy)
    return;
  auto& log = args.env->log;
  auto& bus = args.env->telemetry;
  if (log->enabled(adapters::log_level::warn)) {
    auto f = worker_fields(args);
    f["missed"] = hb.missed();
    f["error"] = describe(err);
    log->warn("heartbeat missed", f);
  }
  if (bus && bus->active())
    bus->emit(
      "snakepit.heartbeat.missed", {{"missed", hb.missed()}},
      {{"pool", args.pool_cfg.name}, {"worker_id", args.id}, {"error", describe(err)}});
  if (v != heartbeat_counter::verdict::dead)
    return;
  // Hung (a tool holding the event loop, SIGSTOP, deadlock): the process is killed;
  // its exit makes the worker crash and its starter restart it.
  if (log->enabled(adapters::log_level::error)) {
    auto f = worker_fields(args);
    f["missed"] = hb.missed();
    log->error("heartbeat timeout: killing the worker's process", f);
  }
  if (bus && bus->active())
    bus->emit("snakepit.heartbeat.timeout", {{"missed", hb.missed()}},
              {{"pool", args.pool_cfg.name}, {"worker_id", args.id}});
}

} // namespace snakepit::actors::detail
