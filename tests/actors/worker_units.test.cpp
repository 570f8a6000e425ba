// The worker's units without Python: readiness timing, the stop escalation, heartbeat
// miss counting, the command line, the telemetry relay's names; a call's reporting
// when it cannot reach a worker; and the actor's failed starts, driven by stand-in
// interpreters (sh scripts) that write a startup error, exit, or never get ready.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/worker/detail/heartbeat.hpp"
#include "actors/worker/detail/process.hpp"
#include "actors/worker/detail/python_telemetry.hpp"
#include "actors/worker/request_trace.hpp"
#include "actors/worker/worker.hpp"
#include "actors/worker/worker_rpc.hpp"
#include "adapters/bridge_client.hpp"
#include "adapters/errors.hpp"
#include "supervision/atoms.hpp"

using namespace std::chrono_literals;
namespace sa = snakepit::actors;
namespace wd = snakepit::actors::detail;
using snakepit::errc;
using snakepit::errc_of;

namespace {

/// A private directory removed with its files.
struct temp_dir {
  std::string path;
  temp_dir() {
    char tmpl[] = "/tmp/snakepit-worker-test-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~temp_dir() {
    std::string cmd = "rm -rf '" + path + "'";
    CHECK(std::system(cmd.c_str()) == 0);
  }
};

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out{path};
  out << text;
}

bool has_arg_pair(const std::vector<std::string>& args, const std::string& key,
                  const std::string& value) {
  auto i = std::find(args.begin(), args.end(), key);
  return i != args.end() && std::next(i) != args.end() && *std::next(i) == value;
}

std::optional<std::string> env_of(const snakepit::adapters::process_spec& spec,
                                  const std::string& key) {
  for (auto& [k, v] : spec.env)
    if (k == key)
      return v;
  return std::nullopt;
}

sa::worker_args args_for(const std::string& runtime_dir) {
  auto env = std::make_shared<sa::worker_env>();
  env->python = "/usr/bin/python3";
  env->python_path = "/opt/snakepit/python";
  env->run_id = "abc1234";
  env->runtime_dir = runtime_dir;
  sa::worker_args args;
  args.id = "w1";
  args.pool_cfg.name = "p";
  args.env = env;
  return args;
}

} // namespace

TEST_SUITE("actors.worker.units") {

  TEST_CASE("ready-file polls back off from 2 ms to a 10 ms period") {
    wd::worker_readiness r;
    std::vector<long> seen;
    for (int i = 0; i < 6; ++i)
      seen.push_back(r.next_poll().count());
    CHECK(seen == std::vector<long>{2, 4, 8, 10, 10, 10});
  }

  TEST_CASE("the ready deadline passes at its time point") {
    auto t0 = caf::actor_clock::time_point{} + 1s;
    wd::worker_readiness r{t0};
    CHECK_FALSE(r.expired(t0 - 1ms));
    CHECK(r.expired(t0));
    CHECK(r.expired(t0 + 1ms));
  }

  TEST_CASE(
    "a failed readiness Ping is retried after 100, 200, 400, 500 ms, then given up") {
    wd::worker_readiness r;
    std::vector<long> delays;
    for (int i = 0; i < 5; ++i) {
      r.pinging();
      if (auto d = r.retry_after_failed_ping())
        delays.push_back(d->count());
      else
        delays.push_back(-1);
    }
    CHECK(delays == std::vector<long>{100, 200, 400, 500, -1});
  }

  TEST_CASE("only the first stop request counts and keeps its reason") {
    wd::stop_escalation s;
    CHECK_FALSE(s.begun());
    CHECK(s.begin(caf::exit_reason::user_shutdown));
    CHECK(s.begun());
    CHECK_FALSE(s.begin(caf::exit_reason::kill));
    CHECK(s.reason() == caf::exit_reason::user_shutdown);
  }

  TEST_CASE(
    "the grace timer kills only in its own generation and only a running process") {
    wd::stop_escalation s;
    CHECK_FALSE(s.kill_due(0, true)); // no stop began
    REQUIRE(s.begin(caf::exit_reason::user_shutdown));
    auto first = s.arm();
    CHECK(s.kill_due(first, true));
    CHECK_FALSE(s.kill_due(first, false)); // already gone: nothing to kill
    auto second = s.arm();
    CHECK_FALSE(s.kill_due(first, true)); // a stale timer
    CHECK(s.kill_due(second, true));
  }

  TEST_CASE("heartbeat misses count in a row and an answer starts over") {
    wd::heartbeat_counter hb{wd::heartbeat_settings{true, 10ms, 20ms, 3, true}};
    using v = wd::heartbeat_counter::verdict;
    auto miss = caf::make_error(errc::timeout);
    CHECK(hb.on_result(miss) == v::missed);
    CHECK(hb.on_result(miss) == v::missed);
    CHECK(hb.missed() == 2);
    CHECK(hb.on_result(caf::error{}) == v::healthy);
    CHECK(hb.missed() == 0);
    CHECK(hb.on_result(miss) == v::missed);
    CHECK(hb.on_result(miss) == v::missed);
    CHECK(hb.on_result(miss) == v::dead);
    CHECK(hb.missed() == 3);
  }

  TEST_CASE("an independent heartbeat only reports misses, it never kills") {
    wd::heartbeat_counter hb{wd::heartbeat_settings{true, 10ms, 20ms, 2, false}};
    auto miss = caf::make_error(errc::unavailable);
    for (int i = 0; i < 5; ++i)
      CHECK(hb.on_result(miss) == wd::heartbeat_counter::verdict::missed);
    CHECK(hb.missed() == 5);
  }

  TEST_CASE("one heartbeat ping is in flight between its send and its answer") {
    wd::heartbeat_counter hb;
    CHECK_FALSE(hb.pending());
    hb.sent();
    CHECK(hb.pending());
    hb.on_result(caf::error{});
    CHECK_FALSE(hb.pending());
  }

  TEST_CASE("the heartbeat follows the pool's settings") {
    snakepit::pool_config cfg;
    cfg.heartbeat.enabled = false;
    cfg.heartbeat.interval = 150ms;
    cfg.heartbeat.timeout = 300ms;
    cfg.heartbeat.max_missed = 7;
    cfg.heartbeat.dependent = false;
    auto s = wd::heartbeat_settings::of(cfg);
    CHECK_FALSE(s.enabled);
    CHECK(s.interval == 150ms);
    CHECK(s.timeout == 300ms);
    CHECK(s.max_missed == 7);
    CHECK_FALSE(s.dependent);
  }

  TEST_CASE("relayed Python events are named snakepit.python.<name> without doubling") {
    CHECK(wd::relay_name("tool.start") == "snakepit.python.tool.start");
    CHECK(wd::relay_name("python.tool.stop") == "snakepit.python.tool.stop");
    CHECK(wd::relay_name("pythonic") == "snakepit.python.pythonic");
  }

  TEST_CASE("Python logs at the host's level") {
    using lvl = snakepit::adapters::log_level;
    CHECK(std::string{wd::python_log_level(lvl::trace)} == "debug");
    CHECK(std::string{wd::python_log_level(lvl::debug)} == "debug");
    CHECK(std::string{wd::python_log_level(lvl::info)} == "info");
    CHECK(std::string{wd::python_log_level(lvl::warn)} == "warning");
    CHECK(std::string{wd::python_log_level(lvl::error)} == "error");
    CHECK(std::string{wd::python_log_level(lvl::critical)} == "critical");
    CHECK(std::string{wd::python_log_level(lvl::off)} == "none");
  }

  TEST_CASE(
    "the command line names the socket, ready file, id, run id and grace periods") {
    auto args = args_for("/run/sp");
    args.pool_cfg.adapter = "my.Adapter";
    args.pool_cfg.graceful_shutdown_timeout = 3000ms;
    args.pool_cfg.cancel_grace = 700ms;
    args.pool_cfg.adapter_args = {"--extra", "1"};
    auto spec = wd::make_process_spec(args, "/run/sp/w1.sock", "/run/sp/w1.ready");
    CHECK(spec.executable == "/usr/bin/python3");
    REQUIRE(spec.args.size() >= 2);
    CHECK(spec.args[0] == "-m");
    CHECK(spec.args[1] == "snakepit_bridge");
    CHECK(has_arg_pair(spec.args, "--adapter", "my.Adapter"));
    CHECK(has_arg_pair(spec.args, "--socket", "/run/sp/w1.sock"));
    CHECK(has_arg_pair(spec.args, "--ready-file", "/run/sp/w1.ready"));
    CHECK(has_arg_pair(spec.args, "--worker-id", "w1"));
    CHECK(has_arg_pair(spec.args, "--snakepit-run-id", "abc1234"));
    CHECK(
      has_arg_pair(spec.args, "--grace-period-ms", "2500")); // 500 ms before the host's
    CHECK(has_arg_pair(spec.args, "--cancel-grace-ms", "700"));
    CHECK(spec.args[spec.args.size() - 2] == "--extra"); // adapter arguments come last
    CHECK(std::find(spec.args.begin(), spec.args.end(), "--elixir-address") ==
          spec.args.end());
    CHECK(spec.new_process_group);
    CHECK(spec.pass_lifeline);
    CHECK(env_of(spec, "PYTHONPATH") ==
          std::optional<std::string>{"/opt/snakepit/python"});
    CHECK(env_of(spec, "SNAKEPIT_WORKER_ID") == std::optional<std::string>{"w1"});
    CHECK(env_of(spec, "SNAKEPIT_POOL") == std::optional<std::string>{"p"});
  }

  TEST_CASE("a short grace period still leaves Python 100 ms") {
    auto args = args_for("/run/sp");
    args.pool_cfg.graceful_shutdown_timeout = 200ms;
    auto spec = wd::make_process_spec(args, "s", "r");
    CHECK(has_arg_pair(spec.args, "--grace-period-ms", "100"));
  }

  TEST_CASE(
    "with the host's bridge the worker gets its address and the heartbeat flags") {
    auto args = args_for("/run/sp");
    std::const_pointer_cast<sa::worker_env>(args.env)->bridge_address =
      "unix:/run/sp/host.sock";
    args.pool_cfg.heartbeat.interval = 1500ms;
    args.pool_cfg.heartbeat.dependent = false;
    auto spec = wd::make_process_spec(args, "s", "r");
    CHECK(has_arg_pair(spec.args, "--elixir-address", "unix:/run/sp/host.sock"));
    CHECK(has_arg_pair(spec.args, "--heartbeat-enabled", "true"));
    CHECK(has_arg_pair(spec.args, "--heartbeat-interval-ms", "1500"));
    CHECK(std::find(spec.args.begin(), spec.args.end(), "--heartbeat-independent") !=
          spec.args.end());
  }

  TEST_CASE("the bridge token goes into the environment, never onto the command line, "
            "and no pool setting replaces it") {
    auto args = args_for("/run/sp");
    std::const_pointer_cast<sa::worker_env>(args.env)->bridge_address =
      "unix:/run/sp/host.sock";
    args.pool_cfg.adapter_env = {{"SNAKEPIT_BRIDGE_TOKEN", "from-the-pool"}};
    auto token = std::string(64, 'f');
    auto spec = wd::make_process_spec(args, "s", "r", token);
    CHECK(env_of(spec, "SNAKEPIT_BRIDGE_TOKEN") == std::optional<std::string>{token});
    CHECK(std::find(spec.args.begin(), spec.args.end(), token) == spec.args.end());
    auto none = wd::make_process_spec(args, "s", "r");
    CHECK(env_of(none, "SNAKEPIT_BRIDGE_TOKEN") ==
          std::optional<std::string>{"from-the-pool"});
  }

  TEST_CASE("a thread worker may use as many numeric threads as it runs requests") {
    auto args = args_for("/run/sp");
    args.pool_cfg.worker_profile = snakepit::worker_profile::thread;
    args.pool_cfg.threads_per_worker = 6;
    args.pool_cfg.adapter_env = {{"OMP_NUM_THREADS", "2"}};
    auto spec = wd::make_process_spec(args, "s", "r");
    CHECK(has_arg_pair(spec.args, "--max-workers", "6"));
    CHECK(env_of(spec, "OPENBLAS_NUM_THREADS") == std::optional<std::string>{"6"});
    CHECK(env_of(spec, "OMP_NUM_THREADS") ==
          std::optional<std::string>{"2"}); // adapter_env wins
  }

  TEST_CASE("a startup error file reads as type and message, or as its text") {
    temp_dir dir;
    auto ready = dir.path + "/w1.ready";
    CHECK(wd::startup_error_text(ready).empty());
    write_file(ready + ".error", R"({"type": "ModuleNotFoundError", "message": "no x"})"
                                 "\n");
    CHECK(wd::startup_error_text(ready) == "ModuleNotFoundError: no x");
    write_file(ready + ".error", "plain failure \n");
    CHECK(wd::startup_error_text(ready) == "plain failure");
  }

  TEST_CASE("a missing interpreter fails the process start with start_failed") {
    temp_dir dir;
    auto args = args_for(dir.path);
    std::const_pointer_cast<sa::worker_env>(args.env)->python = dir.path + "/no-python";
    wd::worker_process proc;
    auto err = proc.start(args, [](snakepit::adapters::process_exit) {});
    REQUIRE(err);
    CHECK(errc_of(err) == errc::start_failed);
    CHECK(snakepit::describe(err).find("worker w1") != std::string::npos);
    CHECK_FALSE(proc.running());
  }

} // TEST_SUITE

// -- A call's reporting, without a worker process. -----------------------------------

namespace {

struct rpc_fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  snakepit::adapters::grpc_runtime grpc{1};

  /// The scoped actor plays both the pool and the worker.
  sa::worker_channel channel(std::string target) {
    sa::worker_channel ch;
    ch.worker_id = "w1";
    ch.pool_name = "p";
    ch.pool = caf::actor_cast<caf::actor>(self);
    ch.worker = caf::actor_cast<sa::worker_actor>(self);
    ch.client =
      std::make_shared<snakepit::adapters::bridge_client>(grpc, std::move(target));
    return ch;
  }

  static snakepit::execute_request request() {
    snakepit::execute_request req;
    req.command = "ping";
    req.opts.correlation_id = "cid-1";
    return req;
  }
};

} // namespace

TEST_SUITE("actors.worker.rpc") {

  TEST_CASE_FIXTURE(rpc_fixture,
                    "a transport failure goes to the worker and leaves the slot alone") {
    temp_dir dir;
    auto slot = std::make_shared<sa::reply_slot>();
    std::atomic<int> answered{0};
    slot->fn = [&](snakepit::execute_result) { ++answered; };
    sa::issue_execute(channel("unix:" + dir.path + "/nobody.sock"), 42, request(), 5s,
                      slot);
    bool got = false;
    self->receive(
      [&](sa::rpc_failed_atom, uint64_t req_id, snakepit::execute_result& res) {
        got = true;
        CHECK(req_id == 42);
        REQUIRE_FALSE(res);
        CHECK(sa::transport_failure(res.error()));
        CHECK(snakepit::correlation_id_of(res.error()) == "cid-1");
      },
      caf::after(10s) >> [] { FAIL("no rpc_failed"); });
    CHECK(got);
    CHECK_FALSE(slot->claimed.load());
    CHECK(answered.load() == 0);
  }

  TEST_CASE_FIXTURE(
    rpc_fixture, "any other failure claims the slot, tells the pool, then the caller") {
    auto ch = channel("unix:/nowhere.sock");
    grpc.shutdown(); // calls now fail at once with shutting_down, not a transport failure
    auto slot = std::make_shared<sa::reply_slot>();
    std::optional<snakepit::execute_result> answer;
    slot->fn = [&](snakepit::execute_result res) { answer = std::move(res); };
    sa::issue_execute(ch, 7, request(), 5s, slot);
    CHECK(slot->claimed.load());
    REQUIRE(answer);
    REQUIRE_FALSE(*answer);
    CHECK(errc_of(answer->error()) == errc::shutting_down);
    CHECK(snakepit::correlation_id_of(answer->error()) == "cid-1");
    self->receive(
      [&](sa::result_atom, std::string& id, uint64_t req_id,
          snakepit::execute_result& res) {
        CHECK(id == "w1");
        CHECK(req_id == 7);
        REQUIRE_FALSE(res);
        CHECK(errc_of(res.error()) == errc::shutting_down);
      },
      caf::after(10s) >> [] { FAIL("no result"); });
  }

  TEST_CASE_FIXTURE(rpc_fixture, "without a slot the pool gets the whole outcome") {
    auto ch = channel("unix:/nowhere.sock");
    grpc.shutdown();
    sa::issue_execute(ch, 9, request(), 5s, nullptr);
    self->receive(
      [&](sa::result_atom, std::string&, uint64_t req_id, snakepit::execute_result& res) {
        CHECK(req_id == 9);
        REQUIRE_FALSE(res);
        CHECK(snakepit::correlation_id_of(res.error()) == "cid-1");
      },
      caf::after(10s) >> [] { FAIL("no result"); });
  }

  TEST_CASE_FIXTURE(rpc_fixture, "a slot the pool claimed first is not answered again") {
    auto ch = channel("unix:/nowhere.sock");
    grpc.shutdown();
    auto slot = std::make_shared<sa::reply_slot>();
    int answered = 0;
    slot->fn = [&](snakepit::execute_result) { ++answered; };
    REQUIRE(slot->claim()); // the pool failed the call when the worker went down
    sa::issue_execute(ch, 3, request(), 5s, slot);
    CHECK(answered == 0);
    self->receive([&](sa::result_atom, std::string&, uint64_t req_id,
                      snakepit::execute_result&) { CHECK(req_id == 3); },
                  caf::after(10s) >> [] { FAIL("no result"); });
  }

} // TEST_SUITE

// -- The worker actor's failed starts, with sh scripts standing in for Python. ---------

namespace {

/// A stand-in interpreter: finds `--ready-file` among its arguments, then runs `body`.
std::string fake_python(const temp_dir& dir, const std::string& body) {
  auto path = dir.path + "/python";
  write_file(path, "#!/bin/sh\n"
                   "while [ $# -gt 0 ]; do\n"
                   "  if [ \"$1\" = --ready-file ]; then ready=\"$2\"; fi\n"
                   "  shift\n"
                   "done\n" +
                     body + "\n");
  ::chmod(path.c_str(), 0755);
  return path;
}

struct start_fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  temp_dir dir;

  sa::worker_args args(const std::string& body,
                       std::chrono::milliseconds ready_timeout = 10000ms) {
    auto a = args_for(dir.path);
    auto env = std::const_pointer_cast<sa::worker_env>(a.env);
    env->python = fake_python(dir, body);
    env->grpc = std::make_shared<snakepit::adapters::grpc_runtime>(1);
    a.pool = caf::actor_cast<caf::actor>(self);
    a.pool_cfg.startup.ready_timeout = ready_timeout;
    return a;
  }

  /// Starts the worker with `self` as pool and as the one waiting for the start.
  caf::actor start(const sa::worker_args& a) {
    auto spec = sa::worker_spec(a);
    return spec.start(self.ptr(), snakepit::supervision::start_ack{self->address(), 7},
                      caf::make_message());
  }

  /// What the start ended with, and whether the pool heard of the failure.
  struct outcome {
    std::optional<caf::error> ack_error;
    std::optional<caf::error> pool_heard;
  };

  outcome await_failure(bool expect_pool) {
    outcome out;
    auto pending = expect_pool ? 2 : 1;
    for (int i = 0; i < pending; ++i)
      self->receive(
        [&](snakepit::supervision::ack_atom, uint64_t ticket, caf::error& err) {
          CHECK(ticket == 7);
          out.ack_error = err;
        },
        [&](snakepit::supervision::ack_atom, uint64_t, caf::actor&) { FAIL("started"); },
        [&](sa::worker_start_failed_atom, std::string& id, caf::error& err) {
          CHECK(id == "w1");
          out.pool_heard = err;
        },
        caf::after(15s) >> [] { FAIL("no start outcome"); });
    return out;
  }
};

} // namespace

TEST_SUITE("actors.worker.start") {

  TEST_CASE_FIXTURE(start_fixture,
                    "a startup error the process wrote fails the start with it") {
    auto a = args(
      R"(printf '{"type": "ValueError", "message": "boom"}' > "$ready.error"; sleep 30)");
    start(a);
    auto out = await_failure(true);
    REQUIRE(out.ack_error);
    CHECK(errc_of(*out.ack_error) == errc::start_failed);
    CHECK(snakepit::describe(*out.ack_error).find("worker w1: ValueError: boom") !=
          std::string::npos);
    REQUIRE(out.pool_heard);
    CHECK(*out.pool_heard == *out.ack_error);
    CHECK(a.env->processes->wait_empty(10s)); // killed and reaped
  }

  TEST_CASE_FIXTURE(
    start_fixture,
    "a process that exits during startup fails the start with its status") {
    auto a = args("exit 3");
    start(a);
    auto out = await_failure(true);
    REQUIRE(out.ack_error);
    CHECK(snakepit::describe(*out.ack_error)
            .find("the worker exited during startup (exit code 3)") != std::string::npos);
  }

  TEST_CASE_FIXTURE(start_fixture,
                    "a process that never gets ready is killed at the ready deadline") {
    auto a = args("sleep 30", 300ms);
    start(a);
    auto out = await_failure(true);
    REQUIRE(out.ack_error);
    CHECK(snakepit::describe(*out.ack_error).find("not ready within 300 ms") !=
          std::string::npos);
    CHECK(a.env->processes->wait_empty(10s));
  }

  TEST_CASE_FIXTURE(start_fixture,
                    "a stop during the start fails it without telling the pool") {
    auto a = args("sleep 30");
    auto worker = start(a);
    REQUIRE(worker);
    self->send_exit(worker, caf::exit_reason::user_shutdown);
    auto out = await_failure(false);
    REQUIRE(out.ack_error);
    CHECK(*out.ack_error == caf::exit_reason::user_shutdown);
    CHECK(a.env->processes->wait_empty(10s));
    // Nothing else arrives: the pool does not count this start as failed.
    self->receive(
      [](sa::worker_start_failed_atom, std::string&, caf::error&) { FAIL("told"); },
      caf::after(300ms) >> [] {});
  }

} // TEST_SUITE
