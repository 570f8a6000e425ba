// Tools facet of the facade: host tools registered with, and tools listed by, the
// tool_registry actor.
#include "actors/runtime/runtime.hpp"

#include <caf/all.hpp>

#include "actors/atoms.hpp"
#include "actors/runtime/detail/runtime_impl.hpp"

namespace snakepit {

caf::error runtime::register_host_tool(const std::string& name,
                                       std::function<json(const json&)> fn,
                                       const std::string& description, bool exposed) {
  actors::host_tool t;
  t.info.name = name;
  t.info.description = description;
  t.info.exposed = exposed;
  t.fn = std::move(fn);
  auto registry =
    actors::as_tool_registry(impl_->env->names->get(actors::tool_registry_name));
  auto r = detail::ask<caf::ok_atom>(*impl_->sys, registry, [&](auto& self) {
    return actors::register_host_tool(self, registry, std::move(t));
  });
  return r ? caf::error{} : r.error();
}

caf::expected<std::vector<actors::tool_info>>
runtime::list_tools(const std::string& session_id) {
  auto registry =
    actors::as_tool_registry(impl_->env->names->get(actors::tool_registry_name));
  return detail::ask<std::vector<actors::tool_info>>(
    *impl_->sys, registry,
    [&](auto& self) { return actors::list_tools(self, registry, session_id); });
}

} // namespace snakepit
