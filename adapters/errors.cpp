#include "adapters/errors.hpp"

#include <iterator>
#include <utility>

#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/message.hpp>

namespace snakepit {

namespace {

constexpr caf::atom_value category = caf::atom("snakepit");

bool is_ours(const caf::error& err) {
  return err && err.category() == category;
}

} // namespace

std::string to_string(errc x) {
  switch (x) {
  case errc::none:
    return "none";
  case errc::pool_saturated:
    return "pool_saturated";
  case errc::queue_timeout:
    return "queue_timeout";
  case errc::timeout:
    return "timeout";
  case errc::worker_crashed:
    return "worker_crashed";
  case errc::tool_error:
    return "tool_error";
  case errc::unknown_tool:
    return "unknown_tool";
  case errc::invalid_argument:
    return "invalid_argument";
  case errc::not_ready:
    return "not_ready";
  case errc::shutting_down:
    return "shutting_down";
  case errc::start_failed:
    return "start_failed";
  case errc::unavailable:
    return "unavailable";
  case errc::internal:
    return "internal";
  case errc::pool_not_found:
    return "pool_not_found";
  case errc::worker_busy:
    return "worker_busy";
  case errc::session_worker_unavailable:
    return "session_worker_unavailable";
  case errc::invalid_config:
    return "invalid_config";
  case errc::cancelled:
    return "cancelled";
  case errc::invalid_session_id:
    return "invalid_session_id";
  case errc::session_not_found:
    return "session_not_found";
  case errc::quota_exceeded:
    return "quota_exceeded";
  case errc::payload_too_large:
    return "payload_too_large";
  case errc::circuit_open:
    return "circuit_open";
  case errc::protocol_error:
    return "protocol_error";
  case errc::node_down:
    return "node_down";
  }
  return "errc(" + std::to_string(static_cast<int>(x)) + ")";
}

bool operator==(const python_error& x, const python_error& y) {
  return x.type == y.type && x.message == y.message && x.traceback == y.traceback &&
         x.stacktrace == y.stacktrace && x.context_json == y.context_json;
}

caf::error make_error(errc code, std::string message) {
  return caf::error{code, std::move(message)};
}

caf::error error_from_python(python_error details) {
  if (details.type == "UnknownToolError")
    return make_error(errc::unknown_tool, std::move(details));
  if (details.type == "InvalidArgumentError")
    return make_error(errc::invalid_argument, std::move(details));
  return make_tool_error(std::move(details));
}

caf::error make_error(errc code, python_error details) {
  // Plain standard types in the context keep the error serializable without registering
  // python_error as a message type.
  return caf::error{code,
                    std::move(details.type),
                    std::move(details.message),
                    std::move(details.traceback),
                    std::move(details.stacktrace),
                    std::move(details.context_json)};
}

caf::error make_tool_error(python_error details) {
  return make_error(errc::tool_error, std::move(details));
}

std::optional<errc> errc_of(const caf::error& err) {
  if (!is_ours(err))
    return std::nullopt;
  return static_cast<errc>(err.code());
}

namespace {

constexpr auto cid_marker = caf::atom("cid");

/// Where the correlation id marker stands in `ctx` (its size if absent).
size_t cid_position(const caf::message& ctx) {
  for (size_t i = 0; i + 1 < ctx.size(); ++i)
    if (ctx.match_element<caf::atom_value>(i) &&
        ctx.get_as<caf::atom_value>(i) == cid_marker &&
        ctx.match_element<std::string>(i + 1))
      return i;
  return ctx.size();
}

} // namespace

caf::error with_correlation_id(caf::error err, const std::string& correlation_id) {
  if (!err || !is_ours(err) || correlation_id.empty())
    return err;
  const auto& ctx = err.context();
  auto pos = cid_position(ctx);
  auto base = pos == ctx.size() ? ctx : ctx.take(pos);
  return caf::error{err.code(), err.category(),
                    base + caf::make_message(cid_marker, correlation_id)};
}

std::string correlation_id_of(const caf::error& err) {
  if (!is_ours(err))
    return {};
  const auto& ctx = err.context();
  auto pos = cid_position(ctx);
  return pos == ctx.size() ? std::string{} : ctx.get_as<std::string>(pos + 1);
}

std::optional<python_error> python_error_of(const caf::error& err) {
  if (!is_ours(err))
    return std::nullopt;
  const auto& ctx = err.context();
  // Five fields, possibly followed by the correlation id.
  auto n = cid_position(ctx);
  if (n != 5 || !ctx.match_element<std::string>(0) ||
      !ctx.match_element<std::string>(1) || !ctx.match_element<std::string>(2) ||
      !ctx.match_element<std::vector<std::string>>(3) ||
      !ctx.match_element<std::string>(4))
    return std::nullopt;
  python_error result;
  result.type = ctx.get_as<std::string>(0);
  result.message = ctx.get_as<std::string>(1);
  result.traceback = ctx.get_as<std::string>(2);
  result.stacktrace = ctx.get_as<std::vector<std::string>>(3);
  result.context_json = ctx.get_as<std::string>(4);
  return result;
}

std::string message_of(const caf::error& err) {
  if (!is_ours(err))
    return {};
  if (auto details = python_error_of(err))
    return details->message;
  // Callers also write caf::make_error(errc::x, name, "what happened"): join the parts.
  const auto& ctx = err.context();
  std::string result;
  for (size_t i = 0, n = cid_position(ctx); i < n; ++i) {
    auto part =
      ctx.match_element<std::string>(i) ? ctx.get_as<std::string>(i) : ctx.stringify(i);
    if (part.empty())
      continue;
    if (!result.empty())
      result += ": ";
    result += part;
  }
  return result;
}

namespace {

/// The codes of the supervision area's category (supervision/errors.hpp, which this
/// layer does not depend on), from 1 in enum order; a test compares them with
/// `supervision::to_string`.
constexpr const char* sup_names[] = {"failed_to_start_child",
                                     "running",
                                     "restarting",
                                     "not_found",
                                     "already_present",
                                     "already_registered",
                                     "max_children",
                                     "invalid_child_spec",
                                     "start_timeout",
                                     "shutdown",
                                     "stop_timeout"};

/// An error that wraps another under an id: (std::string id, caf::error reason), what
/// a supervisor's failed_to_start_child carries.
bool wraps_error(const caf::error& err) {
  const auto& ctx = err.context();
  return err && !is_ours(err) && ctx.size() == 2 && ctx.match_element<std::string>(0) &&
         ctx.match_element<caf::error>(1);
}

/// "start_timeout: x_worker_1": a supervision error by name, with its string parts.
std::string describe_sup(const caf::error& err) {
  auto code = err.code();
  std::string out = code >= 1 && code <= std::size(sup_names)
                      ? sup_names[code - 1]
                      : "snake_sup(" + std::to_string(code) + ")";
  const auto& ctx = err.context();
  for (size_t i = 0; i < ctx.size(); ++i)
    if (ctx.match_element<std::string>(i))
      out += ": " + ctx.get_as<std::string>(i);
  return out;
}

} // namespace

caf::error root_cause(const caf::error& err) {
  auto cur = err;
  while (wraps_error(cur))
    cur = caf::error{cur.context().get_as<caf::error>(1)};
  return cur;
}

namespace {

/// One line, the innermost cause first: a chain of supervisors that each failed to
/// start the same child adds nothing a person needs. The child id is kept if the
/// cause does not name it already.
std::string describe_wrapped(const caf::error& err) {
  const auto& id = err.context().get_as<std::string>(0);
  auto inner = root_cause(err);
  auto text = describe(inner);
  if (id.empty() || text.find(id) != std::string::npos)
    return text;
  if (auto code = errc_of(inner)) {
    auto name = to_string(*code);
    return name + ": " + id + text.substr(name.size());
  }
  return id + ": " + text;
}

} // namespace

std::string describe(const caf::error& err) {
  if (!err)
    return "none";
  if (wraps_error(err))
    return describe_wrapped(err);
  if (err.category() == caf::atom("snake_sup"))
    return describe_sup(err);
  if (!is_ours(err))
    return caf::to_string(err);
  auto code = static_cast<errc>(err.code());
  auto result = to_string(code);
  if (auto details = python_error_of(err)) {
    result += ": ";
    if (code == errc::tool_error && !details->type.empty()) {
      result += details->type;
      result += ": ";
    }
    result += details->message;
    return result;
  }
  auto msg = message_of(err);
  if (!msg.empty()) {
    result += ": ";
    result += msg;
  }
  return result;
}

bool operator==(const caf::error& err, errc code) {
  return is_ours(err) && err.code() == static_cast<uint8_t>(code);
}

bool operator==(errc code, const caf::error& err) {
  return err == code;
}

bool operator!=(const caf::error& err, errc code) {
  return !(err == code);
}

bool operator!=(errc code, const caf::error& err) {
  return !(err == code);
}

void register_error_category(caf::actor_system_config& cfg) {
  cfg.add_error_category(category,
                         [](uint8_t code, caf::atom_value cat, const caf::message& ctx) {
                           return "snakepit: " + describe(caf::error{code, cat, ctx});
                         });
}

} // namespace snakepit
