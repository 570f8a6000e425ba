#include "supervision/child_spec.hpp"

#include <set>

#include "supervision/errors.hpp"

namespace snakepit::supervision {

shutdown_spec shutdown_spec::brutal_kill() {
  return {kind::brutal_kill, std::chrono::milliseconds{0}};
}

shutdown_spec shutdown_spec::after(std::chrono::milliseconds t) {
  return {kind::timeout, t};
}

shutdown_spec shutdown_spec::infinity() {
  return {kind::infinity, std::chrono::milliseconds{0}};
}

namespace {

caf::error invalid(const std::string& id, std::string what) {
  return caf::make_error(sup_errc::invalid_child_spec, id, std::move(what));
}

} // namespace

caf::error validate(const child_spec& spec) {
  if (spec.id.empty())
    return invalid(spec.id, "empty child id");
  if (!spec.start)
    return invalid(spec.id, "child '" + spec.id + "' has no start function");
  if (spec.shutdown.k == shutdown_spec::kind::timeout &&
      spec.shutdown.timeout.count() < 0)
    return invalid(spec.id, "child '" + spec.id + "' has a negative shutdown timeout");
  if (spec.start_timeout.count() <= 0)
    return invalid(spec.id, "child '" + spec.id + "' has a non-positive start timeout");
  return caf::none;
}

caf::error validate(const std::vector<child_spec>& specs) {
  std::set<std::string> seen;
  for (const auto& spec : specs) {
    if (auto err = validate(spec))
      return err;
    if (!seen.insert(spec.id).second)
      return invalid(spec.id, "duplicate child id '" + spec.id + "'");
  }
  return caf::none;
}

bool should_restart(restart_type type, const caf::error& reason) {
  switch (type) {
  case restart_type::permanent:
    return true;
  case restart_type::transient: {
    auto kind = classify_exit(reason);
    return kind == exit_kind::abnormal || kind == exit_kind::killed;
  }
  case restart_type::temporary:
    return false;
  }
  return false;
}

} // namespace snakepit::supervision
