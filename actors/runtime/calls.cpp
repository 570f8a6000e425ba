// Calls facet of the facade: a tool run on a worker, blocking (on the direct lane
// when the pool would dispatch at once, else through the pool actor), asynchronous,
// or streaming into a bounded queue the caller's thread drains.
#include "actors/pool/pool.hpp"
#include "actors/runtime/runtime.hpp"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/atoms.hpp"
#include "actors/pool/stream_sink.hpp"
#include "actors/runtime/detail/runtime_impl.hpp"
#include "adapters/errors.hpp"

namespace snakepit {

using namespace std::chrono_literals;

namespace {

/// How long a blocking caller polls for its reply before it sleeps.
constexpr std::chrono::microseconds local_poll{300};
/// A call to a node takes about a millisecond here (two BASP hops and the node's
/// pool): polling that long saved ~150 µs per call against a futex wake-up at its
/// end (docs/benchmarks.md, "Distribution"). One caller at a time polls that long.
constexpr std::chrono::microseconds remote_poll{2000};

/// Callers polling for longer than `local_poll` now (at most one: under load the
/// others sleep, so that polling never takes the cores the replies need).
std::atomic<int> long_pollers{0};

/// One blocking caller waiting for its reply. The reply usually arrives within a
/// millisecond, so the caller first polls (yielding its core) before it sleeps on
/// the condition variable: a futex wake-up costs tens of µs on small VMs. Every
/// caller polls, also under concurrent load: a reply that finds its caller polling
/// costs the single gRPC completion thread no wake-up (letting only one caller poll
/// measured 5-12 % lower throughput with 16 callers).
struct reply_waiter {
  std::atomic<bool> ready{false};
  std::mutex mtx;
  std::condition_variable cv;
  std::optional<execute_result> value;

  void set(execute_result res) {
    {
      std::lock_guard<std::mutex> guard{mtx};
      value.emplace(std::move(res));
      ready.store(true, std::memory_order_release);
    }
    cv.notify_one();
  }

  /// Polls for up to `poll` (`local_poll` unless this caller is the one long
  /// poller), then sleeps until the reply or `deadline`.
  bool wait(std::chrono::steady_clock::time_point deadline,
            std::chrono::microseconds poll = local_poll) {
    bool long_poll = false;
    if (poll > local_poll) {
      long_poll = long_pollers.fetch_add(1) == 0;
      if (!long_poll) {
        long_pollers.fetch_sub(1);
        poll = local_poll;
      }
    }
    auto poll_until = std::chrono::steady_clock::now() + poll;
    while (!ready.load(std::memory_order_acquire)) {
      if (std::chrono::steady_clock::now() >= poll_until)
        break;
      std::this_thread::yield();
    }
    if (long_poll)
      long_pollers.fetch_sub(1);
    std::unique_lock<std::mutex> guard{mtx};
    return cv.wait_until(guard, deadline, [this] { return ready.load(); });
  }
};

} // namespace

execute_result runtime::execute(const std::string& command, json args,
                                execute_options opts) {
  auto target = impl_->route(opts);
  if (target.error)
    return std::move(target.error);
  if (!target.hdl)
    return impl_->pool_missing(opts.pool);
  auto budget =
    target.local ? impl_->request_budget(opts) : impl_->remote_budget(opts, target);
  execute_request req{command, std::move(args), std::move(opts)};
  // The direct lane: when the pool would dispatch at once, claim a worker in its
  // checkout table and make the call on this thread (docs/architecture.md).
  // A full queue refuses at once, on this thread.
  auto lane =
    target.local ? impl_->env->lanes->get(impl_->pool_name(req.opts.pool)) : nullptr;
  if (lane) {
    if (auto res = lane->execute(req, budget))
      return std::move(*res);
    if (auto refused = lane->refuse_if_saturated(req))
      return std::move(*refused);
  }
  auto waiter = std::make_shared<reply_waiter>();
  callback_sink sink;
  sink.fn = [waiter](execute_result res) { waiter->set(std::move(res)); };
  auto abandoned = sink.abandoned;
  auto cid = req.opts.correlation_id;
  actors::execute_async(actors::pool_handle(target.hdl), std::move(req), std::move(sink));
  // The pool always answers (result, queue timeout, deadline, crash, shutdown);
  // the margin only guards against a pool that died with the request.
  if (!waiter->wait(std::chrono::steady_clock::now() + budget + 5s,
                    target.local ? local_poll : remote_poll)) {
    abandoned->store(true);
    return with_correlation_id(caf::make_error(errc::timeout, command), cid);
  }
  std::lock_guard<std::mutex> guard{waiter->mtx};
  return std::move(*waiter->value);
}

execute_result runtime::execute_in_session(const std::string& session_id,
                                           const std::string& command, json args,
                                           execute_options opts) {
  opts.session_id = session_id;
  return execute(command, std::move(args), std::move(opts));
}

caf::error runtime::execute_in_session_stream(
  const std::string& session_id, const std::string& command, json args,
  const std::function<bool(const json&, bool)>& on_chunk, execute_options opts) {
  opts.session_id = session_id;
  return execute_stream(command, std::move(args), on_chunk, std::move(opts));
}

void runtime::execute_async(const std::string& command, json args, execute_options opts,
                            execute_callback done) {
  auto target = impl_->route(opts);
  if (target.error) {
    done(std::move(target.error));
    return;
  }
  if (!target.hdl) {
    done(impl_->pool_missing(opts.pool));
    return;
  }
  if (!target.local)
    impl_->remote_budget(opts, target);
  execute_request req{command, std::move(args), std::move(opts)};
  if (target.local)
    if (auto lane = impl_->env->lanes->get(impl_->pool_name(req.opts.pool)))
      if (auto refused = lane->refuse_if_saturated(req)) {
        done(std::move(*refused));
        return;
      }
  callback_sink sink;
  sink.fn = std::move(done);
  actors::execute_async(actors::pool_handle(target.hdl), std::move(req), std::move(sink));
}

namespace {

/// A stream consumed by a blocking caller: the gRPC thread fills a bounded queue,
/// the caller's thread drains it; a full queue pauses the RPC until drained.
class blocking_stream_sink final : public actors::stream_sink {
 public:
  static constexpr size_t high_water = 32;
  static constexpr size_t low_water = 8;

  adapters::stream_step on_chunk(json chunk, bool is_final) override {
    std::lock_guard<std::mutex> guard{mtx_};
    if (halted_)
      return adapters::stream_step::halt;
    queue_.emplace_back(std::move(chunk), is_final);
    cv_.notify_one();
    if (queue_.size() >= high_water) {
      paused_ = true;
      return adapters::stream_step::pause;
    }
    return adapters::stream_step::more;
  }

  void on_end(caf::error err) override {
    std::lock_guard<std::mutex> guard{mtx_};
    finished_ = true;
    result_ = std::move(err);
    cv_.notify_one();
  }

  void attach(adapters::stream_control ctl) override {
    std::lock_guard<std::mutex> guard{mtx_};
    control_ = std::move(ctl);
    if (halted_)
      control_.cancel();
  }

  /// Drains the stream on the calling thread until it ends or `deadline`.
  caf::error run(const std::function<bool(const json&, bool)>& on_chunk,
                 std::chrono::steady_clock::time_point deadline) {
    std::unique_lock<std::mutex> guard{mtx_};
    for (;;) {
      if (!cv_.wait_until(guard, deadline,
                          [this] { return !queue_.empty() || finished_; })) {
        abandoned = true;
        halted_ = true;
        control_.cancel();
        return caf::make_error(errc::timeout, "stream did not end within its budget");
      }
      if (queue_.empty() && finished_)
        break;
      auto [chunk, is_final] = std::move(queue_.front());
      queue_.pop_front();
      if (paused_ && queue_.size() <= low_water) {
        paused_ = false;
        control_.resume();
      }
      if (halted_)
        continue; // drain what arrived before the cancel took effect
      guard.unlock();
      bool more = on_chunk(chunk, is_final);
      guard.lock();
      if (!more) {
        halted_ = true;
        control_.cancel();
        if (paused_) {
          paused_ = false;
          control_.resume();
        }
      }
    }
    // A halt cancels the RPC on purpose: that is a successful end for the caller.
    if (halted_ && result_ == errc::cancelled)
      return caf::none;
    return result_;
  }

 private:
  std::mutex mtx_;
  std::condition_variable cv_;
  std::deque<std::pair<json, bool>> queue_;
  adapters::stream_control control_;
  caf::error result_;
  bool finished_ = false;
  bool paused_ = false;
  bool halted_ = false;
};

} // namespace

caf::error runtime::execute_stream(const std::string& command, json args,
                                   const std::function<bool(const json&, bool)>& on_chunk,
                                   execute_options opts) {
  auto target = impl_->route(opts);
  if (target.error)
    return std::move(target.error);
  if (!target.hdl)
    return impl_->pool_missing(opts.pool);
  auto budget =
    target.local ? impl_->request_budget(opts) : impl_->remote_budget(opts, target);
  opts.timeout = budget;
  auto sink = std::make_shared<blocking_stream_sink>();
  execute_request req{command, std::move(args), std::move(opts)};
  // A pool and a node link take a stream the same way; the link carries the
  // sink's flow control to the node as a window of acknowledgements.
  caf::anon_send(target.hdl, actors::stream_atom::value, std::move(req),
                 actors::stream_sink_ptr{sink});
  return sink->run(on_chunk, std::chrono::steady_clock::now() + budget + 5s);
}

} // namespace snakepit
