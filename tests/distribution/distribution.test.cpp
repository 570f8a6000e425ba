// Pools on other nodes (docs/distribution.md), with real processes: `snakepit node`
// processes on loopback ports serve their Python workers to a host runtime in this
// process. Which node ran a call is read from the worker's own process ancestry.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "actors/atoms.hpp"
#include "actors/observability/telemetry.hpp"
#include "actors/pool/pool.hpp"
#include "actors/runtime/detail/runtime_dirs.hpp"
#include "adapters/http_server.hpp"
#include "supervision/supervisor.hpp"
#include "tests/integration/harness.hpp"

using namespace std::chrono_literals;
using snakepit::errc;
using snakepit::json;
using namespace snakepit::testing;
namespace dist = snakepit::distribution;

namespace {

/// The TOML of a node: one pool `remote` of `workers` showcase workers, and fast
/// heartbeats so that a stopped host or node is noticed quickly.
std::string node_toml(size_t workers) {
  return fmt::format(R"(node_heartbeat_ms = 200
node_timeout_ms = 1500
[[pools]]
name = "remote"
adapter = "snakepit_bridge.adapters.showcase.ShowcaseAdapter"
pool_size = {}
graceful_shutdown_timeout_ms = 1000
)",
                     workers);
}

/// A `snakepit node` child process; killed with SIGKILL if still running at scope
/// exit (and by the kernel if this test process dies: PR_SET_PDEATHSIG).
class node_process {
 public:
  /// Starts a node with `workers` workers on `port` (0: a free one) and waits for
  /// its "listening" line.
  /// `extra` is appended to its TOML (e.g. a `[tls]` table).
  explicit node_process(size_t workers, uint16_t port = 0, const std::string& extra = {})
    : dir_{"node"} {
    config_ = dir_.path + "/node.toml";
    std::ofstream{config_} << node_toml(workers) << extra;
    start(port);
  }

  ~node_process() { kill_now(); }

  node_process(const node_process&) = delete;
  node_process& operator=(const node_process&) = delete;

  void start(uint16_t port) {
    int out[2];
    REQUIRE(::pipe(out) == 0);
    auto listen = fmt::format("127.0.0.1:{}", port);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::dup2(out[1], 1);
      ::close(out[0]);
      ::close(out[1]);
      ::execl(SNAKEPIT_CLI_BINARY, SNAKEPIT_CLI_BINARY, "node", "--listen",
              listen.c_str(), "--config", config_.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(out[1]);
    out_ = ::fdopen(out[0], "r");
    REQUIRE(out_ != nullptr);
    char line[2048];
    std::string marker = "node listening on ";
    std::string socket_marker = "control socket ";
    while (std::fgets(line, sizeof(line), out_) != nullptr) {
      std::string text = line;
      output_ += text;
      if (auto at = text.find(socket_marker); at != std::string::npos) {
        auto path = text.substr(at + socket_marker.size());
        runtime_dir_ =
          std::filesystem::path{path.substr(0, path.find(' '))}.parent_path();
      }
      auto at = text.find(marker);
      if (at == std::string::npos)
        continue;
      auto rest = text.substr(at + marker.size());
      address_ = rest.substr(0, rest.find(' '));
      port_ = static_cast<uint16_t>(std::stoi(address_.substr(address_.rfind(':') + 1)));
      break;
    }
    REQUIRE_MESSAGE(!address_.empty(), "the node did not start: " << output_);
  }

  /// SIGKILL, then reaps it. Its runtime directory stays behind, as a killed
  /// host's does, until the next start of a runtime sweeps it: the test sweeps
  /// here the way such a start does, and checks that it is gone.
  void kill_now() {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGCONT);
    ::kill(pid_, SIGKILL);
    reap();
    if (!runtime_dir_.empty()) {
      // Its workers follow it through their lifeline; sweeping while they still
      // exit could race with their last files.
      CHECK(
        eventually([&] { return processes_with(runtime_dir_.string()).empty(); }, 10s));
      snakepit::detail::sweep_runtime_dirs(runtime_dir_.parent_path(), "");
      CHECK_MSG(!std::filesystem::exists(runtime_dir_),
                "a killed node's runtime directory survived the sweep: " << runtime_dir_);
    }
  }

  /// SIGTERM; returns the exit status once it exited.
  int terminate() {
    ::kill(pid_, SIGTERM);
    return reap();
  }

  void signal(int sig) { ::kill(pid_, sig); }

  int pid() const { return pid_; }
  uint16_t port() const { return port_; }
  const std::string& address() const { return address_; }

  /// What it printed after the listening line (read to the end once it exited).
  std::string rest_of_output() {
    char line[2048];
    while (out_ && std::fgets(line, sizeof(line), out_) != nullptr)
      output_ += line;
    return output_;
  }

 private:
  int reap() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    rest_of_output();
    if (out_)
      std::fclose(out_);
    out_ = nullptr;
    return status;
  }

  temp_dir dir_;
  std::string config_;
  int pid_ = -1;
  FILE* out_ = nullptr;
  std::string output_;
  std::string address_;
  uint16_t port_ = 0;
  std::filesystem::path runtime_dir_;
};

/// The parent pid of `pid` (0 when gone).
int parent_of(int pid) {
  std::ifstream stat{"/proc/" + std::to_string(pid) + "/stat"};
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');
  if (close == std::string::npos)
    return 0;
  std::istringstream rest{line.substr(close + 2)};
  std::string state;
  int ppid = 0;
  rest >> state >> ppid;
  return ppid;
}

/// Whether `pid` is `ancestor` or runs below it.
bool descends_from(int pid, int ancestor) {
  for (int p = pid; p > 1; p = parent_of(p))
    if (p == ancestor)
      return true;
  return false;
}

/// A host with one local pool `default` (1 worker) and `nodes`.
snakepit::config host_config(const std::vector<const node_process*>& nodes) {
  auto cfg = small_config(1);
  cfg.node_heartbeat = 200ms;
  cfg.node_timeout = 1500ms;
  cfg.node_connect_timeout = 2000ms;
  int i = 0;
  for (auto* n : nodes)
    cfg.nodes.push_back({fmt::format("n{}", ++i), n->address()});
  return cfg;
}

snakepit::execute_options on_remote(bool idempotent = false) {
  snakepit::execute_options o;
  o.pool = "remote";
  o.idempotent = idempotent;
  return o;
}

/// The pid of the worker that ran an `info` or `wait_gate` call.
int pid_of(const snakepit::execute_result& res) {
  return res ? res->result.value("pid", 0) : 0;
}

const dist::node_view* find_node(const std::vector<dist::node_view>& nodes,
                                 const std::string& name) {
  for (auto& v : nodes)
    if (v.name == name)
      return &v;
  return nullptr;
}

bool node_is(snakepit::runtime& rt, const std::string& name, dist::node_state state) {
  auto nodes = rt.nodes();
  auto* v = find_node(nodes, name);
  return v && v->state == state;
}

/// Every node of `rt` is connected (the start waits for each node's first
/// connection only up to node_connect_timeout, which a loaded machine can exceed;
/// the start itself does not depend on it).
bool all_connected(snakepit::runtime& rt) {
  return eventually(
    [&] {
      for (auto& v : rt.nodes())
        if (v.state != dist::node_state::connected)
          return false;
      return true;
    },
    20s);
}

/// The events a host emitted, kept for the test to look through.
struct event_log {
  std::mutex mtx;
  std::vector<snakepit::telemetry::event> events;

  void add(const snakepit::telemetry::event& ev) {
    std::lock_guard<std::mutex> g{mtx};
    events.push_back(ev);
  }

  /// Events named `name` whose metadata `key` is `value` (any value when empty).
  size_t count(const std::string& name, const std::string& key = {},
               const std::string& value = {}) {
    std::lock_guard<std::mutex> g{mtx};
    size_t n = 0;
    for (auto& ev : events)
      if (ev.name == name &&
          (key.empty() || (ev.metadata.contains(key) && ev.metadata[key] == value)))
        ++n;
    return n;
  }
};

/// A host runtime whose events go to `log`.
snakepit::start_options recording(event_log& log) {
  snakepit::start_options opts;
  opts.telemetry_handlers.emplace_back(
    "", [&log](const snakepit::telemetry::event& ev) { log.add(ev); });
  return opts;
}

/// The `snakepit.node.*` events the catalogue in docs/telemetry.md lists.
std::set<std::string> node_events_in_docs() {
  std::ifstream in{std::string{SNAKEPIT_DOCS_DIR} + "/telemetry.md"};
  std::set<std::string> out;
  std::string line;
  std::regex row{R"(^\| `(snakepit\.node\.[a-z_.]+)` \|)"};
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, row))
      out.insert(m[1].str());
  }
  return out;
}

/// The processes whose parent is `pid`.
std::vector<int> children_of(int pid) {
  std::vector<int> out;
  for (auto& entry : std::filesystem::directory_iterator{"/proc"}) {
    auto name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos)
      continue;
    if (parent_of(std::stoi(name)) == pid)
      out.push_back(std::stoi(name));
  }
  return out;
}

/// A child process running the CLI with `args` (killed with this process).
int spawn_cli(const std::vector<std::string>& args) {
  auto pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(SNAKEPIT_CLI_BINARY));
    for (auto& a : args)
      argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(SNAKEPIT_CLI_BINARY, argv.data());
    ::_exit(127);
  }
  return pid;
}

/// Certificates made for one test with the `openssl` tool (never committed): two
/// CAs, and leaves `node`, `host` signed by `ca1` and `rogue` signed by `ca2`.
struct test_pki {
  temp_dir dir{"pki"};

  test_pki() {
    for (auto* ca : {"ca1", "ca2"})
      run(
        fmt::format("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                    "-nodes -keyout {0}.key -out {0}.pem -subj /CN={0} -days 1",
                    ca));
    for (auto [leaf, ca] :
         {std::pair{"node", "ca1"}, {"host", "ca1"}, {"rogue", "ca2"}}) {
      run(fmt::format("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                      "-nodes -keyout {0}.key -out {0}.csr -subj /CN={0}",
                      leaf));
      run(fmt::format("openssl x509 -req -in {0}.csr -CA {1}.pem -CAkey {1}.key "
                      "-CAcreateserial -out {0}.pem -days 1",
                      leaf, ca));
    }
  }

  std::string file(const std::string& name) const { return dir.path + "/" + name; }

  /// The `tls` settings of leaf `leaf` trusting `ca`.
  snakepit::tls_config tls(const std::string& leaf, const std::string& ca = "ca1") const {
    return {file(leaf + ".pem"), file(leaf + ".key"), file(ca + ".pem"), {}};
  }

  /// The same as a `[tls]` table.
  std::string toml(const std::string& leaf, const std::string& ca = "ca1") const {
    auto t = tls(leaf, ca);
    return fmt::format("[tls]\ncertificate = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
                       t.certificate, t.key, t.ca);
  }

 private:
  void run(const std::string& cmd) const {
    auto full = fmt::format("cd '{}' && {} >/dev/null 2>&1", dir.path, cmd);
    REQUIRE_MESSAGE(std::system(full.c_str()) == 0, "failed: " << cmd);
  }
};

/// The load of pool `remote` on node `name` as `dir` last heard it.
uint32_t remote_load_of(const dist::node_directory& dir, const std::string& name) {
  for (auto& v : dir.nodes())
    if (v.name == name)
      for (auto& p : v.pools)
        if (p.pool == "remote")
          return p.load;
  return 0;
}

/// The load and queue of pool `remote` on node `name`, as reported.
std::pair<uint32_t, uint32_t> remote_load(snakepit::runtime& rt,
                                          const std::string& name) {
  for (auto& v : rt.nodes())
    if (v.name == name)
      for (auto& p : v.pools)
        if (p.pool == "remote")
          return {p.load, p.queued};
  return {0, 0};
}

} // namespace

TEST_SUITE("distribution") {

  TEST_CASE("a pool only a node serves runs on that node's workers, errors stay typed") {
    node_process node{2};
    auto rt = snakepit::runtime::start(host_config({&node}));
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(all_connected(r));
    auto nodes = r.nodes();
    REQUIRE(nodes.size() == 1);
    REQUIRE(nodes[0].pools.size() == 1);
    CHECK(nodes[0].pools[0].pool == "remote");

    auto res = r.execute("info", json::object(), on_remote());
    REQUIRE_OK(res);
    CHECK(descends_from(pid_of(res), node.pid()));
    // The local pool is still local (the node is this test's child too).
    auto local = r.execute("info");
    REQUIRE_OK(local);
    CHECK(descends_from(pid_of(local), ::getpid()));
    CHECK_FALSE(descends_from(pid_of(local), node.pid()));

    auto opts = on_remote();
    opts.correlation_id = "dist-cid-1";
    auto raised = r.execute("fail", {{"message", "from the node"}}, opts);
    REQUIRE_FALSE(raised);
    CHECK(raised.error() == errc::tool_error);
    CHECK(snakepit::correlation_id_of(raised.error()) == "dist-cid-1");
    auto py = snakepit::python_error_of(raised.error());
    REQUIRE(py);
    CHECK(py->message == "from the node");
    auto unknown = r.execute("no_such_tool", json::object(), on_remote());
    REQUIRE_FALSE(unknown);
    CHECK(unknown.error() == errc::unknown_tool);

    // The remaining budget travels: a call that outlives it times out on the node.
    auto late_opts = on_remote();
    late_opts.timeout = 300ms;
    auto late = r.execute("sleep", {{"ms", 3000}}, late_opts);
    REQUIRE_FALSE(late);
    CHECK(late.error() == errc::timeout);

    // The control socket (and `snakepit stats`) show the node, its state and calls.
    auto reply =
      snakepit::adapters::http_request_unix(r.control_socket(), "GET", "/stats", 10s);
    REQUIRE_OK(reply);
    auto body = json::parse(reply->body);
    REQUIRE(body.contains("nodes"));
    CHECK(body["nodes"][0]["name"] == "n1");
    CHECK(body["nodes"][0]["state"] == "connected");
    CHECK(body["nodes"][0]["calls"].get<int>() >= 4);
    CHECK(body["nodes"][0]["pools"][0]["pool"] == "remote");
    CHECK(body["nodes"][0]["pools"][0]["capacity"] == 2);
    auto table = std::string{};
    {
      auto cmd = fmt::format("{} stats --pid {}", SNAKEPIT_CLI_BINARY, ::getpid());
      FILE* pipe = ::popen(cmd.c_str(), "r");
      REQUIRE(pipe != nullptr);
      char buf[4096];
      size_t n;
      while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0)
        table.append(buf, n);
      CHECK(::pclose(pipe) == 0);
    }
    CHECK(table.find("n1") != std::string::npos);
    CHECK(table.find("connected") != std::string::npos);
    CHECK(table.find("remote ") != std::string::npos);
    CHECK(table.find("/2") != std::string::npos); // the pool's load/capacity

    auto async = call_async(r, "add", {{"a", 2}, {"b", 40}}, on_remote());
    REQUIRE(async.wait_for(20s) == std::future_status::ready);
    auto sum = async.get();
    REQUIRE_OK(sum);
    CHECK(sum->result == 42);
    stop_and_check(r);
  }

  TEST_CASE("calls sent at once spread over the nodes with free capacity") {
    node_process a{1};
    node_process b{1};
    auto rt = snakepit::runtime::start(host_config({&a, &b}));
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(all_connected(r));
    gate g;
    auto c1 = call_async(r, "wait_gate", g.args(), on_remote());
    auto c2 = call_async(r, "wait_gate", g.args(), on_remote());
    g.open();
    REQUIRE(c1.wait_for(30s) == std::future_status::ready);
    REQUIRE(c2.wait_for(30s) == std::future_status::ready);
    auto r1 = c1.get();
    auto r2 = c2.get();
    REQUIRE_OK(r1);
    REQUIRE_OK(r2);
    std::set<int> nodes_used;
    for (auto pid : {pid_of(r1), pid_of(r2)})
      nodes_used.insert(descends_from(pid, a.pid())   ? a.pid()
                        : descends_from(pid, b.pid()) ? b.pid()
                                                      : 0);
    CHECK(nodes_used == std::set<int>{a.pid(), b.pid()});
    auto view = r.nodes();
    CHECK(find_node(view, "n1")->calls == 1);
    CHECK(find_node(view, "n2")->calls == 1);
    stop_and_check(r);
  }

  TEST_CASE("a node killed with calls in flight: node_down within 2 s, idempotent calls "
            "retried on the other node, new calls go there") {
    node_process a{2};
    node_process b{1};
    auto rt = snakepit::runtime::start(host_config({&a, &b}));
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(all_connected(r));
    gate g;
    // a has 2 free, b 1: both calls go to a (ties go to the first node).
    auto plain = call_async(r, "wait_gate", g.args(), on_remote(false));
    auto retried = call_async(r, "wait_gate", g.args(), on_remote(true));
    REQUIRE(eventually([&] { return find_node(r.nodes(), "n1")->calls == 2; }));
    std::this_thread::sleep_for(200ms); // both are running on a's workers
    auto killed_at = std::chrono::steady_clock::now();
    a.kill_now();
    REQUIRE(plain.wait_for(10s) == std::future_status::ready);
    auto lost_after = std::chrono::steady_clock::now() - killed_at;
    auto lost = plain.get();
    REQUIRE_FALSE(lost);
    CHECK(lost.error() == errc::node_down);
    CHECK(lost_after < 2s);
    auto text = snakepit::describe(lost.error());
    CHECK(text.find("remote") != std::string::npos);
    CHECK(text.find("n1") != std::string::npos);
    // The idempotent one now waits at the gate on b.
    g.open();
    REQUIRE(retried.wait_for(20s) == std::future_status::ready);
    auto again = retried.get();
    REQUIRE_OK(again);
    CHECK(descends_from(pid_of(again), b.pid()));
    CHECK_FALSE(node_is(r, "n1", dist::node_state::connected));
    auto next = r.execute("info", json::object(), on_remote());
    REQUIRE_OK(next);
    CHECK(descends_from(pid_of(next), b.pid()));
    stop_and_check(r);
  }

  TEST_CASE("a session stays on the node of its first call, and when that node is lost "
            "hint places it afresh and strict affinity refuses") {
    node_process a{2};
    node_process b{1};
    auto rt = snakepit::runtime::start(host_config({&a, &b}));
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(all_connected(r));
    auto in_session = on_remote();
    in_session.session_id = "dist-session-1";
    auto first = r.execute("info", json::object(), in_session);
    REQUIRE_OK(first);
    REQUIRE(descends_from(pid_of(first), a.pid())); // a has the most free capacity
    // a's two workers held: placement alone would now send a call to b.
    gate g;
    auto held1 = call_async(r, "wait_gate", g.args(), on_remote());
    auto held2 = call_async(r, "wait_gate", g.args(), on_remote());
    REQUIRE(eventually([&] { return find_node(r.nodes(), "n1")->calls == 3; }));
    auto follow = call_async(r, "info", json::object(), in_session);
    CHECK(follow.wait_for(300ms) == std::future_status::timeout); // queued on a
    g.open();
    REQUIRE(follow.wait_for(20s) == std::future_status::ready);
    auto again = follow.get();
    REQUIRE_OK(again);
    CHECK(descends_from(pid_of(again), a.pid()));
    REQUIRE_OK(held1.get());
    REQUIRE_OK(held2.get());

    a.kill_now();
    REQUIRE(
      eventually([&] { return !node_is(r, "n1", dist::node_state::connected); }, 5s));
    auto strict = in_session;
    strict.affinity = "strict_queue";
    auto refused = r.execute("info", json::object(), strict);
    REQUIRE_FALSE(refused);
    CHECK(refused.error() == errc::session_worker_unavailable);
    CHECK(snakepit::describe(refused.error()).find("n1") != std::string::npos);
    auto hint = in_session;
    hint.affinity = "hint";
    auto moved = r.execute("info", json::object(), hint);
    REQUIRE_OK(moved);
    CHECK(descends_from(pid_of(moved), b.pid()));
    // ... and stays on b from then on, strict or not.
    auto stays = r.execute("info", json::object(), strict);
    REQUIRE_OK(stays);
    CHECK(descends_from(pid_of(stays), b.pid()));
    stop_and_check(r);
  }

  TEST_CASE("a node restarted on the same address is used again without a host restart") {
    auto node = std::make_unique<node_process>(1);
    auto port = node->port();
    auto rt = snakepit::runtime::start(host_config({node.get()}));
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(all_connected(r));
    REQUIRE_OK(r.execute("ping", json::object(), on_remote()));
    node->kill_now();
    REQUIRE(
      eventually([&] { return !node_is(r, "n1", dist::node_state::connected); }, 5s));
    auto refused = r.execute("ping", json::object(), on_remote());
    REQUIRE_FALSE(refused);
    CHECK(refused.error() == errc::node_down);
    node->start(port);
    REQUIRE(
      eventually([&] { return node_is(r, "n1", dist::node_state::connected); }, 15s));
    auto res = r.execute("info", json::object(), on_remote());
    REQUIRE_OK(res);
    CHECK(descends_from(pid_of(res), node->pid()));
    stop_and_check(r);
  }

  TEST_CASE("a stopped node counts as lost within node_timeout and is used again after "
            "it continues") {
    node_process node{1};
    auto rt = snakepit::runtime::start(host_config({&node}));
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(all_connected(r));
    gate g;
    auto held = call_async(r, "wait_gate", g.args(), on_remote());
    REQUIRE(eventually([&] { return find_node(r.nodes(), "n1")->calls == 1; }));
    std::this_thread::sleep_for(200ms);
    auto stopped_at = std::chrono::steady_clock::now();
    node.signal(SIGSTOP);
    REQUIRE(held.wait_for(15s) == std::future_status::ready);
    auto detected = std::chrono::steady_clock::now() - stopped_at;
    auto lost = held.get();
    REQUIRE_FALSE(lost);
    CHECK(lost.error() == errc::node_down);
    // node_timeout is 1.5 s here; the middleman checks at each heartbeat.
    CHECK(detected < 4s);
    CHECK_FALSE(node_is(r, "n1", dist::node_state::connected));
    node.signal(SIGCONT);
    g.open();
    REQUIRE(
      eventually([&] { return node_is(r, "n1", dist::node_state::connected); }, 15s));
    auto res = r.execute("info", json::object(), on_remote());
    REQUIRE_OK(res);
    CHECK(descends_from(pid_of(res), node.pid()));
    stop_and_check(r);
  }

  TEST_CASE("a host whose node is not up starts, serves its local pools and names the "
            "node in the error") {
    uint16_t free_port = 0;
    {
      node_process probe{1};
      free_port = probe.port();
    } // killed: nothing listens there now
    auto cfg = small_config(1);
    cfg.node_connect_timeout = 500ms;
    cfg.nodes.push_back({"gone", fmt::format("127.0.0.1:{}", free_port)});
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE_OK(r.execute("ping"));
    auto res = r.execute("ping", json::object(), on_remote());
    REQUIRE_FALSE(res);
    CHECK(res.error() == errc::node_down);
    CHECK(snakepit::describe(res.error()).find("gone") != std::string::npos);
    auto nodes = r.nodes();
    REQUIRE(nodes.size() == 1);
    CHECK(nodes[0].state != dist::node_state::connected);
    CHECK_FALSE(nodes[0].last_error.empty());
    stop_and_check(r);
  }

  TEST_CASE("a node link that fails is restarted by its supervisor: its call in flight "
            "fails with internal at once, the new link connects and takes calls") {
    node_process node{1};
    caf::actor_system_config sys_cfg;
    snakepit::configure_system(sys_cfg);
    dist::prepare_distributed_system(sys_cfg, 200ms, 1500ms);
    caf::actor_system sys{sys_cfg};
    auto dir = std::make_shared<dist::node_directory>();
    dir->add("n1", node.address(), caf::actor{});
    dist::link_options o;
    o.name = "n1";
    o.host = "127.0.0.1";
    o.port = node.port();
    o.self_name = "test host";
    o.directory = dir;
    snakepit::supervision::supervisor_flags flags;
    flags.intensity = 3;
    auto sup = snakepit::supervision::start_supervisor(
      sys, flags, {dist::node_link_child(o)}, std::chrono::seconds{10});
    REQUIRE_OK(sup);
    auto connected = [&] {
      auto nodes = dir->nodes();
      return nodes.size() == 1 && nodes[0].state == dist::node_state::connected;
    };
    REQUIRE(eventually(connected, 20s));
    auto first = dir->links().at(0);
    REQUIRE(first);

    // A call waits at a gate on the node while its link fails.
    auto call = [&](const caf::actor& link, const std::string& tool, json args) {
      auto p = std::make_shared<std::promise<snakepit::execute_result>>();
      auto f = p->get_future();
      snakepit::execute_request req;
      req.command = tool;
      req.args = std::move(args);
      req.opts.pool = "remote";
      req.opts.timeout = 20s;
      req.opts.correlation_id = "dist-link-crash";
      snakepit::callback_sink sink;
      sink.fn = [p](snakepit::execute_result res) { p->set_value(std::move(res)); };
      caf::anon_send(link, snakepit::actors::execute_cb_atom::value, std::move(req),
                     std::move(sink));
      return f;
    };
    gate g;
    auto held = call(first, "wait_gate", g.args());
    REQUIRE(eventually([&] { return remote_load_of(*dir, "n1") == 1; }, 20s));
    caf::anon_send_exit(first, caf::exit_reason::unhandled_exception);
    REQUIRE(held.wait_for(5s) == std::future_status::ready);
    auto lost = held.get();
    REQUIRE_FALSE(lost);
    CHECK(lost.error() == errc::internal);
    CHECK(snakepit::correlation_id_of(lost.error()) == "dist-link-crash");
    g.open();

    REQUIRE(eventually(
      [&] {
        auto links = dir->links();
        return !links.empty() && links[0] && links[0] != first && connected();
      },
      20s));
    auto again = call(dir->links().at(0), "info", json::object());
    REQUIRE(again.wait_for(20s) == std::future_status::ready);
    auto res = again.get();
    REQUIRE_OK(res);
    CHECK(descends_from(pid_of(res), node.pid()));
    CHECK_OK(snakepit::supervision::stop(sys, *sup, std::chrono::seconds{10}));
  }

  TEST_CASE("TLS: hosts with a certificate of the cluster CA use a TLS node, a plain "
            "host and one with another CA certificate are refused, bad files fail "
            "the start") {
    test_pki pki;
    node_process node{1, 0, pki.toml("node")};

    // The right certificate: calls run on the node.
    auto good_cfg = host_config({&node});
    good_cfg.tls = pki.tls("host");
    event_log good_events;
    auto good = snakepit::runtime::start(good_cfg, recording(good_events));
    REQUIRE_OK(good);
    REQUIRE(all_connected(**good));
    auto res = (*good)->execute("info", json::object(), on_remote());
    REQUIRE_OK(res);
    CHECK(descends_from(pid_of(res), node.pid()));

    // A host without TLS, and one whose certificate another CA signed, never
    // connect: the node refuses their handshakes, their calls fail with node_down
    // (exit 7). Separate processes: actor systems in one process share a CAF node
    // id, which a node cannot tell apart (docs/distribution.md).
    temp_dir hosts{"tls-hosts"};
    auto refused = [&](const std::string& tls_toml, const char* what) {
      CAPTURE(what);
      auto toml =
        hosts.path + "/" + std::to_string(std::hash<std::string>{}(what)) + ".toml";
      std::ofstream{toml} << fmt::format(R"(node_connect_timeout_ms = 3000
[[pools]]
name = "default"
adapter = "snakepit_bridge.adapters.showcase.ShowcaseAdapter"
pool_size = 1
[[nodes]]
name = "n1"
address = "{}"
)",
                                         node.address())
                          << tls_toml;
      auto out = toml + ".out";
      auto cmd = fmt::format("{} exec --config {} --pool remote info >{} 2>&1",
                             SNAKEPIT_CLI_BINARY, toml, out);
      auto status = std::system(cmd.c_str());
      auto text = read_file(out);
      CAPTURE(text);
      CHECK(WEXITSTATUS(status) == 7);
      CHECK(text.find("node_down") != std::string::npos);
      CHECK(text.find("disconnect_during_handshake") != std::string::npos);
    };
    refused("", "plain host");
    refused(pki.toml("rogue"), "certificate of another CA");

    // The good host still works after the refusals.
    // The good host kept its connection through the refusals (a refused handshake
    // must not disturb the node's other connections).
    auto after = (*good)->execute("info", json::object(), on_remote());
    REQUIRE_MESSAGE(after, (after ? "" : snakepit::describe(after.error())));
    CHECK((*good)->telemetry().flush(5s));
    CHECK(good_events.count("snakepit.node.down") == 0);
    CHECK(good_events.count("snakepit.node.connected") == 1);
    stop_and_check(**good);

    // Files that would abort the process at the first connection fail the start.
    auto mismatched = host_config({&node});
    mismatched.tls = pki.tls("host");
    mismatched.tls.key = pki.file("node.key");
    auto bad = snakepit::runtime::start(mismatched);
    REQUIRE_FALSE(bad);
    CHECK(bad.error() == errc::invalid_config);
    CHECK(snakepit::describe(bad.error()).find("tls.key") != std::string::npos);
    auto missing = host_config({&node});
    missing.tls = pki.tls("host");
    missing.tls.ca = pki.file("no-such-ca.pem");
    auto absent = snakepit::runtime::start(missing);
    REQUIRE_FALSE(absent);
    CHECK(absent.error() == errc::invalid_config);
    CHECK(snakepit::describe(absent.error()).find("tls.ca") != std::string::npos);
    auto partial = host_config({&node});
    partial.tls.certificate = pki.file("host.pem");
    CHECK(snakepit::runtime::start(partial).error() == errc::invalid_config);

    // A node with a bad key refuses to start (exit 3, invalid_config).
    temp_dir dir{"bad-node"};
    auto toml = dir.path + "/node.toml";
    std::ofstream{toml} << node_toml(1)
                        << fmt::format("[tls]\ncertificate = \"{}\"\nkey = \"{}\"\n"
                                       "ca = \"{}\"\n",
                                       pki.file("node.pem"), pki.file("host.key"),
                                       pki.file("ca1.pem"));
    auto cmd = fmt::format("{} node --listen 127.0.0.1:0 --config {} >/dev/null 2>&1",
                           SNAKEPIT_CLI_BINARY, toml);
    auto status = std::system(cmd.c_str());
    CHECK(WEXITSTATUS(status) == 3);
  }

  TEST_CASE("nodes in a host-owned actor system without the middleman are refused at "
            "start, with the fix named") {
    caf::actor_system_config sys_cfg;
    snakepit::configure_system(sys_cfg);
    caf::actor_system sys{sys_cfg};
    auto cfg = small_config(1);
    cfg.nodes.push_back({"n1", "127.0.0.1:9"});
    auto rt = snakepit::runtime::start(sys, cfg);
    REQUIRE_FALSE(rt);
    CHECK(rt.error() == errc::invalid_config);
    CHECK(snakepit::describe(rt.error()).find("prepare_distributed_system") !=
          std::string::npos);
  }

  TEST_CASE("a node stops on SIGTERM with its workers, and refuses a non-loopback "
            "address without allow_insecure") {
    node_process node{2};
    auto rt = snakepit::runtime::start(host_config({&node}));
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(all_connected(r));
    std::set<int> workers;
    for (int i = 0; i < 6; ++i) {
      auto res = r.execute("info", json::object(), on_remote());
      REQUIRE_OK(res);
      workers.insert(pid_of(res));
    }
    CHECK_FALSE(workers.empty());
    auto status = node.terminate();
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(node.rest_of_output().find("stopped") != std::string::npos);
    for (auto pid : workers)
      CHECK_MSG(!pid_alive(pid), "worker " << pid << " outlived its node");
    stop_and_check(r);

    auto cmd =
      fmt::format("{} node --listen 0.0.0.0:0 >/dev/null 2>&1", SNAKEPIT_CLI_BINARY);
    auto refused = std::system(cmd.c_str());
    CHECK(WEXITSTATUS(refused) == 3); // invalid_config

    // The configuration may allow it too: the node listens, warns, and stops on
    // SIGTERM (sent by `timeout`) with its worker.
    temp_dir dir{"insecure"};
    auto toml = dir.path + "/node.toml";
    std::ofstream{toml} << "node_allow_insecure = true\n" << node_toml(1);
    auto allowed =
      fmt::format("timeout -s TERM 6 {} node --listen 0.0.0.0:0 --config {} 2>&1",
                  SNAKEPIT_CLI_BINARY, toml);
    std::string out;
    {
      FILE* pipe = ::popen(allowed.c_str(), "r");
      REQUIRE(pipe != nullptr);
      char buf[4096];
      size_t n;
      while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0)
        out.append(buf, n);
      ::pclose(pipe);
    }
    CHECK_MSG(out.find("node listening on 0.0.0.0:") != std::string::npos, out);
    CHECK_MSG(out.find("without TLS") != std::string::npos, out);
    CHECK_MSG(out.find("stopped") != std::string::npos, out);
  }

  TEST_CASE("a stream from a node: chunks in order, errors after their chunks, a halt "
            "ends it cleanly, a slow caller holds the producer back, events carry the "
            "node") {
    node_process node{1};
    event_log events;
    auto rt = snakepit::runtime::start(host_config({&node}), recording(events));
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(all_connected(r));

    std::vector<int> steps;
    bool final_seen = false;
    auto opts = on_remote();
    opts.correlation_id = "dist-stream-1";
    CHECK_OK(r.execute_stream(
      "stream_progress", {{"steps", 5}},
      [&](const json& chunk, bool is_final) {
        if (is_final)
          final_seen = true;
        else
          steps.push_back(chunk.value("step", 0));
        return true;
      },
      opts));
    CHECK(steps == std::vector<int>{1, 2, 3, 4, 5});
    CHECK(final_seen);

    // A tool that raises after two chunks: both arrive, then tool_error.
    int seen = 0;
    opts.correlation_id = "dist-stream-2";
    auto failed = r.execute_stream(
      "stream_fail", {{"after", 2}},
      [&](const json&, bool) {
        ++seen;
        return true;
      },
      opts);
    CHECK(seen == 2);
    CHECK(failed == errc::tool_error);
    CHECK(snakepit::correlation_id_of(failed) == "dist-stream-2");

    // A caller that sleeps on its fifth chunk holds the producer back (the window
    // across the nodes, then the worker's own bounds), then stops the stream.
    auto probe = temp_file("dist-flow");
    seen = 0;
    size_t produced = 0;
    auto halted = r.execute_stream(
      "stream_record", {{"steps", 600}, {"path", probe}, {"size", 65536}},
      [&](const json&, bool) {
        if (++seen < 5)
          return true;
        std::this_thread::sleep_for(1500ms);
        auto text = read_file(probe);
        produced = static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
        return false;
      },
      on_remote());
    CHECK_OK(halted);
    CHECK(seen == 5);
    CHECK(produced > 5);
    CHECK(produced < 600);
    ::unlink(probe.c_str());
    // The halt freed the node's worker: the next call runs at once.
    auto next_opts = on_remote();
    next_opts.timeout = 10s;
    REQUIRE_OK(r.execute("info", json::object(), next_opts));

    // A stream in a session goes where the session was placed.
    seen = 0;
    CHECK_OK(r.execute_in_session_stream(
      "dist-stream-session", "stream_progress", {{"steps", 2}},
      [&](const json&, bool) {
        ++seen;
        return true;
      },
      on_remote()));
    CHECK(seen >= 2);

    CHECK(r.telemetry().flush(5s));
    CHECK(events.count("snakepit.node.connected", "node", "n1") == 1);
    CHECK(events.count("snakepit.stream.start", "node", "n1") >= 4);
    CHECK(events.count("snakepit.stream.stop", "node", "n1") >= 4);
    CHECK(events.count("snakepit.request.start", "correlation_id", "dist-stream-1") == 1);
    CHECK(events.count("snakepit.request.exception", "correlation_id", "dist-stream-2") ==
          1);
    CHECK(events.count("snakepit.request.stop", "node", "n1") >= 4);
    auto view = r.nodes();
    CHECK(find_node(view, "n1")->calls >= 5);
    stop_and_check(r);
  }

  TEST_CASE("a node killed mid-stream ends the stream with node_down after the chunks "
            "already delivered, within 2 s") {
    node_process node{1};
    event_log events;
    auto rt = snakepit::runtime::start(host_config({&node}), recording(events));
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(all_connected(r));
    int seen = 0;
    std::chrono::steady_clock::time_point killed_at;
    auto opts = on_remote();
    opts.correlation_id = "dist-stream-lost";
    opts.timeout = 30s;
    auto err = r.execute_stream(
      "stream_progress", {{"steps", 400}, {"delay_ms", 50}},
      [&](const json& chunk, bool) {
        ++seen;
        CHECK(chunk.value("step", 0) == seen);
        if (seen == 3) {
          killed_at = std::chrono::steady_clock::now();
          node.signal(SIGKILL);
        }
        return true;
      },
      opts);
    auto lost_after = std::chrono::steady_clock::now() - killed_at;
    CHECK(err == errc::node_down);
    CHECK(snakepit::correlation_id_of(err) == "dist-stream-lost");
    CHECK(seen >= 3);
    CHECK(seen < 400);
    CHECK(lost_after < 2s);
    node.kill_now();
    CHECK(r.telemetry().flush(5s));
    CHECK(events.count("snakepit.node.down", "node", "n1") == 1);
    CHECK(events.count("snakepit.stream.stop", "correlation_id", "dist-stream-lost") ==
          1);
    CHECK(events.count("snakepit.request.exception", "correlation_id",
                       "dist-stream-lost") == 1);
    // Every node event the catalogue lists was emitted here.
    auto listed = node_events_in_docs();
    CHECK(listed.size() >= 2);
    for (auto& name : listed)
      CHECK_MSG(events.count(name) > 0,
                "listed in docs/telemetry.md, not emitted: " << name);
    stop_and_check(r);
  }

  TEST_CASE("a host that dies: its queued call never runs, the node serves other hosts") {
    node_process node{1};
    auto rt = snakepit::runtime::start(host_config({&node}));
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(all_connected(r));
    temp_dir dir{"dead-host"};
    auto toml = dir.path + "/host.toml";
    std::ofstream{toml} << fmt::format(R"([[pools]]
name = "default"
adapter = "snakepit_bridge.adapters.showcase.ShowcaseAdapter"
pool_size = 1
[[nodes]]
name = "n1"
address = "{}"
)",
                                       node.address());
    auto probe = dir.path + "/ran";
    // Another host holds the node's one worker; a third host's call waits behind it.
    auto holder = spawn_cli(
      {"exec", "--config", toml, "--pool", "remote", "sleep", R"({"ms":4000})"});
    REQUIRE(eventually([&] { return remote_load(r, "n1").first == 1; }, 30s));
    auto doomed =
      spawn_cli({"exec", "--config", toml, "--pool", "remote", "--timeout-ms", "30000",
                 "record", json{{"path", probe}, {"value", "dead host"}}.dump()});
    REQUIRE(eventually([&] { return remote_load(r, "n1").second == 1; }, 30s));
    auto doomed_workers = children_of(doomed);
    ::kill(doomed, SIGKILL);
    ::waitpid(doomed, nullptr, 0);
    // Its workers follow it through their lifeline; then its runtime directory is
    // swept as the next start of a runtime would.
    CHECK(eventually(
      [&] {
        for (auto pid : doomed_workers)
          if (pid_alive(pid))
            return false;
        return true;
      },
      10s));
    for (const char* parent :
         {static_cast<const char*>(::getenv("XDG_RUNTIME_DIR")), "/tmp"})
      if (parent && std::filesystem::is_directory(parent))
        snakepit::detail::sweep_runtime_dirs(parent, "");
    int status = 0;
    ::waitpid(holder, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    // This host's call runs (after the holder's), the dead host's never does.
    auto mine =
      r.execute("record", {{"path", probe}, {"value", "live host"}}, on_remote());
    REQUIRE_OK(mine);
    std::this_thread::sleep_for(300ms);
    CHECK(read_file(probe) == "live host\n");
    stop_and_check(r);
  }

  TEST_CASE("get_stats and list_workers of a pool only nodes serve: every connected "
            "node's figures, workers named by node") {
    node_process a{2};
    node_process b{1};
    auto rt = snakepit::runtime::start(host_config({&a, &b}));
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(all_connected(r));
    std::set<int> pids;
    for (int i = 0; i < 6; ++i) {
      auto res = r.execute("info", json::object(), on_remote());
      REQUIRE_OK(res);
      pids.insert(pid_of(res));
    }
    auto failed = r.execute("fail", {{"message", "counted"}}, on_remote());
    REQUIRE_FALSE(failed);

    auto stats = r.get_stats("remote");
    REQUIRE_OK(stats);
    CHECK(stats->pool == "remote");
    CHECK(stats->workers == 3);
    CHECK(stats->capacity == 3);
    CHECK(stats->completed == 6);
    CHECK(stats->errors == 1);
    CHECK(stats->latency.count() == 6);
    CHECK(stats->latency_p50_ms > 0);
    CHECK(stats->error_rate == doctest::Approx(1.0 / 7));
    CHECK(r.get_stats("no_such_pool").error() == errc::pool_not_found);

    auto workers = r.list_workers("remote");
    REQUIRE_OK(workers);
    REQUIRE(workers->size() == 3);
    size_t on_a = 0;
    size_t on_b = 0;
    uint64_t requests = 0;
    for (auto& w : *workers) {
      INFO(w.id);
      if (w.id.rfind("n1/", 0) == 0) {
        ++on_a;
        CHECK(descends_from(w.pid, a.pid()));
      } else if (w.id.rfind("n2/", 0) == 0) {
        ++on_b;
        CHECK(descends_from(w.pid, b.pid()));
      }
      CHECK(w.state == "ready");
      requests += w.requests;
    }
    CHECK(on_a == 2);
    CHECK(on_b == 1);
    CHECK(requests == 7);
    // The calls ran on the workers listed.
    for (auto pid : pids)
      CHECK(std::any_of(workers->begin(), workers->end(),
                        [&](auto& w) { return w.pid == pid; }));
    // A local pool keeps its own figures.
    auto local = r.get_stats("default");
    REQUIRE_OK(local);
    CHECK(local->workers == 1);

    // A lost node drops out; with none left the answer is node_down.
    a.kill_now();
    REQUIRE(eventually([&] { return node_is(r, "n1", dist::node_state::down); }, 5s));
    auto after = r.get_stats("remote");
    REQUIRE_OK(after);
    CHECK(after->workers == 1);
    auto left = r.list_workers("remote");
    REQUIRE_OK(left);
    REQUIRE(left->size() == 1);
    CHECK(left->front().id.rfind("n2/", 0) == 0);
    b.kill_now();
    REQUIRE(eventually([&] { return node_is(r, "n2", dist::node_state::down); }, 5s));
    auto none = r.get_stats("remote");
    REQUIRE_FALSE(none);
    CHECK_MSG(none.error() == errc::node_down, explain(none.error()));
    stop_and_check(r);
  }

  TEST_CASE("the actor API: runtime::pool of a pool on nodes places requests, "
            "windowed streams and async calls there, with typed errors") {
    node_process node{2};
    auto rt = snakepit::runtime::start(host_config({&node}));
    REQUIRE_OK(rt);
    auto& r = **rt;
    REQUIRE(all_connected(r));
    auto pool = snakepit::actors::pool_handle(r.pool("remote"));
    REQUIRE(pool);
    CHECK_FALSE(r.pool("no_such_pool"));
    {
      caf::scoped_actor self{r.system()};
      // A request: the reply comes from a worker of the node.
      snakepit::execute_request req;
      req.command = "info";
      req.args = json::object();
      int pid = 0;
      snakepit::actors::execute(self, pool, req, 20s)
        .receive(
          [&](snakepit::execute_reply& reply) { pid = reply.result.value("pid", 0); },
          [&](caf::error& err) { FAIL_CHECK(explain(err)); });
      CHECK(descends_from(pid, node.pid()));

      // A typed error with the caller's correlation id.
      snakepit::execute_request bad;
      bad.command = "fail";
      bad.args = {{"message", "actor api"}};
      bad.opts.correlation_id = "actor-cid";
      caf::error got;
      snakepit::actors::execute(self, pool, bad, 20s)
        .receive([&](snakepit::execute_reply&) {}, [&](caf::error& err) { got = err; });
      CHECK_MSG(got == errc::tool_error, explain(got));
      CHECK(snakepit::correlation_id_of(got) == "actor-cid");

      // A windowed stream: the window holds, acknowledgements go to the router.
      snakepit::execute_request st;
      st.command = "stream_progress";
      st.args = {{"steps", 12}};
      snakepit::actors::stream_to_sender(self.ptr(), pool, st, 4);
      size_t chunks = 0;
      size_t unacked = 0;
      bool ended = false;
      caf::error end_err;
      uint64_t stream_id = 0;
      auto on_end = [&](snakepit::actors::stream_end_atom, uint64_t,
                        const caf::error& err) {
        end_err = err;
        ended = true;
      };
      while (!ended) {
        bool stalled = false;
        self->receive(
          [&](snakepit::actors::stream_chunk_atom, uint64_t id, const json&, bool) {
            stream_id = id;
            ++chunks;
            ++unacked;
          },
          on_end, caf::after(10s) >> [&] { stalled = true; });
        REQUIRE_MESSAGE(!stalled, "no chunk within 10 s after " << chunks);
        if (unacked < 4 || ended)
          continue;
        // The window is full: nothing more comes before the acknowledgement.
        self->receive([&](snakepit::actors::stream_chunk_atom, uint64_t, const json&,
                          bool) { FAIL_CHECK("a chunk beyond the window"); },
                      on_end, caf::after(300ms) >> [] {});
        snakepit::actors::ack_stream(self.ptr(), pool, stream_id, uint32_t{4});
        unacked = 0;
      }
      CHECK_MSG(!end_err, explain(end_err));
      CHECK(chunks >= 12);

      // Stats and workers through the handle; node pools are not resized from here.
      snakepit::actors::get_stats(self, pool, 10s)
        .receive([&](snakepit::pool_stats& s) { CHECK(s.workers == 2); },
                 [&](caf::error& err) { FAIL_CHECK(explain(err)); });
      snakepit::actors::resize(self, pool, size_t{4}, 10s)
        .receive([&](caf::ok_atom) { FAIL_CHECK("resized a node's pool"); },
                 [&](caf::error& err) { CHECK(err == errc::invalid_argument); });
      snakepit::actors::await_ready(self, pool, 10s)
        .receive([&](caf::ok_atom) {},
                 [&](caf::error& err) { FAIL_CHECK(explain(err)); });

      // The local pool through its router: the call runs here.
      auto local = snakepit::actors::pool_handle(r.pool("default"));
      snakepit::execute_request here;
      here.command = "info";
      here.args = json::object();
      snakepit::actors::execute(self, local, here, 20s)
        .receive(
          [&](snakepit::execute_reply& reply) {
            CHECK_FALSE(descends_from(reply.result.value("pid", 0), node.pid()));
          },
          [&](caf::error& err) { FAIL_CHECK(explain(err)); });
    }
    // execute_async through the handle.
    std::promise<snakepit::execute_result> done;
    snakepit::callback_sink sink;
    sink.fn = [&done](snakepit::execute_result res) { done.set_value(std::move(res)); };
    snakepit::execute_request add;
    add.command = "add";
    add.args = {{"a", 1}, {"b", 2}};
    snakepit::actors::execute_async(pool, add, sink);
    auto fut = done.get_future();
    REQUIRE(fut.wait_for(20s) == std::future_status::ready);
    auto sum = fut.get();
    REQUIRE_OK(sum);
    CHECK(sum->result == 3);

    // A call in flight when the runtime stops is answered (shutting_down), and the
    // handle answers shutting_down afterwards.
    caf::scoped_actor self{r.system()};
    snakepit::execute_request slow;
    slow.command = "sleep";
    slow.args = {{"ms", 3000}};
    auto pending = self->request(pool, 20s, snakepit::actors::execute_atom::value, slow);
    std::this_thread::sleep_for(300ms);
    stop_and_check(r);
    caf::error stopped;
    std::move(pending).receive([&](snakepit::execute_reply&) {},
                               [&](caf::error& err) { stopped = err; });
    CHECK_MSG(stopped == errc::shutting_down, explain(stopped));
  }

} // TEST_SUITE
