#include "supervision/detail/child_record.hpp"

#include "supervision/errors.hpp"

namespace snakepit::supervision::detail {

caf::error validate_restart_limit(int max_restarts, std::chrono::seconds period,
                                  const char* max_name, const char* period_name) {
  if (max_restarts < 0)
    return caf::make_error(sup_errc::invalid_child_spec, std::string{},
                           "negative " + std::string{max_name});
  if (period.count() <= 0)
    return caf::make_error(sup_errc::invalid_child_spec, std::string{},
                           std::string{period_name} + " must be positive");
  return caf::none;
}

child_info info_of(const child_record& rec) {
  auto status = rec.pid          ? child_status::running
                : rec.restarting ? child_status::restarting
                                 : child_status::undefined;
  return child_info{rec.spec.id, rec.pid, rec.spec.type, status};
}

void count_into(child_counts& counts, const child_record& rec) {
  ++counts.specs;
  if (rec.pid)
    ++counts.active;
  if (rec.spec.type == child_type::supervisor)
    ++counts.supervisors;
  else
    ++counts.workers;
}

caf::error refuse_restart_or_delete(const std::string& id, const child_record* rec) {
  if (rec == nullptr)
    return caf::make_error(sup_errc::not_found, id);
  if (rec->restarting)
    return caf::make_error(sup_errc::restarting, id);
  if (rec->pid)
    return caf::make_error(sup_errc::running, id);
  return caf::none;
}

} // namespace snakepit::supervision::detail
