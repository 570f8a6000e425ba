#include "actors/config/config.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>

#include <fmt/format.h>

#include "actors/config/bundled_packages.hpp"
#include "actors/config/config_keys.hpp"
#include "adapters/errors.hpp"
#include "adapters/process.hpp"

namespace snakepit {

namespace {

caf::error invalid(std::string what) {
  return caf::make_error(errc::invalid_config, std::move(what));
}

} // namespace

caf::error pool_config::validate() const {
  // Messages name the pool, unless its name is what is wrong.
  auto prefix =
    is_valid_pool_name(name) ? fmt::format("pools[{}].", name) : std::string{"pools[]."};
  if (auto err = validate_keys(*this, pool_keys(), prefix))
    return err;
  if (kind == worker_kind::stdio && launch == launch_convention::upstream)
    return invalid(prefix + "launch: the upstream convention is for kind = \"grpc\"; a "
                            "stdio worker is always launched one way");
  if (start_method == snakepit::start_method::forkserver &&
      (kind != worker_kind::grpc || !bundled_python()))
    return invalid(prefix + "start_method: forkserver starts the bundled Python bridge "
                            "over gRPC only (kind = \"grpc\" and no command)");
  return caf::none;
}

size_t pool_config::capacity() const {
  if (capacity_strategy == snakepit::capacity_strategy::profile)
    return 1;
  return worker_profile == snakepit::worker_profile::thread ? threads_per_worker : 1;
}

std::string config::effective_python_path() const {
  std::string out;
  for (auto& e : find_python_package(python_path).path) {
    if (!out.empty())
      out += ':';
    out += e;
  }
  return out;
}

caf::error log_config::validate() const {
  return validate_keys(*this, log_keys(), "log.");
}

caf::error config::validate() const {
  if (auto err = log.validate())
    return err;
  if (pools.empty())
    return invalid("pools: at least one pool is required");
  std::set<std::string> names;
  for (auto& p : pools) {
    if (auto err = p.validate())
      return err;
    if (!names.insert(p.name).second)
      return invalid(fmt::format("pools[{}].name: duplicate pool name", p.name));
  }
  if (auto err = validate_keys(*this, config_keys(), ""))
    return err;
  if (node_timeout <= node_heartbeat)
    return invalid(fmt::format("node_timeout: {} ms must exceed node_heartbeat ({} ms)",
                               node_timeout.count(), node_heartbeat.count()));
  if (auto err = validate_keys(tls, tls_keys(), "tls."))
    return err;
  if (tls.enabled() && (tls.certificate.empty() || tls.key.empty() || tls.ca.empty()))
    return invalid("tls: certificate, key and ca are all required once any tls key is "
                   "set (both sides of a node connection present a certificate)");
  std::set<std::string> node_names;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (auto err = validate_keys(nodes[i], node_keys(), fmt::format("nodes[{}].", i)))
      return err;
    if (!node_names.insert(nodes[i].display_name()).second)
      return invalid(
        fmt::format("nodes[{}]: a second node named '{}'", i, nodes[i].display_name()));
  }
  bool any_python = false;
  bool any_grpc_python = false;
  for (auto& p : pools) {
    any_python = any_python || p.bundled_python();
    any_grpc_python =
      any_grpc_python || (p.bundled_python() && p.kind == worker_kind::grpc);
    if (p.command.empty())
      continue;
    adapters::process_spec probe;
    probe.executable = p.command.front();
    probe.cwd = p.cwd;
    if (auto found = adapters::resolve_executable(probe); !found)
      return invalid(
        fmt::format("pools[{}].command: {}", p.name, message_of(found.error())));
  }
  if (!any_python)
    return caf::none; // no pool runs the bundled Python bridge
  if (find_python_package(python_path).origin == package_origin::none)
    return invalid("python_path: the snakepit_bridge package was found neither in an "
                   "installed snakepit (<prefix>/share/snakepit/python) nor in the build "
                   "tree; set SNAKEPIT_PYTHON_PACKAGE_DIR or python_path");
  if (python.empty())
    return invalid("python: no interpreter given");
  struct stat st;
  if (::stat(python.c_str(), &st) != 0)
    return invalid(fmt::format("python: interpreter '{}' does not exist", python));
  if (!S_ISREG(st.st_mode) || ::access(python.c_str(), X_OK) != 0)
    return invalid(fmt::format("python: '{}' is not an executable file", python));
  // The bundled stdio bridge imports nothing but the standard library and our package
  // (a failure there shows in the worker's start error, with its stderr); probing it
  // would cost a Python start-up.
  if (!check_interpreter || !any_grpc_python)
    return caf::none;
  // One short child process: can this interpreter import what gRPC workers need?
  adapters::process_spec spec;
  spec.executable = python;
  spec.args = {"-c", "import grpc, google.protobuf"};
  spec.env = adapters::build_environment({{"PYTHONPATH", effective_python_path()}});
  spec.pass_lifeline = false;
  int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  spec.stderr_fd = devnull;
  spec.stdout_fd = devnull;
  auto proc = adapters::spawn_process(spec);
  if (devnull >= 0)
    ::close(devnull);
  if (!proc)
    return invalid(
      fmt::format("python: cannot run '{}': {}", python, describe(proc.error())));
  auto status = adapters::wait_for_exit(proc->pid(), std::chrono::seconds(30));
  if (!status) {
    proc->signal_group(SIGKILL);
    adapters::wait_for_exit(proc->pid(), std::chrono::seconds(5));
    return invalid(fmt::format("python: '{}' did not answer within 30 s", python));
  }
  if (!status->exited() || status->code != 0)
    return invalid(fmt::format("python: '{}' cannot import grpc and google.protobuf "
                               "(install python3-grpcio and python3-protobuf, or "
                               "point config.python at an interpreter that has "
                               "them)",
                               python));
  return caf::none;
}

} // namespace snakepit
