#include "adapters/stderr_pump.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "adapters/detail/linux.hpp"
#include "adapters/detail/wake_loop.hpp"
#include "adapters/errors.hpp"

namespace snakepit::adapters {

namespace {

using json = log_fields;

/// A line longer than this is logged in pieces (a runaway write without newlines
/// must not grow the buffer without bound).
constexpr size_t max_line = 64 * 1024;

std::optional<log_level> python_level(const std::string& name) {
  if (name == "DEBUG")
    return log_level::debug;
  if (name == "INFO")
    return log_level::info;
  if (name == "WARNING" || name == "WARN")
    return log_level::warn;
  if (name == "ERROR")
    return log_level::error;
  if (name == "CRITICAL" || name == "FATAL")
    return log_level::critical;
  return std::nullopt;
}

/// `cid=<id>` as written by Python's text log format ("-" means none).
std::string cid_in(std::string_view line) {
  auto pos = line.find(" cid=");
  if (pos == std::string_view::npos)
    return {};
  auto start = pos + 5;
  auto end = line.find(' ', start);
  auto cid =
    std::string{line.substr(start, end == std::string_view::npos ? end : end - start)};
  return cid == "-" ? std::string{} : cid;
}

} // namespace

void log_worker_line(logger& log, log_level raw_level, const json& fields,
                     std::string_view line) {
  if (!line.empty() && line.back() == '\r')
    line.remove_suffix(1);
  if (line.empty())
    return;
  if (line.front() == '{') {
    auto rec = json::parse(line.begin(), line.end(), nullptr, false);
    if (rec.is_object() && rec.contains("msg") && rec["msg"].is_string()) {
      auto lvl = raw_level;
      if (auto l = rec.find("level"); l != rec.end() && l->is_string())
        lvl = python_level(l->get<std::string>()).value_or(raw_level);
      if (!log.enabled(lvl))
        return;
      json out = fields.is_object() ? fields : json::object();
      out["source"] = "python";
      for (auto& [key, value] : rec.items()) {
        if (key == "msg" || key == "level" || key == "ts")
          continue;
        if (key == "logger")
          out["python_logger"] = value;
        else if (key == "correlation_id" && value == "-")
          continue;
        else if (!out.contains(key))
          out[key] = value;
      }
      log.log(lvl, rec["msg"].get_ref<const std::string&>(), out);
      return;
    }
  }
  if (!log.enabled(raw_level))
    return;
  json out = fields.is_object() ? fields : json::object();
  out["source"] = "python";
  out["stream"] = "stderr";
  if (auto cid = cid_in(line); !cid.empty())
    out["correlation_id"] = std::move(cid);
  log.log(raw_level, line, out);
}

namespace {

/// The lines the starting workers of one pool logged lately, so the others' copies
/// are not logged again. Bounded: the oldest are forgotten first.
class startup_lines {
 public:
  using clock = std::chrono::steady_clock;

  /// Who logged the line of hash `line_hash` within the window, if it was another pipe
  /// than `pipe`.
  const std::string* logged_by_other(size_t line_hash, uint64_t pipe,
                                     clock::time_point now) const {
    auto i = seen_.find(line_hash);
    if (i == seen_.end() || i->second.pipe == pipe || now - i->second.at > window)
      return nullptr;
    return &i->second.worker;
  }

  void remember(size_t line_hash, uint64_t pipe, const std::string& worker,
                clock::time_point now) {
    if (seen_.size() >= capacity && seen_.count(line_hash) == 0) {
      seen_.erase(order_.front());
      order_.pop_front();
    }
    if (seen_.count(line_hash) == 0)
      order_.push_back(line_hash);
    seen_[line_hash] = entry{pipe, worker, now};
  }

 private:
  static constexpr auto window = std::chrono::seconds{60};
  static constexpr size_t capacity = 512;
  struct entry {
    uint64_t pipe;
    std::string worker;
    clock::time_point at;
  };
  std::unordered_map<size_t, entry> seen_; // by the line's hash: lines may be long
  std::deque<size_t> order_;
};

/// What makes two workers' lines the same: a Python log record's message and
/// exception text (not its time, pid or ids); any other line as it is.
std::string repeat_key(std::string_view line) {
  if (line.front() == '{') {
    auto rec = json::parse(line.begin(), line.end(), nullptr, false);
    if (rec.is_object()) {
      auto msg = rec.find("msg");
      if (msg != rec.end() && msg->is_string()) {
        auto key = msg->get<std::string>();
        if (auto exc = rec.find("exc"); exc != rec.end() && exc->is_string())
          key += "\n" + exc->get<std::string>();
        return key;
      }
    }
  }
  return std::string{line};
}

} // namespace

struct stderr_pump::impl {
  struct pipe_entry {
    json fields;
    std::string partial;
    std::function<void(std::string_view)> on_line;
    pipe_options opts;
    /// Unique per pipe (fds are reused).
    uint64_t serial = 0;
    /// Whether the "repeats what ... printed" line was logged for this pipe.
    bool noted = false;

    bool starting() const { return !opts.starting || opts.starting->load(); }

    std::string worker() const {
      auto i = fields.find("worker_id");
      return i != fields.end() && i->is_string() ? i->get<std::string>() : std::string{};
    }
  };

  /// Once per pipe: its startup output repeats what `first` printed.
  void note_repeat(const pipe_entry& e, const std::string& first) {
    if (!log->enabled(raw_level))
      return;
    auto f = e.fields.is_object() ? e.fields : json::object();
    f["source"] = "python";
    f["stream"] = "stderr";
    f["first_worker"] = first;
    log->log(raw_level,
             "this worker's startup output repeats what another worker of its pool "
             "printed (first_worker); the repeated lines are not logged",
             f);
  }

  /// Logs one line of `e`, unless another starting worker of its group logged it.
  void line(pipe_entry& e, std::string_view text) {
    if (!e.opts.group.empty() && e.starting() && !text.empty()) {
      auto now = startup_lines::clock::now();
      auto& group = groups[e.opts.group];
      auto key = std::hash<std::string>{}(repeat_key(text));
      if (auto* first = group.logged_by_other(key, e.serial, now)) {
        if (!e.noted)
          note_repeat(e, *first);
        e.noted = true;
        if (e.on_line)
          e.on_line(text);
        return;
      }
      group.remember(key, e.serial, e.worker(), now);
    }
    log_worker_line(*log, raw_level, e.fields, text);
    if (e.on_line)
      e.on_line(text);
  }

  logger_ptr log;
  log_level raw_level;
  mutable std::mutex mtx;
  std::unordered_map<int, pipe_entry> pipes;
  std::unordered_map<std::string, startup_lines> groups;
  uint64_t next_serial = 1;
  detail::wake_loop loop;
  bool stopping = false;
  bool stopped = false;
  std::thread thread;

  impl(logger_ptr lg, log_level raw) : log(std::move(lg)), raw_level(raw) {
    thread = std::thread{[this] { run(); }};
  }

  ~impl() { stop(); }

  void stop() {
    {
      std::lock_guard<std::mutex> guard{mtx};
      if (stopped)
        return;
      stopped = true;
      stopping = true;
    }
    loop.wake();
    if (thread.joinable())
      thread.join();
  }

  caf::expected<int> open(json fields, std::function<void(std::string_view)> on_line,
                          pipe_options opts) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      return make_error(errc::start_failed,
                        "cannot create a stderr pipe: " + detail::errno_text(errno));
    ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    std::lock_guard<std::mutex> guard{mtx};
    if (stopping) {
      ::close(fds[0]);
      ::close(fds[1]);
      return make_error(errc::shutting_down, "the stderr pump is stopped");
    }
    pipes.emplace(fds[0], pipe_entry{std::move(fields),
                                     {},
                                     std::move(on_line),
                                     std::move(opts),
                                     next_serial++,
                                     false});
    loop.add(fds[0], static_cast<uint64_t>(fds[0]));
    return fds[1];
  }

  void emit_lines(pipe_entry& e, bool final) {
    size_t start = 0;
    for (;;) {
      auto nl = e.partial.find('\n', start);
      if (nl == std::string::npos)
        break;
      line(e, std::string_view{e.partial}.substr(start, nl - start));
      start = nl + 1;
    }
    e.partial.erase(0, start);
    if (final || e.partial.size() >= max_line) {
      line(e, e.partial);
      e.partial.clear();
    }
  }

  /// Reads what is available; true when the pipe reached EOF (or failed).
  bool drain(int fd, pipe_entry& e) {
    char buf[16384];
    for (;;) {
      auto n = ::read(fd, buf, sizeof(buf));
      if (n > 0) {
        e.partial.append(buf, static_cast<size_t>(n));
        emit_lines(e, false);
        continue;
      }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return false;
      return true; // EOF or a real error: this pipe is done
    }
  }

  void close_pipe(int fd, pipe_entry& e) {
    emit_lines(e, true);
    loop.remove(fd);
    ::close(fd);
  }

  void run() {
    std::vector<uint64_t> keys;
    while (loop.wait(keys)) {
      std::lock_guard<std::mutex> guard{mtx};
      for (auto key : keys) {
        auto fd = static_cast<int>(key);
        auto it = pipes.find(fd);
        if (it == pipes.end())
          continue;
        if (drain(fd, it->second)) {
          close_pipe(fd, it->second);
          pipes.erase(it);
        }
      }
      if (stopping)
        break;
    }
    // Last words: whatever is readable now is logged, then every read end closes.
    std::lock_guard<std::mutex> guard{mtx};
    for (auto& [fd, e] : pipes) {
      drain(fd, e);
      close_pipe(fd, e);
    }
    pipes.clear();
    log->flush();
  }
};

stderr_pump::stderr_pump(logger_ptr log, log_level raw_level)
  : impl_(std::make_unique<impl>(std::move(log), raw_level)) {}

stderr_pump::~stderr_pump() = default;

caf::expected<int> stderr_pump::open(json fields,
                                     std::function<void(std::string_view)> on_line,
                                     pipe_options opts) {
  return impl_->open(std::move(fields), std::move(on_line), std::move(opts));
}

size_t stderr_pump::open_pipes() const {
  std::lock_guard<std::mutex> guard{impl_->mtx};
  return impl_->pipes.size();
}

void stderr_pump::stop() {
  impl_->stop();
}

} // namespace snakepit::adapters
