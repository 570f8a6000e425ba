#include "actors/observability/telemetry.hpp"

#include <utility>

namespace snakepit::telemetry {

bool matches(const std::string& prefix, const std::string& name) noexcept {
  if (prefix.empty())
    return true;
  if (name.size() < prefix.size() || name.compare(0, prefix.size(), prefix) != 0)
    return false;
  return name.size() == prefix.size() || name[prefix.size()] == '.' ||
         prefix.back() == '.';
}

bus::bus(size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {
  thread_ = std::thread{[this] { run(); }};
  std::lock_guard<std::mutex> guard{mtx_};
  dispatcher_id_ = thread_.get_id();
}

bus::~bus() {
  stop();
}

bool bus::entry::wants(const std::string& name) const {
  for (auto& prefix : prefixes)
    if (matches(prefix, name))
      return true;
  return false;
}

handler_id bus::attach(std::string prefix, handler fn) {
  return attach_many({std::move(prefix)}, std::move(fn));
}

handler_id bus::attach_many(std::vector<std::string> prefixes, handler fn) {
  if (!fn || prefixes.empty())
    return 0;
  std::lock_guard<std::mutex> guard{mtx_};
  if (stopping_)
    return 0;
  auto id = next_id_++;
  auto list = std::make_shared<handler_list>(*handlers_);
  list->push_back(
    std::make_shared<const entry>(entry{id, std::move(prefixes), std::move(fn)}));
  handlers_ = std::move(list);
  handler_count_.store(handlers_->size(), std::memory_order_release);
  return id;
}

void bus::remove_handler(handler_id id) {
  // Caller holds mtx_.
  auto list = std::make_shared<handler_list>();
  list->reserve(handlers_->size());
  for (auto& e : *handlers_)
    if (e->id != id)
      list->push_back(e);
  handlers_ = std::move(list);
  handler_count_.store(handlers_->size(), std::memory_order_release);
}

void bus::detach(handler_id id) {
  std::unique_lock<std::mutex> guard{mtx_};
  remove_handler(id);
  // A handler detached while it runs must be finished when detach returns (it may
  // capture state the caller is about to destroy), unless it detaches itself.
  if (std::this_thread::get_id() != dispatcher_id_)
    idle_cv_.wait(guard, [&] { return running_ != id; });
}

void bus::emit(std::string name, json measurements, json metadata) {
  if (handler_count_.load(std::memory_order_acquire) == 0)
    return;
  event ev{std::move(name), std::move(measurements), std::move(metadata),
           std::chrono::system_clock::now()};
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (stopping_ || queue_.size() >= capacity_) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    queue_.push_back(std::move(ev));
    ++emitted_;
  }
  work_cv_.notify_one();
}

bool bus::active() const noexcept {
  return handler_count_.load(std::memory_order_acquire) > 0;
}

bool bus::flush(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> guard{mtx_};
  if (std::this_thread::get_id() == dispatcher_id_)
    return queue_.empty();
  return idle_cv_.wait_for(guard, timeout, [&] { return queue_.empty() && !busy_; });
}

void bus::stop() {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (stopping_ && !thread_.joinable())
      return;
    stopping_ = true;
  }
  work_cv_.notify_all();
  if (thread_.joinable() && std::this_thread::get_id() != thread_.get_id())
    thread_.join();
  std::lock_guard<std::mutex> guard{mtx_};
  handlers_ = std::make_shared<handler_list>();
  handler_count_.store(0, std::memory_order_release);
}

bus_stats bus::stats() const {
  bus_stats out;
  std::lock_guard<std::mutex> guard{mtx_};
  out.emitted = emitted_;
  out.delivered = delivered_.load(std::memory_order_relaxed);
  out.dropped = dropped_.load(std::memory_order_relaxed);
  out.handler_failures = failures_.load(std::memory_order_relaxed);
  out.handlers = handlers_->size();
  out.queue_depth = queue_.size();
  return out;
}

void bus::run() {
  std::unique_lock<std::mutex> guard{mtx_};
  for (;;) {
    work_cv_.wait(guard, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) // stopping and drained
      break;
    auto ev = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    auto list = handlers_;
    for (auto& h : *list) {
      if (!h->wants(ev.name))
        continue;
      // Skip handlers detached since the snapshot was taken.
      bool attached = false;
      for (auto& cur : *handlers_)
        if (cur->id == h->id) {
          attached = true;
          break;
        }
      if (!attached)
        continue;
      running_ = h->id;
      guard.unlock();
      bool failed = false;
      try {
        h->fn(ev);
      } catch (...) {
        failed = true;
      }
      guard.lock();
      running_ = 0;
      if (failed) {
        failures_.fetch_add(1, std::memory_order_relaxed);
        remove_handler(h->id);
      } else {
        delivered_.fetch_add(1, std::memory_order_relaxed);
      }
      idle_cv_.notify_all();
    }
    busy_ = false;
    idle_cv_.notify_all();
  }
  busy_ = false;
  idle_cv_.notify_all();
}

// --- the default request logger ------------------------------------------------

namespace {

/// The one line of a finished request (`snakepit.request.stop` / `.exception`).
adapters::log_fields request_line(const event& ev) {
  adapters::log_fields f = adapters::log_fields::object();
  for (auto* key : {"pool", "command", "worker_id", "correlation_id"})
    if (auto i = ev.metadata.find(key); i != ev.metadata.end())
      f[key] = *i;
  if (auto i = ev.measurements.find("duration_us"); i != ev.measurements.end())
    if (i->is_number())
      f["duration_ms"] = i->get<double>() / 1000.0;
  if (auto i = ev.metadata.find("error"); i != ev.metadata.end())
    f["error"] = *i;
  return f;
}

} // namespace

handler_id attach_default_logger(bus& b, std::shared_ptr<adapters::logger> log,
                                 adapters::log_level level) {
  if (!log)
    return 0;
  return b.attach_many({"snakepit.request.stop", "snakepit.request.exception"},
                       [log = std::move(log), level](const event& ev) {
                         if (log->enabled(level))
                           log->log(level, ev.name, request_line(ev));
                       });
}

} // namespace snakepit::telemetry
