// The pool's scenarios against every kind of worker (docs/workers.md): the bundled
// Python bridge over gRPC and over stdio, and the Node.js bridge over stdio; then
// what only the stdio kind can get wrong (frames, ids, output, early exits), with a
// worker that breaks the protocol on request
// (tests/support/python/rogue_stdio_bridge.py).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <mutex>
#include <set>

#include "harness.hpp"
#include "tests/support/worker_kinds.hpp"

using namespace std::chrono_literals;
using snakepit::describe;
using snakepit::errc;
using snakepit::json;
using namespace snakepit::testing;

namespace {

snakepit::config kind_config(const worker_kind_case& k, size_t workers) {
  auto cfg = small_config(workers);
  use_kind(cfg.pools[0], k);
  return cfg;
}

/// A pool of the rogue stdio bridge (`mode` as its first argument, if any).
snakepit::config rogue_config(size_t workers, const std::string& mode = {}) {
  auto cfg = small_config(workers);
  auto& p = cfg.pools[0];
  p.kind = snakepit::worker_kind::stdio;
  p.command = {"/usr/bin/python3", test_adapters_dir() + "/rogue_stdio_bridge.py"};
  if (!mode.empty())
    p.command.push_back(mode);
  return cfg;
}

int only_pid(snakepit::runtime& r) {
  auto ws = serving_workers(r);
  return ws && ws->size() == 1 ? ws->front().pid : 0;
}

/// Waits until the single worker runs as a process other than `old_pid`.
bool replaced(snakepit::runtime& r, int old_pid) {
  return eventually(
    [&] {
      auto pid = only_pid(r);
      return pid != 0 && pid != old_pid;
    },
    10s);
}

} // namespace

TEST_SUITE("integration.worker_kinds") {

  TEST_CASE("every kind: ping, echo and add round trip, an exception is a typed "
            "tool_error, an unknown tool is unknown_tool") {
    for (auto& k : all_worker_kinds()) {
      SUBCASE(k.name.c_str()) {
        auto rt = snakepit::runtime::start(kind_config(k, 2));
        REQUIRE_OK(rt);
        auto& r = **rt;
        auto pong = r.execute("ping");
        REQUIRE_OK(pong);
        if (k.ping_is_pong)
          CHECK(pong->result == "pong");
        json payload = {
          {"s", "héllo"}, {"n", 42}, {"list", {1, 2, 3}}, {"nested", {{"ok", true}}}};
        auto echo = r.execute("echo", payload);
        REQUIRE_OK(echo);
        CHECK(echo->result == payload);
        CHECK_FALSE(echo->worker_id.empty());
        auto sum = r.execute("add", {{"a", 2}, {"b", 40}});
        REQUIRE_OK(sum);
        CHECK(sum->result.get<double>() == doctest::Approx(42.0));
        auto bad = r.execute("fail", {{"message", "bad input 42"}});
        REQUIRE_FALSE(bad);
        CHECK_ERROR(bad, errc::tool_error);
        auto py = snakepit::python_error_of(bad.error());
        REQUIRE(py);
        CHECK(py->type == "ValueError");
        CHECK(py->message == "bad input 42");
        CHECK_FALSE(py->traceback.empty());
        auto unknown = r.execute("no_such_tool");
        REQUIRE_FALSE(unknown);
        CHECK_ERROR(unknown, errc::unknown_tool);
        CHECK(r.execute("echo", {{"after", "errors"}}));
        stop_and_check(r);
      }
    }
  }

  TEST_CASE("every kind: two hundred concurrent calls are all answered, each with its "
            "own arguments") {
    for (auto& k : all_worker_kinds()) {
      SUBCASE(k.name.c_str()) {
        auto rt = snakepit::runtime::start(kind_config(k, 4));
        REQUIRE_OK(rt);
        auto& r = **rt;
        constexpr int n = 200;
        std::mutex mtx;
        std::vector<snakepit::execute_result> results(n, caf::make_error(errc::internal));
        std::atomic<int> done{0};
        for (int i = 0; i < n; ++i)
          r.execute_async("echo", {{"i", i}}, {}, [&, i](snakepit::execute_result res) {
            {
              std::lock_guard<std::mutex> g{mtx};
              results[static_cast<size_t>(i)] = std::move(res);
            }
            ++done;
          });
        REQUIRE(eventually([&] { return done.load() == n; }, 30s));
        std::set<std::string> workers;
        std::lock_guard<std::mutex> g{mtx};
        for (int i = 0; i < n; ++i) {
          auto& res = results[static_cast<size_t>(i)];
          REQUIRE_OK(res);
          CHECK(res->result["i"] == i);
          workers.insert(res->worker_id);
        }
        CHECK(workers.size() >= 2);
        stop_and_check(r);
      }
    }
  }

  TEST_CASE("every kind: kill -9 of a busy worker gives worker_crashed and a new "
            "process under the same id") {
    for (auto& k : all_worker_kinds()) {
      SUBCASE(k.name.c_str()) {
        auto rt = snakepit::runtime::start(kind_config(k, 1));
        REQUIRE_OK(rt);
        auto& r = **rt;
        auto before = serving_workers(r);
        REQUIRE(before);
        REQUIRE(before->size() == 1);
        auto old = before->front();
        std::promise<snakepit::execute_result> p;
        auto fut = p.get_future();
        r.execute_async("sleep", {{"ms", 10000}}, {}, [&p](snakepit::execute_result res) {
          p.set_value(std::move(res));
        });
        REQUIRE(eventually([&] {
          auto s = r.get_stats();
          return s && s->busy == 1;
        }));
        REQUIRE(::kill(old.pid, SIGKILL) == 0);
        REQUIRE(fut.wait_for(5s) == std::future_status::ready);
        auto res = fut.get();
        REQUIRE_FALSE(res);
        CHECK_ERROR(res, errc::worker_crashed);
        CHECK(replaced(r, old.pid));
        auto ws = serving_workers(r);
        REQUIRE(ws);
        REQUIRE(ws->size() == 1);
        CHECK(ws->front().id == old.id);
        CHECK(r.execute("echo", {{"x", 1}}));
        stop_and_check(r);
      }
    }
  }

  TEST_CASE("every kind: a deadline gives timeout, and a worker still busy after the "
            "cancel grace is restarted") {
    for (auto& k : all_worker_kinds()) {
      SUBCASE(k.name.c_str()) {
        auto cfg = kind_config(k, 1);
        cfg.pools[0].cancel_grace = 500ms;
        auto rt = snakepit::runtime::start(cfg);
        REQUIRE_OK(rt);
        auto& r = **rt;
        auto old_pid = only_pid(r);
        snakepit::execute_options opts;
        opts.timeout = 300ms;
        auto res = r.execute("sleep", {{"ms", 20000}}, opts);
        REQUIRE_FALSE(res);
        CHECK_ERROR(res, errc::timeout);
        CHECK(replaced(r, old_pid));
        CHECK(eventually([&] { return static_cast<bool>(r.execute("echo")); }, 10s));
        stop_and_check(r);
      }
    }
  }

  TEST_CASE("every kind: a full queue refuses with pool_saturated and a long wait ends "
            "in queue_timeout") {
    for (auto& k : all_worker_kinds()) {
      SUBCASE(k.name.c_str()) {
        auto cfg = kind_config(k, 1);
        cfg.pools[0].queue.max_size = 3;
        cfg.pools[0].queue.timeout = 150ms;
        auto rt = snakepit::runtime::start(cfg);
        REQUIRE_OK(rt);
        auto& r = **rt;
        constexpr int n = 8;
        std::mutex mtx;
        std::vector<snakepit::execute_result> results(n, caf::make_error(errc::internal));
        std::atomic<int> done{0};
        for (int i = 0; i < n; ++i)
          r.execute_async("sleep", {{"ms", 600}}, {},
                          [&, i](snakepit::execute_result res) {
                            {
                              std::lock_guard<std::mutex> g{mtx};
                              results[static_cast<size_t>(i)] = std::move(res);
                            }
                            ++done;
                          });
        REQUIRE(eventually([&] { return done.load() == n; }, 30s));
        int ok = 0, timeouts = 0, saturated = 0;
        std::lock_guard<std::mutex> g{mtx};
        for (auto& res : results) {
          if (res)
            ++ok;
          else if (is_error(res.error(), errc::queue_timeout))
            ++timeouts;
          else if (is_error(res.error(), errc::pool_saturated))
            ++saturated;
          else
            FAIL_CHECK("unexpected: " << explain(res.error()));
        }
        CHECK(ok >= 1);
        CHECK(timeouts >= 1);
        CHECK(saturated >= 1);
        stop_and_check(r);
      }
    }
  }

  TEST_CASE("every kind: a session's calls stay on its worker, and its id reaches the "
            "worker") {
    for (auto& k : all_worker_kinds()) {
      SUBCASE(k.name.c_str()) {
        auto rt = snakepit::runtime::start(kind_config(k, 3));
        REQUIRE_OK(rt);
        auto& r = **rt;
        auto sid = r.create_session("kinds-s1");
        REQUIRE_OK(sid);
        std::set<std::string> workers;
        for (int i = 0; i < 6; ++i) {
          auto res = r.execute_in_session(*sid, "echo", {{"i", i}});
          REQUIRE_OK(res);
          workers.insert(res->worker_id);
        }
        CHECK(workers.size() == 1);
        auto meta = r.execute_in_session(*sid, "request_metadata");
        REQUIRE_OK(meta);
        CHECK(meta->result.dump().find("kinds-s1") != std::string::npos);
        stop_and_check(r);
      }
    }
  }

  TEST_CASE("every kind: a stream delivers its chunks in order, then ends") {
    for (auto& k : all_worker_kinds()) {
      SUBCASE(k.name.c_str()) {
        auto rt = snakepit::runtime::start(kind_config(k, 1));
        REQUIRE_OK(rt);
        auto& r = **rt;
        std::vector<json> chunks;
        int finals = 0;
        auto err = r.execute_stream("stream_progress", {{"steps", 4}},
                                    [&](const json& c, bool is_final) {
                                      if (!is_final)
                                        chunks.push_back(c);
                                      finals += is_final ? 1 : 0;
                                      return true;
                                    });
        CHECK_OK(err);
        REQUIRE(chunks.size() == 4);
        CHECK(finals == 1);
        for (int i = 0; i < 4; ++i)
          CHECK(chunks[static_cast<size_t>(i)]["step"] == i + 1);
        // A consumer that stops early: the call returns none and the worker serves on.
        int seen = 0;
        err = r.execute_stream("stream_progress", {{"steps", 50}, {"delay_ms", 20}},
                               [&](const json&, bool) { return ++seen < 2; });
        CHECK_OK(err);
        CHECK(seen == 2);
        CHECK(eventually([&] { return static_cast<bool>(r.execute("echo")); }, 10s));
        stop_and_check(r);
      }
    }
  }

  TEST_CASE("numbers, text and bytes in a stream arrive alike over gRPC and stdio") {
    for (auto& k : all_worker_kinds()) {
      if (k.name == "stdio-node")
        continue; // stream_mixed is a tool of the Python showcase
      SUBCASE(k.name.c_str()) {
        auto rt = snakepit::runtime::start(kind_config(k, 1));
        REQUIRE_OK(rt);
        auto& r = **rt;
        std::vector<json> chunks;
        auto err =
          r.execute_stream("stream_mixed", json::object(), [&](const json& c, bool) {
            chunks.push_back(c);
            return true;
          });
        REQUIRE_OK(err);
        // (A str chunk is text: JSON text is decoded, other text stays raw bytes,
        // upstream's rule for gRPC chunks, which the stdio bridge follows.)
        std::vector<json> expected = {
          json{{"data", 7}}, json{{"raw_data_base64", "c2V2ZW4="}},
          json{{"raw_data_base64", "AAEC"}}, json{{"k", 1}}, json::object()};
        CHECK(chunks == expected);
        stop_and_check(r);
      }
    }
  }

  TEST_CASE("every kind: max_requests recycles a worker without failing a call") {
    for (auto& k : all_worker_kinds()) {
      SUBCASE(k.name.c_str()) {
        auto cfg = kind_config(k, 1);
        cfg.pools[0].recycling.max_requests = 5;
        cfg.pools[0].recycling.requests_jitter = 0;
        auto rt = snakepit::runtime::start(cfg);
        REQUIRE_OK(rt);
        auto& r = **rt;
        // The replacement starts while the old worker serves on: keep calling until
        // a call lands on it.
        std::set<int> pids;
        auto deadline = std::chrono::steady_clock::now() + 20s;
        while (pids.size() < 2 && std::chrono::steady_clock::now() < deadline) {
          auto res = r.execute("info");
          REQUIRE_OK(res);
          pids.insert(res->result.value("pid", 0));
          std::this_thread::sleep_for(20ms);
        }
        CHECK(pids.size() >= 2);
        // The recycle counts once the old worker has gone, which may be just after
        // the replacement served its first call.
        CHECK(eventually(
          [&] {
            auto stats = r.get_stats();
            return stats && stats->recycles >= 1;
          },
          5s));
        stop_and_check(r);
      }
    }
  }

  TEST_CASE("the stdio bridges keep what a tool prints out of the frame channel") {
    for (auto& k : all_worker_kinds()) {
      if (k.kind != snakepit::worker_kind::stdio)
        continue;
      SUBCASE(k.name.c_str()) {
        auto rt = snakepit::runtime::start(kind_config(k, 1));
        REQUIRE_OK(rt);
        auto& r = **rt;
        auto res =
          r.execute("print_stdout", {{"message", "to stdout, not into a frame"}});
        CHECK_OK(res);
        CHECK(r.execute("echo", {{"still", "framed"}}));
        auto stats = r.get_stats();
        REQUIRE(stats);
        CHECK(stats->worker_crashes == 0);
        stop_and_check(r);
      }
    }
  }
}

TEST_SUITE("integration.stdio_faults") {

  TEST_CASE("a malformed frame, an unknown id, an oversize length or a closed output "
            "fail the call with protocol_error and restart only that worker") {
    for (auto cmd : {"garbage", "unknown_id", "oversize", "raw_print", "close_stdout"}) {
      SUBCASE(cmd) {
        auto cfg = rogue_config(1);
        cfg.pools[0].max_message_bytes = 1u << 20;
        cfg.pools.push_back(cfg.pools[0]);
        cfg.pools[1].name = "bystander";
        auto rt = snakepit::runtime::start(cfg);
        REQUIRE_OK(rt);
        auto& r = **rt;
        auto bystander = serving_workers(r, "bystander");
        REQUIRE(bystander);
        REQUIRE(bystander->size() == 1);
        auto old_pid = only_pid(r);
        snakepit::execute_options opts;
        opts.timeout = 10s;
        auto res = r.execute(cmd, json::object(), opts);
        REQUIRE_FALSE(res);
        CHECK_ERROR(res, errc::protocol_error);
        CHECK_FALSE(snakepit::correlation_id_of(res.error()).empty());
        CHECK(replaced(r, old_pid));
        CHECK(eventually([&] { return static_cast<bool>(r.execute("echo")); }, 10s));
        auto after = serving_workers(r, "bystander");
        REQUIRE(after);
        REQUIRE(after->size() == 1);
        CHECK(after->front().pid == bystander->front().pid);
        stop_and_check(r);
      }
    }
  }

  TEST_CASE("the minimal bridge of docs/workers.md serves its tools, declares them and "
            "reports a tool's exception as tool_error") {
    auto cfg = small_config(1);
    auto& p = cfg.pools[0];
    p.kind = snakepit::worker_kind::stdio;
    p.command = {"/usr/bin/python3",
                 std::string{SNAKEPIT_TEST_REPO_DIR} + "/examples/minimal_bridge.py"};
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    json payload = {{"text", "héllo"}, {"n", 1}};
    auto echo = r.execute("echo", payload);
    REQUIRE_OK(echo);
    CHECK(echo->result == payload);
    auto sum = r.execute("add", {{"a", 2}, {"b", 40}});
    REQUIRE_OK(sum);
    CHECK(sum->result == 42);
    auto bad = r.execute("add", {{"a", 2}});
    REQUIRE_FALSE(bad);
    CHECK_ERROR(bad, errc::tool_error);
    auto py = snakepit::python_error_of(bad.error());
    REQUIRE(py);
    CHECK(py->type == "KeyError");
    auto unknown = r.execute("no_such_tool");
    CHECK_ERROR(unknown, errc::unknown_tool);
    auto streamed =
      r.execute_stream("echo", json::object(), [](const json&, bool) { return true; });
    CHECK_MSG(is_error(streamed, errc::invalid_argument), explain(streamed));
    stop_and_check(r);
  }

  TEST_CASE("a BridgeService program that is not our package runs as a gRPC worker by "
            "upstream's launch convention, and is restarted after kill -9") {
    auto cfg = small_config(1);
    auto& p = cfg.pools[0];
    p.launch = snakepit::launch_convention::upstream;
    p.command = {"/usr/bin/python3", test_adapters_dir() + "/foreign_bridge_server.py"};
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    json payload = {{"x", 1}, {"s", "two"}};
    auto echo = r.execute("echo", payload);
    REQUIRE_OK(echo);
    CHECK(echo->result == payload);
    auto who = r.execute("whoami");
    REQUIRE_OK(who);
    CHECK(who->result.value("foreign", false));
    auto pid = who->result.value("pid", 0);
    CHECK(pid == only_pid(r));
    auto unknown = r.execute("nope");
    CHECK_ERROR(unknown, errc::unknown_tool);
    REQUIRE(::kill(pid, SIGKILL) == 0);
    REQUIRE(replaced(r, pid));
    auto after = r.execute("echo", payload);
    REQUIRE_OK(after);
    CHECK(after->result == payload);
    stop_and_check(r);
  }

  TEST_CASE("launch = upstream is refused for the stdio kind, naming the key") {
    auto cfg = small_config(1);
    cfg.pools[0].kind = snakepit::worker_kind::stdio;
    cfg.pools[0].launch = snakepit::launch_convention::upstream;
    auto err = cfg.validate();
    REQUIRE(err);
    CHECK_MSG(describe(err).find("pools[default].launch") != std::string::npos,
              describe(err));
  }

  TEST_CASE("a stream to a worker that declared no streaming is invalid_argument at "
            "once") {
    auto rt = snakepit::runtime::start(rogue_config(1));
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto started = std::chrono::steady_clock::now();
    auto err =
      r.execute_stream("echo", json::object(), [](const json&, bool) { return true; });
    CHECK_MSG(is_error(err, errc::invalid_argument), explain(err));
    CHECK(std::chrono::steady_clock::now() - started < 5s);
    CHECK(r.execute("echo"));
    stop_and_check(r);
  }

  TEST_CASE("a worker that exits before it is ready fails the start with its exit "
            "status and its stderr") {
    auto cfg = rogue_config(1, "exit-before-ready");
    cfg.pools[0].circuit.threshold = 2;
    snakepit::start_options opts;
    opts.timeout = 20s;
    auto rt = snakepit::runtime::start(cfg, opts);
    REQUIRE_FALSE(rt);
    auto text = describe(rt.error());
    CHECK_MSG(text.find("exit code 3") != std::string::npos, text);
    CHECK_MSG(text.find("cannot load the model file") != std::string::npos, text);
  }

  TEST_CASE("a worker that ignores SIGTERM and EOF is killed at stop") {
    auto cfg = rogue_config(1, "ignore-signals");
    cfg.pools[0].graceful_shutdown_timeout = 500ms;
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto pid = only_pid(**rt);
    REQUIRE(pid != 0);
    stop_and_check(**rt);
    CHECK_FALSE(pid_alive(pid));
  }

  TEST_CASE("a bad worker choice fails before anything is spawned, naming the key") {
    auto cfg = small_config(1);
    cfg.pools[0].kind = snakepit::worker_kind::stdio;
    cfg.pools[0].command = {"no-such-program-anywhere"};
    auto err = cfg.validate();
    REQUIRE(err);
    CHECK_MSG(describe(err).find("pools[default].command") != std::string::npos,
              describe(err));
    cfg.pools[0].command = {"node", node_bridge()};
    cfg.pools[0].cwd = "/no/such/dir";
    err = cfg.validate();
    REQUIRE(err);
    CHECK_MSG(describe(err).find("pools[default].cwd") != std::string::npos,
              describe(err));
    cfg.pools[0].cwd.clear();
    cfg.pools[0].adapter_config = "[1, 2]";
    err = cfg.validate();
    REQUIRE(err);
    CHECK_MSG(describe(err).find("adapter_config") != std::string::npos, describe(err));
  }
}
