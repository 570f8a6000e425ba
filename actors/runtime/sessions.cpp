// Sessions facet of the facade: blocking requests to the session_store (and, for a
// cleanup, the tool_registry that holds the session's tools).
#include "actors/runtime/runtime.hpp"

#include <caf/all.hpp>

#include "actors/atoms.hpp"
#include "actors/runtime/detail/runtime_impl.hpp"

namespace snakepit {

caf::expected<std::string>
runtime::create_session(std::optional<std::string> id,
                        std::map<std::string, std::string> meta) {
  if (id)
    if (auto err = actors::validate_session_id(*id))
      return err;
  auto store = actors::as_session_store(session_store());
  return detail::ask<std::string>(*impl_->sys, store, [&](auto& self) {
    return actors::create_session(self, store, id.value_or(std::string{}),
                                  std::move(meta));
  });
}

caf::expected<actors::session_info>
runtime::get_session_info(const std::string& session_id) {
  auto store = actors::as_session_store(session_store());
  return detail::ask<actors::session_info>(*impl_->sys, store, [&](auto& self) {
    return actors::get_session_info(self, store, session_id);
  });
}

caf::expected<int> runtime::cleanup_session(const std::string& session_id) {
  auto store = actors::as_session_store(session_store());
  auto state = detail::ask<int32_t>(*impl_->sys, store, [&](auto& self) {
    return actors::cleanup_session(self, store, session_id);
  });
  if (!state)
    return state.error();
  auto registry =
    actors::as_tool_registry(impl_->env->names->get(actors::tool_registry_name));
  auto tools = detail::ask<int32_t>(*impl_->sys, registry, [&](auto& self) {
    return actors::cleanup_session_tools(self, registry, session_id);
  });
  if (!tools)
    return tools.error();
  if (auto dir = impl_->node_dir())
    dir->forget_session(session_id);
  return *state + *tools;
}

caf::actor runtime::session_store() const {
  return impl_->env->names->get(actors::session_store_name);
}

} // namespace snakepit
