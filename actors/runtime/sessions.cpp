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
  return detail::ask<std::string>(*impl_->sys, session_store(),
                                  actors::session_create_atom::value,
                                  id.value_or(std::string{}), std::move(meta));
}

caf::expected<actors::session_info>
runtime::get_session_info(const std::string& session_id) {
  return detail::ask<actors::session_info>(*impl_->sys, session_store(),
                                           actors::session_info_atom::value, session_id);
}

caf::expected<int> runtime::cleanup_session(const std::string& session_id) {
  auto state = detail::ask<int32_t>(*impl_->sys, session_store(),
                                    actors::session_cleanup_atom::value, session_id);
  if (!state)
    return state.error();
  auto tools = detail::ask<int32_t>(*impl_->sys, impl_->env->names->get("tool_registry"),
                                    actors::session_cleanup_atom::value, session_id);
  if (!tools)
    return tools.error();
  return *state + *tools;
}

caf::actor runtime::session_store() const {
  return impl_->env->names->get("session_store");
}

} // namespace snakepit
