#include "adapters/stdio_client.hpp"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "adapters/base64.hpp"
#include "adapters/detail/stdio_frames.hpp"
#include "adapters/log.hpp"

namespace snakepit::adapters {

namespace {

using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;
using time_point = clock_type::time_point;
using task = std::function<void()>;
using detail::capabilities_of;
using detail::chunk_value;
using detail::dump;
using detail::error_of;
using detail::reply_of;

/// How often the I/O thread looks for calls past their deadline while any is open.
constexpr std::chrono::milliseconds scan_period{10};

/// The epoll key of the wake-up eventfd; connections use 2·id (read) and 2·id+1 (write).
constexpr uint64_t wake_key = ~uint64_t{0};

void set_nonblocking(int fd) {
  auto flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0)
    ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

} // namespace

// -- One call in flight. -------------------------------------------------------------

namespace stdio_detail {

/// A call the host waits for. Its stream fields are touched on the I/O thread only.
struct call_entry {
  enum class kind : uint8_t { ping, unary, stream };
  kind k = kind::unary;
  time_point deadline;
  std::string command;
  std::chrono::milliseconds budget{0};
  std::function<void(caf::expected<std::string>)> on_ping;
  std::function<void(caf::expected<tool_reply>)> on_reply;
  std::function<stream_step(json, bool)> on_chunk;
  std::function<void(caf::error)> on_end;
  /// Stream flow control: while paused, chunks wait in `held`; the final frame that
  /// arrives meanwhile waits in `ended` / `end_err`.
  bool paused = false;
  std::deque<json> held;
  bool ended = false;
  caf::error end_err;

  /// Completes the call with `err` (exactly once: the caller removed it from its map).
  void fail(caf::error err) {
    switch (k) {
    case kind::ping:
      if (on_ping)
        on_ping(std::move(err));
      break;
    case kind::unary:
      if (on_reply)
        on_reply(std::move(err));
      break;
    case kind::stream:
      if (on_end)
        on_end(std::move(err));
      break;
    }
  }
};

using entry_ptr = std::shared_ptr<call_entry>;

} // namespace stdio_detail

using stdio_detail::call_entry;
using stdio_detail::entry_ptr;

// -- One connection. -----------------------------------------------------------------

struct stdio_conn {
  uint64_t key = 0;
  int wfd = -1;
  int rfd = -1;
  stdio_options opts;
  std::string target;
  std::weak_ptr<stdio_runtime::impl> rt;
  std::atomic<uint64_t> next_id{1};

  // Guarded by mtx.
  mutable std::mutex mtx;
  std::unordered_map<uint64_t, entry_ptr> calls;
  /// Ids the host gave up on, with the time by which their answer must have come.
  std::unordered_map<uint64_t, time_point> abandoned;
  std::string out;
  size_t out_off = 0;
  bool broken = false;
  caf::error broken_err;
  stdio_capabilities caps;

  // I/O thread only.
  std::string in;
  size_t in_off = 0;
  bool closed = false;

  ~stdio_conn() {
    if (wfd >= 0)
      ::close(wfd);
    if (rfd >= 0)
      ::close(rfd);
  }
};

using conn_ptr = std::shared_ptr<stdio_conn>;

struct stdio_runtime::impl : std::enable_shared_from_this<stdio_runtime::impl> {
  int epfd = -1;
  int evfd = -1;
  std::thread thread;
  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> next_key{1};
  /// Calls and given-up ids open on any connection: the deadline scan runs while > 0.
  std::atomic<int64_t> open{0};
  std::atomic<size_t> calls_in_flight{0};

  mutable std::mutex mtx;
  std::unordered_map<uint64_t, conn_ptr> conns;
  std::vector<task> tasks;
  bool down = false;

  impl() {
    epfd = ::epoll_create1(EPOLL_CLOEXEC);
    evfd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = wake_key;
    ::epoll_ctl(epfd, EPOLL_CTL_ADD, evfd, &ev);
  }

  ~impl() {
    if (epfd >= 0)
      ::close(epfd);
    if (evfd >= 0)
      ::close(evfd);
  }

  void wake() {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(evfd, &one, sizeof(one));
  }

  /// Runs `fn` on the I/O thread; false once the runtime is down (then it never runs).
  bool post(task fn) {
    {
      std::lock_guard<std::mutex> guard{mtx};
      if (down)
        return false;
      tasks.push_back(std::move(fn));
    }
    wake();
    return true;
  }

  conn_ptr find(uint64_t key) const {
    std::lock_guard<std::mutex> guard{mtx};
    auto i = conns.find(key);
    return i == conns.end() ? nullptr : i->second;
  }

  // -- Completing calls (I/O thread). ----------------------------------------------

  /// Removes the call `id` of `c` from its books; null when it is not open.
  entry_ptr take(stdio_conn& c, uint64_t id) {
    std::lock_guard<std::mutex> guard{c.mtx};
    auto i = c.calls.find(id);
    if (i == c.calls.end())
      return nullptr;
    auto e = std::move(i->second);
    c.calls.erase(i);
    --open;
    --calls_in_flight;
    return e;
  }

  /// The worker may still be busy with `id`: its late answer is dropped, and it must
  /// come within the cancel grace.
  void abandon(stdio_conn& c, uint64_t id) {
    std::lock_guard<std::mutex> guard{c.mtx};
    if (c.broken)
      return;
    auto until = c.opts.cancel_grace.count() > 0 ? clock_type::now() + c.opts.cancel_grace
                                                 : time_point::max();
    if (c.abandoned.emplace(id, until).second)
      ++open;
  }

  /// Fails every open call of `c` with `calls_err` and reports it broken once.
  void break_conn(const conn_ptr& c, caf::error calls_err, caf::error reason) {
    std::vector<entry_ptr> victims;
    bool first = false;
    {
      std::lock_guard<std::mutex> guard{c->mtx};
      if (!c->broken) {
        first = true;
        c->broken = true;
        c->broken_err = reason;
      }
      for (auto& [id, e] : c->calls)
        victims.push_back(std::move(e));
      open -= static_cast<int64_t>(c->calls.size() + c->abandoned.size());
      calls_in_flight -= c->calls.size();
      c->calls.clear();
      c->abandoned.clear();
    }
    unwatch(*c);
    for (auto& e : victims)
      e->fail(calls_err);
    if (first && c->opts.on_broken)
      c->opts.on_broken(std::move(reason));
  }

  void fault(const conn_ptr& c, const std::string& why) {
    auto err = make_error(errc::protocol_error, fmt::format("{}: {}", c->opts.name, why));
    break_conn(c, err, err);
  }

  void unwatch(stdio_conn& c) {
    if (c.closed)
      return;
    c.closed = true;
    ::epoll_ctl(epfd, EPOLL_CTL_DEL, c.rfd, nullptr);
    ::epoll_ctl(epfd, EPOLL_CTL_DEL, c.wfd, nullptr);
  }

  // -- Streams (I/O thread). -------------------------------------------------------

  /// Hands `chunk` to the stream's consumer, or holds it while paused. False when the
  /// consumer halted the stream (then it is complete).
  bool deliver(stdio_conn& c, uint64_t id, const entry_ptr& e, json chunk) {
    if (e->paused || !e->held.empty()) {
      e->held.push_back(std::move(chunk));
      return true;
    }
    return consume(c, id, e, std::move(chunk));
  }

  bool consume(stdio_conn& c, uint64_t id, const entry_ptr& e, json chunk) {
    auto step = e->on_chunk ? e->on_chunk(std::move(chunk), false) : stream_step::more;
    return after_step(c, id, e, step);
  }

  bool after_step(stdio_conn& c, uint64_t id, const entry_ptr& e, stream_step step) {
    if (step == stream_step::pause) {
      e->paused = true;
    } else if (step == stream_step::halt) {
      if (take(c, id)) {
        if (!e->ended)
          abandon(c, id);
        if (e->on_end)
          e->on_end(caf::none);
      }
      return false;
    }
    return true;
  }

  void resume(const conn_ptr& c, uint64_t id) {
    entry_ptr e;
    {
      std::lock_guard<std::mutex> guard{c->mtx};
      auto i = c->calls.find(id);
      if (i == c->calls.end())
        return;
      e = i->second;
    }
    e->paused = false;
    while (!e->paused && !e->held.empty()) {
      auto chunk = std::move(e->held.front());
      e->held.pop_front();
      if (!consume(*c, id, e, std::move(chunk)))
        return;
    }
    if (!e->paused && e->ended && take(*c, id))
      end_stream(e, std::move(e->end_err));
  }

  /// A stream's end (the call already taken off the books): as the gRPC kind, a
  /// clean end is marked by an empty final chunk before `on_end`.
  static void end_stream(const entry_ptr& e, caf::error err) {
    if (!err && e->on_chunk)
      e->on_chunk(json::object(), true);
    if (e->on_end)
      e->on_end(std::move(err));
  }

  void cancel_stream(const conn_ptr& c, uint64_t id) {
    if (auto e = take(*c, id)) {
      if (!e->ended)
        abandon(*c, id);
      e->fail(make_error(errc::cancelled, "stream cancelled"));
    }
  }

  void cancel_all(const conn_ptr& c) {
    std::vector<entry_ptr> victims;
    {
      std::lock_guard<std::mutex> guard{c->mtx};
      for (auto& [id, e] : c->calls)
        victims.push_back(std::move(e));
      open -= static_cast<int64_t>(c->calls.size());
      calls_in_flight -= c->calls.size();
      c->calls.clear();
    }
    for (auto& e : victims)
      e->fail(make_error(errc::cancelled, fmt::format("{}: cancelled", c->opts.name)));
  }

  // -- Frames from the worker (I/O thread). ----------------------------------------

  void on_frame(const conn_ptr& c, json frame) {
    auto head = detail::head_of(frame);
    if (!head)
      return fault(c, message_of(head.error()));
    auto id = head->id;
    bool is_chunk = head->chunk;
    entry_ptr e;
    {
      std::lock_guard<std::mutex> guard{c->mtx};
      auto i = c->calls.find(id);
      if (i != c->calls.end() && !i->second->ended) {
        e = i->second;
      } else if (auto a = c->abandoned.find(id); a != c->abandoned.end()) {
        if (!is_chunk) {
          c->abandoned.erase(a);
          --open;
        }
        return; // the late answer of a call given up on
      }
    }
    if (!e)
      return fault(c, fmt::format("a response for id {} that no call waits for", id));
    if (is_chunk) {
      if (e->k != call_entry::kind::stream)
        return fault(c, fmt::format("a chunk for id {}, which is not a stream", id));
      deliver(*c, id, e, chunk_value(frame));
      return;
    }
    complete(c, id, e, frame);
  }

  void complete(const conn_ptr& c, uint64_t id, const entry_ptr& e, json& frame) {
    bool ok = detail::succeeded(frame);
    if (e->k == call_entry::kind::stream && (e->paused || !e->held.empty())) {
      e->ended = true;
      e->end_err = ok ? caf::error{} : error_of(frame);
      return; // delivered after the held chunks, on resume
    }
    if (!take(*c, id))
      return;
    switch (e->k) {
    case call_entry::kind::ping: {
      if (!ok)
        return e->on_ping(error_of(frame));
      auto result = frame.contains("result") ? frame["result"] : json{};
      {
        std::lock_guard<std::mutex> guard{c->mtx};
        c->caps = capabilities_of(result);
      }
      e->on_ping(dump(result));
      return;
    }
    case call_entry::kind::unary:
      if (!ok)
        return e->on_reply(error_of(frame));
      e->on_reply(reply_of(frame));
      return;
    case call_entry::kind::stream:
      end_stream(e, ok ? caf::error{} : error_of(frame));
      return;
    }
  }

  void on_readable(const conn_ptr& c) {
    constexpr size_t chunk = 64 * 1024;
    for (;;) {
      if (c->closed)
        return;
      auto need = c->in.size() + chunk;
      auto old = c->in.size();
      c->in.resize(need);
      auto n = ::read(c->rfd, c->in.data() + old, chunk);
      c->in.resize(old + (n > 0 ? static_cast<size_t>(n) : 0));
      if (n > 0) {
        parse(c);
        continue;
      }
      if (n == 0) {
        auto eof = make_error(errc::unavailable,
                              fmt::format("{} closed its output (EOF)", c->opts.name));
        auto reason = make_error(errc::protocol_error,
                                 fmt::format("{} closed its output (EOF)", c->opts.name));
        return break_conn(c, eof, reason);
      }
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        auto err =
          make_error(errc::unavailable, fmt::format("{}: read failed: {}", c->opts.name,
                                                    std::strerror(errno)));
        return break_conn(c, err, err);
      }
      return;
    }
  }

  void parse(const conn_ptr& c) {
    auto& in = c->in;
    while (!c->closed && c->in_off < in.size()) {
      auto step = detail::decode_frame(std::string_view{in}.substr(c->in_off),
                                       c->opts.max_message_bytes);
      if (!step)
        return fault(c, message_of(step.error()));
      if (!step->value) {
        if (step->size > 0)
          in.reserve(c->in_off + step->size);
        break;
      }
      c->in_off += step->size;
      on_frame(c, std::move(*step->value));
    }
    if (c->in_off == in.size()) {
      in.clear();
      c->in_off = 0;
    } else if (c->in_off > 0 && c->in_off >= in.size() / 2) {
      in.erase(0, c->in_off);
      c->in_off = 0;
    }
  }

  // -- Writes. ---------------------------------------------------------------------

  /// Writes what fits of `c.out` (caller holds `c.mtx`); false on a broken pipe.
  static bool flush_locked(stdio_conn& c) {
    while (c.out_off < c.out.size()) {
      auto n = ::send(c.wfd, c.out.data() + c.out_off, c.out.size() - c.out_off,
                      MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        c.out_off += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return true;
      return false;
    }
    c.out.clear();
    c.out_off = 0;
    return true;
  }

  void on_writable(const conn_ptr& c) {
    bool ok;
    {
      std::lock_guard<std::mutex> guard{c->mtx};
      ok = c->broken || flush_locked(*c);
    }
    if (!ok)
      write_failed(c);
  }

  void write_failed(const conn_ptr& c) {
    auto err =
      make_error(errc::unavailable, fmt::format("{} closed its input", c->opts.name));
    break_conn(c, err, err);
  }

  // -- Deadlines (I/O thread). -----------------------------------------------------

  void scan(time_point now) {
    std::vector<conn_ptr> all;
    {
      std::lock_guard<std::mutex> guard{mtx};
      for (auto& [k, c] : conns)
        all.push_back(c);
    }
    for (auto& c : all) {
      std::vector<std::pair<uint64_t, entry_ptr>> late;
      bool overdue = false;
      uint64_t overdue_id = 0;
      {
        std::lock_guard<std::mutex> guard{c->mtx};
        for (auto i = c->calls.begin(); i != c->calls.end();) {
          if (i->second->deadline <= now) {
            late.emplace_back(i->first, std::move(i->second));
            i = c->calls.erase(i);
          } else {
            ++i;
          }
        }
        open -= static_cast<int64_t>(late.size());
        calls_in_flight -= late.size();
        for (auto& [id, until] : c->abandoned)
          if (until <= now) {
            overdue = true;
            overdue_id = id;
          }
      }
      for (auto& [id, e] : late) {
        if (!e->ended)
          abandon(*c, id);
        e->fail(make_error(errc::timeout,
                           fmt::format("{}: no answer to {} within {} ms", c->opts.name,
                                       e->command, e->budget.count())));
      }
      if (overdue)
        fault(c, fmt::format("call {} still runs {} ms after it was given up", overdue_id,
                             c->opts.cancel_grace.count()));
    }
  }

  // -- The loop. -------------------------------------------------------------------

  void run() {
    std::vector<epoll_event> events(64);
    auto last_scan = clock_type::now();
    while (!stopping.load()) {
      int wait_ms = open.load() > 0 ? static_cast<int>(scan_period.count()) : -1;
      auto n =
        ::epoll_wait(epfd, events.data(), static_cast<int>(events.size()), wait_ms);
      if (n < 0 && errno != EINTR)
        break;
      for (int i = 0; i < n; ++i) {
        auto key = events[i].data.u64;
        if (key == wake_key) {
          uint64_t v;
          [[maybe_unused]] auto r = ::read(evfd, &v, sizeof(v));
          continue;
        }
        auto c = find(key / 2);
        if (!c || c->closed)
          continue;
        if (key % 2 == 0)
          on_readable(c);
        else
          on_writable(c);
      }
      std::vector<task> todo;
      {
        std::lock_guard<std::mutex> guard{mtx};
        todo.swap(tasks);
      }
      for (auto& t : todo)
        t();
      auto now = clock_type::now();
      if (open.load() > 0 && now - last_scan >= scan_period) {
        last_scan = now;
        scan(now);
      }
    }
  }

  void close_conn(uint64_t key) {
    conn_ptr c;
    {
      std::lock_guard<std::mutex> guard{mtx};
      auto i = conns.find(key);
      if (i == conns.end())
        return;
      c = std::move(i->second);
      conns.erase(i);
    }
    cancel_all(c);
    unwatch(*c);
    std::lock_guard<std::mutex> guard{c->mtx};
    open -= static_cast<int64_t>(c->abandoned.size());
    c->abandoned.clear();
  }
};

// -- The handle a worker holds. --------------------------------------------------------

namespace {

class stdio_handle;

/// A stream's flow control: resume and cancel run on the I/O thread.
struct stdio_stream_control final : stream_control::backend {
  std::weak_ptr<stdio_runtime::impl> rt;
  std::weak_ptr<stdio_conn> conn;
  uint64_t id = 0;

  template<class F>
  void on_io(F fn) {
    auto r = rt.lock();
    auto c = conn.lock();
    if (r && c)
      r->post([r, c, id = id, fn] { fn(*r, c, id); });
  }

  void resume() override {
    on_io(
      [](stdio_runtime::impl& r, const conn_ptr& c, uint64_t id) { r.resume(c, id); });
  }

  void cancel() override {
    on_io([](stdio_runtime::impl& r, const conn_ptr& c, uint64_t id) {
      r.cancel_stream(c, id);
    });
  }
};

class stdio_handle final : public worker_connection {
 public:
  stdio_handle(std::shared_ptr<stdio_runtime::impl> rt, conn_ptr conn)
    : rt_(std::move(rt)), conn_(std::move(conn)) {}

  ~stdio_handle() override {
    auto key = conn_->key;
    auto rt = rt_;
    if (!rt->post([rt, key] { rt->close_conn(key); })) {
      // The runtime is down: its shutdown failed the calls and closed the pipes.
    }
  }

  const std::string& target() const override { return conn_->target; }

  void ping(std::string, std::chrono::milliseconds timeout,
            std::function<void(caf::expected<std::string>)> done) override {
    auto e = std::make_shared<call_entry>();
    e->k = call_entry::kind::ping;
    e->command = "ping";
    e->on_ping = std::move(done);
    send(std::move(e), "ping", json::object(), timeout, {});
  }

  void execute(tool_call call, std::chrono::milliseconds timeout,
               std::function<void(caf::expected<tool_reply>)> done) override {
    auto e = std::make_shared<call_entry>();
    e->k = call_entry::kind::unary;
    e->on_reply = std::move(done);
    if (auto err = early_error(call.tool_name, false))
      return fail_soon(std::move(e), std::move(err));
    auto name = call.tool_name;
    send(std::move(e), std::move(name), std::move(call.args), timeout, call);
  }

  caf::expected<tool_reply> call(const tool_call& call,
                                 std::chrono::milliseconds timeout) override {
    struct waiter {
      std::mutex mtx;
      std::condition_variable cv;
      std::optional<caf::expected<tool_reply>> res;
    };
    auto w = std::make_shared<waiter>();
    execute(call, timeout, [w](caf::expected<tool_reply> res) {
      std::lock_guard<std::mutex> guard{w->mtx};
      w->res = std::move(res);
      w->cv.notify_all();
    });
    std::unique_lock<std::mutex> guard{w->mtx};
    // The I/O thread enforces the deadline; the margin only guards against a runtime
    // that stopped running callbacks.
    if (!w->cv.wait_for(guard, timeout + std::chrono::seconds{2},
                        [&] { return w->res.has_value(); }))
      return make_error(errc::timeout,
                        fmt::format("{}: no answer to {} within {} ms", conn_->opts.name,
                                    call.tool_name, timeout.count()));
    return std::move(*w->res);
  }

  stream_control execute_stream(tool_call call, std::chrono::milliseconds timeout,
                                std::function<stream_step(json, bool)> on_chunk,
                                std::function<void(caf::error)> done) override {
    auto e = std::make_shared<call_entry>();
    e->k = call_entry::kind::stream;
    e->on_chunk = std::move(on_chunk);
    e->on_end = std::move(done);
    if (auto err = early_error(call.tool_name, true)) {
      fail_soon(std::move(e), std::move(err));
      return {};
    }
    auto ctl = std::make_shared<stdio_stream_control>();
    ctl->rt = rt_;
    ctl->conn = conn_;
    auto name = call.tool_name;
    ctl->id =
      send(std::move(e), std::move(name), std::move(call.args), timeout, call, true);
    return stream_control{std::move(ctl)};
  }

  stream_control stream_telemetry(std::function<void(python_event)>,
                                  std::function<void(caf::error)> done) override {
    done(make_error(errc::unknown_tool, "stdio workers have no telemetry stream"));
    return {};
  }

  bool supports_streaming() const override {
    std::lock_guard<std::mutex> guard{conn_->mtx};
    return conn_->caps.streaming;
  }

  void cancel_all() override {
    auto rt = rt_;
    auto c = conn_;
    rt->post([rt, c] { rt->cancel_all(c); });
  }

  size_t in_flight() const override {
    std::lock_guard<std::mutex> guard{conn_->mtx};
    return conn_->calls.size();
  }

  caf::error broken() const override {
    std::lock_guard<std::mutex> guard{conn_->mtx};
    return conn_->broken_err;
  }

  stdio_capabilities capabilities() const {
    std::lock_guard<std::mutex> guard{conn_->mtx};
    return conn_->caps;
  }

 private:
  /// What fails a call before it is sent: a tool the worker said it does not have, a
  /// stream to a worker that declared no streaming.
  caf::error early_error(const std::string& tool, bool stream) const {
    std::lock_guard<std::mutex> guard{conn_->mtx};
    const auto& caps = conn_->caps;
    if (caps.tools_known && tool != "ping" &&
        std::find(caps.tools.begin(), caps.tools.end(), tool) == caps.tools.end())
      return make_error(
        errc::unknown_tool,
        python_error{"UnknownToolError",
                     fmt::format("{} has no tool '{}'", conn_->opts.name, tool),
                     {},
                     {},
                     {}});
    if (stream && !caps.streaming)
      return make_error(errc::invalid_argument,
                        fmt::format("{} declared no streaming: '{}' cannot be streamed "
                                    "(a stdio bridge declares it in its ping answer)",
                                    conn_->opts.name, tool));
    return caf::none;
  }

  /// Completes `e` with `err` on the I/O thread (or here once the runtime is down).
  void fail_soon(entry_ptr e, caf::error err) {
    if (!rt_->post([e, err] { e->fail(err); }))
      e->fail(make_error(errc::shutting_down, "the stdio runtime has stopped"));
  }

  /// Registers `e` under a fresh id and writes its request; returns the id.
  uint64_t send(entry_ptr e, std::string command, json args,
                std::chrono::milliseconds timeout, const tool_call& call,
                bool stream = false) {
    auto& c = *conn_;
    auto id = c.next_id.fetch_add(1);
    json req{{"id", id},
             {"command", command},
             {"args", args.is_null() ? json::object() : std::move(args)},
             {"timestamp", utc_now()}};
    if (!call.session_id.empty())
      req["session_id"] = call.session_id;
    if (!call.correlation_id.empty())
      req["correlation_id"] = call.correlation_id;
    req["deadline_ms"] = timeout.count();
    if (stream)
      req["stream"] = true;
    if (!call.binary_args.empty()) {
      auto& bin = req["binary_args"];
      for (auto& [k, v] : call.binary_args)
        bin[k] = base64_encode(v);
    }
    if (!call.metadata.empty())
      req["metadata"] = call.metadata;
    auto body = dump(req);
    e->command = std::move(command);
    e->budget = timeout;
    e->deadline = clock_type::now() + timeout;
    if (body.size() > c.opts.max_message_bytes) {
      fail_soon(std::move(e),
                make_error(errc::payload_too_large,
                           fmt::format("request of {} bytes exceeds max_message_bytes "
                                       "({})",
                                       body.size(), c.opts.max_message_bytes)));
      return id;
    }
    auto frame = encode_frame(body);
    bool write_ok = true;
    {
      std::lock_guard<std::mutex> guard{c.mtx};
      if (c.broken) {
        auto err = c.broken_err;
        fail_soon(std::move(e), std::move(err));
        return id;
      }
      c.calls.emplace(id, std::move(e));
      ++rt_->open;
      ++rt_->calls_in_flight;
      if (c.out_off == c.out.size()) {
        c.out = std::move(frame);
        c.out_off = 0;
      } else {
        c.out += frame;
      }
      write_ok = stdio_runtime::impl::flush_locked(c);
    }
    if (!write_ok) {
      auto rt = rt_;
      auto cp = conn_;
      rt->post([rt, cp] { rt->write_failed(cp); });
    }
    return id;
  }

  std::shared_ptr<stdio_runtime::impl> rt_;
  conn_ptr conn_;
};

} // namespace

// -- stdio_runtime ---------------------------------------------------------------------

stdio_runtime::stdio_runtime() : impl_(std::make_shared<impl>()) {
  impl_->thread = std::thread{[rt = impl_] { rt->run(); }};
}

stdio_runtime::~stdio_runtime() {
  shutdown();
}

void stdio_runtime::shutdown() {
  if (!impl_)
    return;
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    if (impl_->down)
      return;
    impl_->down = true;
  }
  impl_->stopping = true;
  impl_->wake();
  if (impl_->thread.joinable())
    impl_->thread.join();
  // The thread is gone: what it left runs here.
  for (auto& t : impl_->tasks)
    t();
  impl_->tasks.clear();
  std::vector<conn_ptr> all;
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    for (auto& [k, c] : impl_->conns)
      all.push_back(c);
    impl_->conns.clear();
  }
  for (auto& c : all) {
    auto err = make_error(errc::shutting_down, "the stdio runtime is stopping");
    impl_->break_conn(c, err, err);
  }
}

std::shared_ptr<worker_connection> stdio_runtime::connect(int to_worker, int from_worker,
                                                          stdio_options opts) {
  auto c = std::make_shared<stdio_conn>();
  c->key = impl_->next_key.fetch_add(1);
  c->wfd = to_worker;
  c->rfd = from_worker;
  c->opts = std::move(opts);
  c->target = "stdio:" + c->opts.name;
  c->rt = impl_;
  set_nonblocking(c->wfd);
  set_nonblocking(c->rfd);
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    if (impl_->down) {
      c->broken = true;
      c->broken_err = make_error(errc::shutting_down, "the stdio runtime has stopped");
      c->closed = true;
    } else {
      impl_->conns.emplace(c->key, c);
    }
  }
  if (!c->closed) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = c->key * 2;
    ::epoll_ctl(impl_->epfd, EPOLL_CTL_ADD, c->rfd, &ev);
    ev.events = EPOLLOUT | EPOLLET;
    ev.data.u64 = c->key * 2 + 1;
    ::epoll_ctl(impl_->epfd, EPOLL_CTL_ADD, c->wfd, &ev);
  }
  return std::make_shared<stdio_handle>(impl_, std::move(c));
}

stdio_capabilities stdio_runtime::capabilities(const worker_connection& conn) {
  if (auto* h = dynamic_cast<const stdio_handle*>(&conn))
    return h->capabilities();
  return {};
}

size_t stdio_runtime::in_flight() const {
  return impl_->calls_in_flight.load();
}

std::string encode_frame(const std::string& body) {
  std::string out;
  out.reserve(body.size() + 4);
  auto n = static_cast<uint32_t>(body.size());
  out += static_cast<char>((n >> 24) & 0xFF);
  out += static_cast<char>((n >> 16) & 0xFF);
  out += static_cast<char>((n >> 8) & 0xFF);
  out += static_cast<char>(n & 0xFF);
  out += body;
  return out;
}

} // namespace snakepit::adapters
