#include "adapters/bridge_client.hpp"

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <thread>

#include <doctest/doctest.h>
#include <grpcpp/grpcpp.h>

#include "adapters/errors.hpp"
#include "adapters/process.hpp"
#include "snakepit_bridge.grpc.pb.h"

using namespace snakepit;
using namespace snakepit::adapters;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

json params_of(const bridge::ExecuteToolRequest& req) {
  json out = json::object();
  for (const auto& [k, v] : req.parameters())
    out[k] = json::parse(v.value());
  return out;
}

std::string header(grpc::ServerContext* ctx, const std::string& key) {
  auto range = ctx->client_metadata().equal_range(key);
  if (range.first == range.second)
    return {};
  return std::string(range.first->second.data(), range.first->second.size());
}

// Sleeps up to `ms`, returning early (false) when the client cancelled.
bool wait_or_cancel(grpc::ServerContext* ctx, int ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (ctx->IsCancelled())
      return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

/// A stand-in for the Python worker with a few scripted tools.
class fake_worker final : public bridge::BridgeService::Service {
 public:
  std::atomic<int> stream_chunks_sent{0};
  std::atomic<bool> stream_cancelled{false};

  grpc::Status Ping(grpc::ServerContext*, const bridge::PingRequest* req,
                    bridge::PingResponse* resp) override {
    resp->set_message("pong: " + req->message());
    return grpc::Status::OK;
  }

  grpc::Status ExecuteTool(grpc::ServerContext* ctx,
                           const bridge::ExecuteToolRequest* req,
                           bridge::ExecuteToolResponse* resp) override {
    const auto& tool = req->tool_name();
    auto args = params_of(*req);
    if (tool == "echo") {
      json result = {{"args", args},
                     {"session", req->session_id()},
                     {"header", header(ctx, "x-snakepit-correlation-id")},
                     {"meta_corr", req->metadata().count("correlation_id")
                                     ? req->metadata().at("correlation_id")
                                     : ""},
                     {"binary", req->binary_parameters().count("blob")
                                  ? req->binary_parameters().at("blob")
                                  : ""}};
      resp->set_success(true);
      resp->mutable_result()->set_type_url("type.googleapis.com/snakepit.map");
      resp->mutable_result()->set_value(result.dump());
      (*resp->mutable_metadata())["served_by"] = "fake";
      resp->set_execution_time_ms(3);
      return grpc::Status::OK;
    }
    if (tool == "binary") {
      resp->set_success(true);
      resp->mutable_result()->set_type_url("type.googleapis.com/snakepit.tensor.binary");
      resp->mutable_result()->set_value(R"({"shape":[3]})");
      resp->set_binary_result(std::string("\x00\x01\x02", 3));
      return grpc::Status::OK;
    }
    if (tool == "explode") {
      resp->set_success(false);
      resp->set_error_message(json{{"type", "ValueError"},
                                   {"message", "boom"},
                                   {"traceback", "Traceback (most recent call last):\n"
                                                 "ValueError: boom"},
                                   {"stacktrace", {"tools.py:3 in explode"}},
                                   {"context", {{"tool_name", "explode"}}}}
                                .dump());
      return grpc::Status::OK;
    }
    if (tool == "sleep") {
      wait_or_cancel(ctx, args.value("ms", 0));
      resp->set_success(true);
      resp->mutable_result()->set_value("null");
      return grpc::Status::OK;
    }
    resp->set_success(false);
    resp->set_error_message(
      json{{"type", "UnknownToolError"}, {"message", "unknown tool: " + tool}}.dump());
    return grpc::Status::OK;
  }

  grpc::Status
  ExecuteStreamingTool(grpc::ServerContext* ctx, const bridge::ExecuteToolRequest* req,
                       grpc::ServerWriter<bridge::ToolChunk>* writer) override {
    auto args = params_of(*req);
    if (req->tool_name() == "abort")
      return grpc::Status{
        grpc::StatusCode::INTERNAL,
        json{{"type", "RuntimeError"}, {"message", "mid-stream"}}.dump()};
    int n = args.value("n", 3);
    int delay = args.value("delay_ms", 0);
    for (int i = 0; i < n; ++i) {
      if (delay > 0 && !wait_or_cancel(ctx, delay)) {
        stream_cancelled = true;
        return grpc::Status::CANCELLED;
      }
      bridge::ToolChunk chunk;
      chunk.set_chunk_id(req->tool_name() + "-" + std::to_string(i));
      chunk.set_data(i % 2 == 0 ? json{{"i", i}}.dump() : std::to_string(i));
      chunk.set_is_final(i == n - 1);
      if (!writer->Write(chunk)) {
        stream_cancelled = true;
        return grpc::Status::CANCELLED;
      }
      ++stream_chunks_sent;
    }
    return grpc::Status::OK;
  }
};

/// A fake worker listening on a unix socket in a private runtime dir.
struct fixture {
  runtime_dir dir;
  fake_worker service;
  std::unique_ptr<grpc::Server> server;
  grpc_runtime runtime{1};
  bridge_client client;

  fixture() {
    auto d = runtime_dir::create("sp-grpc");
    REQUIRE(d);
    dir = std::move(*d);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + dir.file("w.sock"),
                             grpc::InsecureServerCredentials());
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
    REQUIRE(server);
    client = bridge_client{runtime, dir.file("w.sock")};
  }

  ~fixture() {
    runtime.shutdown();
    server->Shutdown(std::chrono::system_clock::now() + 2s);
    server->Wait();
  }
};

template<class T>
T await(std::future<T>& fut, std::chrono::seconds limit = 20s) {
  REQUIRE(fut.wait_for(limit) == std::future_status::ready);
  return fut.get();
}

tool_call call_of(std::string tool, json args = json::object()) {
  tool_call tc;
  tc.tool_name = std::move(tool);
  tc.args = std::move(args);
  return tc;
}

} // namespace

TEST_SUITE("adapters.bridge_client") {

  TEST_CASE("ping returns the worker's answer") {
    fixture f;
    CHECK(f.client.target() == "unix:" + f.dir.file("w.sock"));
    std::promise<caf::expected<std::string>> p;
    auto fut = p.get_future();
    f.client.ping("hello", 5s,
                  [&](caf::expected<std::string> r) { p.set_value(std::move(r)); });
    auto r = await(fut);
    REQUIRE(r);
    CHECK(*r == "pong: hello");
  }

  TEST_CASE(
    "execute sends arguments, binary args and correlation id and decodes the result") {
    fixture f;
    auto tc = call_of("echo", {{"a", 1}, {"b", {{"c", "d"}}}});
    tc.session_id = "sess-1";
    tc.correlation_id = "corr-42";
    tc.binary_args["blob"] = "raw";
    std::promise<caf::expected<tool_reply>> p;
    auto fut = p.get_future();
    f.client.execute(tc, 5s,
                     [&](caf::expected<tool_reply> r) { p.set_value(std::move(r)); });
    auto r = await(fut);
    REQUIRE(r);
    CHECK(r->result["args"] == json{{"a", 1}, {"b", {{"c", "d"}}}});
    CHECK(r->result["session"] == "sess-1");
    CHECK(r->result["header"] == "corr-42");
    CHECK(r->result["meta_corr"] == "corr-42");
    CHECK(r->result["binary"] == "raw");
    CHECK(r->result_type == "map");
    CHECK(r->metadata.at("served_by") == "fake");
    CHECK(r->execution_time_ms == 3);
  }

  TEST_CASE("a binary result is kept next to its JSON metadata") {
    fixture f;
    std::promise<caf::expected<tool_reply>> p;
    auto fut = p.get_future();
    f.client.execute(call_of("binary"), 5s,
                     [&](caf::expected<tool_reply> r) { p.set_value(std::move(r)); });
    auto r = await(fut);
    REQUIRE(r);
    CHECK(r->result == json{{"shape", {3}}});
    CHECK(r->result_type == "binary");
    CHECK(r->binary_result == std::string("\x00\x01\x02", 3));
  }

  TEST_CASE("an in-band tool failure becomes a tool_error with the python details") {
    fixture f;
    std::promise<caf::expected<tool_reply>> p;
    auto fut = p.get_future();
    f.client.execute(call_of("explode"), 5s,
                     [&](caf::expected<tool_reply> r) { p.set_value(std::move(r)); });
    auto r = await(fut);
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::tool_error);
    CHECK(describe(r.error()) == "tool_error: ValueError: boom");
    auto details = python_error_of(r.error());
    REQUIRE(details);
    CHECK(details->traceback.find("Traceback") == 0);
    CHECK(details->stacktrace.size() == 1);
  }

  TEST_CASE("an unknown tool is reported as unknown_tool") {
    fixture f;
    std::promise<caf::expected<tool_reply>> p;
    auto fut = p.get_future();
    f.client.execute(call_of("nope"), 5s,
                     [&](caf::expected<tool_reply> r) { p.set_value(std::move(r)); });
    auto r = await(fut);
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::unknown_tool);
    CHECK(message_of(r.error()) == "unknown tool: nope");
  }

  TEST_CASE("a call that outlives its deadline fails with timeout") {
    fixture f;
    std::promise<caf::expected<tool_reply>> p;
    auto fut = p.get_future();
    f.client.execute(call_of("sleep", {{"ms", 5000}}), 200ms,
                     [&](caf::expected<tool_reply> r) { p.set_value(std::move(r)); });
    auto r = await(fut);
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::timeout);
  }

  TEST_CASE("a target nobody listens on fails with unavailable") {
    auto dir = runtime_dir::create("sp-grpc");
    REQUIRE(dir);
    grpc_runtime runtime;
    bridge_client client{runtime, "unix:" + dir->file("nobody.sock")};
    std::promise<caf::expected<std::string>> p;
    auto fut = p.get_future();
    client.ping("x", 5s,
                [&](caf::expected<std::string> r) { p.set_value(std::move(r)); });
    auto r = await(fut);
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::unavailable);
  }

  TEST_CASE("100 concurrent executes on one client all complete exactly once") {
    fixture f;
    constexpr int n = 100;
    std::mutex mtx;
    std::vector<int> calls(n, 0);
    std::atomic<int> ok{0};
    std::atomic<int> finished{0};
    std::promise<void> all_done;
    for (int i = 0; i < n; ++i) {
      f.client.execute(call_of("echo", {{"i", i}}), 10s,
                       [&, i](caf::expected<tool_reply> r) {
                         {
                           std::lock_guard<std::mutex> guard{mtx};
                           ++calls[i];
                         }
                         if (r && (*r).result["args"]["i"] == i)
                           ++ok;
                         if (++finished == n)
                           all_done.set_value();
                       });
    }
    auto fut = all_done.get_future();
    REQUIRE(fut.wait_for(30s) == std::future_status::ready);
    CHECK(ok == n);
    std::this_thread::sleep_for(50ms);
    std::lock_guard<std::mutex> guard{mtx};
    for (int i = 0; i < n; ++i) {
      CAPTURE(i);
      CHECK(calls[i] == 1);
    }
    CHECK(f.client.in_flight() == 0);
  }

  TEST_CASE("a stream delivers every chunk in order and ends cleanly") {
    fixture f;
    std::vector<json> chunks;
    std::vector<bool> finals;
    std::promise<caf::error> p;
    auto fut = p.get_future();
    f.client.execute_stream(
      call_of("count", {{"n", 4}}), 5s,
      [&](json chunk, bool is_final) {
        chunks.push_back(std::move(chunk));
        finals.push_back(is_final);
        return true;
      },
      [&](caf::error err) { p.set_value(std::move(err)); });
    auto err = await(fut);
    CHECK_FALSE(err);
    REQUIRE(chunks.size() == 4);
    CHECK(chunks[0] == json{{"i", 0}});
    CHECK(chunks[1] == json{{"data", 1}});
    CHECK(chunks[2] == json{{"i", 2}});
    CHECK(chunks[3] == json{{"data", 3}});
    CHECK(finals == std::vector<bool>{false, false, false, true});
  }

  TEST_CASE("returning false from on_chunk halts the stream and cancels the RPC") {
    fixture f;
    int seen = 0;
    std::promise<caf::error> p;
    auto fut = p.get_future();
    f.client.execute_stream(
      call_of("count", {{"n", 1000}, {"delay_ms", 20}}), 20s,
      [&](json, bool) { return ++seen < 2; },
      [&](caf::error err) { p.set_value(std::move(err)); });
    auto err = await(fut);
    CHECK_FALSE(err);
    CHECK(seen == 2);
    // The server notices the cancellation long before it could send 1000 chunks.
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!f.service.stream_cancelled && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(10ms);
    CHECK(f.service.stream_cancelled);
    CHECK(f.service.stream_chunks_sent < 1000);
  }

  TEST_CASE("a stream aborted with an error payload fails with tool_error") {
    fixture f;
    std::promise<caf::error> p;
    auto fut = p.get_future();
    f.client.execute_stream(
      call_of("abort"), 5s, [](json, bool) { return true; },
      [&](caf::error err) { p.set_value(std::move(err)); });
    auto err = await(fut);
    CHECK(err == errc::tool_error);
    CHECK(describe(err) == "tool_error: RuntimeError: mid-stream");
  }

  TEST_CASE("cancel_all completes every in-flight call once with cancelled") {
    fixture f;
    constexpr int n = 5;
    std::atomic<int> cancelled{0};
    std::atomic<int> finished{0};
    std::promise<void> all_done;
    for (int i = 0; i < n; ++i)
      f.client.execute(call_of("sleep", {{"ms", 10000}}), 20s,
                       [&](caf::expected<tool_reply> r) {
                         if (!r && r.error() == errc::cancelled)
                           ++cancelled;
                         if (++finished == n)
                           all_done.set_value();
                       });
    std::promise<caf::error> sp;
    auto sfut = sp.get_future();
    f.client.execute_stream(
      call_of("count", {{"n", 1000}, {"delay_ms", 50}}), 20s,
      [](json, bool) { return true; },
      [&](caf::error err) { sp.set_value(std::move(err)); });
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (f.client.in_flight() < n + 1 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(5ms);
    f.client.cancel_all();
    auto fut = all_done.get_future();
    REQUIRE(fut.wait_for(20s) == std::future_status::ready);
    CHECK(cancelled == n);
    CHECK(await(sfut) == errc::cancelled);
    CHECK(f.client.in_flight() == 0);
  }

  TEST_CASE("a stream its consumer paused still completes when cancelled from outside "
            "its handle (cancel_all, shutdown)") {
    for (bool by_shutdown : {false, true}) {
      fixture f;
      std::promise<void> first;
      std::atomic<int> chunks{0};
      std::promise<caf::error> sp;
      auto sfut = sp.get_future();
      auto control = f.client.execute_stream(
        call_of("count", {{"n", 1000}, {"delay_ms", 1}}), 20s,
        [&](json, bool) {
          if (++chunks == 1)
            first.set_value();
          return stream_step::pause; // no read outstanding from here on
        },
        [&](caf::error err) { sp.set_value(std::move(err)); });
      REQUIRE(first.get_future().wait_for(20s) == std::future_status::ready);
      std::this_thread::sleep_for(50ms);
      if (by_shutdown)
        f.runtime.shutdown(); // joined its pollers: hung before the fix
      else
        f.client.cancel_all();
      REQUIRE(sfut.wait_for(10s) == std::future_status::ready);
      CHECK(sfut.get() == (by_shutdown ? errc::shutting_down : errc::cancelled));
      CHECK(chunks == 1);
      CHECK(f.client.in_flight() == 0);
    }
  }

  TEST_CASE("after shutdown calls fail at once with shutting_down") {
    fixture f;
    std::promise<caf::expected<tool_reply>> pending;
    auto pending_fut = pending.get_future();
    f.client.execute(
      call_of("sleep", {{"ms", 10000}}), 20s,
      [&](caf::expected<tool_reply> r) { pending.set_value(std::move(r)); });
    f.runtime.shutdown();
    auto r = await(pending_fut);
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::shutting_down);
    bool called = false;
    f.client.ping("late", 1s, [&](caf::expected<std::string> p) {
      called = true;
      CHECK(p.error() == errc::shutting_down);
    });
    CHECK(called);
  }

  TEST_CASE(
    "a runtime destroyed from inside its own callback shuts down without crashing") {
    auto dir = runtime_dir::create("sp-grpc");
    REQUIRE(dir);
    auto runtime = std::make_unique<grpc_runtime>();
    auto client = std::make_unique<bridge_client>(*runtime, dir->file("nobody.sock"));
    std::promise<bool> p;
    auto fut = p.get_future();
    client->ping("x", 5s, [&](caf::expected<std::string> r) {
      client.reset();
      runtime.reset();
      p.set_value(!r && r.error() == errc::unavailable);
    });
    CHECK(await(fut));
    CHECK(runtime == nullptr);
  }

} // TEST_SUITE
