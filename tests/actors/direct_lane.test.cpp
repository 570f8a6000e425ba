// The checkout table without Python: claiming capacity under contention, which
// slot a caller gets, and every case in which a blocking caller must leave the
// call to the pool (the request then reaches the pool untouched).
#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "actors/pool/direct_lane.hpp"
#include "adapters/errors.hpp"

using snakepit::execute_request;
using snakepit::json;
using snakepit::actors::direct_lane;
using snakepit::actors::lane_context;
using snakepit::actors::lane_slot;
using snakepit::actors::lane_slot_ptr;

namespace {

lane_slot_ptr make_slot(const std::string& id, uint32_t capacity) {
  // An empty client: any call through it would fail with `internal`; none is made.
  auto slot =
    std::make_shared<lane_slot>(id, 0, snakepit::adapters::connection_ptr{}, capacity);
  slot->offered = true;
  return slot;
}

struct fixture {
  std::vector<std::string> notified;
  std::mutex mtx;
  direct_lane lane{lane_context{"p",
                                nullptr,
                                snakepit::adapters::logger::null(),
                                nullptr,
                                false,
                                false,
                                100u << 20,
                                {},
                                {},
                                4,
                                nullptr},
                   [this](const std::string& id) {
                     std::lock_guard<std::mutex> g{mtx};
                     notified.push_back(id);
                   }};
};

execute_request request(const std::string& command, json args = json::object()) {
  return execute_request{command, std::move(args), {}};
}

} // namespace

TEST_SUITE("actors.direct_lane") {

  TEST_CASE("a full queue refuses callers on their thread, counted, with a correlation "
            "id, until the pool clears it") {
    fixture f;
    auto req = request("echo");
    CHECK_FALSE(f.lane.refuse_if_saturated(req));
    f.lane.set_saturated(true, 4);
    auto refused = f.lane.refuse_if_saturated(req);
    REQUIRE(refused);
    REQUIRE_FALSE(*refused);
    CHECK(refused->error() == snakepit::errc::pool_saturated);
    CHECK_FALSE(req.opts.correlation_id.empty());
    CHECK(snakepit::correlation_id_of(refused->error()) == req.opts.correlation_id);
    auto c = f.lane.counters();
    CHECK(c.saturations == 1);
    CHECK(c.errors == 1);
    CHECK(c.requests == 0);
    // Invalid input is the pool's to refuse (invalid_argument names the rule).
    auto bad = request(std::string("bad\x01name"));
    CHECK_FALSE(f.lane.refuse_if_saturated(bad));
    f.lane.set_saturated(false, 3);
    CHECK_FALSE(f.lane.refuse_if_saturated(req));
    CHECK(f.lane.counters().saturations == 1);
  }

  TEST_CASE(
    "concurrent claims never exceed a slot's capacity and every claim is given back") {
    auto slot = make_slot("w", 3);
    std::atomic<int> inside{0}, most{0}, claims{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
      threads.emplace_back([&] {
        for (int i = 0; i < 20000; ++i) {
          if (!slot->try_claim())
            continue;
          ++claims;
          auto now = ++inside;
          for (auto seen = most.load();
               now > seen && !most.compare_exchange_weak(seen, now);) {
          }
          --inside;
          slot->release();
        }
      });
    for (auto& t : threads)
      t.join();
    CHECK(most.load() <= 3);
    CHECK(most.load() >= 1);
    CHECK(claims.load() > 0);
    CHECK(slot->load.load() == 0);
  }

  TEST_CASE("a closed table, a full or withdrawn worker, or an unsuitable call leave the "
            "call to the pool") {
    fixture f;
    auto a = make_slot("a", 1);
    f.lane.publish({a});
    auto req = request("ping");
    SUBCASE("closed") {
      CHECK_FALSE(f.lane.execute(req, std::chrono::milliseconds{100}));
    }
    f.lane.set_open(true);
    SUBCASE("full") {
      REQUIRE(a->try_claim());
      CHECK_FALSE(f.lane.execute(req, std::chrono::milliseconds{100}));
      a->release();
    }
    SUBCASE("withdrawn or dead") {
      a->offered = false;
      CHECK_FALSE(f.lane.execute(req, std::chrono::milliseconds{100}));
      a->offered = true;
      a->dead = true;
      CHECK_FALSE(f.lane.execute(req, std::chrono::milliseconds{100}));
    }
    SUBCASE("calls only the pool can run") {
      auto idem = request("ping");
      idem.opts.idempotent = true; // retried on another worker if this one crashes
      CHECK_FALSE(f.lane.execute(idem, std::chrono::milliseconds{100}));
      auto bin = request("ping");
      bin.opts.binary_args["blob"] = "xyz"; // measured against max_message_bytes
      CHECK_FALSE(f.lane.execute(bin, std::chrono::milliseconds{100}));
      json many = json::object();
      for (int i = 0; i < 9; ++i)
        many["k" + std::to_string(i)] = i;
      auto big = request("ping", many);
      CHECK_FALSE(f.lane.execute(big, std::chrono::milliseconds{100}));
      auto session = request("ping");
      session.opts.session_id = "s1"; // not bound yet: the pool binds it
      CHECK_FALSE(f.lane.execute(session, std::chrono::milliseconds{100}));
      f.lane.set_tools({"ping"}, false);
      auto unknown = request("nope");
      CHECK_FALSE(f.lane.execute(unknown, std::chrono::milliseconds{100}));
      // Nothing was consumed: the pool gets the request as the caller made it.
      CHECK(unknown.command == "nope");
      CHECK(unknown.opts.correlation_id.empty());
      CHECK(big.args.size() == 9);
    }
    CHECK(a->load.load() == 0);
    CHECK(a->requests.load() == 0);
    CHECK(f.lane.counters().requests == 0);
  }

  TEST_CASE("a caller gets the least-loaded slot, the most recently used among equals") {
    fixture f;
    auto a = make_slot("a", 2);
    auto b = make_slot("b", 2);
    a->last_used = 5;
    b->last_used = 9;
    f.lane.publish({a, b});
    f.lane.set_open(true);
    // The slots have no channel: each call fails at once (internal), after the claim.
    auto req = request("ping");
    auto res = f.lane.execute(req, std::chrono::milliseconds{100});
    REQUIRE(res);
    CHECK_FALSE(*res);
    CHECK(snakepit::correlation_id_of(res->error()) == req.opts.correlation_id);
    CHECK(b->requests.load() == 1); // equal load: the warmer worker
    CHECK(a->requests.load() == 0);
    REQUIRE(b->try_claim()); // b now runs one call
    auto again = request("ping");
    REQUIRE(f.lane.execute(again, std::chrono::milliseconds{100}));
    CHECK(a->requests.load() == 1); // the less loaded one
    b->release();
    CHECK(a->load.load() == 0);
    CHECK(b->load.load() == 0);
    auto c = f.lane.counters();
    CHECK(c.requests == 2);
    CHECK(c.errors == 2);
    std::lock_guard<std::mutex> g{f.mtx};
    CHECK(f.notified.empty()); // open table, offered slots: the pool need not hear
  }

  TEST_CASE("a caller that frees a slot while the table is closed tells the pool") {
    fixture f;
    auto a = make_slot("a", 1);
    a->request_limit = 1;
    f.lane.publish({a});
    f.lane.set_open(true);
    auto req = request("ping");
    REQUIRE(f.lane.execute(req, std::chrono::milliseconds{100}));
    std::lock_guard<std::mutex> g{f.mtx};
    // The worker reached its request limit: the pool must hear to recycle it.
    CHECK(f.notified == std::vector<std::string>{"a"});
  }

  TEST_CASE("a retired table takes nothing") {
    fixture f;
    f.lane.publish({make_slot("a", 1)});
    f.lane.set_open(true);
    f.lane.retire();
    CHECK_FALSE(f.lane.is_open());
    auto req = request("ping");
    CHECK_FALSE(f.lane.execute(req, std::chrono::milliseconds{100}));
    f.lane.set_open(true); // even if opened again by mistake: no slots are left
    CHECK_FALSE(f.lane.execute(req, std::chrono::milliseconds{100}));
  }

  TEST_CASE("the lane table finds a pool's lane and forgets only the lane it was given") {
    snakepit::actors::lane_table table;
    fixture f1, f2;
    std::shared_ptr<direct_lane> l1(&f1.lane, [](direct_lane*) {});
    std::shared_ptr<direct_lane> l2(&f2.lane, [](direct_lane*) {});
    table.put("p", l1);
    CHECK(table.get("p") == l1);
    table.put("p", l2);    // a restarted pool replaces its predecessor
    table.remove("p", l1); // the predecessor's cleanup must not remove the successor
    CHECK(table.get("p") == l2);
    table.remove("p", l2);
    CHECK(table.get("p") == nullptr);
    CHECK(table.get("other") == nullptr);
  }

} // TEST_SUITE
