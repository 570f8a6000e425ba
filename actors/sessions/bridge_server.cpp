#include "actors/sessions/bridge_server.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <exception>
#include <future>
#include <iterator>
#include <mutex>
#include <tuple>

#include <caf/all.hpp>
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "actors/sessions/session_store.hpp"
#include "actors/sessions/tool_registry.hpp"
#include "adapters/errors.hpp"
#include "adapters/wire.hpp"
#include "snakepit_bridge.grpc.pb.h"

namespace snakepit::actors {

namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
namespace pb = snakepit::bridge;
using namespace snakepit::adapters; // logger, wire conversions, errc mapping

/// Our error -> the status a Python caller sees (the reverse of error_from_status).
grpc::Status status_of(const caf::error& err) {
  auto code = errc_of(err);
  auto text = describe(err);
  if (!code)
    return {grpc::StatusCode::INTERNAL, text};
  switch (*code) {
  case errc::invalid_session_id:
  case errc::invalid_argument:
    return {grpc::StatusCode::INVALID_ARGUMENT, text};
  case errc::session_not_found:
  case errc::unknown_tool:
    return {grpc::StatusCode::NOT_FOUND, text};
  case errc::quota_exceeded:
    return {grpc::StatusCode::RESOURCE_EXHAUSTED, text};
  case errc::timeout:
    return {grpc::StatusCode::DEADLINE_EXCEEDED, text};
  case errc::shutting_down:
  case errc::unavailable:
    return {grpc::StatusCode::UNAVAILABLE, text};
  default:
    return {grpc::StatusCode::INTERNAL, text};
  }
}

google::protobuf::Timestamp to_timestamp(std::chrono::system_clock::time_point t) {
  auto ns =
    std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  google::protobuf::Timestamp ts;
  ts.set_seconds(ns / 1000000000);
  ts.set_nanos(static_cast<int32_t>(ns % 1000000000));
  return ts;
}

void set_json(google::protobuf::Any* any, const std::string& json_text) {
  any->set_type_url(json_type_url);
  any->set_value(json_text);
}

json decode_args(
  const google::protobuf::Map<std::string, google::protobuf::Any>& params) {
  auto out = json::object();
  for (auto& [k, v] : params)
    out[k] = decode_any(v);
  return out;
}

tool_info tool_from_proto(const pb::ToolRegistration& reg) {
  tool_info t;
  t.name = reg.name();
  t.description = reg.description();
  t.supports_streaming = reg.supports_streaming();
  for (auto& [k, v] : reg.metadata())
    t.metadata[k] = v;
  for (auto& p : reg.parameters()) {
    param_spec ps;
    ps.name = p.name();
    ps.type = p.type();
    ps.description = p.description();
    ps.required = p.required();
    if (p.has_default_value())
      ps.default_json = decode_any(p.default_value()).dump();
    ps.validation_json = p.validation_json();
    t.parameters.push_back(std::move(ps));
  }
  return t;
}

void tool_to_proto(const tool_info& t, pb::ToolSpec* out) {
  out->set_name(t.name);
  out->set_description(t.description);
  out->set_supports_streaming(t.supports_streaming);
  for (auto& [k, v] : t.metadata)
    (*out->mutable_metadata())[k] = v;
  (*out->mutable_metadata())["kind"] = t.kind;
  for (auto& p : t.parameters) {
    auto* ps = out->add_parameters();
    ps->set_name(p.name);
    ps->set_type(p.type);
    ps->set_description(p.description);
    ps->set_required(p.required);
    if (!p.default_json.empty())
      set_json(ps->mutable_default_value(), p.default_json);
    ps->set_validation_json(p.validation_json);
  }
}

std::string error_payload(const std::string& type, const std::string& message,
                          const std::string& tool) {
  return json{{"type", type},
              {"message", message},
              {"stacktrace", json::array()},
              {"traceback", ""},
              {"context", {{"tool_name", tool}, {"call_type", "execute_host_tool"}}}}
    .dump();
}

/// What a Python caller sees when the store or the registry is gone (host shutdown).
caf::error host_stopping() {
  return make_error(errc::unavailable, "the host is stopping");
}

/// The value a call with replies `Rs...` yields: the single reply or a tuple.
template<class... Rs>
using reply_t =
  std::conditional_t<sizeof...(Rs) == 1, std::tuple_element_t<0, std::tuple<Rs...>>,
                     std::tuple<Rs...>>;

/// One call to an actor from a gRPC thread, without a scoped_actor: a short-lived
/// actor issues it (`issue(self, timeout)` returns the response handle of one of the
/// wrappers in session_store.hpp / tool_registry.hpp) and fulfils a promise; the
/// caller waits at most `timeout` (plus a margin for the hand-off). `issue` is
/// copied into that actor, so it owns everything it sends.
template<class... Rs, class Issue>
caf::expected<reply_t<Rs...>> ask(caf::actor_system& sys,
                                  std::chrono::milliseconds timeout, Issue issue) {
  auto prom = std::make_shared<std::promise<caf::expected<reply_t<Rs...>>>>();
  auto fut = prom->get_future();
  sys.spawn([=](caf::event_based_actor* self) {
    issue(self, timeout)
      .then(
        [=](Rs&... rs) {
          if constexpr (sizeof...(Rs) == 1)
            prom->set_value(std::move(rs)...);
          else
            prom->set_value(std::make_tuple(std::move(rs)...));
        },
        [=](caf::error& err) {
          if (err == caf::sec::request_timeout)
            prom->set_value(make_error(errc::timeout, "the host did not answer in time"));
          else if (err == caf::sec::request_receiver_down)
            prom->set_value(host_stopping());
          else
            prom->set_value(std::move(err));
        });
  });
  if (fut.wait_for(timeout + 1s) != std::future_status::ready)
    return make_error(errc::timeout, "the host did not answer in time");
  return fut.get();
}

} // namespace

class bridge_service final : public pb::BridgeService::Service {
 public:
  explicit bridge_service(const bridge_server_options& opts) : opts_(opts) {}

  /// OK when the call carries a live token; UNAUTHENTICATED otherwise. The token
  /// itself is never quoted (nor logged).
  grpc::Status admit(const grpc::ServerContext* ctx) const {
    auto& md = ctx->client_metadata();
    auto [first, last] = md.equal_range(bridge_token_header);
    if (first == last)
      return {grpc::StatusCode::UNAUTHENTICATED,
              std::string{"no bridge token: send the worker's SNAKEPIT_BRIDGE_TOKEN as "
                          "metadata \""} +
                bridge_token_header + "\""};
    if (std::next(first) != last ||
        !opts_.tokens->valid({first->second.data(), first->second.size()}))
      return {grpc::StatusCode::UNAUTHENTICATED,
              "bridge token refused: unknown, or its worker is gone"};
    return grpc::Status::OK;
  }

  /// Calls the current session store: `call(self, store, timeout)` returns the
  /// response handle of a session_store.hpp wrapper.
  template<class... Rs, class Call>
  caf::expected<reply_t<Rs...>> ask_store(Call call) {
    auto store = as_session_store(opts_.session_store());
    if (!store)
      return host_stopping();
    return ask<Rs...>(*opts_.system, opts_.actor_timeout, [=](auto* self, auto timeout) {
      return call(self, store, timeout);
    });
  }

  /// Calls the current tool registry, as `ask_store`.
  template<class... Rs, class Call>
  caf::expected<reply_t<Rs...>> ask_tools(Call call) {
    auto registry = as_tool_registry(opts_.tool_registry());
    if (!registry)
      return host_stopping();
    return ask<Rs...>(*opts_.system, opts_.actor_timeout, [=](auto* self, auto timeout) {
      return call(self, registry, timeout);
    });
  }

  /// The tools a session sees (InitializeSession and GetSession list them).
  caf::expected<std::vector<tool_info>> list_tools_of(const std::string& session_id) {
    return ask_tools<std::vector<tool_info>>([session_id](auto self, auto& reg, auto t) {
      return list_tools(self, reg, session_id, t);
    });
  }

  grpc::Status Ping(grpc::ServerContext* ctx, const pb::PingRequest* req,
                    pb::PingResponse* resp) override {
    if (auto refused = admit(ctx); !refused.ok())
      return refused;
    resp->set_message("pong: " + req->message());
    *resp->mutable_server_time() = to_timestamp(std::chrono::system_clock::now());
    return grpc::Status::OK;
  }

  grpc::Status InitializeSession(grpc::ServerContext* ctx,
                                 const pb::InitializeSessionRequest* req,
                                 pb::InitializeSessionResponse* resp) override {
    if (auto refused = admit(ctx); !refused.ok())
      return refused;
    auto& sid = req->session_id();
    session_metadata meta{req->metadata().begin(), req->metadata().end()};
    caf::error err;
    // Upstream workers call InitializeSession before every call, also outside any
    // session: with an empty id it is a no-op.
    if (!sid.empty()) {
      auto id = ask_store<std::string>([sid, meta](auto self, auto& store, auto t) {
        return create_session(self, store, sid, meta, t);
      });
      if (!id)
        err = id.error();
    }
    if (err) {
      resp->set_success(false);
      resp->set_error_message(describe(err));
      return grpc::Status::OK;
    }
    resp->set_success(true);
    if (auto tools = list_tools_of(sid))
      for (auto& t : *tools)
        tool_to_proto(t, &(*resp->mutable_available_tools())[t.name]);
    return grpc::Status::OK;
  }

  grpc::Status CleanupSession(grpc::ServerContext* ctx,
                              const pb::CleanupSessionRequest* req,
                              pb::CleanupSessionResponse* resp) override {
    if (auto refused = admit(ctx); !refused.ok())
      return refused;
    auto state =
      ask_store<int32_t>([sid = req->session_id()](auto self, auto& store, auto t) {
        return cleanup_session(self, store, sid, t);
      });
    if (!state)
      return status_of(state.error());
    auto tools =
      ask_tools<int32_t>([sid = req->session_id()](auto self, auto& reg, auto t) {
        return cleanup_session_tools(self, reg, sid, t);
      });
    if (!tools)
      return status_of(tools.error());
    resp->set_success(true);
    resp->set_resources_cleaned(*state + *tools);
    return grpc::Status::OK;
  }

  grpc::Status GetSession(grpc::ServerContext* ctx, const pb::GetSessionRequest* req,
                          pb::GetSessionResponse* resp) override {
    if (auto refused = admit(ctx); !refused.ok())
      return refused;
    auto info =
      ask_store<session_info>([sid = req->session_id()](auto self, auto& store, auto t) {
        return get_session_info(self, store, sid, t);
      });
    if (!info)
      return status_of(info.error());
    resp->set_session_id(info->id);
    for (auto& [k, v] : info->metadata)
      (*resp->mutable_metadata())[k] = v;
    *resp->mutable_created_at() = to_timestamp(info->created);
    if (auto tools = list_tools_of(req->session_id()))
      resp->set_tool_count(static_cast<int32_t>(tools->size()));
    return grpc::Status::OK;
  }

  grpc::Status Heartbeat(grpc::ServerContext* ctx, const pb::HeartbeatRequest* req,
                         pb::HeartbeatResponse* resp) override {
    if (auto refused = admit(ctx); !refused.ok())
      return refused;
    auto valid =
      ask_store<bool>([sid = req->session_id()](auto self, auto& store, auto t) {
        return session_exists(self, store, sid, t);
      });
    if (!valid)
      return status_of(valid.error());
    resp->set_session_valid(*valid);
    *resp->mutable_server_time() = to_timestamp(std::chrono::system_clock::now());
    return grpc::Status::OK;
  }

  grpc::Status RegisterTools(grpc::ServerContext* ctx,
                             const pb::RegisterToolsRequest* req,
                             pb::RegisterToolsResponse* resp) override {
    if (auto refused = admit(ctx); !refused.ok())
      return refused;
    std::vector<tool_info> tools;
    for (auto& reg : req->tools())
      tools.push_back(tool_from_proto(reg));
    auto ids = ask_tools<tool_ids>([sid = req->session_id(), wid = req->worker_id(),
                                    tools](auto self, auto& reg, auto t) {
      return register_python_tools(self, reg, sid, wid, tools, t);
    });
    if (!ids) {
      resp->set_success(false);
      resp->set_error_message(describe(ids.error()));
      return grpc::Status::OK;
    }
    resp->set_success(true);
    for (auto& [k, v] : *ids)
      (*resp->mutable_tool_ids())[k] = v;
    return grpc::Status::OK;
  }

  grpc::Status GetExposedElixirTools(grpc::ServerContext* ctx,
                                     const pb::GetExposedElixirToolsRequest* req,
                                     pb::GetExposedElixirToolsResponse* resp) override {
    if (auto refused = admit(ctx); !refused.ok())
      return refused;
    auto tools = ask_tools<std::vector<tool_info>>(
      [sid = req->session_id()](auto self, auto& reg, auto t) {
        return exposed_tools(self, reg, sid, t);
      });
    if (!tools)
      return status_of(tools.error());
    for (auto& t : *tools)
      tool_to_proto(t, resp->add_tools());
    return grpc::Status::OK;
  }

  grpc::Status ExecuteElixirTool(grpc::ServerContext* ctx,
                                 const pb::ExecuteElixirToolRequest* req,
                                 pb::ExecuteElixirToolResponse* resp) override {
    if (auto refused = admit(ctx); !refused.ok())
      return refused;
    auto started = std::chrono::steady_clock::now();
    auto finish = [&] {
      resp->set_execution_time_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::steady_clock::now() - started)
                                    .count());
      if (auto i = req->metadata().find("correlation_id"); i != req->metadata().end())
        (*resp->mutable_metadata())["correlation_id"] = i->second;
      return grpc::Status::OK;
    };
    auto& name = req->tool_name();
    auto tool = ask_tools<host_tool>(
      [name](auto self, auto& reg, auto t) { return get_host_tool(self, reg, name, t); });
    if (!tool && tool.error() != errc::unknown_tool)
      return status_of(tool.error());
    if (!tool || !tool->info.exposed) {
      resp->set_success(false);
      resp->set_error_message(
        error_payload("UnknownToolError", "no host tool exposed as " + name, name));
      return finish();
    }
    json result;
    try {
      result = tool->fn(decode_args(req->parameters()));
    } catch (const std::exception& e) {
      resp->set_success(false);
      resp->set_error_message(error_payload("HostToolError", e.what(), name));
      return finish();
    } catch (...) {
      resp->set_success(false);
      resp->set_error_message(
        error_payload("HostToolError", "host tool threw a non-standard exception", name));
      return finish();
    }
    resp->set_success(true);
    set_json(resp->mutable_result(), result.dump());
    return finish();
  }

  grpc::Status GetSessionState(grpc::ServerContext* ctx,
                               const pb::GetSessionStateRequest* req,
                               pb::GetSessionStateResponse* resp) override {
    if (auto refused = admit(ctx); !refused.ok())
      return refused;
    auto r = ask_store<bool, std::string>(
      [sid = req->session_id(), key = req->key()](auto self, auto& store, auto t) {
        return get_state(self, store, sid, key, t);
      });
    if (!r)
      return status_of(r.error());
    resp->set_found(std::get<0>(*r));
    if (std::get<0>(*r))
      set_json(resp->mutable_value(), std::get<1>(*r));
    return grpc::Status::OK;
  }

  grpc::Status SetSessionState(grpc::ServerContext* ctx,
                               const pb::SetSessionStateRequest* req,
                               pb::SetSessionStateResponse* resp) override {
    if (auto refused = admit(ctx); !refused.ok())
      return refused;
    auto value = req->has_value() ? decode_any(req->value()).dump() : std::string{"null"};
    if (!req->compare()) {
      auto r = ask_store<caf::ok_atom>([sid = req->session_id(), key = req->key(),
                                        value](auto self, auto& store, auto t) {
        return put_state(self, store, sid, key, value, t);
      });
      if (!r)
        return status_of(r.error());
      resp->set_success(true);
      set_json(resp->mutable_current(), value);
      return grpc::Status::OK;
    }
    auto expected =
      req->has_expected() ? decode_any(req->expected()).dump() : std::string{"null"};
    auto r =
      ask_store<bool, std::string>([sid = req->session_id(), key = req->key(), expected,
                                    value](auto self, auto& store, auto t) {
        return compare_and_set_state(self, store, sid, key, expected, value, t);
      });
    if (!r)
      return status_of(r.error());
    resp->set_success(std::get<0>(*r));
    set_json(resp->mutable_current(), std::get<1>(*r));
    return grpc::Status::OK;
  }

  grpc::Status DeleteSessionState(grpc::ServerContext* ctx,
                                  const pb::DeleteSessionStateRequest* req,
                                  pb::DeleteSessionStateResponse* resp) override {
    if (auto refused = admit(ctx); !refused.ok())
      return refused;
    auto r = ask_store<bool>(
      [sid = req->session_id(), key = req->key()](auto self, auto& store, auto t) {
        return delete_state(self, store, sid, key, t);
      });
    if (!r)
      return status_of(r.error());
    resp->set_existed(*r);
    return grpc::Status::OK;
  }

  grpc::Status ListSessionStateKeys(grpc::ServerContext* ctx,
                                    const pb::ListSessionStateKeysRequest* req,
                                    pb::ListSessionStateKeysResponse* resp) override {
    if (auto refused = admit(ctx); !refused.ok())
      return refused;
    auto r = ask_store<std::vector<std::string>>(
      [sid = req->session_id()](auto self, auto& store, auto t) {
        return state_keys(self, store, sid, t);
      });
    if (!r)
      return status_of(r.error());
    for (auto& k : *r)
      resp->add_keys(k);
    return grpc::Status::OK;
  }

  grpc::Status IncrementSessionState(grpc::ServerContext* ctx,
                                     const pb::IncrementSessionStateRequest* req,
                                     pb::IncrementSessionStateResponse* resp) override {
    if (auto refused = admit(ctx); !refused.ok())
      return refused;
    auto by = req->has_by() ? decode_any(req->by()).dump() : std::string{"1"};
    auto r = ask_store<std::string>(
      [sid = req->session_id(), key = req->key(), by](auto self, auto& store, auto t) {
        return increment_state(self, store, sid, key, by, t);
      });
    if (!r)
      return status_of(r.error());
    set_json(resp->mutable_value(), *r);
    return grpc::Status::OK;
  }

 private:
  bridge_server_options opts_;
};

struct bridge_server::impl {
  bridge_server_options opts;
  std::string address;
  std::unique_ptr<bridge_service> service;
  std::unique_ptr<grpc::Server> server;
  std::mutex mtx;
  bool stopped = false;
};

caf::expected<std::unique_ptr<bridge_server>>
bridge_server::start(bridge_server_options opts) {
  if (!opts.system || !opts.session_store || !opts.tool_registry)
    return make_error(errc::invalid_config,
                      "bridge_server needs an actor system and both actor lookups");
  if (opts.socket_path.empty() || opts.socket_path.front() != '/' ||
      opts.socket_path.size() >= 108)
    return make_error(errc::invalid_config,
                      "bridge_server socket must be an absolute path under 108 bytes: " +
                        opts.socket_path);
  ::unlink(opts.socket_path.c_str());
  auto p = std::make_unique<impl>();
  p->address = "unix:" + opts.socket_path;
  p->opts = std::move(opts);
  if (!p->opts.tokens)
    p->opts.tokens = std::make_shared<token_registry>();
  p->service = std::make_unique<bridge_service>(p->opts);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(p->address, grpc::InsecureServerCredentials());
  builder.RegisterService(p->service.get());
  builder.SetMaxReceiveMessageSize(100 * 1024 * 1024);
  builder.SetMaxSendMessageSize(100 * 1024 * 1024);
  p->server = builder.BuildAndStart();
  if (!p->server)
    return make_error(errc::start_failed, "bridge_server cannot listen on " + p->address);
  ::chmod(p->opts.socket_path.c_str(), 0600);
  return std::unique_ptr<bridge_server>{new bridge_server(std::move(p))};
}

bridge_server::bridge_server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

bridge_server::~bridge_server() {
  stop();
}

void bridge_server::stop(std::chrono::milliseconds grace) {
  std::lock_guard<std::mutex> guard{impl_->mtx};
  if (impl_->stopped)
    return;
  impl_->stopped = true;
  impl_->server->Shutdown(std::chrono::system_clock::now() + grace);
  impl_->server->Wait();
  ::unlink(impl_->opts.socket_path.c_str());
}

const std::string& bridge_server::address() const {
  return impl_->address;
}

const std::shared_ptr<token_registry>& bridge_server::tokens() const {
  return impl_->opts.tokens;
}

} // namespace snakepit::actors
