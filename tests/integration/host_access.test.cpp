// Only the runtime's own workers may call the host (docs/security.md): the bridge
// server on host.sock refuses a call without a live token, a worker's token stops
// working once its process is gone, and the runtime directory and its sockets are
// private to the host's user.
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include <grpcpp/grpcpp.h>

#include "actors/sessions/token_registry.hpp"
#include "harness.hpp"
#include "snakepit_bridge.grpc.pb.h"
#include "tests/support/log_capture.hpp"

using namespace std::chrono_literals;
using snakepit::json;
using namespace snakepit::testing;
namespace pb = snakepit::bridge;

namespace {

std::unique_ptr<pb::BridgeService::Stub> host_stub(snakepit::runtime& rt) {
  auto channel =
    grpc::CreateChannel(rt.bridge_address(), grpc::InsecureChannelCredentials());
  return pb::BridgeService::NewStub(channel);
}

/// SetSessionState(sid, key = 1) sent with `token` ("" = no token at all).
grpc::Status set_state(pb::BridgeService::Stub& stub, const std::string& token,
                       const std::string& sid, const std::string& key) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  if (!token.empty())
    ctx.AddMetadata(snakepit::actors::bridge_token_header, token);
  pb::SetSessionStateRequest req;
  req.set_session_id(sid);
  req.set_key(key);
  req.mutable_value()->set_type_url("type.googleapis.com/google.protobuf.Value");
  req.mutable_value()->set_value("1");
  pb::SetSessionStateResponse resp;
  return stub.SetSessionState(&ctx, req, &resp);
}

/// Ping sent with `token`.
grpc::Status ping(pb::BridgeService::Stub& stub, const std::string& token) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  if (!token.empty())
    ctx.AddMetadata(snakepit::actors::bridge_token_header, token);
  pb::PingRequest req;
  pb::PingResponse resp;
  return stub.Ping(&ctx, req, &resp);
}

/// One variable of /proc/<pid>/environ; "" when absent or unreadable.
std::string environ_of(int pid, const std::string& key) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/environ"};
  std::string entry;
  while (std::getline(in, entry, '\0'))
    if (entry.rfind(key + "=", 0) == 0)
      return entry.substr(key.size() + 1);
  return {};
}

/// The permission bits of `path` and whether it is a socket; -1 if it is missing.
int mode_of(const std::string& path, bool* is_socket = nullptr) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0)
    return -1;
  if (is_socket)
    *is_socket = S_ISSOCK(st.st_mode);
  return static_cast<int>(st.st_mode & 07777);
}

/// One worker of the adapter whose tools keep their state in the host's session.
snakepit::config session_pool() {
  auto cfg = small_config(1);
  cfg.pools[0].adapter =
    "snakepit_bridge.adapters.session_showcase.SessionShowcaseAdapter";
  return cfg;
}

/// As session_pool, the worker spawned afresh (no template): its environ is its own.
/// The host and the worker log everything (debug), for the check that no token is in
/// the log.
snakepit::config spawned_pool() {
  auto cfg = session_pool();
  cfg.pools[0].start_method = snakepit::start_method::spawn;
  cfg.log.level = snakepit::adapters::log_level::debug;
  cfg.log.to_stderr = false;
  return cfg;
}

/// The state keys of session `sid` in the host's store.
std::vector<std::string> keys_of(snakepit::runtime& rt, const std::string& sid) {
  auto info = rt.get_session_info(sid);
  REQUIRE_OK(info);
  return info->state_keys;
}

} // namespace

TEST_SUITE("integration.host_access") {

  TEST_CASE("a process with the socket but no token, or a wrong one, is refused "
            "UNAUTHENTICATED and changes nothing") {
    auto rt = snakepit::runtime::start(session_pool());
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(r.create_session(std::string{"acc-1"}));
    auto stub = host_stub(r);
    auto none = set_state(*stub, "", "acc-1", "k");
    CHECK(none.error_code() == grpc::StatusCode::UNAUTHENTICATED);
    CHECK(none.error_message().find("no bridge token") != std::string::npos);
    CHECK(ping(*stub, "").error_code() == grpc::StatusCode::UNAUTHENTICATED);
    auto issued = r.issue_bridge_token();
    REQUIRE(issued);
    auto forged = *issued;
    forged.back() = forged.back() == '0' ? '1' : '0'; // one digit off
    for (auto& wrong :
         {forged, std::string(64, 'a'), std::string{"short"}, *issued + "0"}) {
      auto st = set_state(*stub, wrong, "acc-1", "k");
      CHECK_MSG(st.error_code() == grpc::StatusCode::UNAUTHENTICATED, wrong);
      CHECK(st.error_message().find(wrong) == std::string::npos); // never echoed
    }
    CHECK(keys_of(r, "acc-1").empty()); // no refused call reached the store
    // The worker is a copy of its pool's template, which holds no token of its own.
    int templates = 0;
    for (auto pid : r.live_processes())
      if (is_worker_template(pid)) {
        ++templates;
        CHECK(environ_of(pid, snakepit::actors::bridge_token_env).empty());
      }
    CHECK(templates == 1);
    auto ok = set_state(*stub, *issued, "acc-1", "k");
    CHECK_MSG(ok.ok(), ok.error_message());
    CHECK(keys_of(r, "acc-1") == std::vector<std::string>{"k"});
    // The worker reads it back through the bridge with its own token.
    auto got = r.execute("recall", {{"key", "k"}}, in_session("acc-1"));
    REQUIRE_OK(got);
    CHECK(got->result == json(1));
    stop_and_check(r);
  }

  TEST_CASE("a worker's token is in its environment, not its command line, admits it "
            "while it lives and is refused once it is gone") {
    auto sink = std::make_shared<capture_sink>();
    snakepit::start_options opts;
    opts.log_sinks.push_back(sink);
    auto rt = snakepit::runtime::start(spawned_pool(), opts);
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(r.create_session(std::string{"acc-2"}));
    auto ws = serving_workers(r);
    REQUIRE(ws);
    REQUIRE(ws->size() == 1);
    auto pid = ws->front().pid;
    auto token = environ_of(pid, snakepit::actors::bridge_token_env);
    REQUIRE(token.size() == 64);
    CHECK(command_line(pid).find(token) == std::string::npos);
    auto stub = host_stub(r);
    auto alive = set_state(*stub, token, "acc-2", "a");
    CHECK_MSG(alive.ok(), alive.error_message());
    REQUIRE(::kill(pid, SIGKILL) == 0);
    int next = 0;
    REQUIRE(eventually([&] {
      auto now = serving_workers(r);
      if (!now || now->size() != 1 || now->front().pid == pid)
        return false;
      next = now->front().pid;
      return true;
    }));
    auto dead = set_state(*stub, token, "acc-2", "b");
    CHECK(dead.error_code() == grpc::StatusCode::UNAUTHENTICATED);
    CHECK(dead.error_message().find("gone") != std::string::npos);
    auto fresh = environ_of(next, snakepit::actors::bridge_token_env);
    CHECK(fresh.size() == 64);
    CHECK(fresh != token);
    CHECK(set_state(*stub, fresh, "acc-2", "c").ok());
    // The replacement calls back with its own token: session state from its tools.
    auto wrote = r.execute("remember", {{"key", "d"}, {"value", 4}}, in_session("acc-2"));
    REQUIRE_OK(wrote);
    auto read = r.execute("recall", {{"key", "a"}}, in_session("acc-2"));
    REQUIRE_OK(read);
    CHECK(read->result == json(1));
    CHECK(keys_of(r, "acc-2") == std::vector<std::string>{"a", "c", "d"});
    stop_and_check(r);
    auto lines = sink->lines();
    CHECK(lines.size() > 10); // the log was captured: the check below can fail
    for (auto& line : lines)
      for (auto& t : {token, fresh})
        CHECK_MSG(line.find(t) == std::string::npos, line);
  }

  TEST_CASE("a stdio worker, which cannot call the host, gets no token") {
    auto cfg = small_config(1);
    cfg.pools[0].kind = snakepit::worker_kind::stdio;
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto ws = serving_workers(r);
    REQUIRE(ws);
    REQUIRE(ws->size() == 1);
    CHECK(environ_of(ws->front().pid, "SNAKEPIT_POOL") == "default"); // readable
    CHECK(environ_of(ws->front().pid, snakepit::actors::bridge_token_env).empty());
    stop_and_check(r);
  }

  TEST_CASE("the runtime directory is 0700 and host.sock, the control socket and the "
            "workers' sockets are 0600") {
    auto cfg = small_config(1);
    cfg.control_socket = true;
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    CHECK(mode_of(r.runtime_dir()) == 0700);
    auto ws = serving_workers(r);
    REQUIRE(ws);
    REQUIRE(ws->size() == 1);
    std::vector<std::string> sockets{r.runtime_dir() + "/host.sock", r.control_socket(),
                                     r.runtime_dir() + "/" + ws->front().id + ".sock"};
    for (auto& path : sockets) {
      bool is_socket = false;
      CHECK_MSG(mode_of(path, &is_socket) == 0600, path);
      CHECK_MSG(is_socket, path);
    }
    stop_and_check(r);
  }
}
