#include "actors/distribution/wire.hpp"

#include <algorithm>
#include <utility>

#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/timespan.hpp>
#include <fmt/format.h>

#include "adapters/detail/json_text.hpp"
#include "adapters/errors.hpp"

namespace snakepit::distribution {

void register_wire_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<pool_load>("snakepit.pool_load");
  cfg.add_message_type<std::vector<pool_load>>("snakepit.pool_loads");
  cfg.add_message_type<node_hello>("snakepit.node_hello");
  cfg.add_message_type<remote_call>("snakepit.remote_call");
  cfg.add_message_type<remote_result>("snakepit.remote_result");
}

void prepare_distributed_system(caf::actor_system_config& cfg,
                                std::chrono::milliseconds heartbeat,
                                std::chrono::milliseconds silence) {
  cfg.load<caf::io::middleman>();
  register_wire_types(cfg);
  if (heartbeat.count() > 0) {
    cfg.set("middleman.heartbeat-interval", caf::timespan{heartbeat});
    cfg.set("middleman.connection-timeout", caf::timespan{silence});
  }
}

remote_call to_remote(const execute_request& req, std::chrono::milliseconds budget) {
  remote_call out;
  auto& o = req.opts;
  out.pool = o.pool;
  out.command = req.command;
  out.args_json = req.args.dump();
  out.binary_args = o.binary_args;
  out.session_id = o.session_id;
  out.affinity = o.affinity;
  out.correlation_id = o.correlation_id;
  out.metadata = o.metadata;
  out.budget_ms = budget.count();
  out.idempotent = o.idempotent;
  return out;
}

caf::expected<execute_request> from_remote(const remote_call& call) {
  if (call.budget_ms <= 0)
    return make_error(
      errc::protocol_error,
      fmt::format("a remote call with a budget of {} ms", call.budget_ms));
  auto args = adapters::detail::parse_json_text(call.args_json);
  if (args.is_discarded() || !args.is_object())
    return with_correlation_id(make_error(errc::invalid_argument,
                                          "the arguments of a remote call are not a "
                                          "JSON object"),
                               call.correlation_id);
  execute_request req;
  req.command = call.command;
  req.args = std::move(args);
  auto& o = req.opts;
  o.timeout = std::chrono::milliseconds{call.budget_ms};
  o.pool = call.pool;
  o.correlation_id = call.correlation_id;
  o.binary_args = call.binary_args;
  o.session_id = call.session_id;
  o.affinity = call.affinity;
  o.idempotent = call.idempotent;
  o.metadata = call.metadata;
  return req;
}

remote_result to_remote(const execute_result& res) {
  remote_result out;
  if (!res) {
    out.error = res.error();
    return out;
  }
  out.result_json = res->result.dump();
  out.binary_result = res->binary_result;
  out.worker_id = res->worker_id;
  out.execution_time_ms = res->execution_time_ms;
  return out;
}

execute_result from_remote(const remote_result& res) {
  if (res.error)
    return res.error;
  auto value = adapters::detail::parse_json_text(res.result_json);
  if (value.is_discarded())
    return make_error(
      errc::protocol_error,
      fmt::format("worker {}: a remote reply whose result is not JSON", res.worker_id));
  execute_reply out;
  out.result = std::move(value);
  out.binary_result = res.binary_result;
  out.worker_id = res.worker_id;
  out.execution_time_ms = res.execution_time_ms;
  return out;
}

caf::expected<std::pair<std::string, uint16_t>> parse_address(const std::string& text) {
  auto bad = [&](const char* why) {
    return caf::make_error(
      errc::invalid_config,
      fmt::format("node address \"{}\": {} (expected HOST:PORT)", text, why));
  };
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return bad("no host");
  auto host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  auto digits = text.substr(colon + 1);
  if (digits.empty() || digits.size() > 5 ||
      !std::all_of(digits.begin(), digits.end(),
                   [](char c) { return c >= '0' && c <= '9'; }))
    return bad("no port");
  auto port = std::stoul(digits);
  if (port > 65535)
    return bad("port out of range");
  return std::make_pair(host, static_cast<uint16_t>(port));
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

caf::error check_hello(const node_hello& theirs) {
  if (theirs.protocol == protocol_version)
    return caf::none;
  return make_error(
    errc::protocol_error,
    fmt::format("{} speaks node protocol {} (snakepit {}), this process "
                "speaks {}: refused",
                theirs.node.empty() ? std::string{"the peer"} : theirs.node,
                theirs.protocol, theirs.version, protocol_version));
}

} // namespace snakepit::distribution
