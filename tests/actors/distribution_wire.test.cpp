// The types that cross a node boundary: each survives CAF's binary serialization
// (what BASP sends) unchanged, converts from and to the local call types without
// losing a field, and a peer of another protocol version is refused by name.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>

#include "actors/distribution/wire.hpp"
#include "adapters/errors.hpp"

using namespace snakepit;
using namespace snakepit::distribution;

namespace {

struct wire_fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys;

  static caf::actor_system_config& prepared(caf::actor_system_config& c) {
    register_error_category(c);
    register_wire_types(c);
    c.set("scheduler.max-threads", 1);
    return c;
  }

  wire_fixture() : sys{prepared(cfg)} {}

  /// `x` serialized and read back, as the middleman does.
  template<class T>
  T round_trip(T x) {
    std::vector<char> buf;
    caf::binary_serializer sink{sys, buf};
    REQUIRE_FALSE(sink(x));
    T y;
    caf::binary_deserializer source{sys, buf};
    REQUIRE_FALSE(source(y));
    return y;
  }
};

execute_request sample_request() {
  execute_request req;
  req.command = "add";
  req.args = json{{"a", 1}, {"b", {1.5, "x", nullptr}}, {"nested", {{"k", true}}}};
  req.opts.pool = "gpu";
  req.opts.correlation_id = "cid-7";
  req.opts.binary_args = {{"blob", std::string("\0\xff\x01", 3)}};
  req.opts.session_id = "s-1";
  req.opts.affinity = "strict_queue";
  req.opts.idempotent = true;
  req.opts.metadata = {{"thread_sensitive", "true"}};
  return req;
}

} // namespace

TEST_SUITE("actors.distribution") {

  TEST_CASE_FIXTURE(wire_fixture, "a call survives serialization and comes back whole") {
    auto sent = to_remote(sample_request(), std::chrono::milliseconds{1234});
    auto got = from_remote(round_trip(sent));
    REQUIRE(got);
    auto want = sample_request();
    CHECK(got->command == want.command);
    CHECK(got->args == want.args);
    CHECK(got->opts.pool == want.opts.pool);
    CHECK(got->opts.correlation_id == want.opts.correlation_id);
    CHECK(got->opts.binary_args == want.opts.binary_args);
    CHECK(got->opts.session_id == want.opts.session_id);
    CHECK(got->opts.affinity == want.opts.affinity);
    CHECK(got->opts.idempotent);
    CHECK(got->opts.metadata == want.opts.metadata);
    CHECK(got->opts.timeout == std::chrono::milliseconds{1234}); // the budget left
  }

  TEST_CASE_FIXTURE(wire_fixture, "a reply and a typed error come back as they left") {
    execute_reply reply;
    reply.result = json{{"sum", 3}, {"list", {1, 2}}};
    reply.binary_result = std::string("\x00\x01", 2);
    reply.worker_id = "gpu_worker_2";
    reply.execution_time_ms = 17;
    auto back = from_remote(round_trip(to_remote(execute_result{reply})));
    REQUIRE(back);
    CHECK(back->result == reply.result);
    CHECK(back->binary_result == reply.binary_result);
    CHECK(back->worker_id == reply.worker_id);
    CHECK(back->execution_time_ms == 17);

    python_error py{"ValueError", "no", "Traceback ...", {"f.py:1"}, R"({"tool":"t"})"};
    auto err = with_correlation_id(make_tool_error(py), "cid-9");
    auto failed = from_remote(round_trip(to_remote(execute_result{err})));
    REQUIRE_FALSE(failed);
    CHECK(failed.error() == errc::tool_error);
    CHECK(correlation_id_of(failed.error()) == "cid-9");
    auto details = python_error_of(failed.error());
    REQUIRE(details);
    CHECK(*details == py);
    CHECK(describe(failed.error()) == describe(err));
  }

  TEST_CASE_FIXTURE(wire_fixture, "the handshake and the load reports serialize") {
    node_hello hello;
    hello.node = "127.0.0.1:7000";
    hello.version = "0.1.0";
    hello.pools = {{"default", 8, 3, 1}, {"gpu", 2, 2, 0}};
    auto back = round_trip(hello);
    CHECK(back.protocol == protocol_version);
    CHECK(back.node == hello.node);
    CHECK(back.version == hello.version);
    REQUIRE(back.pools.size() == 2);
    CHECK(back.pools[1].pool == "gpu");
    CHECK(back.pools[1].capacity == 2);
    CHECK(back.pools[0].load == 3);
    CHECK(back.pools[0].queued == 1);
    CHECK_FALSE(check_hello(back));
  }

  TEST_CASE_FIXTURE(wire_fixture, "a pool's figures and workers come back whole, "
                                  "histogram included") {
    pool_stats stats;
    stats.pool = "gpu";
    stats.workers = 3;
    stats.starting = 1;
    stats.available = 2;
    stats.busy = 1;
    stats.in_flight = 1;
    stats.capacity = 3;
    stats.requests = 40;
    stats.direct = 30;
    stats.completed = 37;
    stats.errors = 2;
    stats.queued = 5;
    stats.queue_depth = 1;
    stats.queue_timeouts = 1;
    stats.saturations = 4;
    stats.worker_crashes = 6;
    stats.restarts = 7;
    stats.recycles = 8;
    for (int64_t us : {90, 250, 250, 4000, 1200000})
      stats.latency.record(us);
    worker_info w;
    w.id = "gpu_worker_2";
    w.pid = 4242;
    w.state = "busy";
    w.requests = 17;
    w.uptime = std::chrono::milliseconds{65000};
    w.load = 2;
    w.capacity = 2;
    w.tainted = true;
    auto back = round_trip(to_remote(stats, {w}));
    auto got = stats_of(back);
    REQUIRE(got);
    CHECK(got->pool == "gpu");
    CHECK(got->workers == 3);
    CHECK(got->starting == 1);
    CHECK(got->completed == 37);
    CHECK(got->errors == 2);
    CHECK(got->recycles == 8);
    CHECK(got->restarts == 7);
    CHECK(got->saturations == 4);
    CHECK(got->queue_depth == 1);
    CHECK(got->latency.count() == 5);
    CHECK(got->latency.sum_us() == stats.latency.sum_us());
    CHECK(got->latency.min_us() == 90);
    CHECK(got->latency.max_us() == 1200000);
    for (double q : {0.0, 0.5, 0.9, 1.0})
      CHECK(got->latency.quantile_us(q) == stats.latency.quantile_us(q));
    CHECK(got->error_rate == doctest::Approx(2.0 / 39));
    auto ws = workers_of(back, "n7");
    REQUIRE(ws.size() == 1);
    CHECK(ws[0].id == "n7/gpu_worker_2");
    CHECK(ws[0].pid == 4242);
    CHECK(ws[0].state == "busy");
    CHECK(ws[0].requests == 17);
    CHECK(ws[0].uptime == std::chrono::milliseconds{65000});
    CHECK(ws[0].load == 2);
    CHECK(ws[0].capacity == 2);
    CHECK(ws[0].tainted);
    // Figures missing a counter are refused, not half read.
    back.counters.pop_back();
    auto short_one = stats_of(back);
    REQUIRE_FALSE(short_one);
    CHECK(short_one.error() == errc::protocol_error);
  }

  TEST_CASE("a peer of another protocol version is refused, naming both versions") {
    node_hello old;
    old.protocol = protocol_version + 1;
    old.node = "10.0.0.2:7000";
    old.version = "9.9.9";
    auto err = check_hello(old);
    REQUIRE(err);
    CHECK(err == errc::protocol_error);
    auto text = describe(err);
    CHECK(text.find("10.0.0.2:7000") != std::string::npos);
    CHECK(text.find(std::to_string(protocol_version + 1)) != std::string::npos);
    CHECK(text.find(std::to_string(protocol_version)) != std::string::npos);
  }

  TEST_CASE("a call a node cannot run is refused before it runs, with a typed error") {
    auto call = to_remote(sample_request(), std::chrono::milliseconds{100});
    call.args_json = "[1, 2]";
    auto not_object = from_remote(call);
    REQUIRE_FALSE(not_object);
    CHECK(not_object.error() == errc::invalid_argument);
    CHECK(correlation_id_of(not_object.error()) == "cid-7");
    call.args_json = std::string("{}\0{\"x\":1}", 10); // JSON then hidden bytes
    CHECK_FALSE(from_remote(call));
    call.args_json = "{}";
    call.budget_ms = 0; // its deadline passed on the way
    auto late = from_remote(call);
    REQUIRE_FALSE(late);
    CHECK(late.error() == errc::protocol_error);
    remote_result garbled;
    garbled.result_json = "{not json";
    garbled.worker_id = "w1";
    auto bad = from_remote(garbled);
    REQUIRE_FALSE(bad);
    CHECK(bad.error() == errc::protocol_error);
  }

} // TEST_SUITE
