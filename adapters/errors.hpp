// The one public error vocabulary of the library: every failure a host can see is a
// `caf::error` in the "snakepit" category carrying one `errc` value plus context.
// Mirrors upstream Snakepit's `%Snakepit.Error{category, message, details}` and the
// `Snakepit.Error.*` structs that Python exceptions are translated into.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>
#include <caf/meta/type_name.hpp>

namespace caf {
class actor_system_config;
} // namespace caf

namespace snakepit {

/// Error codes of the library (category "snakepit").
enum class errc : uint8_t {
  /// No error; never carried by a `caf::error`.
  none = 0,
  /// The pool's queue is full, the request was refused at once.
  pool_saturated,
  /// The request waited in the pool queue longer than its checkout timeout.
  queue_timeout,
  /// The worker did not answer within the call's deadline.
  timeout,
  /// The worker process died while the request was in flight.
  worker_crashed,
  /// The Python tool raised; details (type, message, traceback) in the context.
  tool_error,
  /// The worker does not know the tool (in-band UnknownToolError or NOT_FOUND).
  unknown_tool,
  /// Arguments were rejected (in-band InvalidArgumentError or INVALID_ARGUMENT).
  invalid_argument,
  /// The pool or worker has not finished starting.
  not_ready,
  /// The component is stopping and accepts no new work.
  shutting_down,
  /// An external process could not be started (spawn failure, bad executable).
  start_failed,
  /// The worker's endpoint could not be reached (gRPC UNAVAILABLE).
  unavailable,
  /// A bug or an unexpected condition; the message says what.
  internal,
  /// No pool with the requested name exists.
  pool_not_found,
  /// The chosen worker has no free capacity.
  worker_busy,
  /// The worker a session is bound to is gone and affinity is strict.
  session_worker_unavailable,
  /// A configuration struct failed `validate()`.
  invalid_config,
  /// The call was cancelled by its owner (cancel_all, halt, stop).
  cancelled,
  /// A session id is malformed (charset `[A-Za-z0-9_-]`, 1..128 characters).
  invalid_session_id,
  /// No session with the given id exists (never created, cleaned up or expired).
  session_not_found,
  /// A quota was exceeded (e.g. `max_sessions` of the session store).
  quota_exceeded,
  /// A request's payload exceeds the configured maximum message size.
  payload_too_large,
  /// The pool's circuit breaker is open: its workers keep failing to start.
  circuit_open,
  /// A worker broke its wire protocol (stdio kind: a frame that is not JSON, one
  /// longer than `max_message_bytes`, a response nobody waits for, its output
  /// closed): its calls fail with this and the worker is restarted.
  protocol_error,
  /// The node a call ran on was lost (killed, stopped, cut off) or cannot be
  /// reached; the message names the pool and the node (docs/distribution.md).
  node_down,
};

/// Returns the enumerator's name, e.g. "tool_error".
std::string to_string(errc x);

/// What a Python tool raised, as reported in-band by the worker.
struct python_error {
  /// Exception class name, e.g. "ValueError".
  std::string type;
  /// `str(exception)`.
  std::string message;
  /// The formatted Python traceback, may be empty.
  std::string traceback;
  /// Stack frames as reported by the worker, may be empty.
  std::vector<std::string> stacktrace;
  /// The worker's `context` object (tool_name, session_id, ...) as JSON text; "" if none.
  std::string context_json;
};

/// Makes `python_error` inspectable (and thus sendable in CAF messages).
template<class Inspector>
typename Inspector::result_type inspect(Inspector& f, python_error& x) {
  return f(caf::meta::type_name("python_error"), x.type, x.message, x.traceback,
           x.stacktrace, x.context_json);
}

/// Equality on all fields.
bool operator==(const python_error& x, const python_error& y);

} // namespace snakepit

CAF_ERROR_CODE_ENUM(snakepit::errc, "snakepit")

namespace snakepit {

/// Builds an error of our category with a human-readable message as context.
caf::error make_error(errc code, std::string message);

/// Builds an error of our category carrying the Python details as context
/// (used for tool_error and for in-band unknown_tool / invalid_argument).
caf::error make_error(errc code, python_error details);

/// Shorthand for `make_error(errc::tool_error, std::move(details))`.
caf::error make_tool_error(python_error details);

/// What a worker's in-band failure means, by its exception type: UnknownToolError ->
/// unknown_tool, InvalidArgumentError -> invalid_argument, anything else -> tool_error
/// (the same for every worker kind).
caf::error error_from_python(python_error details);

/// The same error with the request's correlation id attached (at the end of its
/// context, after the marker atom "cid"); errors of other categories, no error and
/// an empty id are returned unchanged, an id already attached is replaced.
caf::error with_correlation_id(caf::error err, const std::string& correlation_id);

/// The correlation id attached by `with_correlation_id`, "" if none. Every error a
/// pool returns for a request carries that request's id.
std::string correlation_id_of(const caf::error& err);

/// Returns the `errc` of `err`, or nullopt if `err` is none or of a foreign category.
std::optional<errc> errc_of(const caf::error& err);

/// Extracts the Python details from an error built by `make_error(errc, python_error)`.
std::optional<python_error> python_error_of(const caf::error& err);

/// Returns the message of an error of our category: the Python message, or the context
/// elements joined with ": " (so `caf::make_error(errc::x, name, "text")` reads well).
std::string message_of(const caf::error& err);

/// One-line human text, e.g. "tool_error: ValueError: boom" or "timeout: deadline of 5000
/// ms". A supervisor's failed_to_start_child (an error wrapping another under a child
/// id, however deeply nested) reads as its innermost cause, with the child id when
/// the cause does not name it ("start_failed: worker p_worker_1: ModuleNotFoundError:
/// ..."); other supervision errors by their name ("start_timeout: p_worker_1"); other
/// foreign errors with `caf::to_string`; no error gives "none".
std::string describe(const caf::error& err);

/// The innermost error of a chain of errors that wrap another under an id (a
/// supervisor's failed_to_start_child(id, reason)); `err` itself if it wraps none.
caf::error root_cause(const caf::error& err);

/// True if `err` is of our category and has code `code` (the context is ignored).
bool operator==(const caf::error& err, errc code);
/// True if `err` is of our category and has code `code` (the context is ignored).
bool operator==(errc code, const caf::error& err);
/// Negation of `operator==`.
bool operator!=(const caf::error& err, errc code);
/// Negation of `operator==`.
bool operator!=(errc code, const caf::error& err);

/// Registers the "snakepit" category so `actor_system::render` prints errc names.
void register_error_category(caf::actor_system_config& cfg);

} // namespace snakepit
