// TOML configuration files: every field of config / pool_config is settable, and every
// mistake is an invalid_config error that names the key path.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "actors/config/config_file.hpp"
#include "adapters/errors.hpp"
#include "tests/support/checks.hpp"

using namespace std::chrono_literals;
using snakepit::errc;
using snakepit::load_config;
using snakepit::parse_config;

namespace {

/// The error message of a failed parse ("" if it succeeded), checked to be
/// invalid_config.
std::string error_of(const std::string& text) {
  auto cfg = parse_config(text, "test.toml");
  if (cfg)
    return "";
  CHECK(snakepit::errc_of(cfg.error()) == errc::invalid_config);
  return snakepit::message_of(cfg.error());
}

const char* minimal = R"(
[[pools]]
adapter = "snakepit_bridge.adapters.showcase.ShowcaseAdapter"
)";

} // namespace

TEST_SUITE("actors.config_file") {

  TEST_CASE("a minimal file gives the defaults with one pool") {
    auto cfg = parse_config(minimal, "test.toml");
    REQUIRE(cfg);
    snakepit::config defaults;
    CHECK(cfg->python == defaults.python);
    CHECK(cfg->python_path.empty());
    REQUIRE(cfg->pools.size() == 1);
    auto& p = cfg->pools[0];
    CHECK(p.name == "default");
    CHECK(p.pool_size == snakepit::pool_config{}.pool_size);
    CHECK(p.queue.timeout == snakepit::pool_config{}.queue.timeout);
  }

  TEST_CASE("every field can be set") {
    auto cfg = parse_config(R"(
python = "/usr/bin/python3"
python_path = ["/opt/a", "/opt/b"]
worker_sup_max_restarts = 7
worker_sup_max_seconds = 9
shutdown_timeout_s = 20
check_interpreter = false
data_dir = "/var/lib/snakepit-test"
sweep_orphans_at_start = false
metrics_address = "0.0.0.0:9568"
metrics_allow_remote = true
control_socket = false
release_memory_interval_s = 0
malloc_arena_max = 2

[[pools]]
name = "fast"
pool_size = 3
adapter = "my.module.Adapter"
worker_profile = "thread"
threads_per_worker = 8
affinity = "strict_queue"
max_message_bytes = 1048576
adapter_args = ["--flag", "x"]
adapter_env = { FOO = "1", BAR = "two" }
max_queue_size = 50
queue_timeout_ms = 1500
request_timeout_s = 60
startup_concurrency = 2
worker_ready_timeout_ms = 4000
graceful_shutdown_timeout_ms = 250
worker_max_restarts = 5
worker_max_seconds = 11
worker_ttl_s = 3600
worker_max_requests = 1000
max_requests_jitter = 0.25
memory_threshold_mb = 2048
lifecycle_check_interval_ms = 750
taint_on = ["segfault", "exit_42"]
taint_duration_s = 5
retry_max_attempts = 3
retry_backoff_ms = [10, 20]
circuit_threshold = 4
circuit_reset_ms = 2500

[[pools]]
name = "slow"
adapter = "other.module.Adapter"
request_timeout_ms = 900000
)",
                            "test.toml");
    REQUIRE_OK(cfg);
    CHECK(cfg->python == "/usr/bin/python3");
    CHECK(cfg->python_path == std::vector<std::string>{"/opt/a", "/opt/b"});
    CHECK(cfg->worker_sup.max_restarts == 7);
    CHECK(cfg->worker_sup.max_seconds == 9s);
    CHECK(cfg->shutdown_timeout == 20000ms);
    CHECK_FALSE(cfg->check_interpreter);
    CHECK(cfg->data_dir == "/var/lib/snakepit-test");
    CHECK_FALSE(cfg->sweep_orphans_at_start);
    CHECK(cfg->metrics.address == "0.0.0.0:9568");
    CHECK(cfg->metrics.allow_remote);
    CHECK(cfg->release_memory_interval == 0ms);
    CHECK(cfg->malloc_arena_max == 2);
    CHECK_FALSE(cfg->control_socket);
    REQUIRE(cfg->pools.size() == 2);
    auto& p = cfg->pools[0];
    CHECK(p.name == "fast");
    CHECK(p.pool_size == 3);
    CHECK(p.adapter == "my.module.Adapter");
    CHECK(p.worker_profile == snakepit::worker_profile::thread);
    CHECK(p.threads_per_worker == 8);
    CHECK(p.affinity == snakepit::affinity_mode::strict_queue);
    CHECK(p.max_message_bytes == 1048576);
    CHECK(p.adapter_args == std::vector<std::string>{"--flag", "x"});
    REQUIRE(p.adapter_env.size() == 2);
    CHECK(p.adapter_env[0] == std::pair<std::string, std::string>{"BAR", "two"});
    CHECK(p.adapter_env[1] == std::pair<std::string, std::string>{"FOO", "1"});
    CHECK(p.queue.max_size == 50);
    CHECK(p.queue.timeout == 1500ms);
    CHECK(p.request_timeout == 60000ms);
    CHECK(p.startup.concurrency == 2);
    CHECK(p.startup.ready_timeout == 4000ms);
    CHECK(p.graceful_shutdown_timeout == 250ms);
    CHECK(p.restart.max_restarts == 5);
    CHECK(p.restart.max_seconds == 11s);
    CHECK(p.recycling.ttl == 3600000ms);
    CHECK(p.recycling.max_requests == 1000);
    CHECK(p.recycling.requests_jitter == doctest::Approx(0.25));
    CHECK(p.recycling.max_memory_mb == 2048);
    CHECK(p.recycling.check_interval == 750ms);
    CHECK(p.taint.causes == std::vector<std::string>{"segfault", "exit_42"});
    CHECK(p.taint.duration == 5000ms);
    CHECK(p.retry.max_attempts == 3);
    CHECK(p.retry.backoff == std::vector<std::chrono::milliseconds>{10ms, 20ms});
    CHECK(p.circuit.threshold == 4);
    CHECK(p.circuit.reset == 2500ms);
    CHECK(cfg->pools[1].name == "slow");
    CHECK(cfg->pools[1].request_timeout == 900000ms);
  }

  TEST_CASE("a wrong type names the key path and both types") {
    CHECK(error_of(R"(
[[pools]]
adapter = "a.b.C"
pool_size = "4"
)") == "test.toml: pools[0].pool_size: expected integer, got string");
    CHECK(error_of("check_interpreter = 1\n[[pools]]\nadapter = \"a.b.C\"\n") ==
          "test.toml: check_interpreter: expected boolean, got integer");
    CHECK(error_of("[[pools]]\nadapter = \"a.b.C\"\nqueue_timeout_ms = 1.5\n") ==
          "test.toml: pools[0].queue_timeout_ms: expected integer, got float");
    CHECK(error_of("[[pools]]\nadapter = \"a.b.C\"\nadapter_args = [\"x\", 3]\n") ==
          "test.toml: pools[0].adapter_args[1]: expected string, got integer");
    CHECK(error_of("[[pools]]\nadapter = \"a.b.C\"\nadapter_env = { A = true }\n") ==
          "test.toml: pools[0].adapter_env.A: expected string, got boolean");
    CHECK(error_of("pools = 3\n") == "test.toml: pools: expected array of tables "
                                     "([[pools]]), got integer");
  }

  TEST_CASE("an unknown key is refused, with a suggestion when one is close") {
    CHECK(error_of("[[pools]]\nadapter = \"a.b.C\"\npool_sise = 4\n") ==
          "test.toml: pools[0].pool_sise: unknown key (did you mean pool_size?)");
    CHECK(error_of("[[pools]]\nadapter = \"a.b.C\"\nqueue_timeout = 4\n") ==
          "test.toml: pools[0].queue_timeout: unknown key (did you mean "
          "queue_timeout_s?)");
    CHECK(error_of("colour = \"blue\"\n[[pools]]\nadapter = \"a.b.C\"\n") ==
          "test.toml: colour: unknown key");
    CHECK(error_of("[[pools]]\nadapter = \"a.b.C\"\n[pools.extra]\nx = 1\n") ==
          "test.toml: pools[0].extra: unknown key");
  }

  TEST_CASE("a pool without adapter, or with no pools at all, is refused") {
    CHECK(error_of("[[pools]]\nname = \"p\"\n") ==
          "test.toml: pools[0].adapter: missing (required for the bundled Python "
          "bridge: the adapter class, pkg.module.Class; or give the worker's command)");
    CHECK(error_of("python = \"/usr/bin/python3\"\n") ==
          "test.toml: pools: missing (add at least one [[pools]] table with an adapter)");
    CHECK(error_of("pools = []\n") == "test.toml: pools: at least one pool is required");
  }

  TEST_CASE("both spellings of one duration conflict") {
    CHECK(
      error_of(
        "[[pools]]\nadapter = \"a.b.C\"\nqueue_timeout_ms = 1\nqueue_timeout_s = 1\n") ==
      "test.toml: pools[0].queue_timeout_s: conflicts with queue_timeout_ms (give one "
      "of them)");
  }

  TEST_CASE("values are range-checked and validated like config::validate") {
    CHECK(error_of("[[pools]]\nadapter = \"a.b.C\"\npool_size = -1\n") ==
          "test.toml: pools[0].pool_size: must not be negative");
    CHECK(error_of("[[pools]]\nadapter = \"a.b.C\"\npool_size = 0\n") ==
          "test.toml: pools[default].pool_size: must be at least 1");
    CHECK(error_of("[[pools]]\nadapter = \"nodots\"\n").find("pools[default].adapter") !=
          std::string::npos);
    CHECK(error_of("[[pools]]\nadapter = \"a.b.C\"\nrequest_timeout_s = 0\n") ==
          "test.toml: pools[default].request_timeout: must be positive");
    CHECK(error_of("[[pools]]\nadapter = \"a.b.C\"\ntaint_on = [\"oom\"]\n")
            .find("pools[default].taint_on: 'oom' is not segfault") != std::string::npos);
    CHECK(error_of("[[pools]]\nadapter = \"a.b.C\"\nmax_requests_jitter = 1.5\n") ==
          "test.toml: pools[default].max_requests_jitter: must be in [0, 1)");
    CHECK(error_of("[[pools]]\nadapter = \"a.b.C\"\nretry_backoff_ms = [10, -1]\n") ==
          "test.toml: pools[0].retry_backoff_ms[1]: must not be negative");
    CHECK(error_of("[[pools]]\nadapter = \"a.b.C\"\nmax_requests_jitter = \"x\"\n")
            .find("pools[0].max_requests_jitter") != std::string::npos);
    CHECK(error_of("[[pools]]\nadapter = \"a.b.C\"\n[[pools]]\nadapter = \"a.b.D\"\n") ==
          "test.toml: pools[1].name: duplicate pool name 'default' (also pools[0]; give "
          "each pool a distinct name)");
    CHECK(error_of("python = \"/no/such/python3\"\n[[pools]]\nadapter = \"a.b.C\"\n") ==
          "test.toml: python: interpreter '/no/such/python3' does not exist");
    CHECK(
      error_of("metrics_address = \"10.1.2.3:9568\"\n[[pools]]\nadapter = \"a.b.C\"\n") ==
      "test.toml: metrics_address: '10.1.2.3' is not a loopback address; set "
      "metrics_allow_remote = true to serve metrics on it");
    CHECK(error_of("metrics_address = \"127.0.0.1\"\n[[pools]]\nadapter = \"a.b.C\"\n") ==
          "test.toml: metrics_address: '127.0.0.1' is not host:port");
  }

  TEST_CASE("TOML syntax errors carry line and column") {
    auto msg = error_of("[[pools]]\nadapter = \"a.b.C\"\npool_size = = 3\n");
    CHECK(msg.rfind("test.toml:3:", 0) == 0);
  }

  TEST_CASE("load_config reads a file and resolves relative python_path entries") {
    auto dir = std::filesystem::temp_directory_path() /
               ("snakepit-config-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    auto file = dir / "pools.toml";
    {
      std::ofstream out{file};
      out << "python_path = [\"lib\", \"/abs\"]\n" << minimal;
    }
    auto cfg = load_config(file.string());
    REQUIRE_OK(cfg);
    CHECK(cfg->python_path == std::vector<std::string>{(dir / "lib").string(), "/abs"});
    auto missing = load_config((dir / "nope.toml").string());
    REQUIRE_FALSE(missing);
    CHECK(snakepit::errc_of(missing.error()) == errc::invalid_config);
    CHECK(snakepit::message_of(missing.error()).find("nope.toml") != std::string::npos);
    std::filesystem::remove_all(dir);
  }

  TEST_CASE("the [log] table sets log_config and its mistakes name the key") {
    auto cfg = parse_config(R"(
[log]
level = "debug"
format = "json"
to_stderr = false
file = "/tmp/x.log"
capture_worker_stderr = false
worker_stderr_level = "info"
)" + std::string{minimal},
                            "test.toml");
    REQUIRE_OK(cfg);
    CHECK(cfg->log.level == snakepit::adapters::log_level::debug);
    CHECK(cfg->log.format == snakepit::adapters::log_format::json);
    CHECK_FALSE(cfg->log.to_stderr);
    CHECK(cfg->log.file == "/tmp/x.log");
    CHECK_FALSE(cfg->log.capture_worker_stderr);
    CHECK(cfg->log.worker_stderr_level == snakepit::adapters::log_level::info);
    auto defaults = parse_config(minimal, "test.toml");
    REQUIRE(defaults);
    CHECK(defaults->log.level == snakepit::adapters::log_level::warn);
    CHECK(defaults->log.format == snakepit::adapters::log_format::text);
    CHECK(defaults->log.capture_worker_stderr);
    CHECK(error_of("[log]\nlevel = \"loud\"\n" + std::string{minimal}) ==
          "test.toml: log.level: 'loud' is not trace, debug, info, warn, error, critical "
          "or off");
    CHECK(
      error_of("[log]\nformat = \"xml\"\n" + std::string{minimal}).find("log.format") !=
      std::string::npos);
    CHECK(error_of("[log]\nworker_stderr_level = \"x\"\n" + std::string{minimal})
            .find("log.worker_stderr_level") != std::string::npos);
    CHECK(error_of("[log]\nlevle = \"info\"\n" + std::string{minimal}) ==
          "test.toml: log.levle: unknown key (did you mean level?)");
    CHECK(error_of("[log]\nto_stderr = 1\n" + std::string{minimal}) ==
          "test.toml: log.to_stderr: expected boolean, got integer");
    CHECK(error_of("log = 3\n" + std::string{minimal}) ==
          "test.toml: log: expected table, got integer");
  }

  TEST_CASE("load_config resolves a relative log file against the file's directory") {
    auto dir = std::filesystem::temp_directory_path() /
               ("snakepit-config-log-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    auto file = dir / "pools.toml";
    {
      std::ofstream out{file};
      out << "[log]\nfile = \"logs/host.log\"\n" << minimal;
    }
    auto cfg = load_config(file.string());
    REQUIRE_OK(cfg);
    CHECK(cfg->log.file == (dir / "logs/host.log").string());
    std::filesystem::remove_all(dir);
  }

  TEST_CASE("the example file in examples/ loads") {
    // ctest names the source tree; a binary run by hand uses the one it was built from.
    const char* src = std::getenv("SNAKEPIT_SOURCE_DIR");
    auto cfg = load_config(std::string{src ? src : SNAKEPIT_TEST_SOURCE_DIR} +
                           "/examples/pools.toml");
    REQUIRE_OK(cfg);
    CHECK(cfg->pools.size() >= 1);
  }

} // TEST_SUITE
