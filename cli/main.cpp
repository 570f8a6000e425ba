// The `snakepit` command-line tool (upstream's mix tasks: snakepit.run, the Python
// adapter listing, snakepit.doctor, snakepit.cleanup): run a configured set of pools
// until a signal, run one call, list an adapter's tools, check the machine. Exit codes:
// docs/cli.md.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "actors/config/bundled_packages.hpp"
#include "actors/config/config.hpp"
#include "actors/config/config_file.hpp"
#include "actors/distribution/node.hpp"
#include "actors/observability/telemetry.hpp"
#include "actors/runtime/runtime.hpp"
#include "adapters/errors.hpp"
#include "adapters/http_server.hpp"
#include "adapters/process.hpp"
#include "adapters/process_registry.hpp"

namespace {

using namespace std::chrono_literals;
using snakepit::errc;
using snakepit::json;

/// Exit codes (docs/cli.md).
enum exit_code : int {
  exit_ok = 0,
  exit_failure = 1,     ///< doctor found a failing check; any other error
  exit_usage = 2,       ///< bad command line or arguments
  exit_config = 3,      ///< invalid configuration (file, key, type, interpreter)
  exit_start = 4,       ///< the pools could not start
  exit_tool_error = 5,  ///< the Python tool raised
  exit_unknown = 6,     ///< unknown tool, invalid arguments, unknown pool
  exit_call_failed = 7, ///< timeout, queue timeout, saturation, worker crash, ...
  exit_no_instance = 8, ///< stats/workers: no running instance (or several) reachable
};

int exit_code_of(const caf::error& err) {
  auto code = snakepit::errc_of(err);
  if (!code)
    return exit_failure;
  switch (*code) {
  case errc::invalid_config:
    return exit_config;
  case errc::start_failed:
  case errc::not_ready:
    return exit_start;
  case errc::tool_error:
    return exit_tool_error;
  case errc::unknown_tool:
  case errc::invalid_argument:
  case errc::pool_not_found:
  case errc::invalid_session_id:
  case errc::payload_too_large:
    return exit_unknown;
  case errc::timeout:
  case errc::queue_timeout:
  case errc::pool_saturated:
  case errc::worker_crashed:
  case errc::unavailable:
  case errc::shutting_down:
  case errc::cancelled:
  case errc::worker_busy:
  case errc::circuit_open:
  case errc::protocol_error:
  case errc::node_down:
  case errc::session_worker_unavailable:
  case errc::quota_exceeded:
    return exit_call_failed;
  default:
    return exit_failure;
  }
}

int fail(const caf::error& err) {
  fmt::print(stderr, "snakepit: {}\n", snakepit::describe(err));
  return exit_code_of(err);
}

/// The configuration without --config: one pool of 2 showcase workers.
snakepit::config default_config() {
  snakepit::config cfg;
  cfg.pools.front().name = "default";
  cfg.pools.front().pool_size = 2;
  cfg.pools.front().adapter = "snakepit_bridge.adapters.showcase.ShowcaseAdapter";
  return cfg;
}

/// `--log-level` / `--log-format` of run and exec; empty = the configuration's.
struct log_overrides {
  std::string level;
  std::string format;
};

caf::expected<snakepit::config> resolve_config(const std::string& path,
                                               const log_overrides& log = {}) {
  auto cfg = path.empty() ? caf::expected<snakepit::config>{default_config()}
                          : snakepit::load_config(path);
  // The options' checks admit only valid names.
  if (auto level = snakepit::adapters::parse_log_level(log.level); cfg && level)
    cfg->log.level = *level;
  if (auto format = snakepit::adapters::parse_log_format(log.format); cfg && format)
    cfg->log.format = *format;
  return cfg;
}

caf::expected<const snakepit::pool_config*> find_pool(const snakepit::config& cfg,
                                                      const std::string& name) {
  if (name.empty())
    return &cfg.pools.front();
  for (auto& p : cfg.pools)
    if (p.name == name)
      return &p;
  return snakepit::make_error(errc::pool_not_found, name);
}

// ------------------------------------------------------------------ python helper

struct captured {
  bool started = false;
  bool timed_out = false;
  int code = -1;
  std::string out;
  std::string err;
};

/// Runs the configured interpreter with `args` (PYTHONPATH of the config plus `env`),
/// collecting stdout and stderr; kills it after `timeout`.
captured run_python(const snakepit::config& cfg, std::vector<std::string> args,
                    std::vector<std::pair<std::string, std::string>> env,
                    std::chrono::milliseconds timeout = 60s) {
  captured res;
  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0)
    return res;
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return res;
  }
  env.emplace_back("PYTHONPATH", cfg.effective_python_path());
  env.emplace_back("PYTHONDONTWRITEBYTECODE", "1");
  snakepit::adapters::process_spec spec;
  spec.executable = cfg.python;
  spec.args = std::move(args);
  spec.env = snakepit::adapters::build_environment(env);
  spec.pass_lifeline = false;
  spec.stdout_fd = out_pipe[1];
  spec.stderr_fd = err_pipe[1];
  auto proc = snakepit::adapters::spawn_process(spec);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (!proc) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    res.err = snakepit::describe(proc.error());
    return res;
  }
  res.started = true;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&res.out, &res.err};
  int open_fds = 2;
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      res.timed_out = true;
      break;
    }
    if (::poll(fds, 2, static_cast<int>(left.count())) < 0 && errno != EINTR)
      break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0)
        continue;
      char buf[4096];
      auto n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0)
      ::close(f.fd);
  if (res.timed_out)
    proc->signal_group(SIGKILL);
  auto status =
    snakepit::adapters::wait_for_exit(proc->pid(), res.timed_out ? 5s : timeout);
  if (!status) {
    proc->signal_group(SIGKILL);
    snakepit::adapters::wait_for_exit(proc->pid(), 5s);
    res.timed_out = true;
  } else if (status->exited()) {
    res.code = status->code;
  }
  return res;
}

std::string last_line(const std::string& text) {
  auto end = text.find_last_not_of("\n\r ");
  if (end == std::string::npos)
    return {};
  auto begin = text.rfind('\n', end);
  return text.substr(begin == std::string::npos ? 0 : begin + 1, end - begin);
}

// ------------------------------------------------------------------ commands

/// What `exec` was asked to run.
struct exec_request {
  std::string config_path;
  std::string pool;
  std::string session;
  std::string tool;
  std::string args_text;
  int timeout_ms = 0;
  /// Stream even if the tool does not declare `supports_streaming`.
  bool stream = false;
};

/// Whether the workers registered `tool` as a streaming tool.
bool streams(snakepit::runtime& rt, const std::string& tool, const std::string& session) {
  auto tools = rt.list_tools(session);
  if (!tools)
    return false;
  return std::any_of(
    tools->begin(), tools->end(), [&](const snakepit::actors::tool_info& t) {
      return t.name == tool && t.kind == "python" && t.supports_streaming;
    });
}

/// Prints every chunk as one JSON line as it arrives (the empty end marker the
/// worker appends to an unmarked stream is not printed).
int exec_stream(snakepit::runtime& rt, const std::string& tool, json args,
                const snakepit::execute_options& opts) {
  auto err = rt.execute_stream(
    tool, std::move(args),
    [](const json& chunk, bool is_final) {
      if (!(is_final && chunk.is_object() && chunk.empty())) {
        fmt::print("{}\n", chunk.dump());
        std::fflush(stdout);
      }
      return true;
    },
    opts);
  if (!err)
    return exit_ok;
  auto code = fail(err);
  auto py = snakepit::python_error_of(err);
  if (code == exit_tool_error && py && !py->traceback.empty())
    fmt::print(stderr, "{}", py->traceback);
  return code;
}

int cmd_exec(const exec_request& x, const log_overrides& log) {
  const auto& [config_path, pool, session, tool, args_text, timeout_ms, force_stream] = x;
  json args = json::object();
  if (!args_text.empty()) {
    try {
      args = json::parse(args_text);
    } catch (const json::exception& e) {
      fmt::print(stderr, "snakepit: ARGS is not valid JSON: {}\n", e.what());
      return exit_usage;
    }
    if (!args.is_object()) {
      fmt::print(stderr, "snakepit: ARGS must be a JSON object, e.g. '{{\"a\": 1}}'\n");
      return exit_usage;
    }
  }
  auto cfg = resolve_config(config_path, log);
  if (!cfg)
    return fail(cfg.error());
  // A pool that is not local may be a node's (docs/distribution.md).
  if (auto p = find_pool(*cfg, pool); !p && cfg->nodes.empty())
    return fail(p.error());
  auto rt = snakepit::runtime::start(*cfg);
  if (!rt)
    return fail(rt.error());
  snakepit::execute_options opts;
  opts.pool = pool;
  opts.session_id = session;
  opts.timeout = std::chrono::milliseconds{timeout_ms};
  if (force_stream || streams(**rt, tool, session)) {
    auto code = exec_stream(**rt, tool, std::move(args), opts);
    if (auto err = (*rt)->stop(); err && code == exit_ok)
      return fail(err);
    return code;
  }
  auto res = (*rt)->execute(tool, std::move(args), opts);
  int code = exit_ok;
  if (res) {
    fmt::print("{}\n", res->result.dump());
    if (!res->binary_result.empty())
      fmt::print(stderr,
                 "snakepit: the tool also returned {} bytes of binary data "
                 "(not shown)\n",
                 res->binary_result.size());
  } else {
    code = fail(res.error());
    auto py = snakepit::python_error_of(res.error());
    if (code == exit_tool_error && py && !py->traceback.empty())
      fmt::print(stderr, "{}", py->traceback);
  }
  std::fflush(stdout);
  if (auto err = (*rt)->stop(); err && code == exit_ok)
    return fail(err);
  return code;
}

/// Blocks SIGINT and SIGTERM in every thread (the runtime's threads inherit the
/// mask; worker processes get a clean one), to be taken with sigwait.
sigset_t block_stop_signals() {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  return stop_signals;
}

/// Waits for SIGINT or SIGTERM, then stops with `stop` and says so.
int serve_until_signal(const sigset_t& stop_signals,
                       const std::function<caf::error()>& stop) {
  int sig = 0;
  while (sigwait(&stop_signals, &sig) != 0) {
  }
  fmt::print("snakepit: {} received, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  std::fflush(stdout);
  if (auto err = stop())
    return fail(err);
  fmt::print("snakepit: stopped\n");
  return exit_ok;
}

int cmd_run(const std::string& config_path, int start_timeout_ms,
            const log_overrides& log) {
  auto cfg = resolve_config(config_path, log);
  if (!cfg)
    return fail(cfg.error());
  auto stop_signals = block_stop_signals();
  size_t total = 0;
  for (auto& p : cfg->pools)
    total += p.pool_size;
  fmt::print("snakepit: starting {} pool(s), {} worker(s)\n", cfg->pools.size(), total);
  std::fflush(stdout);
  snakepit::start_options sopts;
  sopts.wait_ready = false;
  // Worker lifecycle events (spawned, terminated, restarted; ready has its own line
  // below) as one line each, attached before the start so the first spawns show too.
  sopts.telemetry_handlers.emplace_back(
    "snakepit.worker", [](const snakepit::telemetry::event& ev) {
      if (ev.name == "snakepit.worker.ready")
        return;
      fmt::print("snakepit: {} {} {}\n", ev.name, ev.measurements.dump(),
                 ev.metadata.dump());
      std::fflush(stdout);
    });
  auto rt = snakepit::runtime::start(*cfg, sopts);
  if (!rt)
    return fail(rt.error());
  auto& r = **rt;
  std::set<std::string> seen;
  size_t ready = 0;
  auto report_ready = [&] {
    for (auto& p : cfg->pools) {
      auto ws = r.list_workers(p.name);
      if (!ws)
        continue;
      for (auto& w : *ws)
        if (seen.insert(p.name + "/" + w.id).second)
          fmt::print("snakepit: ready {}/{} worker {} (pid {}) in pool {}\n", ++ready,
                     total, w.id, w.pid, p.name);
    }
    std::fflush(stdout);
  };
  auto deadline =
    std::chrono::steady_clock::now() + std::chrono::milliseconds{start_timeout_ms};
  for (;;) {
    auto err = r.await_ready(200ms);
    report_ready();
    if (!err)
      break;
    if (snakepit::errc_of(err) != errc::not_ready ||
        std::chrono::steady_clock::now() >= deadline) {
      int code = fail(err);
      r.stop();
      return code == exit_call_failed ? exit_start : code;
    }
    // Also stop on a signal during start.
    timespec zero{0, 0};
    if (sigtimedwait(&stop_signals, nullptr, &zero) > 0) {
      fmt::print("snakepit: stopping\n");
      r.stop();
      return exit_ok;
    }
  }
  if (auto sock = r.control_socket(); !sock.empty())
    fmt::print("snakepit: control socket {} (snakepit stats --pid {})\n", sock,
               ::getpid());
  if (auto addr = r.metrics_address(); !addr.empty())
    fmt::print("snakepit: metrics on http://{}/metrics\n", addr);
  fmt::print("snakepit: serving ({} worker(s) ready); stop with Ctrl-C or SIGTERM\n",
             ready);
  std::fflush(stdout);
  return serve_until_signal(stop_signals, [&r] { return r.stop(); });
}

/// `snakepit node`: a worker node serving its pools to hosts until SIGINT/SIGTERM
/// (docs/distribution.md).
int cmd_node(const std::string& config_path, const std::string& listen,
             bool allow_insecure, int start_timeout_ms, const log_overrides& log) {
  auto cfg = resolve_config(config_path, log);
  if (!cfg)
    return fail(cfg.error());
  auto addr = snakepit::distribution::parse_address(listen);
  if (!addr)
    return fail(addr.error());
  auto stop_signals = block_stop_signals();
  snakepit::distribution::node_options nopts;
  nopts.host = addr->first;
  nopts.port = addr->second;
  nopts.allow_insecure = allow_insecure;
  snakepit::start_options sopts;
  sopts.timeout = std::chrono::milliseconds{start_timeout_ms};
  auto node = snakepit::distribution::node::start(*cfg, nopts, sopts);
  if (!node)
    return fail(node.error());
  auto& n = **node;
  if (auto sock = n.runtime().control_socket(); !sock.empty())
    fmt::print("snakepit: control socket {} (snakepit stats --pid {})\n", sock,
               ::getpid());
  fmt::print("snakepit: node listening on {} (pools: {}); stop with Ctrl-C or SIGTERM\n",
             n.address(), fmt::join(n.runtime().pool_names(), ", "));
  std::fflush(stdout);
  return serve_until_signal(stop_signals, [&n] { return n.stop(); });
}

/// The tools of a pool whose workers are a program of their own (`command`): one
/// worker is started and what it declared (a stdio bridge's ping answer, a gRPC
/// worker's RegisterTools) is read back from the host's tool registry.
caf::expected<json> declared_tools(const snakepit::config& cfg,
                                   const snakepit::pool_config& pool) {
  auto one = cfg;
  one.pools = {pool};
  one.pools[0].pool_size = 1;
  one.control_socket = false;
  one.metrics.address.clear();
  auto rt = snakepit::runtime::start(one);
  if (!rt)
    return rt.error();
  auto tools = (*rt)->list_tools();
  auto stopped = (*rt)->stop();
  if (!tools)
    return tools.error();
  if (stopped)
    return stopped;
  json out = json::array();
  for (auto& t : *tools)
    if (t.kind == "python")
      out.push_back({{"name", t.name},
                     {"description", t.description},
                     {"supports_streaming", t.supports_streaming},
                     {"parameters", json::array()}});
  return out;
}

int cmd_tools(const std::string& config_path, const std::string& pool, bool as_json) {
  auto cfg = resolve_config(config_path);
  if (!cfg)
    return fail(cfg.error());
  auto p = find_pool(*cfg, pool);
  if (!p)
    return fail(p.error());
  if (!(*p)->command.empty()) {
    auto tools = declared_tools(*cfg, **p);
    if (!tools)
      return fail(tools.error());
    if (as_json) {
      fmt::print("{}\n", tools->dump(2));
      return exit_ok;
    }
    fmt::print("{} ({} tools)\n", fmt::join((*p)->command, " "), tools->size());
    for (auto& t : *tools)
      fmt::print("  {}{}  {}\n", t.value("name", ""),
                 t.value("supports_streaming", false) ? " [stream]" : "",
                 t.value("description", ""));
    return exit_ok;
  }
  auto res = run_python(
    *cfg, {"-m", "snakepit_bridge", "--list-tools", "--adapter", (*p)->adapter},
    (*p)->adapter_env);
  if (!res.started || res.timed_out || res.code != 0) {
    auto why = res.timed_out ? std::string{"timed out"} : last_line(res.err);
    fmt::print(
      stderr, "snakepit: cannot list the tools of {}: {}\n(run `snakepit doctor`)\n",
      (*p)->adapter, why.empty() ? "exit code " + std::to_string(res.code) : why);
    return res.code == 3 ? exit_config : exit_failure;
  }
  json tools;
  try {
    tools = json::parse(res.out);
  } catch (const json::exception& e) {
    fmt::print(stderr, "snakepit: the worker printed no tool list: {}\n", e.what());
    return exit_failure;
  }
  if (as_json) {
    fmt::print("{}\n", tools.dump(2));
    return exit_ok;
  }
  fmt::print("{} ({} tools)\n", (*p)->adapter, tools.size());
  for (auto& t : tools) {
    std::string params;
    for (auto& prm : t.value("parameters", json::array())) {
      if (!params.empty())
        params += ", ";
      params += prm.value("name", "");
      if (!prm.value("required", true))
        params += "?";
    }
    fmt::print("  {}({}){}  {}\n", t.value("name", ""), params,
               t.value("supports_streaming", false) ? " [stream]" : "",
               t.value("description", ""));
  }
  return exit_ok;
}

/// The doctor's lines about the bundled worker packages: which Python package the
/// workers get (path, installed or build tree, ...), where Python imports it from, and
/// the Node.js bridge's path when there is one (docs/install.md).
template<class Check>
void check_worker_packages(const snakepit::config& c, Check& check) {
  auto pkg = snakepit::find_python_package(c.python_path);
  check(pkg.origin != snakepit::package_origin::none, "worker package",
        pkg.path.empty() ? std::string{"not found"}
                         : fmt::format("{} ({})", fmt::join(pkg.path, ":"),
                                       snakepit::to_string(pkg.origin)),
        "install snakepit (docs/install.md), or set SNAKEPIT_PYTHON_PACKAGE_DIR or "
        "python_path to the directory that holds snakepit_bridge");
  auto imported = run_python(
    c,
    {"-c",
     "import os, snakepit_bridge; print(os.path.dirname(snakepit_bridge.__file__))"},
    {});
  bool pkg_ok = imported.started && !imported.timed_out && imported.code == 0;
  check(pkg_ok, "snakepit_bridge package",
        pkg_ok ? last_line(imported.out) : last_line(imported.err),
        fmt::format("put the directory that holds snakepit_bridge on python_path (now: "
                    "{})",
                    c.effective_python_path()));
  if (auto node = snakepit::find_node_bridge(); !node.script.empty())
    check(true, "node bridge",
          fmt::format("{} ({})", node.script, snakepit::to_string(node.origin)), "");
}

int cmd_doctor(const std::string& config_path) {
  int failures = 0;
  auto check = [&](bool ok, const std::string& what, const std::string& detail,
                   const std::string& fix) {
    fmt::print("[{}] {}{}\n", ok ? " OK " : "FAIL", what,
               detail.empty() ? "" : ": " + detail);
    if (!ok) {
      ++failures;
      fmt::print("       fix: {}\n", fix);
    }
    std::fflush(stdout);
    return ok;
  };
  auto cfg = resolve_config(config_path);
  if (!config_path.empty())
    check(static_cast<bool>(cfg), "configuration " + config_path,
          cfg ? "" : snakepit::describe(cfg.error()),
          "correct the named key (see docs/configuration.md)");
  if (!cfg)
    cfg = default_config();
  auto& c = *cfg;
  bool interp = ::access(c.python.c_str(), X_OK) == 0;
  if (!check(interp, "interpreter " + c.python, interp ? "" : "missing or not executable",
             "apt-get install python3, or set `python` in the config file")) {
    fmt::print("{} check(s) failed\n", failures);
    return exit_failure;
  }
  auto py = [&](const std::vector<std::string>& args,
                const std::vector<std::pair<std::string, std::string>>& env = {}) {
    auto r = run_python(c, args, env);
    auto detail = r.timed_out ? std::string{"timed out"} : last_line(r.err);
    return std::make_pair(r.started && !r.timed_out && r.code == 0, detail);
  };
  auto [grpc_ok, grpc_why] = py({"-c", "import grpc, google.protobuf"});
  check(grpc_ok, "import grpc, google.protobuf", grpc_ok ? "" : grpc_why,
        "apt-get install python3-grpcio python3-protobuf");
  check_worker_packages(c, check);
  auto [gen_ok, gen_why] =
    py({"-c", "import snakepit_bridge_pb2, snakepit_bridge_pb2_grpc"});
  check(gen_ok, "generated modules snakepit_bridge_pb2, snakepit_bridge_pb2_grpc",
        gen_ok ? "" : gen_why,
        "build the project (they are generated into <build>/python; installed: "
        "<prefix>/share/snakepit/python) and keep that directory on python_path");
  for (auto& p : c.pools) {
    auto [ok, why] = py(
      {"-m", "snakepit_bridge", "--health-check", "--adapter", p.adapter}, p.adapter_env);
    check(ok, fmt::format("pool {}: adapter {}", p.name, p.adapter), ok ? "" : why,
          "check the adapter's module path (pkg.module.Class) and that its imports are "
          "installed for " +
            c.python);
  }
  auto dir = snakepit::adapters::runtime_dir::create("snakepit-doctor");
  std::string dir_path = dir ? dir->path() : std::string{};
  check(static_cast<bool>(dir), "runtime directory",
        dir ? "writable (" + dir_path + ")" : snakepit::describe(dir.error()),
        "make $XDG_RUNTIME_DIR (or /tmp) writable for this user");
  if (dir)
    dir->remove();
  auto data_dir =
    c.data_dir.empty() ? snakepit::adapters::default_data_dir() : c.data_dir;
  auto reg = snakepit::adapters::process_registry::open(data_dir);
  std::string reg_detail;
  if (reg) {
    auto n = (*reg)->entries().size();
    reg_detail =
      fmt::format("{} ({} recorded process{}{})", (*reg)->path(), n, n == 1 ? "" : "es",
                  n > 0 ? "; `snakepit cleanup` sweeps those of dead runs" : "");
  } else {
    reg_detail = snakepit::describe(reg.error());
  }
  check(static_cast<bool>(reg), "process registry", reg_detail,
        "make " + data_dir +
          " writable for this user, or set `data_dir` in the config file");
  if (failures > 0) {
    fmt::print("{} check(s) failed\n", failures);
    return exit_failure;
  }
  fmt::print("all checks passed\n");
  return exit_ok;
}

int cmd_cleanup(const std::string& config_path) {
  auto cfg = resolve_config(config_path);
  if (!cfg)
    return fail(cfg.error());
  auto report = snakepit::cleanup_orphans(*cfg);
  if (!report)
    return fail(report.error());
  fmt::print("snakepit: cleanup: {} killed, {} entries removed, {} left to live runs, "
             "{} survivors\n",
             report->killed, report->removed, report->live, report->survivors);
  return report->survivors == 0 ? exit_ok : exit_failure;
}

// ------------------------------------------------------------------ stats / workers

/// A running instance: its runtime directory and owner pid.
struct instance {
  std::string dir;
  long pid = 0;
};

/// Runtime directories (`snakepit-*` in /tmp and $XDG_RUNTIME_DIR) whose owner is
/// alive (pid and start time of the `owner` file match) and that have a control socket.
std::vector<instance> live_instances() {
  namespace fs = std::filesystem;
  std::vector<std::string> bases{"/tmp"};
  if (auto* xdg = ::getenv("XDG_RUNTIME_DIR"); xdg && *xdg && std::string{xdg} != "/tmp")
    bases.emplace_back(xdg);
  std::vector<instance> out;
  for (auto& base : bases) {
    std::error_code ec;
    for (auto& entry : fs::directory_iterator{base, ec}) {
      auto name = entry.path().filename().string();
      if (name.rfind("snakepit-", 0) != 0 || !entry.is_directory(ec))
        continue;
      std::ifstream in{entry.path() / "owner"};
      long pid = 0;
      uint64_t start = 0;
      if (!(in >> pid >> start) || pid <= 0)
        continue;
      auto now_start = snakepit::adapters::process_start_time(static_cast<pid_t>(pid));
      if (!now_start || *now_start != start)
        continue;
      if (!fs::exists(entry.path() / "control.sock", ec))
        continue;
      out.push_back(instance{entry.path().string(), pid});
    }
  }
  return out;
}

/// Sends `method target` to the instance chosen by --runtime-dir / --pid (or the
/// only live one) and returns its JSON; prints the error and sets `code` otherwise.
std::optional<json> ask_instance(const std::string& runtime_dir, long pid,
                                 const std::string& target, int& code,
                                 const std::string& method = "GET") {
  code = exit_no_instance;
  std::string dir = runtime_dir;
  if (dir.empty()) {
    auto found = live_instances();
    if (pid > 0) {
      std::vector<instance> mine;
      for (auto& i : found)
        if (i.pid == pid)
          mine.push_back(i);
      found = std::move(mine);
    }
    if (found.empty()) {
      fmt::print(stderr,
                 "snakepit: no running snakepit instance{} found (start one with "
                 "`snakepit run`, or pass --runtime-dir)\n",
                 pid > 0 ? fmt::format(" with pid {}", pid) : std::string{});
      return std::nullopt;
    }
    if (found.size() > 1) {
      fmt::print(stderr,
                 "snakepit: {} running instances; choose one with --pid or "
                 "--runtime-dir:\n",
                 found.size());
      for (auto& i : found)
        fmt::print(stderr, "  pid {}  {}\n", i.pid, i.dir);
      return std::nullopt;
    }
    dir = found.front().dir;
  }
  auto reply =
    snakepit::adapters::http_request_unix(dir + "/control.sock", method, target, 10s);
  if (!reply) {
    fmt::print(stderr, "snakepit: cannot reach the instance in {}: {}\n", dir,
               snakepit::describe(reply.error()));
    return std::nullopt;
  }
  auto body = json::parse(reply->body, nullptr, false);
  if (reply->status != 200 || body.is_discarded()) {
    fmt::print(
      stderr, "snakepit: the instance in {} answered {}: {}\n", dir, reply->status,
      body.is_object() && body.contains("error") ? body["error"].dump() : reply->body);
    code = reply->status == 400 || reply->status == 404 ? exit_unknown : exit_failure;
    return std::nullopt;
  }
  code = exit_ok;
  return body;
}

/// Prints rows as left-aligned columns.
void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i)
        width.push_back(0);
      width[i] = std::max(width[i], row[i].size());
    }
  for (auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i)
      line += i + 1 < row.size() ? fmt::format("{:<{}}  ", row[i], width[i]) : row[i];
    fmt::print("{}\n", line);
  }
}

std::string num(const json& v) {
  if (v.is_number_float())
    return fmt::format("{:.2f}", v.get<double>());
  return v.dump();
}

int cmd_stats(const std::string& runtime_dir, long pid, bool as_json) {
  int code = exit_ok;
  auto body = ask_instance(runtime_dir, pid, "/stats", code);
  if (!body)
    return code;
  if (as_json) {
    fmt::print("{}\n", body->dump());
    return exit_ok;
  }
  std::vector<std::vector<std::string>> rows{
    {"pool", "ready", "starting", "available", "busy", "in_flight", "queue", "requests",
     "errors", "error_rate", "saturations", "queue_timeouts", "crashes", "restarts",
     "recycles", "p50_ms", "p95_ms", "p99_ms"}};
  auto add = [&rows](const json& s) {
    auto& w = s["workers"];
    auto& l = s["latency_ms"];
    rows.push_back({s["pool"].get<std::string>(), num(w["ready"]), num(w["starting"]),
                    num(w["available"]), num(w["busy"]), num(s["in_flight"]),
                    num(s["queue_depth"]), num(s["requests"]), num(s["errors"]),
                    fmt::format("{:.1f}%", 100 * s["error_rate"].get<double>()),
                    num(s["saturations"]), num(s["queue_timeouts"]),
                    num(s["worker_crashes"]), num(s["restarts"]), num(s["recycles"]),
                    num(l["p50"]), num(l["p95"]), num(l["p99"])});
  };
  for (auto& s : (*body)["pools"])
    add(s);
  add((*body)["total"]);
  print_table(rows);
  if (body->contains("nodes")) {
    // Worker nodes (docs/distribution.md): their state and pools' last report.
    std::vector<std::vector<std::string>> nodes{
      {"node", "address", "state", "since", "calls", "lost", "pools (load/capacity)"}};
    auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
    for (auto& n : (*body)["nodes"]) {
      std::string pools;
      for (auto& p : n["pools"])
        pools +=
          fmt::format("{}{} {}/{}", pools.empty() ? "" : ", ",
                      p["pool"].get<std::string>(), num(p["load"]), num(p["capacity"]));
      auto ago_s = (now_ms - n["since_unix_ms"].get<int64_t>()) / 1000;
      nodes.push_back({n["name"].get<std::string>(), n["address"].get<std::string>(),
                       n["state"].get<std::string>(), fmt::format("{} s ago", ago_s),
                       num(n["calls"]), num(n["lost"]), pools});
    }
    fmt::print("\n");
    print_table(nodes);
  }
  return exit_ok;
}

int cmd_workers(const std::string& runtime_dir, long pid, bool as_json) {
  int code = exit_ok;
  auto body = ask_instance(runtime_dir, pid, "/workers", code);
  if (!body)
    return code;
  if (as_json) {
    fmt::print("{}\n", body->dump());
    return exit_ok;
  }
  std::vector<std::vector<std::string>> rows{
    {"pool", "worker", "pid", "state", "load", "capacity", "requests", "uptime_s"}};
  for (auto& p : (*body)["pools"])
    for (auto& w : p["workers"])
      rows.push_back(
        {p["pool"].get<std::string>(), w["id"].get<std::string>(), num(w["pid"]),
         w["state"].get<std::string>() + (w.value("tainted", false) ? " (tainted)" : ""),
         num(w["load"]), num(w["capacity"]), num(w["requests"]),
         fmt::format("{:.1f}", w["uptime_ms"].get<double>() / 1000.0)});
  print_table(rows);
  return exit_ok;
}

/// Resizes a pool of a running instance (POST /scale on its control socket).
int cmd_scale(const std::string& runtime_dir, long pid, const std::string& pool,
              size_t size, bool as_json) {
  int code = exit_ok;
  auto body = ask_instance(
    runtime_dir, pid, fmt::format("/scale?pool={}&size={}", pool, size), code, "POST");
  if (!body)
    return code;
  if (as_json)
    fmt::print("{}\n", body->dump());
  else
    fmt::print("pool {}: resizing to {} workers\n", (*body)["pool"].get<std::string>(),
               num((*body)["size"]));
  return exit_ok;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"snakepit: pools of Python worker processes behind supervision"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "snakepit 0.1.0");
  app.footer(
    "Exit codes: 0 ok, 1 failure, 2 usage, 3 invalid config, 4 start failed, "
    "5 tool raised, 6 unknown tool/pool or invalid arguments, 7 call failed "
    "(timeout, saturation, crash), 8 no running instance reachable. See docs/cli.md.");

  std::string config_path;
  std::string pool;
  int start_timeout_ms = 60000;
  bool as_json = false;
  log_overrides log;
  auto log_options = [&log](CLI::App* cmd) {
    cmd
      ->add_option("--log-level", log.level,
                   "Log level (trace, debug, info, warn, error, critical, off); "
                   "overrides [log] level")
      ->check(
        CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
    cmd->add_option("--log-format", log.format, "Log line format; overrides [log] format")
      ->check(CLI::IsMember({"text", "json"}));
  };

  auto* run = app.add_subcommand("run", "Start the pools and serve until SIGINT/SIGTERM");
  run->add_option("-c,--config", config_path,
                  "TOML configuration file (docs/configuration.md)");
  run
    ->add_option("--start-timeout-ms", start_timeout_ms,
                 "Budget for every worker to start")
    ->check(CLI::PositiveNumber);
  log_options(run);

  std::string listen;
  bool allow_insecure = false;
  auto* node = app.add_subcommand(
    "node", "Run a worker node: start the pools and serve them to hosts that name "
            "this address in [[nodes]] (docs/distribution.md)");
  node->add_option("-c,--config", config_path, "TOML configuration file");
  node->add_option("--listen", listen, "HOST:PORT to listen on (port 0: a free one)")
    ->required();
  node->add_flag("--allow-insecure", allow_insecure,
                 "Listen on a non-loopback address without TLS (anyone reaching it "
                 "can run calls)");
  node
    ->add_option("--start-timeout-ms", start_timeout_ms,
                 "Budget for every worker to start")
    ->check(CLI::PositiveNumber);
  log_options(node);

  exec_request ex;
  auto* exec =
    app.add_subcommand("exec", "Start, run one tool call, print its JSON result (or "
                               "each chunk of a streaming tool), stop");
  exec->add_option("-c,--config", ex.config_path, "TOML configuration file");
  exec->add_option("-p,--pool", ex.pool, "Pool to run on (default: the first)");
  exec->add_option("-s,--session", ex.session,
                   "Run in this session (execute_in_session: affinity, session state)");
  exec
    ->add_option("--timeout-ms", ex.timeout_ms,
                 "End-to-end budget of the call (default: the pool's request_timeout)")
    ->check(CLI::NonNegativeNumber);
  exec->add_flag("--stream", ex.stream,
                 "Stream even if the tool does not declare supports_streaming "
                 "(streaming tools always stream)");
  exec->add_option("TOOL", ex.tool, "Tool name, e.g. echo")->required();
  exec->add_option("ARGS", ex.args_text,
                   "Arguments as a JSON object, e.g. '{\"message\":\"hi\"}'");
  log_options(exec);

  auto* tools = app.add_subcommand("tools", "List the tools of a pool's adapter");
  tools->add_option("-c,--config", config_path, "TOML configuration file");
  tools->add_option("-p,--pool", pool, "Pool whose adapter to list (default: the first)");
  tools->add_flag("--json", as_json, "Print the list as JSON");

  auto* doctor =
    app.add_subcommand("doctor", "Check the interpreter, packages, adapters and "
                                 "runtime directory");
  doctor->add_option("-c,--config", config_path, "TOML configuration file");

  std::string runtime_dir;
  long instance_pid = 0;
  auto* stats =
    app.add_subcommand("stats", "Print the stats of a running instance (per pool "
                                "and total)");
  auto* workers = app.add_subcommand("workers", "List the workers of a running instance");
  std::string scale_pool;
  size_t scale_size = 0;
  auto* scale = app.add_subcommand(
    "scale", "Resize a pool of a running instance (growing starts workers; "
             "shrinking drains the chosen ones first)");
  scale->add_option("pool", scale_pool, "Pool name")->required();
  scale->add_option("size", scale_size, "New number of workers (1..1024)")
    ->required()
    ->check(CLI::Range(1, 1024));
  for (auto* sub : {stats, workers, scale}) {
    sub->add_option("--runtime-dir", runtime_dir,
                    "Runtime directory of the instance (holds control.sock)");
    sub->add_option("--pid", instance_pid, "Pid of the instance's host process")
      ->check(CLI::PositiveNumber);
    sub->add_flag("--json", as_json, "Print JSON instead of a table");
  }

  auto* cleanup =
    app.add_subcommand("cleanup", "Kill worker processes that dead runs left "
                                  "behind and clear their registry entries");
  cleanup->add_option("-c,--config", config_path,
                      "TOML configuration file (for data_dir)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return exit_usage;
  }
  if (run->parsed())
    return cmd_run(config_path, start_timeout_ms, log);
  if (exec->parsed())
    return cmd_exec(ex, log);
  if (node->parsed())
    return cmd_node(config_path, listen, allow_insecure, start_timeout_ms, log);
  if (tools->parsed())
    return cmd_tools(config_path, pool, as_json);
  if (doctor->parsed())
    return cmd_doctor(config_path);
  if (stats->parsed())
    return cmd_stats(runtime_dir, instance_pid, as_json);
  if (workers->parsed())
    return cmd_workers(runtime_dir, instance_pid, as_json);
  if (scale->parsed())
    return cmd_scale(runtime_dir, instance_pid, scale_pool, scale_size, as_json);
  if (cleanup->parsed())
    return cmd_cleanup(config_path);
  return exit_usage;
}
