// The key tables of actors/config/config_keys.hpp: docs/configuration.md lists exactly
// their keys, the TOML reader knows every one of them, choices parse and print by the
// same names, and validate() refuses what the tables forbid, naming the key.
#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>

#include "actors/config/config_file.hpp"
#include "actors/config/config_keys.hpp"
#include "adapters/errors.hpp"
#include "tests/support/checks.hpp"

using namespace std::chrono_literals;

namespace {

const char* minimal_pool = "[[pools]]\nadapter = \"a.b.C\"\n";

/// The error message of a failed parse ("" if it succeeded).
std::string error_of(const std::string& text) {
  auto cfg = snakepit::parse_config(text, "test.toml");
  return cfg ? std::string{} : snakepit::message_of(cfg.error());
}

template<class S>
std::set<std::string> names_in(const std::vector<snakepit::config_key<S>>& table) {
  std::set<std::string> out;
  for (auto& key : table)
    for (auto& name : snakepit::file_names(key))
      out.insert(name);
  return out;
}

/// The keys of the tables of docs/configuration.md, by section ("top", "log", "pools"):
/// rows that start with "| `key` |" or "| `key_ms` / `_s` |".
std::map<std::string, std::set<std::string>> documented_keys() {
  const char* src = std::getenv("SNAKEPIT_SOURCE_DIR");
  std::ifstream in{std::string{src ? src : SNAKEPIT_TEST_SOURCE_DIR} +
                   "/docs/configuration.md"};
  REQUIRE(in);
  std::map<std::string, std::set<std::string>> out;
  std::string section;
  std::regex row{R"(^\| `([a-z_]+)`( / `_s`)? \|)"};
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("### Top-level keys", 0) == 0)
      section = "top";
    else if (line.rfind("### `[log]` keys", 0) == 0)
      section = "log";
    else if (line.rfind("### `[[pools]]` keys", 0) == 0)
      section = "pools";
    else if (line.rfind("### `[[nodes]]` keys", 0) == 0)
      section = "nodes";
    else if (line.rfind("### `[tls]` keys", 0) == 0)
      section = "tls";
    else if (line.rfind("#", 0) == 0)
      section.clear();
    std::smatch m;
    if (section.empty() || !std::regex_search(line, m, row))
      continue;
    auto key = m[1].str();
    out[section].insert(key);
    if (m[2].matched && key.size() > 3 && key.compare(key.size() - 3, 3, "_ms") == 0)
      out[section].insert(key.substr(0, key.size() - 3) + "_s");
  }
  return out;
}

/// The keys examples/pools.toml names, by section ("top", "log", "pools"): `key = ...`
/// lines, commented out or not, and `[pools.key]` tables; the contents of such a
/// sub-table (environment variables) are not keys.
std::map<std::string, std::set<std::string>> example_keys() {
  const char* src = std::getenv("SNAKEPIT_SOURCE_DIR");
  std::ifstream in{std::string{src ? src : SNAKEPIT_TEST_SOURCE_DIR} +
                   "/examples/pools.toml"};
  REQUIRE(in);
  std::map<std::string, std::set<std::string>> out;
  std::string section = "top";
  std::regex assignment{R"(^#? ?([a-z_]+) = )"};
  std::regex sub_table{R"(^#? ?\[pools\.([a-z_]+)\])"};
  std::string line;
  while (std::getline(in, line)) {
    std::smatch m;
    if (line == "[log]") {
      section = "log";
    } else if (line == "[[pools]]") {
      section = "pools";
    } else if (line == "[[nodes]]" || line == "# [[nodes]]") {
      section = "nodes";
    } else if (line == "[tls]" || line == "# [tls]") {
      section = "tls";
    } else if (std::regex_search(line, m, sub_table)) {
      out["pools"].insert(m[1].str());
      section = "pools-sub";
    } else if (section != "pools-sub" && std::regex_search(line, m, assignment)) {
      out[section].insert(m[1].str());
    }
  }
  return out;
}

/// Whether `listed` names `key` in one of its spellings (`x_ms` or `x_s`).
template<class S>
bool names_key(const std::set<std::string>& listed, const snakepit::config_key<S>& key) {
  for (auto& name : snakepit::file_names(key))
    if (listed.count(name) > 0)
      return true;
  return false;
}

/// Both ways: every key of `table` is in `listed`, every name in `listed` is a key.
template<class S>
void check_listed(const std::set<std::string>& listed,
                  const std::vector<snakepit::config_key<S>>& table) {
  auto accepted = names_in(table);
  for (auto& key : table) {
    CAPTURE(key.name);
    CHECK(names_key(listed, key));
  }
  for (auto& name : listed) {
    CAPTURE(name);
    CHECK(accepted.count(name) == 1);
  }
}

} // namespace

TEST_SUITE("actors.config_keys") {

  TEST_CASE("examples/pools.toml names every key the reader accepts, and no other") {
    auto listed = example_keys();
    check_listed(listed["top"], snakepit::config_keys());
    check_listed(listed["log"], snakepit::log_keys());
    check_listed(listed["pools"], snakepit::pool_keys());
    check_listed(listed["nodes"], snakepit::node_keys());
    check_listed(listed["tls"], snakepit::tls_keys());
    CHECK(listed["pools"].size() > 40);
  }

  TEST_CASE("docs/configuration.md lists exactly the keys of the tables") {
    auto docs = documented_keys();
    CHECK(docs["top"] == names_in(snakepit::config_keys()));
    CHECK(docs["log"] == names_in(snakepit::log_keys()));
    CHECK(docs["pools"] == names_in(snakepit::pool_keys()));
    CHECK(docs["nodes"] == names_in(snakepit::node_keys()));
    CHECK(docs["tls"] == names_in(snakepit::tls_keys()));
    CHECK(docs["pools"].size() > 30);
  }

  TEST_CASE("every key has a description and a name no other key of its table has") {
    auto check_table = [](const auto& table) {
      std::set<std::string> seen;
      for (auto& key : table) {
        CAPTURE(key.name);
        CHECK(std::string{key.what}.size() > 5);
        for (auto& name : snakepit::file_names(key))
          CHECK(seen.insert(name).second);
      }
    };
    check_table(snakepit::config_keys());
    check_table(snakepit::log_keys());
    check_table(snakepit::pool_keys());
  }

  TEST_CASE("durations are spelled _ms or _s, lists of them _ms, the rest by name") {
    std::map<std::string, std::vector<std::string>> spelled;
    for (auto& key : snakepit::pool_keys())
      spelled[key.name] = snakepit::file_names(key);
    CHECK(spelled["queue_timeout"] ==
          std::vector<std::string>{"queue_timeout_ms", "queue_timeout_s"});
    CHECK(spelled["retry_backoff"] == std::vector<std::string>{"retry_backoff_ms"});
    CHECK(spelled["worker_max_seconds"] ==
          std::vector<std::string>{"worker_max_seconds"});
    CHECK(spelled["pool_size"] == std::vector<std::string>{"pool_size"});
  }

  TEST_CASE("the reader knows every key of the tables: a wrong type names the key") {
    // A TOML date suits no key, so each one fails with its own type error, not as
    // unknown.
    for (auto& name : names_in(snakepit::config_keys())) {
      CAPTURE(name);
      auto msg = error_of(name + " = 1979-05-27\n" + minimal_pool);
      CHECK(msg.rfind("test.toml: " + name + ": expected ", 0) == 0);
      CHECK(msg.find(", got date") != std::string::npos);
    }
    for (auto& name : names_in(snakepit::log_keys())) {
      CAPTURE(name);
      auto msg = error_of("[log]\n" + name + " = 1979-05-27\n" + minimal_pool);
      CHECK(msg.rfind("test.toml: log." + name + ": expected ", 0) == 0);
    }
    for (auto& name : names_in(snakepit::pool_keys())) {
      CAPTURE(name);
      auto msg = error_of("[[pools]]\n" + name + " = 1979-05-27\n");
      CHECK(msg.rfind("test.toml: pools[0]." + name + ": expected ", 0) == 0);
    }
  }

  TEST_CASE("choices parse and print by the same names") {
    using namespace snakepit;
    for (auto x : {worker_profile::process, worker_profile::thread})
      CHECK(parse_worker_profile(to_string(x)) == x);
    for (auto x :
         {capacity_strategy::pool, capacity_strategy::hybrid, capacity_strategy::profile})
      CHECK(parse_capacity_strategy(to_string(x)) == x);
    for (auto x : {affinity_mode::hint, affinity_mode::strict_queue,
                   affinity_mode::strict_fail_fast})
      CHECK(parse_affinity_mode(to_string(x)) == x);
    CHECK(std::string{to_string(affinity_mode::strict_fail_fast)} == "strict_fail_fast");
    CHECK_FALSE(parse_worker_profile("threads"));
    CHECK_FALSE(parse_capacity_strategy(""));
    CHECK_FALSE(parse_affinity_mode("HINT"));
  }

  TEST_CASE("a bad choice in a file is refused with the names, at the key's path") {
    CHECK(error_of("[[pools]]\nadapter = \"a.b.C\"\nworker_profile = \"threads\"\n") ==
          "test.toml: pools[0].worker_profile: 'threads' is neither \"process\" nor "
          "\"thread\"");
    CHECK(
      error_of("[[pools]]\nadapter = \"a.b.C\"\ncapacity_strategy = \"magic\"\n") ==
      "test.toml: pools[0].capacity_strategy: 'magic' is not pool, hybrid or profile");
    CHECK(error_of("[[pools]]\nadapter = \"a.b.C\"\naffinity = \"strict\"\n") ==
          "test.toml: pools[0].affinity: 'strict' is not hint, strict_queue or "
          "strict_fail_fast");
    CHECK(error_of("[log]\nformat = \"xml\"\n" + std::string{minimal_pool}) ==
          "test.toml: log.format: 'xml' is neither \"text\" nor \"json\"");
    CHECK(error_of("[[pools]]\nadapter = \"a.b.C\"\nworker_profile = 1\n") ==
          "test.toml: pools[0].worker_profile: expected string, got integer");
  }

  TEST_CASE("the log level keeps its alias and the choices their defaults") {
    auto cfg = snakepit::parse_config(
      "[log]\nlevel = \"warning\"\n" + std::string{minimal_pool}, "test.toml");
    REQUIRE_OK(cfg);
    CHECK(cfg->log.level == snakepit::adapters::log_level::warn);
    auto& p = cfg->pools[0];
    CHECK(p.worker_profile == snakepit::worker_profile::process);
    CHECK(p.capacity_strategy == snakepit::capacity_strategy::pool);
    CHECK(p.affinity == snakepit::affinity_mode::hint);
    cfg = snakepit::parse_config(std::string{minimal_pool} +
                                   "affinity = \"strict_fail_fast\"\ncapacity_strategy = "
                                   "\"hybrid\"\n",
                                 "test.toml");
    REQUIRE_OK(cfg);
    CHECK(cfg->pools[0].affinity == snakepit::affinity_mode::strict_fail_fast);
    CHECK(cfg->pools[0].capacity_strategy == snakepit::capacity_strategy::hybrid);
  }

  TEST_CASE("validate refuses a choice outside its enum, naming the key") {
    snakepit::pool_config p;
    p.worker_profile = static_cast<snakepit::worker_profile>(7);
    CHECK(snakepit::message_of(p.validate()) ==
          "pools[default].worker_profile: '7' is neither \"process\" nor \"thread\"");
    snakepit::log_config l;
    l.format = static_cast<snakepit::adapters::log_format>(9);
    CHECK(snakepit::message_of(l.validate()) ==
          "log.format: '9' is neither \"text\" nor \"json\"");
  }

  TEST_CASE("validate applies each key's range and conditions") {
    snakepit::pool_config p;
    CHECK_FALSE(p.validate());
    p.threads_per_worker = 0; // only checked under the thread profile
    CHECK_FALSE(p.validate());
    p.worker_profile = snakepit::worker_profile::thread;
    CHECK(snakepit::message_of(p.validate()) ==
          "pools[default].threads_per_worker: must be between 1 and 1024");
    p = {};
    p.heartbeat.interval = 0ms; // only checked while the heartbeat is on
    p.heartbeat.enabled = false;
    CHECK_FALSE(p.validate());
    p.heartbeat.enabled = true;
    CHECK(snakepit::message_of(p.validate()) ==
          "pools[default].heartbeat_interval: must be positive");
    p = {};
    p.pool_size = 1025;
    CHECK(snakepit::message_of(p.validate()) ==
          "pools[default].pool_size: must be at most 1024");
    p = {};
    p.recycling.ttl = -1ms;
    CHECK(snakepit::message_of(p.validate()) ==
          "pools[default].worker_ttl: must not be negative (0: no TTL)");
    p = {};
    p.retry.backoff.clear();
    CHECK(snakepit::message_of(p.validate()) ==
          "pools[default].retry_backoff: needs at least one delay when retries are on");
    p.retry.max_attempts = 0;
    CHECK_FALSE(p.validate());
    p = {};
    p.max_message_bytes = (size_t{100} << 20) + 1; // beyond the gRPC channel's limit
    CHECK(snakepit::message_of(p.validate()) ==
          "pools[default].max_message_bytes: at most 104857600 for kind = \"grpc\" (the "
          "limit of its gRPC channel)");
    p.kind = snakepit::worker_kind::stdio; // frames have no such limit
    CHECK_FALSE(p.validate());
    p = {};
    p.name = "no spaces";
    CHECK(snakepit::message_of(p.validate()) ==
          "pools[].name: 'no spaces' must be 1-64 characters of [A-Za-z0-9_.-]");
    snakepit::config cfg;
    cfg.check_interpreter = false;
    cfg.sessions.max = 0;
    CHECK(snakepit::message_of(cfg.validate()) == "max_sessions: must be at least 1");
    cfg.sessions.max = 1;
    cfg.worker_sup.max_seconds = std::chrono::seconds{0};
    CHECK(snakepit::message_of(cfg.validate()) ==
          "worker_sup_max_seconds: must be positive");
  }

} // TEST_SUITE
