// Worker stderr into the host log (what an Elixir Port with `:stderr_to_stdout` and a
// line-reading GenServer does upstream): every worker's fd 2 is a pipe whose read end
// ONE thread per runtime drains with epoll, splitting lines and logging each with the
// worker's fields. Structured lines (SNAKEPIT_LOG_FORMAT=json) keep their level and
// correlation id; anything else (print, tracebacks, warnings) is logged as raw output.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "adapters/log.hpp"
#include <caf/expected.hpp>

namespace snakepit::adapters {

/// How a pipe's lines are logged while its worker starts.
struct pipe_options {
  /// Pipes of one group (a pool) log a line that another pipe of the group already
  /// logged while starting, within the last minute, only once: the traceback that
  /// every worker of a pool with a broken adapter prints appears once in the log,
  /// with one line saying which worker printed it first. Empty: no grouping.
  std::string group;
  /// While it is true (or null) the pipe's worker is starting; set it false once the
  /// worker is ready, and every later line is logged.
  std::shared_ptr<std::atomic<bool>> starting;
};

/// Drains worker stderr pipes on one thread; never lets a pipe fill up (a worker
/// writing stderr is only ever held back by the log's own sinks).
class stderr_pump {
 public:
  /// `raw_level` is the level of lines that are not structured log records.
  stderr_pump(logger_ptr log, log_level raw_level);

  /// Stops (see `stop`).
  ~stderr_pump();

  stderr_pump(const stderr_pump&) = delete;
  stderr_pump& operator=(const stderr_pump&) = delete;

  /// Creates a pipe whose read end the pump drains, tagging every line with `fields`
  /// (an object, e.g. pool and worker_id). Returns the write end (O_CLOEXEC): give it
  /// to the child as its stderr and close it right after the spawn, whether or not
  /// the spawn succeeded — the pump closes the read end once every writer is gone and
  /// the last (even unterminated) line is logged.
  /// `on_line` (optional) also gets every line, on the pump's thread.
  /// `opts` groups the pipe with the other workers of its pool (see pipe_options).
  caf::expected<int> open(log_fields fields,
                          std::function<void(std::string_view)> on_line = {},
                          pipe_options opts = {});

  /// Read ends still open (a writer may still hold the pipe).
  size_t open_pipes() const;

  /// Logs whatever is still readable, closes every read end and joins the thread.
  /// Idempotent. Call it after the workers are gone, or their last lines are lost.
  void stop();

  /// Implementation detail.
  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

/// Logs one line a worker wrote to stderr: a JSON object with a "msg" key is a Python
/// log record (its level, logger, correlation id and exception text are kept); any
/// other line is logged at `raw_level` with `stream=stderr` (and the correlation id if
/// it carries `cid=<id>`, as Python's text log format does). Exposed for tests.
void log_worker_line(logger& log, log_level raw_level, const log_fields& fields,
                     std::string_view line);

} // namespace snakepit::adapters
