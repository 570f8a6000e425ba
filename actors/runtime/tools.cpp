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
  auto r =
    detail::ask<caf::ok_atom>(*impl_->sys, impl_->env->names->get("tool_registry"),
                              actors::tool_register_host_atom::value, std::move(t));
  return r ? caf::error{} : r.error();
}

caf::expected<std::vector<actors::tool_info>>
runtime::list_tools(const std::string& session_id) {
  return detail::ask<std::vector<actors::tool_info>>(
    *impl_->sys, impl_->env->names->get("tool_registry"), actors::tool_list_atom::value,
    session_id);
}

} // namespace snakepit
