#include "actors/sessions/tool_registry.hpp"

#include <algorithm>

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <fmt/format.h>

#include "adapters/errors.hpp"

namespace snakepit::actors {

caf::error validate_tool_name(const std::string& name) {
  if (name.empty())
    return make_error(errc::invalid_argument, "empty tool name");
  if (name.size() > max_tool_name_length)
    return make_error(errc::invalid_argument,
                      fmt::format("tool name longer than {} characters: {}",
                                  max_tool_name_length, name.substr(0, 80)));
  auto alnum = [](unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!alnum(static_cast<unsigned char>(name[0])))
    return make_error(
      errc::invalid_argument,
      fmt::format("tool name {:?} must start with a letter or digit", name));
  for (unsigned char c : name)
    if (!(alnum(c) || c == '_' || c == '-' || c == '.'))
      return make_error(
        errc::invalid_argument,
        fmt::format("tool name {:?} has a character outside [A-Za-z0-9_.-]", name));
  return caf::none;
}

namespace {

/// Upstream's metadata limits: at most 32 entries and 4096 bytes in total.
caf::error validate_metadata(const tool_info& t) {
  if (t.metadata.size() > 32)
    return make_error(errc::invalid_argument,
                      fmt::format("tool {}: more than 32 metadata entries", t.name));
  size_t bytes = 0;
  for (auto& [k, v] : t.metadata)
    bytes += k.size() + v.size();
  if (bytes > 4096)
    return make_error(errc::invalid_argument,
                      fmt::format("tool {}: metadata larger than 4096 bytes", t.name));
  return caf::none;
}

struct tool_registry_state {
  static inline const char* name = "snakepit.tool_registry";
  std::map<std::string, host_tool> host;
  /// session id ("" = all sessions) -> name -> tool.
  std::map<std::string, std::map<std::string, tool_info>> python;
};

using self_ptr = tool_registry_actor::stateful_pointer<tool_registry_state>;

caf::result<caf::ok_atom> register_host(self_ptr self, host_tool& t) {
  if (auto err = validate_tool_name(t.info.name))
    return err;
  if (auto err = validate_metadata(t.info))
    return err;
  if (!t.fn)
    return make_error(errc::invalid_argument,
                      fmt::format("host tool {} has no callable", t.info.name));
  if (self->state.host.count(t.info.name) > 0)
    return make_error(errc::invalid_argument, "duplicate_tool: " + t.info.name);
  t.info.kind = "host";
  t.info.session_id.clear();
  auto name = t.info.name;
  self->state.host.emplace(std::move(name), std::move(t));
  return caf::ok_atom::value;
}

/// Registers `tools` for `session` ("" = every session); all or nothing.
caf::result<tool_ids> register_python(self_ptr self, const std::string& session,
                                      const std::string& worker,
                                      std::vector<tool_info>& tools) {
  if (!session.empty())
    if (auto err = validate_session_id(session))
      return err;
  for (auto& t : tools) {
    if (auto err = validate_tool_name(t.name))
      return err;
    if (auto err = validate_metadata(t))
      return err;
  }
  auto& table = self->state.python[session];
  tool_ids ids;
  for (auto& t : tools) {
    auto& slot = table[t.name];
    auto workers = std::move(slot.workers);
    slot = std::move(t);
    slot.kind = "python";
    slot.session_id = session;
    slot.workers = std::move(workers);
    if (!worker.empty() &&
        std::find(slot.workers.begin(), slot.workers.end(), worker) == slot.workers.end())
      slot.workers.push_back(worker);
    ids[slot.name] = (session.empty() ? std::string{"*"} : session) + ":" + slot.name;
  }
  return ids;
}

std::vector<tool_info> list(self_ptr self, const std::string& session) {
  std::vector<tool_info> out;
  for (auto& kv : self->state.host)
    out.push_back(kv.second.info);
  auto add = [&](const std::string& key) {
    if (auto i = self->state.python.find(key); i != self->state.python.end())
      for (auto& kv : i->second)
        out.push_back(kv.second);
  };
  add("");
  if (!session.empty())
    add(session);
  return out;
}

/// Without this each restart or replacement would add its worker id to every tool
/// for good (a soak run found the list growing by one id per worker start).
void forget_worker(self_ptr self, const std::string& worker) {
  for (auto& [session, table] : self->state.python)
    for (auto& [name, tool] : table) {
      auto& ws = tool.workers;
      ws.erase(std::remove(ws.begin(), ws.end(), worker), ws.end());
    }
}

int32_t drop_session(self_ptr self, const std::string& session) {
  if (session.empty())
    return 0;
  auto i = self->state.python.find(session);
  if (i == self->state.python.end())
    return 0;
  auto n = static_cast<int32_t>(i->second.size());
  self->state.python.erase(i);
  return n;
}

tool_registry_actor::behavior_type tool_registry_impl(self_ptr self) {
  return {
    [=](tool_register_host_atom, host_tool& t) { return register_host(self, t); },
    [=](tool_register_python_atom, const std::string& session, const std::string& worker,
        std::vector<tool_info>& tools) {
      return register_python(self, session, worker, tools);
    },
    [=](tool_list_atom, const std::string& session) { return list(self, session); },
    [=](tool_exposed_atom, const std::string&) {
      std::vector<tool_info> out;
      for (auto& kv : self->state.host)
        if (kv.second.info.exposed)
          out.push_back(kv.second.info);
      return out;
    },
    [=](tool_host_get_atom, const std::string& name) -> caf::result<host_tool> {
      auto i = self->state.host.find(name);
      if (i == self->state.host.end())
        return make_error(errc::unknown_tool, "no host tool named " + name);
      return i->second;
    },
    [=](session_cleanup_atom, const std::string& session) {
      return drop_session(self, session);
    },
    [=](tool_forget_worker_atom, const std::string& worker) {
      forget_worker(self, worker);
    },
  };
}

} // namespace

tool_registry_actor spawn_tool_registry(caf::actor_system& sys) {
  return sys.spawn(tool_registry_impl);
}

void drop_session_tools(const tool_registry_actor& registry, std::string session_id) {
  caf::anon_send(registry, session_cleanup_atom::value, std::move(session_id));
}

void forget_worker_tools(const tool_registry_actor& registry, std::string worker_id) {
  if (registry)
    caf::anon_send(registry, tool_forget_worker_atom::value, std::move(worker_id));
}

supervision::child_spec tool_registry_child(std::string id) {
  return supervision::worker_child(
    std::move(id), [](self_ptr self) { return tool_registry_impl(self); });
}

} // namespace snakepit::actors
