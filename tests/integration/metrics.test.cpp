// Stats, the Prometheus endpoint and the control socket on a real runtime: calls that
// succeed, fail and crash a worker, then the figures read three ways (get_stats, a
// scrape with curl, the control socket with curl --unix-socket) must agree.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cstdio>
#include <map>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "actors/runtime/runtime.hpp"
#include "harness.hpp"

using namespace std::chrono_literals;
using namespace snakepit;
using namespace snakepit::testing;

namespace {

struct shell_result {
  int code = -1;
  std::string out;
};

/// Runs a shell command (bounded by timeout(1)) and captures stdout.
shell_result sh(const std::string& cmd) {
  shell_result res;
  FILE* pipe = ::popen(("timeout -k 2 20 " + cmd).c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0)
    res.out.append(buf, n);
  int status = ::pclose(pipe);
  res.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return res;
}

/// Samples of a Prometheus text page: "name{labels}" -> value.
std::map<std::string, double> parse_samples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#')
      continue;
    auto sp = line.rfind(' ');
    REQUIRE(sp != std::string::npos);
    out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return out;
}

} // namespace

TEST_SUITE("integration.metrics") {

  TEST_CASE("the metrics endpoint and the control socket report what get_stats reports") {
    auto cfg = small_config(2);
    cfg.metrics.address = "127.0.0.1:0";
    auto rt = runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto addr = r.metrics_address();
    REQUIRE(addr.rfind("127.0.0.1:", 0) == 0);
    CHECK(addr != "127.0.0.1:0");
    auto sock = r.control_socket();
    CHECK(sock == r.runtime_dir() + "/control.sock");
    struct stat st;
    REQUIRE(::stat(sock.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);

    for (int i = 0; i < 20; ++i)
      REQUIRE(r.execute("echo", {{"i", i}}));
    auto failed = r.execute("fail", {{"message", "on purpose"}});
    REQUIRE_FALSE(failed);
    CHECK(failed.error() == errc::tool_error);
    auto crashed = r.execute("crash", {{"code", 3}});
    REQUIRE_FALSE(crashed);
    CHECK(crashed.error() == errc::worker_crashed);
    // The crashed worker comes back: a restart, seen in the stats.
    REQUIRE(eventually([&] {
      auto s = r.get_stats();
      return s && s->restarts == 1 && s->workers == 2;
    }));

    auto s = r.get_stats();
    REQUIRE(s);
    CHECK(s->requests == 22);
    CHECK(s->direct == 22); // blocking calls, nothing queued: all on the direct lane
    CHECK(s->completed == 20);
    CHECK(s->errors == 2);
    CHECK(s->error_rate == doctest::Approx(2.0 / 22.0));
    CHECK(s->worker_crashes == 1);
    CHECK(s->restarts == 1);
    CHECK(s->latency.count() == 20);
    CHECK(s->latency_p50_ms > 0);
    CHECK(s->latency_p50_ms <= s->latency_p95_ms);
    CHECK(s->latency_p95_ms <= s->latency_p99_ms);
    CHECK(s->avg_response_time_ms ==
          doctest::Approx(static_cast<double>(s->latency.sum_us()) / 20 / 1000.0));
    CHECK(s->avg_response_time_ms >= static_cast<double>(s->latency.min_us()) / 1000.0);
    CHECK(s->avg_response_time_ms <= static_cast<double>(s->latency.max_us()) / 1000.0);
    CHECK(s->starting == 0);

    auto all = r.get_all_stats();
    REQUIRE(all);
    REQUIRE(all->pools.size() == 1);
    CHECK(all->total.requests == 22);
    CHECK(all->total.latency_p99_ms == s->latency_p99_ms);

    auto scrape = sh("curl -s -f http://" + addr + "/metrics");
    REQUIRE(scrape.code == 0);
    auto m = parse_samples(scrape.out);
    CHECK(scrape.out.find("# TYPE snakepit_requests_total counter") != std::string::npos);
    CHECK(m["snakepit_requests_total{pool=\"default\"}"] == 22);
    CHECK(m["snakepit_requests_direct_total{pool=\"default\"}"] == 22);
    CHECK(m["snakepit_requests_completed_total{pool=\"default\"}"] == 20);
    CHECK(m["snakepit_request_errors_total{pool=\"default\"}"] == 2);
    CHECK(m["snakepit_request_error_ratio{pool=\"default\"}"] ==
          doctest::Approx(2.0 / 22.0));
    CHECK(m["snakepit_worker_crashes_total{pool=\"default\"}"] == 1);
    CHECK(m["snakepit_worker_restarts_total{pool=\"default\"}"] == 1);
    CHECK(m["snakepit_worker_recycles_total{pool=\"default\"}"] == 0);
    CHECK(m["snakepit_pool_workers{pool=\"default\",state=\"ready\"}"] == 2);
    CHECK(m["snakepit_request_duration_seconds_count{pool=\"default\"}"] == 20);
    CHECK(m["snakepit_request_duration_seconds{pool=\"default\",quantile=\"0.99\"}"] ==
          doctest::Approx(s->latency_p99_ms / 1000.0));
    // Nothing ran in between, so the scrape saw exactly the histogram get_stats saw.
    CHECK(m["snakepit_request_duration_seconds_sum{pool=\"default\"}"] ==
          doctest::Approx(static_cast<double>(s->latency.sum_us()) / 1e6));

    auto unknown = sh("curl -s -o /dev/null -w '%{http_code}' http://" + addr + "/stats");
    CHECK(unknown.out == "404"); // JSON stats only on the private control socket

    auto stats = sh("curl -s -f --unix-socket " + sock + " http://localhost/stats");
    REQUIRE(stats.code == 0);
    auto j = nlohmann::json::parse(stats.out);
    CHECK(j["pools"][0]["pool"] == "default");
    CHECK(j["pools"][0]["requests"] == 22);
    CHECK(j["pools"][0]["errors"] == 2);
    CHECK(j["pools"][0]["restarts"] == 1);
    CHECK(j["total"]["completed"] == 20);
    CHECK(j["total"]["latency_ms"]["count"] == 20);

    auto workers = sh("curl -s -f --unix-socket " + sock + " http://localhost/workers");
    REQUIRE(workers.code == 0);
    auto w = nlohmann::json::parse(workers.out);
    REQUIRE(w["pools"][0]["workers"].size() == 2);
    auto listed = serving_workers(r);
    REQUIRE(listed);
    CHECK(w["pools"][0]["workers"][0]["pid"] == (*listed)[0].pid);

    stop_and_check(r);
    // The endpoints went with the runtime.
    CHECK_FALSE(path_exists(sock));
    CHECK(sh("curl -s -f http://" + addr + "/metrics").code != 0);
  }

  TEST_CASE("a non-loopback metrics address needs metrics_allow_remote") {
    auto cfg = small_config(1);
    cfg.check_interpreter = false;
    cfg.metrics.address = "0.0.0.0:0";
    auto err = cfg.validate();
    REQUIRE(err);
    CHECK(err == errc::invalid_config);
    CHECK(describe(err).find("metrics_allow_remote") != std::string::npos);
    cfg.metrics.allow_remote = true;
    CHECK_FALSE(cfg.validate());
    for (auto bad : {"127.0.0.1", "127.0.0.1:99999", ":80", "::1:80"}) {
      cfg.metrics.address = bad;
      CAPTURE(bad);
      CHECK(cfg.validate() == errc::invalid_config);
    }
    cfg.metrics.allow_remote = false;
    for (auto good : {"127.0.0.1:0", "localhost:9568", "[::1]:0"}) {
      cfg.metrics.address = good;
      CAPTURE(good);
      CHECK_FALSE(cfg.validate());
    }
  }

  TEST_CASE(
    "a metrics address in use fails the start with start_failed, leaving nothing") {
    auto first_cfg = small_config(1);
    first_cfg.metrics.address = "127.0.0.1:0";
    auto first = runtime::start(first_cfg);
    REQUIRE_OK(first);
    auto cfg = small_config(1);
    cfg.metrics.address = (*first)->metrics_address();
    auto second = runtime::start(cfg);
    REQUIRE_FALSE(second);
    CHECK(second.error() == errc::start_failed);
    CHECK(describe(second.error()).find("cannot bind") != std::string::npos);
    stop_and_check(**first);
  }

  TEST_CASE("control_socket = false serves no socket") {
    auto cfg = small_config(1);
    cfg.control_socket = false;
    auto rt = runtime::start(cfg);
    REQUIRE_OK(rt);
    CHECK((*rt)->control_socket().empty());
    CHECK_FALSE(path_exists((*rt)->runtime_dir() + "/control.sock"));
    CHECK((*rt)->metrics_address().empty());
    stop_and_check(**rt);
  }

} // TEST_SUITE
