// session_store and tool_registry on CAF's test coordinator: virtual time for the
// TTL sweep, every reply checked deterministically (no threads, no sleeps). The tests
// talk to the actors only through the typed handles and the call wrappers.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include "actors/sessions/session_store.hpp"
#include "actors/sessions/tool_registry.hpp"
#include "adapters/errors.hpp"

using namespace std::chrono_literals;
using snakepit::errc;
namespace act = snakepit::actors;

namespace {

using meta_map = act::session_metadata;

struct det_fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scoped_actor self;
  caf::scheduler::test_coordinator& sched;

  static caf::actor_system_config& prepare(caf::actor_system_config& c) {
    c.set("scheduler.policy", caf::atom("testing"));
    c.set("logger.inline-output", true);
    snakepit::register_error_category(c);
    return c;
  }

  det_fixture()
    : sys(prepare(cfg)), self(sys, true),
      sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())) {
    sched.clock().current_time += std::chrono::hours(1);
  }

  ~det_fixture() { sched.run(); }

  /// Runs every actor, then takes the single-value reply of the request behind `h`
  /// (a call wrapper's response handle) or its error.
  template<class R, class Handle>
  caf::expected<R> reply(Handle h) {
    sched.run();
    caf::expected<R> out{caf::make_error(errc::internal, "no reply")};
    std::move(h).receive([&](R& x) { out = std::move(x); },
                         [&](caf::error& err) { out = std::move(err); });
    return out;
  }

  /// The same for a two-value reply.
  template<class R1, class R2, class Handle>
  caf::expected<std::tuple<R1, R2>> reply2(Handle h) {
    sched.run();
    caf::expected<std::tuple<R1, R2>> out{caf::make_error(errc::internal, "no reply")};
    std::move(h).receive([&](R1& x, R2& y) { out = std::make_tuple(x, y); },
                         [&](caf::error& err) { out = std::move(err); });
    return out;
  }

  caf::expected<std::string> create(const act::session_store_actor& store, std::string id,
                                    meta_map meta = {}) {
    return reply<std::string>(
      act::create_session(self, store, std::move(id), std::move(meta), caf::infinite));
  }

  bool exists(const act::session_store_actor& store, const std::string& id) {
    auto r = reply<bool>(act::session_exists(self, store, id, caf::infinite));
    return r && *r;
  }

  caf::expected<act::session_info> info(const act::session_store_actor& store,
                                        const std::string& id) {
    return reply<act::session_info>(
      act::get_session_info(self, store, id, caf::infinite));
  }
};

act::session_store_config small_store(std::vector<std::string>* expired = nullptr) {
  act::session_store_config cfg;
  cfg.ttl = 10s;
  cfg.sweep_interval = 1s;
  if (expired)
    cfg.on_expire = [expired](const std::string& id) { expired->push_back(id); };
  cfg.on_warning = [](size_t, size_t) {};
  return cfg;
}

} // namespace

TEST_SUITE("actors.session_store") {

  TEST_CASE_FIXTURE(det_fixture,
                    "a session not accessed for its TTL is removed by the sweep") {
    std::vector<std::string> expired;
    auto store = act::spawn_session_store(sys, small_store(&expired));
    sched.run();
    REQUIRE(create(store, "idle"));
    REQUIRE(create(store, "busy"));
    sched.advance_time(6s);
    sched.run();
    CHECK(info(store, "busy"));   // an access refreshes the TTL ...
    CHECK(exists(store, "idle")); // ... asking whether it exists does not
    sched.advance_time(5s);
    sched.run();
    // "idle" was last accessed 11 s ago, "busy" 5 s ago.
    CHECK(expired == std::vector<std::string>{"idle"});
    auto idle = info(store, "idle");
    REQUIRE_FALSE(idle);
    CHECK(idle.error() == errc::session_not_found);
    CHECK(exists(store, "busy"));
    sched.advance_time(11s);
    sched.run();
    CHECK_FALSE(exists(store, "busy"));
    CHECK(expired == std::vector<std::string>{"idle", "busy"});
    CHECK(*reply<uint64_t>(act::count_sessions(self, store, caf::infinite)) == 0);
    caf::anon_send_exit(store, caf::exit_reason::kill);
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "creating more than max_sessions fails with quota_exceeded and warns at 80%") {
    auto cfg = small_store();
    cfg.max_sessions = 5;
    std::vector<size_t> warnings;
    cfg.on_warning = [&](size_t n, size_t max) {
      warnings.push_back(n);
      CHECK(max == 5);
    };
    auto store = act::spawn_session_store(sys, cfg);
    sched.run();
    for (int i = 0; i < 5; ++i)
      REQUIRE(create(store, "s" + std::to_string(i)));
    CHECK(warnings == std::vector<size_t>{4});
    auto over = create(store, "s5");
    REQUIRE_FALSE(over);
    CHECK(over.error() == errc::quota_exceeded);
    // Touching or reading an existing session still works at the quota.
    CHECK(create(store, "s0"));
    auto put =
      reply<caf::ok_atom>(act::put_state(self, store, "s6", "k", "1", caf::infinite));
    REQUIRE_FALSE(put);
    CHECK(put.error() == errc::quota_exceeded);
    // Cleaning one up makes room again.
    CHECK(*reply<int32_t>(act::cleanup_session(self, store, "s1", caf::infinite)) == 1);
    CHECK(create(store, "s5"));
    caf::anon_send_exit(store, caf::exit_reason::kill);
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "malformed session ids are rejected with invalid_session_id") {
    auto store = act::spawn_session_store(sys, small_store());
    sched.run();
    for (std::string bad :
         {std::string{"a b"}, std::string{"../etc"}, std::string(129, 'x'),
          std::string{"caf\xc3\xa9"}, std::string{"semi;colon"}}) {
      auto r = create(store, bad);
      REQUIRE_FALSE(r);
      CHECK(r.error() == errc::invalid_session_id);
      auto incr = reply<std::string>(
        act::increment_state(self, store, bad, "k", "1", caf::infinite));
      REQUIRE_FALSE(incr);
      CHECK(incr.error() == errc::invalid_session_id);
    }
    CHECK(act::validate_session_id("") == errc::invalid_session_id);
    CHECK_FALSE(act::validate_session_id(std::string(128, 'x')));
    auto ok = create(store, "Az09_-");
    REQUIRE(ok);
    CHECK(*ok == "Az09_-");
    caf::anon_send_exit(store, caf::exit_reason::kill);
  }

  TEST_CASE_FIXTURE(det_fixture, "generated session ids are random, valid and distinct") {
    auto store = act::spawn_session_store(sys, small_store());
    sched.run();
    std::set<std::string> ids;
    for (int i = 0; i < 100; ++i) {
      auto id = create(store, "");
      REQUIRE(id);
      CHECK(id->rfind("sess_", 0) == 0);
      CHECK(id->size() == 5 + 32);
      CHECK_FALSE(act::validate_session_id(*id));
      ids.insert(*id);
    }
    CHECK(ids.size() == 100);
    caf::anon_send_exit(store, caf::exit_reason::kill);
  }

  TEST_CASE_FIXTURE(det_fixture, "touch records the last worker and counts requests") {
    auto store = act::spawn_session_store(sys, small_store());
    sched.run();
    REQUIRE(create(store, "s", meta_map{{"user", "ada"}}));
    CHECK(info(store, "s")->last_worker == "");
    act::touch_session(store, "s", "w1");
    act::touch_session(store, "s", "w2");
    // A touch upserts, like upstream's store_worker_session.
    act::touch_session(store, "t", "w3");
    sched.run();
    CHECK(info(store, "t")->last_worker == "w3");
    CHECK(info(store, "none").error() == errc::session_not_found);
    auto s = info(store, "s");
    REQUIRE(s);
    CHECK(s->last_worker == "w2");
    CHECK(s->request_count == 2);
    CHECK(s->metadata == meta_map{{"user", "ada"}});
    CHECK(s->ttl == 10s);
    CHECK(s->last_accessed >= s->created);
    caf::anon_send_exit(store, caf::exit_reason::kill);
  }

  TEST_CASE_FIXTURE(det_fixture, "state get, put, compare-and-set, delete and keys") {
    auto store = act::spawn_session_store(sys, small_store());
    sched.run();
    std::string s = "st";
    auto miss =
      reply2<bool, std::string>(act::get_state(self, store, s, "a", caf::infinite));
    REQUIRE(miss);
    CHECK_FALSE(std::get<0>(*miss));
    REQUIRE(reply<caf::ok_atom>(
      act::put_state(self, store, s, "a", R"({"x":[1,2]})", caf::infinite)));
    REQUIRE(reply<caf::ok_atom>(
      act::put_state(self, store, s, "b", "\"text\"", caf::infinite)));
    auto hit =
      reply2<bool, std::string>(act::get_state(self, store, s, "a", caf::infinite));
    REQUIRE(hit);
    CHECK(std::get<0>(*hit));
    CHECK(std::get<1>(*hit) == R"({"x":[1,2]})");
    auto keys =
      reply<std::vector<std::string>>(act::state_keys(self, store, s, caf::infinite));
    CHECK(*keys == std::vector<std::string>{"a", "b"});
    auto cas_bad = reply2<bool, std::string>(
      act::compare_and_set_state(self, store, s, "b", "\"other\"", "1", caf::infinite));
    REQUIRE(cas_bad);
    CHECK_FALSE(std::get<0>(*cas_bad));
    CHECK(std::get<1>(*cas_bad) == "\"text\"");
    auto cas_ok = reply2<bool, std::string>(
      act::compare_and_set_state(self, store, s, "b", "\"text\"", "2", caf::infinite));
    REQUIRE(cas_ok);
    CHECK(std::get<0>(*cas_ok));
    auto cas_new = reply2<bool, std::string>(
      act::compare_and_set_state(self, store, s, "c", "null", "3", caf::infinite));
    CHECK(std::get<0>(*cas_new));
    CHECK(*reply<bool>(act::delete_state(self, store, s, "a", caf::infinite)));
    CHECK_FALSE(*reply<bool>(act::delete_state(self, store, s, "a", caf::infinite)));
    keys =
      reply<std::vector<std::string>>(act::state_keys(self, store, s, caf::infinite));
    CHECK(*keys == std::vector<std::string>{"b", "c"});
    caf::anon_send_exit(store, caf::exit_reason::kill);
  }

  TEST_CASE_FIXTURE(
    det_fixture, "increment is atomic in the store: 1000 increments give exactly 1000") {
    auto store = act::spawn_session_store(sys, small_store());
    sched.run();
    // Interleave the increments of four "workers" in the mailbox before any runs.
    std::vector<std::unique_ptr<caf::scoped_actor>> senders;
    for (int w = 0; w < 4; ++w)
      senders.push_back(std::make_unique<caf::scoped_actor>(sys, true));
    for (int i = 0; i < 250; ++i)
      for (auto& snd : senders)
        act::increment_state(*snd, store, "c", "n", "1", caf::infinite);
    sched.run();
    auto v =
      reply2<bool, std::string>(act::get_state(self, store, "c", "n", caf::infinite));
    REQUIRE(v);
    CHECK(std::get<1>(*v) == "1000");
    auto f = reply<std::string>(
      act::increment_state(self, store, "c", "n", "0.5", caf::infinite));
    CHECK(*f == "1000.5");
    auto bad = reply<std::string>(
      act::increment_state(self, store, "c", "n", "\"x\"", caf::infinite));
    REQUIRE_FALSE(bad);
    CHECK(bad.error() == errc::invalid_argument);
    REQUIRE(reply<caf::ok_atom>(
      act::put_state(self, store, "c", "s", "\"text\"", caf::infinite)));
    bad =
      reply<std::string>(act::increment_state(self, store, "c", "s", "1", caf::infinite));
    REQUIRE_FALSE(bad);
    CHECK(bad.error() == errc::invalid_argument);
    // Past int64: refused (the sum was signed overflow, undefined behaviour), the
    // count kept.
    REQUIRE(reply<caf::ok_atom>(
      act::put_state(self, store, "c", "big", "9223372036854775806", caf::infinite)));
    auto last = reply<std::string>(
      act::increment_state(self, store, "c", "big", "1", caf::infinite));
    CHECK(*last == "9223372036854775807");
    for (auto by : {"1", "18446744073709551615"}) {
      CAPTURE(by);
      bad = reply<std::string>(
        act::increment_state(self, store, "c", "big", by, caf::infinite));
      REQUIRE_FALSE(bad);
      CHECK(bad.error() == errc::invalid_argument);
    }
    caf::anon_send_exit(store, caf::exit_reason::kill);
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "cleanup_session returns the state entries plus the session record") {
    auto store = act::spawn_session_store(sys, small_store());
    sched.run();
    for (auto key : {"a", "b", "c"})
      REQUIRE(reply<caf::ok_atom>(
        act::put_state(self, store, "x", key, "true", caf::infinite)));
    CHECK(*reply<int32_t>(act::cleanup_session(self, store, "x", caf::infinite)) == 4);
    CHECK(*reply<int32_t>(act::cleanup_session(self, store, "x", caf::infinite)) == 0);
    CHECK_FALSE(exists(store, "x"));
    caf::anon_send_exit(store, caf::exit_reason::kill);
  }

} // TEST_SUITE

TEST_SUITE("actors.tool_registry") {

  act::tool_info py_tool(std::string name) {
    act::tool_info t;
    t.name = std::move(name);
    t.description = "a python tool";
    act::param_spec p;
    p.name = "a";
    p.type = "float";
    p.required = true;
    t.parameters.push_back(p);
    return t;
  }

  TEST_CASE("tool names follow upstream's rule") {
    CHECK_FALSE(act::validate_tool_name("a"));
    CHECK_FALSE(act::validate_tool_name("Tool_1.v2-x"));
    CHECK_FALSE(act::validate_tool_name(std::string(64, 'a')));
    CHECK(act::validate_tool_name("") == errc::invalid_argument);
    CHECK(act::validate_tool_name("_lead") == errc::invalid_argument);
    CHECK(act::validate_tool_name(".lead") == errc::invalid_argument);
    CHECK(act::validate_tool_name("has space") == errc::invalid_argument);
    CHECK(act::validate_tool_name("slash/x") == errc::invalid_argument);
    CHECK(act::validate_tool_name(std::string(65, 'a')) == errc::invalid_argument);
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "host tools register once, list with their exposure and run their callable") {
    auto reg = act::spawn_tool_registry(sys);
    sched.run();
    act::host_tool t;
    t.info.name = "double";
    t.info.description = "doubles x";
    t.info.exposed = true;
    t.fn = [](const nlohmann::json& args) { return args.at("x").get<int>() * 2; };
    REQUIRE(reply<caf::ok_atom>(act::register_host_tool(self, reg, t, caf::infinite)));
    auto dup = reply<caf::ok_atom>(act::register_host_tool(self, reg, t, caf::infinite));
    REQUIRE_FALSE(dup);
    CHECK(dup.error() == errc::invalid_argument);
    act::host_tool hidden = t;
    hidden.info.name = "hidden";
    hidden.info.exposed = false;
    REQUIRE(
      reply<caf::ok_atom>(act::register_host_tool(self, reg, hidden, caf::infinite)));
    act::host_tool bad = t;
    bad.info.name = "bad name";
    CHECK(reply<caf::ok_atom>(act::register_host_tool(self, reg, bad, caf::infinite))
            .error() == errc::invalid_argument);
    auto exposed = reply<std::vector<act::tool_info>>(
      act::exposed_tools(self, reg, "", caf::infinite));
    REQUIRE(exposed);
    REQUIRE(exposed->size() == 1);
    CHECK((*exposed)[0].name == "double");
    CHECK((*exposed)[0].kind == "host");
    auto got =
      reply<act::host_tool>(act::get_host_tool(self, reg, "double", caf::infinite));
    REQUIRE(got);
    CHECK(got->fn(nlohmann::json{{"x", 21}}) == 42);
    CHECK(reply<act::host_tool>(act::get_host_tool(self, reg, "nope", caf::infinite))
            .error() == errc::unknown_tool);
    caf::anon_send_exit(reg, caf::exit_reason::kill);
  }

  TEST_CASE_FIXTURE(
    det_fixture,
    "python tools merge workers, scope by session and clean up with a count") {
    auto reg = act::spawn_tool_registry(sys);
    sched.run();
    using tools = std::vector<act::tool_info>;
    using ids = act::tool_ids;
    auto register_python = [&](std::string session, std::string worker, tools batch) {
      return reply<ids>(act::register_python_tools(self, reg, std::move(session),
                                                   std::move(worker), std::move(batch),
                                                   caf::infinite));
    };
    auto list = [&](std::string session) {
      return reply<tools>(act::list_tools(self, reg, std::move(session), caf::infinite));
    };
    auto cleanup = [&](std::string session) {
      return reply<int32_t>(
        act::cleanup_session_tools(self, reg, std::move(session), caf::infinite));
    };
    auto r1 = register_python("", "w1", tools{py_tool("add"), py_tool("echo")});
    REQUIRE(r1);
    CHECK(r1->at("add") == "*:add");
    REQUIRE(register_python("", "w2", tools{py_tool("add"), py_tool("echo")}));
    auto r3 = register_python("s1", "w1", tools{py_tool("mine"), py_tool("yours")});
    REQUIRE(r3);
    CHECK(r3->at("mine") == "s1:mine");
    auto bad = register_python("", "w1", tools{py_tool("ok"), py_tool("-bad")});
    REQUIRE_FALSE(bad);
    CHECK(bad.error() == errc::invalid_argument);
    auto global = list("");
    REQUIRE(global);
    REQUIRE(global->size() == 2); // the rejected batch added nothing
    CHECK((*global)[0].name == "add");
    CHECK((*global)[0].kind == "python");
    CHECK((*global)[0].workers == std::vector<std::string>{"w1", "w2"});
    CHECK((*global)[0].parameters.size() == 1);
    auto in_s1 = list("s1");
    CHECK(in_s1->size() == 4);
    CHECK(*cleanup("s1") == 2);
    CHECK(*cleanup("s1") == 0);
    CHECK(list("s1")->size() == 2);
    caf::anon_send_exit(reg, caf::exit_reason::kill);
  }

  TEST_CASE_FIXTURE(det_fixture,
                    "a worker that is gone leaves every tool's list, and restarts do not "
                    "grow it") {
    auto reg = act::spawn_tool_registry(sys);
    sched.run();
    using tools = std::vector<act::tool_info>;
    auto register_python = [&](std::string session, std::string worker) {
      return reply<act::tool_ids>(act::register_python_tools(
        self, reg, std::move(session), std::move(worker),
        tools{py_tool("add"), py_tool("echo")}, caf::infinite));
    };
    auto workers_of = [&](std::string session, const std::string& name) {
      auto all = reply<tools>(act::list_tools(self, reg, session, caf::infinite));
      REQUIRE(all);
      for (auto& t : *all)
        if (t.name == name && t.session_id == session)
          return t.workers;
      FAIL("no tool " << name);
      return std::vector<std::string>{};
    };
    REQUIRE(register_python("", "w1"));
    REQUIRE(register_python("", "w2"));
    REQUIRE(register_python("s1", "w1"));
    act::forget_worker_tools(reg, "w1");
    sched.run();
    CHECK(workers_of("", "add") == std::vector<std::string>{"w2"});
    CHECK(workers_of("s1", "echo").empty());
    act::forget_worker_tools(reg, "w2");
    sched.run();
    // The tools stay listed without workers until a worker registers them again.
    CHECK(workers_of("", "add").empty());
    // A thousand worker starts, each gone before the next: the list stays short.
    for (int i = 0; i < 1000; ++i) {
      REQUIRE(register_python("", "p_worker_" + std::to_string(i)));
      act::forget_worker_tools(reg, "p_worker_" + std::to_string(i));
      sched.run();
    }
    REQUIRE(register_python("", "p_worker_last"));
    CHECK(workers_of("", "echo") == std::vector<std::string>{"p_worker_last"});
    caf::anon_send_exit(reg, caf::exit_reason::kill);
  }

} // TEST_SUITE
