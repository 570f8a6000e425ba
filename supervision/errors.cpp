#include "supervision/errors.hpp"

#include <caf/exit_reason.hpp>
#include <caf/message.hpp>

namespace snakepit::supervision {

std::string to_string(sup_errc x) {
  switch (x) {
  case sup_errc::failed_to_start_child:
    return "failed_to_start_child";
  case sup_errc::running:
    return "running";
  case sup_errc::restarting:
    return "restarting";
  case sup_errc::not_found:
    return "not_found";
  case sup_errc::already_present:
    return "already_present";
  case sup_errc::already_registered:
    return "already_registered";
  case sup_errc::max_children:
    return "max_children";
  case sup_errc::invalid_child_spec:
    return "invalid_child_spec";
  case sup_errc::start_timeout:
    return "start_timeout";
  case sup_errc::shutdown:
    return "shutdown";
  case sup_errc::stop_timeout:
    return "stop_timeout";
  }
  return "unknown_sup_errc";
}

void add_error_category(caf::actor_system_config& cfg) {
  cfg.add_error_category(sup_errc_category,
                         [](uint8_t code, caf::atom_value, const caf::message& ctx) {
                           std::string out = "snake_sup::";
                           out += to_string(static_cast<sup_errc>(code));
                           if (!ctx.empty()) {
                             out += caf::to_string(ctx);
                           }
                           return out;
                         });
}

bool is(const caf::error& err, sup_errc code) {
  return err && err.category() == sup_errc_category &&
         err.code() == static_cast<uint8_t>(code);
}

exit_kind classify_exit(const caf::error& reason) {
  if (!reason || reason == caf::exit_reason::normal)
    return exit_kind::normal;
  if (reason == caf::exit_reason::user_shutdown || is(reason, sup_errc::shutdown))
    return exit_kind::shutdown;
  if (reason == caf::exit_reason::kill)
    return exit_kind::killed;
  return exit_kind::abnormal;
}

} // namespace snakepit::supervision
