// session_store and tool_registry on CAF's test coordinator: virtual time for the
// TTL sweep, every reply checked deterministically (no threads, no sleeps).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "caf/all.hpp"
#include "caf/scheduler/test_coordinator.hpp"

#include "actors/sessions/session_store.hpp"
#include "actors/sessions/tool_registry.hpp"
#include "adapters/errors.hpp"

using namespace std::chrono_literals;
using snakepit::errc;
namespace act = snakepit::actors;

namespace {

using meta_map = std::map<std::string, std::string>;

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
    : sys(prepare(cfg)),
      self(sys, true),
      sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())) {
    sched.clock().current_time += std::chrono::hours(1);
  }

  ~det_fixture() {
    sched.run();
  }

  /// Sends a request, runs every actor, returns the single-value reply or the error.
  template <class R, class... Ts>
  caf::expected<R> call(const caf::actor& hdl, Ts&&... xs) {
    auto h = self->request(hdl, caf::infinite, std::forward<Ts>(xs)...);
    sched.run();
    caf::expected<R> out{caf::make_error(errc::internal, "no reply")};
    std::move(h).receive([&](R& x) { out = std::move(x); },
                         [&](caf::error& err) { out = std::move(err); });
    return out;
  }

  /// The same for a two-value reply.
  template <class R1, class R2, class... Ts>
  caf::expected<std::tuple<R1, R2>> call2(const caf::actor& hdl, Ts&&... xs) {
    auto h = self->request(hdl, caf::infinite, std::forward<Ts>(xs)...);
    sched.run();
    caf::expected<std::tuple<R1, R2>> out{caf::make_error(errc::internal, "no reply")};
    std::move(h).receive([&](R1& x, R2& y) { out = std::make_tuple(x, y); },
                         [&](caf::error& err) { out = std::move(err); });
    return out;
  }

  caf::expected<std::string> create(const caf::actor& store, std::string id,
                                    meta_map meta = {}) {
    return call<std::string>(store, act::session_create_atom::value, std::move(id),
                             std::move(meta));
  }

  bool exists(const caf::actor& store, const std::string& id) {
    auto r = call<bool>(store, act::session_exists_atom::value, id);
    return r && *r;
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

TEST_CASE_FIXTURE(det_fixture, "a session not accessed for its TTL is removed by the sweep") {
  std::vector<std::string> expired;
  auto store = act::spawn_session_store(sys, small_store(&expired));
  sched.run();
  REQUIRE(create(store, "idle"));
  REQUIRE(create(store, "busy"));
  sched.advance_time(6s);
  sched.run();
  CHECK(exists(store, "busy")); // an access refreshes the TTL
  sched.advance_time(5s);
  sched.run();
  // "idle" was last accessed 11 s ago, "busy" 5 s ago.
  CHECK(expired == std::vector<std::string>{"idle"});
  auto info = call<act::session_info>(store, act::session_info_atom::value,
                                      std::string{"idle"});
  REQUIRE_FALSE(info);
  CHECK(info.error() == errc::session_not_found);
  CHECK(exists(store, "busy"));
  sched.advance_time(11s);
  sched.run();
  CHECK_FALSE(exists(store, "busy"));
  CHECK(expired == std::vector<std::string>{"idle", "busy"});
  CHECK(*call<uint64_t>(store, act::session_count_atom::value) == 0);
  caf::anon_send_exit(store, caf::exit_reason::kill);
}

TEST_CASE_FIXTURE(det_fixture, "creating more than max_sessions fails with quota_exceeded and warns at 80%") {
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
  auto put = call<caf::ok_atom>(store, act::state_put_atom::value, std::string{"s6"},
                                std::string{"k"}, std::string{"1"});
  REQUIRE_FALSE(put);
  CHECK(put.error() == errc::quota_exceeded);
  // Cleaning one up makes room again.
  CHECK(*call<int32_t>(store, act::session_cleanup_atom::value, std::string{"s1"}) == 1);
  CHECK(create(store, "s5"));
  caf::anon_send_exit(store, caf::exit_reason::kill);
}

TEST_CASE_FIXTURE(det_fixture, "malformed session ids are rejected with invalid_session_id") {
  auto store = act::spawn_session_store(sys, small_store());
  sched.run();
  for (std::string bad : {std::string{"a b"}, std::string{"../etc"}, std::string(129, 'x'),
                          std::string{"caf\xc3\xa9"}, std::string{"semi;colon"}}) {
    auto r = create(store, bad);
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::invalid_session_id);
    auto incr = call<std::string>(store, act::state_incr_atom::value, bad, std::string{"k"},
                                  std::string{"1"});
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
  CHECK(*call<std::string>(store, act::session_get_worker_atom::value, std::string{"s"})
        == "");
  caf::anon_send(store, act::session_touch_atom::value, std::string{"s"}, std::string{"w1"});
  caf::anon_send(store, act::session_touch_atom::value, std::string{"s"}, std::string{"w2"});
  // A touch upserts, like upstream's store_worker_session.
  caf::anon_send(store, act::session_touch_atom::value, std::string{"t"}, std::string{"w3"});
  sched.run();
  CHECK(*call<std::string>(store, act::session_get_worker_atom::value, std::string{"s"})
        == "w2");
  CHECK(*call<std::string>(store, act::session_get_worker_atom::value, std::string{"t"})
        == "w3");
  CHECK(*call<std::string>(store, act::session_get_worker_atom::value, std::string{"none"})
        == "");
  auto info = call<act::session_info>(store, act::session_info_atom::value, std::string{"s"});
  REQUIRE(info);
  CHECK(info->last_worker == "w2");
  CHECK(info->request_count == 2);
  CHECK(info->metadata == meta_map{{"user", "ada"}});
  CHECK(info->ttl == 10s);
  CHECK(info->last_accessed >= info->created);
  caf::anon_send_exit(store, caf::exit_reason::kill);
}

TEST_CASE_FIXTURE(det_fixture, "state get, put, compare-and-set, delete and keys") {
  auto store = act::spawn_session_store(sys, small_store());
  sched.run();
  std::string s = "st";
  auto miss = call2<bool, std::string>(store, act::state_get_atom::value, s, std::string{"a"});
  REQUIRE(miss);
  CHECK_FALSE(std::get<0>(*miss));
  REQUIRE(call<caf::ok_atom>(store, act::state_put_atom::value, s, std::string{"a"},
                             std::string{R"({"x":[1,2]})"}));
  REQUIRE(call<caf::ok_atom>(store, act::state_put_atom::value, s, std::string{"b"},
                             std::string{"\"text\""}));
  auto hit = call2<bool, std::string>(store, act::state_get_atom::value, s, std::string{"a"});
  REQUIRE(hit);
  CHECK(std::get<0>(*hit));
  CHECK(std::get<1>(*hit) == R"({"x":[1,2]})");
  auto keys = call<std::vector<std::string>>(store, act::state_keys_atom::value, s);
  CHECK(*keys == std::vector<std::string>{"a", "b"});
  auto cas_bad = call2<bool, std::string>(store, act::state_cas_atom::value, s,
                                          std::string{"b"}, std::string{"\"other\""},
                                          std::string{"1"});
  REQUIRE(cas_bad);
  CHECK_FALSE(std::get<0>(*cas_bad));
  CHECK(std::get<1>(*cas_bad) == "\"text\"");
  auto cas_ok = call2<bool, std::string>(store, act::state_cas_atom::value, s,
                                         std::string{"b"}, std::string{"\"text\""},
                                         std::string{"2"});
  REQUIRE(cas_ok);
  CHECK(std::get<0>(*cas_ok));
  auto cas_new = call2<bool, std::string>(store, act::state_cas_atom::value, s,
                                          std::string{"c"}, std::string{"null"},
                                          std::string{"3"});
  CHECK(std::get<0>(*cas_new));
  CHECK(*call<bool>(store, act::state_delete_atom::value, s, std::string{"a"}));
  CHECK_FALSE(*call<bool>(store, act::state_delete_atom::value, s, std::string{"a"}));
  keys = call<std::vector<std::string>>(store, act::state_keys_atom::value, s);
  CHECK(*keys == std::vector<std::string>{"b", "c"});
  caf::anon_send_exit(store, caf::exit_reason::kill);
}

TEST_CASE_FIXTURE(det_fixture, "increment is atomic in the store: 1000 increments give exactly 1000") {
  auto store = act::spawn_session_store(sys, small_store());
  sched.run();
  // Interleave the increments of four "workers" in the mailbox before any runs.
  std::vector<std::unique_ptr<caf::scoped_actor>> senders;
  for (int w = 0; w < 4; ++w)
    senders.push_back(std::make_unique<caf::scoped_actor>(sys, true));
  for (int i = 0; i < 250; ++i)
    for (auto& snd : senders)
      (*snd)->send(store, act::state_incr_atom::value, std::string{"c"}, std::string{"n"},
                std::string{"1"});
  sched.run();
  auto v = call2<bool, std::string>(store, act::state_get_atom::value, std::string{"c"},
                                    std::string{"n"});
  REQUIRE(v);
  CHECK(std::get<1>(*v) == "1000");
  auto f = call<std::string>(store, act::state_incr_atom::value, std::string{"c"},
                             std::string{"n"}, std::string{"0.5"});
  CHECK(*f == "1000.5");
  auto bad = call<std::string>(store, act::state_incr_atom::value, std::string{"c"},
                               std::string{"n"}, std::string{"\"x\""});
  REQUIRE_FALSE(bad);
  CHECK(bad.error() == errc::invalid_argument);
  REQUIRE(call<caf::ok_atom>(store, act::state_put_atom::value, std::string{"c"},
                             std::string{"s"}, std::string{"\"text\""}));
  bad = call<std::string>(store, act::state_incr_atom::value, std::string{"c"},
                          std::string{"s"}, std::string{"1"});
  REQUIRE_FALSE(bad);
  CHECK(bad.error() == errc::invalid_argument);
  caf::anon_send_exit(store, caf::exit_reason::kill);
}

TEST_CASE_FIXTURE(det_fixture, "cleanup_session returns the state entries plus the session record") {
  auto store = act::spawn_session_store(sys, small_store());
  sched.run();
  for (auto key : {"a", "b", "c"})
    REQUIRE(call<caf::ok_atom>(store, act::state_put_atom::value, std::string{"x"},
                               std::string{key}, std::string{"true"}));
  CHECK(*call<int32_t>(store, act::session_cleanup_atom::value, std::string{"x"}) == 4);
  CHECK(*call<int32_t>(store, act::session_cleanup_atom::value, std::string{"x"}) == 0);
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

TEST_CASE_FIXTURE(det_fixture, "host tools register once, list with their exposure and run their callable") {
  auto reg = act::spawn_tool_registry(sys);
  sched.run();
  act::host_tool t;
  t.info.name = "double";
  t.info.description = "doubles x";
  t.info.exposed = true;
  t.fn = [](const nlohmann::json& args) { return args.at("x").get<int>() * 2; };
  REQUIRE(call<caf::ok_atom>(reg, act::tool_register_host_atom::value, t));
  auto dup = call<caf::ok_atom>(reg, act::tool_register_host_atom::value, t);
  REQUIRE_FALSE(dup);
  CHECK(dup.error() == errc::invalid_argument);
  act::host_tool hidden = t;
  hidden.info.name = "hidden";
  hidden.info.exposed = false;
  REQUIRE(call<caf::ok_atom>(reg, act::tool_register_host_atom::value, hidden));
  act::host_tool bad = t;
  bad.info.name = "bad name";
  CHECK(call<caf::ok_atom>(reg, act::tool_register_host_atom::value, bad).error()
        == errc::invalid_argument);
  auto exposed = call<std::vector<act::tool_info>>(reg, act::tool_exposed_atom::value,
                                                   std::string{});
  REQUIRE(exposed);
  REQUIRE(exposed->size() == 1);
  CHECK((*exposed)[0].name == "double");
  CHECK((*exposed)[0].kind == "host");
  auto got = call<act::host_tool>(reg, act::tool_host_get_atom::value, std::string{"double"});
  REQUIRE(got);
  CHECK(got->fn(nlohmann::json{{"x", 21}}) == 42);
  CHECK(call<act::host_tool>(reg, act::tool_host_get_atom::value, std::string{"nope"}).error()
        == errc::unknown_tool);
  caf::anon_send_exit(reg, caf::exit_reason::kill);
}

TEST_CASE_FIXTURE(det_fixture, "python tools merge workers, scope by session and clean up with a count") {
  auto reg = act::spawn_tool_registry(sys);
  sched.run();
  using tools = std::vector<act::tool_info>;
  using ids = std::map<std::string, std::string>;
  auto r1 = call<ids>(reg, act::tool_register_python_atom::value, std::string{},
                      std::string{"w1"}, tools{py_tool("add"), py_tool("echo")});
  REQUIRE(r1);
  CHECK(r1->at("add") == "*:add");
  REQUIRE(call<ids>(reg, act::tool_register_python_atom::value, std::string{},
                    std::string{"w2"}, tools{py_tool("add"), py_tool("echo")}));
  auto r3 = call<ids>(reg, act::tool_register_python_atom::value, std::string{"s1"},
                      std::string{"w1"}, tools{py_tool("mine"), py_tool("yours")});
  REQUIRE(r3);
  CHECK(r3->at("mine") == "s1:mine");
  auto bad = call<ids>(reg, act::tool_register_python_atom::value, std::string{},
                       std::string{"w1"}, tools{py_tool("ok"), py_tool("-bad")});
  REQUIRE_FALSE(bad);
  CHECK(bad.error() == errc::invalid_argument);
  auto global = call<tools>(reg, act::tool_list_atom::value, std::string{});
  REQUIRE(global);
  REQUIRE(global->size() == 2); // the rejected batch added nothing
  CHECK((*global)[0].name == "add");
  CHECK((*global)[0].kind == "python");
  CHECK((*global)[0].workers == std::vector<std::string>{"w1", "w2"});
  CHECK((*global)[0].parameters.size() == 1);
  auto in_s1 = call<tools>(reg, act::tool_list_atom::value, std::string{"s1"});
  CHECK(in_s1->size() == 4);
  CHECK(*call<int32_t>(reg, act::session_cleanup_atom::value, std::string{"s1"}) == 2);
  CHECK(*call<int32_t>(reg, act::session_cleanup_atom::value, std::string{"s1"}) == 0);
  CHECK(call<tools>(reg, act::tool_list_atom::value, std::string{"s1"})->size() == 2);
  caf::anon_send_exit(reg, caf::exit_reason::kill);
}

} // TEST_SUITE
