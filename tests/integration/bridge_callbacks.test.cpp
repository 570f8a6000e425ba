// The host bridge server answers the callbacks upstream Snakepit's workers make, at the
// wire level, as such a worker makes them: InitializeSession before every call (also
// with an empty session id), RegisterTools per session under the worker's own id,
// Heartbeat per session (which must not keep the session alive past its TTL), and
// ExecuteElixirTool with parameters packed as google.protobuf wrappers.
#include <google/protobuf/wrappers.pb.h>
#include <grpcpp/grpcpp.h>

#include <thread>

#include "actors/sessions/token_registry.hpp"
#include "harness.hpp"
#include "snakepit_bridge.grpc.pb.h"

using namespace std::chrono_literals;
using snakepit::json;
using namespace snakepit::testing;
namespace pb = snakepit::bridge;

namespace {

/// A stub on the runtime's host.sock and the token its calls carry.
struct host_link {
  std::unique_ptr<pb::BridgeService::Stub> stub;
  std::string token;
  pb::BridgeService::Stub* operator->() { return stub.get(); }
};

host_link host_stub(snakepit::runtime& rt) {
  auto channel = grpc::CreateChannel("unix:" + rt.runtime_dir() + "/host.sock",
                                     grpc::InsecureChannelCredentials());
  auto token = rt.issue_bridge_token();
  REQUIRE_OK(token);
  return {pb::BridgeService::NewStub(channel), *token};
}

template<class Req, class Resp, class Fn>
Resp rpc(const host_link& link, Fn fn, const Req& req) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  ctx.AddMetadata(snakepit::actors::bridge_token_header, link.token);
  Resp resp;
  auto status = fn(&ctx, req, &resp);
  REQUIRE_MSG(status.ok(), status.error_message());
  return resp;
}

} // namespace

TEST_SUITE("integration.bridge_callbacks") {

  TEST_CASE("InitializeSession with an empty id is a no-op and repeats are fine") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto stub = host_stub(r);
    auto init = [&](const std::string& sid) {
      pb::InitializeSessionRequest req;
      req.set_session_id(sid);
      return rpc<pb::InitializeSessionRequest, pb::InitializeSessionResponse>(
        stub, [&](auto* c, auto& q, auto* s) { return stub->InitializeSession(c, q, s); },
        req);
    };
    auto empty = init("");
    CHECK_MSG(empty.success(), empty.error_message());
    CHECK_FALSE(r.get_session_info(""));
    for (int i = 0; i < 3; ++i) { // before every call, as upstream workers do
      auto again = init("up-1");
      CHECK_MSG(again.success(), again.error_message());
    }
    CHECK(r.get_session_info("up-1"));
    stop_and_check(r);
  }

  TEST_CASE("tools registered per session under the worker's id are listed, with "
            "streaming, for that session") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto ws = serving_workers(r);
    REQUIRE(ws);
    REQUIRE(ws->size() == 1);
    REQUIRE(r.create_session(std::string{"up-2"}));
    auto stub = host_stub(r);
    pb::RegisterToolsRequest req;
    req.set_session_id("up-2");
    req.set_worker_id(ws->front().id);
    auto* t = req.add_tools();
    t->set_name("lazy_stream");
    t->set_description("registered when the session first called");
    t->set_supports_streaming(true);
    auto resp = rpc<pb::RegisterToolsRequest, pb::RegisterToolsResponse>(
      stub, [&](auto* c, auto& q, auto* s) { return stub->RegisterTools(c, q, s); }, req);
    CHECK_MSG(resp.success(), resp.error_message());
    auto tools = r.list_tools("up-2");
    REQUIRE(tools);
    auto it = std::find_if(tools->begin(), tools->end(),
                           [](auto& x) { return x.name == "lazy_stream"; });
    REQUIRE(it != tools->end());
    CHECK(it->supports_streaming);
    CHECK(std::find(it->workers.begin(), it->workers.end(), ws->front().id) !=
          it->workers.end());
    stop_and_check(r);
  }

  TEST_CASE("a worker's heartbeats do not keep a session alive past its TTL") {
    auto cfg = small_config(1);
    cfg.sessions.ttl = 1s;
    cfg.sessions.sweep_interval = 100ms;
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(r.create_session(std::string{"up-3"}));
    auto stub = host_stub(r);
    pb::HeartbeatRequest req;
    req.set_session_id("up-3");
    auto beat = [&] {
      return rpc<pb::HeartbeatRequest, pb::HeartbeatResponse>(
        stub, [&](auto* c, auto& q, auto* s) { return stub->Heartbeat(c, q, s); }, req);
    };
    CHECK(beat().session_valid());
    bool expired = false;
    auto until = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(200ms); // beating faster than the TTL
      if (!beat().session_valid()) {
        expired = true;
        break;
      }
    }
    CHECK_MSG(expired, "heartbeats kept the session alive");
    CHECK_FALSE(r.get_session_info("up-3"));
    stop_and_check(r);
  }

  TEST_CASE("ExecuteElixirTool takes parameters packed as protobuf wrappers or JSON") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE_FALSE(r.register_host_tool(
      "mirror", [](const json& args) { return args; }, "returns its arguments", true));
    auto stub = host_stub(r);
    pb::ExecuteElixirToolRequest req;
    req.set_tool_name("mirror");
    google::protobuf::StringValue text;
    text.set_value("hi");
    (*req.mutable_parameters())["text"].PackFrom(text);
    google::protobuf::BoolValue flag;
    flag.set_value(true);
    (*req.mutable_parameters())["flag"].PackFrom(flag);
    auto& n = (*req.mutable_parameters())["n"];
    n.set_type_url("type.googleapis.com/google.protobuf.Value");
    n.set_value("3");
    auto resp = rpc<pb::ExecuteElixirToolRequest, pb::ExecuteElixirToolResponse>(
      stub, [&](auto* c, auto& q, auto* s) { return stub->ExecuteElixirTool(c, q, s); },
      req);
    REQUIRE_MSG(resp.success(), resp.error_message());
    auto result = json::parse(resp.result().value(), nullptr, false);
    CHECK(result == json{{"text", "hi"}, {"flag", true}, {"n", 3}});
    stop_and_check(r);
  }
}
