// What one request is on the wire and what it reports, wherever it runs (through
// the worker actor or on the direct lane of a blocking caller): its conversion to
// and from the gRPC client's types, its host log lines and the metadata of its
// telemetry events, so both paths send and say the same thing about the same call.
#pragma once

#include <chrono>
#include <string>

#include <caf/error.hpp>

#include "actors/types.hpp"
#include "adapters/bridge_client.hpp"
#include "adapters/errors.hpp"
#include "adapters/log.hpp"

namespace snakepit::actors {

/// A broken connection, a cancelled call or a transport error: the symptom a
/// dying process shows first (the caller then looks whether it died).
inline bool transport_failure(const caf::error& err) {
  auto code = errc_of(err);
  return code && (*code == errc::unavailable || *code == errc::internal ||
                  *code == errc::cancelled);
}

/// The wire-level call for a request (moves its parts).
inline adapters::tool_call to_tool_call(execute_request req) {
  adapters::tool_call call;
  call.tool_name = std::move(req.command);
  call.args = std::move(req.args);
  call.binary_args = std::move(req.opts.binary_args);
  call.metadata = std::move(req.opts.metadata);
  call.correlation_id = std::move(req.opts.correlation_id);
  call.session_id = std::move(req.opts.session_id);
  return call;
}

/// A worker's reply as the caller gets it.
inline execute_reply to_reply(adapters::tool_reply reply, std::string worker_id) {
  execute_reply rep;
  rep.result = std::move(reply.result);
  rep.binary_result = std::move(reply.binary_result);
  rep.execution_time_ms = reply.execution_time_ms;
  rep.worker_id = std::move(worker_id);
  return rep;
}

/// What the log lines of one request carry; copied into the call's completion.
struct request_log {
  adapters::logger_ptr log;
  std::string pool;
  std::string worker_id;
  std::string command;
  std::string correlation_id;
  std::string session_id;
  bool streaming = false;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();

  adapters::log_fields fields() const {
    return adapters::log_fields{{"pool", pool},
                                {"worker_id", worker_id},
                                {"command", command},
                                {"correlation_id", correlation_id},
                                {"session_id", session_id},
                                {"streaming", streaming}};
  }

  void dispatched() const {
    if (log->enabled(adapters::log_level::debug))
      log->debug("request dispatched", fields());
  }

  /// Failures of the tool or of the caller's making are info; the rest (deadline,
  /// crash, transport) are warnings.
  void done(const caf::error& err) const {
    auto code = err ? errc_of(err) : std::optional<errc>{};
    auto lvl = !err ? adapters::log_level::debug
               : code && (*code == errc::tool_error || *code == errc::unknown_tool ||
                          *code == errc::invalid_argument || *code == errc::cancelled)
                 ? adapters::log_level::info
                 : adapters::log_level::warn;
    if (!log->enabled(lvl))
      return;
    auto f = fields();
    f["duration_ms"] = std::chrono::duration<double, std::milli>(
                         std::chrono::steady_clock::now() - started)
                         .count();
    if (err)
      f["error"] = describe(err);
    log->log(lvl, err ? "request failed" : "request completed", f);
  }
};

/// Metadata of `snakepit.request.start` for a call dispatched to `worker_id`.
inline json request_start_metadata(const std::string& pool, const std::string& worker_id,
                                   const execute_request& req, bool streaming) {
  return json{{"pool", pool},
              {"worker_id", worker_id},
              {"command", req.command},
              {"correlation_id", req.opts.correlation_id},
              {"session_id", req.opts.session_id},
              {"streaming", streaming}};
}

/// Who a finished request was, as its stop and exception events name it: the same
/// command, worker id and correlation id as its `snakepit.request.start`, so a
/// handler can join the two.
struct request_ident {
  std::string command;
  /// The worker it ran on; empty when it never reached one (refused, timed out in
  /// the queue, failed before dispatch).
  std::string worker_id;
  std::string correlation_id;
};

/// Metadata of `snakepit.request.stop` / `.exception` (and `snakepit.stream.stop`).
inline json request_stop_metadata(const std::string& pool, const request_ident& who,
                                  const execute_result& res) {
  json md{{"pool", pool},
          {"command", who.command},
          {"worker_id", who.worker_id},
          {"correlation_id", who.correlation_id},
          {"success", static_cast<bool>(res)}};
  if (!res)
    md["error"] = describe(res.error());
  return md;
}

} // namespace snakepit::actors
