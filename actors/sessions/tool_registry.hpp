// The tool registry (upstream Snakepit.Bridge.ToolRegistry): tools Python workers
// register at startup (`RegisterTools`, with parameter specs), and host tools —
// C++ callables taking and returning JSON — that Python can list and call through
// the bridge server when they are exposed. Python tools are kept per session id
// ("" = registered for every session, as workers do at startup). Its protocol is
// `tool_registry_actor`; callers use the functions at the end of this header.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_cast.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/sessions/session_store.hpp"
#include "supervision/child_spec.hpp"

namespace caf {
class actor_system;
} // namespace caf

namespace snakepit::actors {

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
  /// Python tools only: the live workers that registered it (a worker that is
  /// gone is removed by `forget_worker_tools`; the tool stays listed).
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

// -- protocol -------------------------------------------------------------------

/// Tags `register_host_tool`.
using tool_register_host_atom = caf::atom_constant<caf::atom("toolreghst")>;
/// Tags `register_python_tools`.
using tool_register_python_atom = caf::atom_constant<caf::atom("toolregpy")>;
/// Tags `list_tools`.
using tool_list_atom = caf::atom_constant<caf::atom("toollist")>;
/// Tags `exposed_tools`.
using tool_exposed_atom = caf::atom_constant<caf::atom("toolexpose")>;
/// Tags `get_host_tool`.
using tool_host_get_atom = caf::atom_constant<caf::atom("toolgethst")>;

/// Tags `forget_worker_tools`.
using tool_forget_worker_atom = caf::atom_constant<caf::atom("toolforget")>;

/// Tool ids by tool name, as `register_python_tools` returns them.
using tool_ids = std::map<std::string, std::string>;

/// The registry's interface; each message is documented at its wrapper below.
/// Session cleanup reuses the store's `session_cleanup_atom`.
using tool_registry_actor = caf::typed_actor<
  caf::replies_to<tool_register_host_atom, host_tool>::with<caf::ok_atom>,
  caf::replies_to<tool_register_python_atom, std::string, std::string,
                  std::vector<tool_info>>::with<tool_ids>,
  caf::replies_to<tool_list_atom, std::string>::with<std::vector<tool_info>>,
  caf::replies_to<tool_exposed_atom, std::string>::with<std::vector<tool_info>>,
  caf::replies_to<tool_host_get_atom, std::string>::with<host_tool>,
  caf::replies_to<session_cleanup_atom, std::string>::with<int32_t>,
  caf::reacts_to<tool_forget_worker_atom, std::string>>;

/// The name the runtime gives the registry in its name table.
inline constexpr const char* tool_registry_name = "tool_registry";

/// The registry behind a dynamically typed handle, as a name table or a supervisor
/// keeps it. An invalid handle stays invalid.
inline tool_registry_actor as_tool_registry(const caf::actor& hdl) {
  return caf::actor_cast<tool_registry_actor>(hdl);
}

/// Spawns the registry outside a supervision tree (tests).
tool_registry_actor spawn_tool_registry(caf::actor_system& sys);

/// A child spec for the registry (permanent worker).
supervision::child_spec tool_registry_child(std::string id);

// -- calls ----------------------------------------------------------------------
//
// As in session_store.hpp: each call sends one request from `self` (an actor
// pointer or a scoped_actor) and returns the response handle for `.then` or
// `.receive`; `timeout` defaults to 5 s.

/// Registers a host tool. Reply: ok. Errors: invalid_argument (bad name or
/// metadata, no callable, duplicate name).
template<class Self, class Timeout = std::chrono::seconds>
auto register_host_tool(Self&& self, const tool_registry_actor& registry, host_tool tool,
                        Timeout timeout = std::chrono::seconds{5}) {
  return self->request(registry, timeout, tool_register_host_atom::value,
                       std::move(tool));
}

/// Registers the tools a worker announced for `session_id` ("" = every session).
/// Re-registering a name (another worker of the same pool) adds the worker to it.
/// Reply: `tool_ids`. Errors: invalid_session_id, invalid_argument (then nothing of
/// the batch is registered).
template<class Self, class Timeout = std::chrono::seconds>
auto register_python_tools(Self&& self, const tool_registry_actor& registry,
                           std::string session_id, std::string worker_id,
                           std::vector<tool_info> tools,
                           Timeout timeout = std::chrono::seconds{5}) {
  return self->request(registry, timeout, tool_register_python_atom::value,
                       std::move(session_id), std::move(worker_id), std::move(tools));
}

/// Reply: `std::vector<tool_info>` the host tools, the tools registered for every
/// session and those of `session_id`.
template<class Self, class Timeout = std::chrono::seconds>
auto list_tools(Self&& self, const tool_registry_actor& registry, std::string session_id,
                Timeout timeout = std::chrono::seconds{5}) {
  return self->request(registry, timeout, tool_list_atom::value, std::move(session_id));
}

/// Reply: `std::vector<tool_info>` the host tools exposed to Python.
template<class Self, class Timeout = std::chrono::seconds>
auto exposed_tools(Self&& self, const tool_registry_actor& registry,
                   std::string session_id, Timeout timeout = std::chrono::seconds{5}) {
  return self->request(registry, timeout, tool_exposed_atom::value,
                       std::move(session_id));
}

/// Reply: the host tool called `name`. Error: unknown_tool.
template<class Self, class Timeout = std::chrono::seconds>
auto get_host_tool(Self&& self, const tool_registry_actor& registry, std::string name,
                   Timeout timeout = std::chrono::seconds{5}) {
  return self->request(registry, timeout, tool_host_get_atom::value, std::move(name));
}

/// Drops the tools registered for `session_id`. Reply: `int32_t` tools removed.
template<class Self, class Timeout = std::chrono::seconds>
auto cleanup_session_tools(Self&& self, const tool_registry_actor& registry,
                           std::string session_id,
                           Timeout timeout = std::chrono::seconds{5}) {
  return self->request(registry, timeout, session_cleanup_atom::value,
                       std::move(session_id));
}

/// A worker is gone: removes `worker_id` from every tool's `workers` (the tools stay
/// listed). Sent by the worker itself before it quits, so that a restarted worker
/// of the same id registers after it. Safe from any thread; does nothing when
/// `registry` is invalid.
void forget_worker_tools(const tool_registry_actor& registry, std::string worker_id);

/// `cleanup_session_tools` as a cast, for callers that need no count (the store's
/// expiry hook). Safe from any thread; does nothing when `registry` is invalid.
void drop_session_tools(const tool_registry_actor& registry, std::string session_id);

} // namespace snakepit::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::actors::host_tool)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(snakepit::actors::tool_info)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<snakepit::actors::tool_info>)
