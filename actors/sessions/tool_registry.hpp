// The tool registry (upstream Snakepit.Bridge.ToolRegistry): tools Python workers
// register at startup (`RegisterTools`, with parameter specs), and host tools —
// C++ callables taking and returning JSON — that Python can list and call through
// the bridge server when they are exposed. Python tools are kept per session id
// ("" = registered for every session, as workers do at startup).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <nlohmann/json.hpp>

#include "actors/sessions/session_store.hpp"
#include "supervision/child_spec.hpp"

namespace caf {
class actor_system;
} // namespace caf

namespace snakepit::actors {

/// `(atom, host_tool)` -> ok. Errors: invalid_argument (bad name or metadata,
/// duplicate name).
using tool_register_host_atom = caf::atom_constant<caf::atom("toolreghst")>;
/// `(atom, session_id, worker_id, std::vector<tool_info>)` -> `std::map<name, tool id>`.
/// Re-registering a name (another worker of the same pool) adds the worker to it.
using tool_register_python_atom = caf::atom_constant<caf::atom("toolregpy")>;
/// `(atom, session_id)` -> `std::vector<tool_info>`: host tools, tools registered for
/// every session and the session's own tools.
using tool_list_atom = caf::atom_constant<caf::atom("toollist")>;
/// `(atom, session_id)` -> `std::vector<tool_info>`: the host tools exposed to Python.
using tool_exposed_atom = caf::atom_constant<caf::atom("toolexpose")>;
/// `(atom, name)` -> `host_tool`. Error: unknown_tool.
using tool_host_get_atom = caf::atom_constant<caf::atom("toolgethst")>;
// Session cleanup reuses `session_cleanup_atom` (session_store.hpp): `(atom, id)` ->
// `int32_t` tools removed.

/// One parameter of a tool (proto ParameterSpec).
struct param_spec {
  std::string name;
  std::string type;
  std::string description;
  bool required = false;
  /// JSON text of the default value, "" if none.
  std::string default_json;
  std::string validation_json;
};

/// A registered tool as listed by `list_tools`.
struct tool_info {
  std::string name;
  std::string description;
  /// "host" (a C++ callable) or "python" (registered by a worker).
  std::string kind;
  /// The session it belongs to; "" = every session.
  std::string session_id;
  std::vector<param_spec> parameters;
  std::map<std::string, std::string> metadata;
  bool supports_streaming = false;
  /// Host tools only: whether Python may list and call it.
  bool exposed = false;
  /// Python tools only: the workers that registered it.
  std::vector<std::string> workers;
};

/// A host tool's body: JSON object of arguments in, JSON result out. It runs on a
/// bridge-server thread (never on a CAF thread); throwing reports a tool error.
using host_tool_fn = std::function<nlohmann::json(const nlohmann::json&)>;

/// A host tool: its description and its body.
struct host_tool {
  tool_info info;
  host_tool_fn fn;
};

/// Longest tool name accepted (upstream: 64).
inline constexpr size_t max_tool_name_length = 64;

/// none if `name` matches `^[A-Za-z0-9][A-Za-z0-9_.-]*$` and has at most 64
/// characters, else invalid_argument.
caf::error validate_tool_name(const std::string& name);

/// Spawns the registry outside a supervision tree (tests).
caf::actor spawn_tool_registry(caf::actor_system& sys);

/// A child spec for the registry (permanent worker).
supervision::child_spec tool_registry_child(std::string id);

} // namespace snakepit::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::actors::host_tool)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::actors::tool_info)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<snakepit::actors::tool_info>)
