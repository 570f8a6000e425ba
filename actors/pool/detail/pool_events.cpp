#include "actors/pool/detail/pool_events.hpp"

#include "actors/observability/telemetry.hpp"
#include "actors/worker/request_trace.hpp"
#include "adapters/errors.hpp"

namespace snakepit::actors::detail {

namespace {

int64_t micros(std::chrono::steady_clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

} // namespace

pool_events::pool_events(std::string pool, std::shared_ptr<telemetry::bus> bus,
                         adapters::logger_ptr log,
                         std::shared_ptr<adapters::log_throttle> saturation_log)
  : pool_(std::move(pool)), bus_(std::move(bus)), log_(std::move(log)),
    saturation_log_(std::move(saturation_log)),
    queue_timeout_log_(std::make_shared<adapters::log_throttle>()) {
  if (!log_)
    log_ = adapters::logger::null();
  if (!saturation_log_)
    saturation_log_ = std::make_shared<adapters::log_throttle>();
}

bool pool_events::listening() const {
  return bus_ && bus_->active();
}

void pool_events::emit(const char* name, json measurements, json metadata) {
  bus_->emit(name, std::move(measurements), std::move(metadata));
}

void pool_events::log(adapters::log_level level, const char* msg,
                      adapters::log_fields fields) {
  if (!log_->enabled(level))
    return;
  fields["pool"] = pool_;
  log_->log(level, msg, fields);
}

// --- requests --------------------------------------------------------------------

void pool_events::request_start(const pending_request& p, const std::string& worker_id,
                                pool_time now) {
  if (listening())
    emit("snakepit.request.start", {{"queue_us", micros(now - p.accepted)}},
         request_start_metadata(pool_, worker_id, p.req, is_stream(p.out)));
}

void pool_events::stream_start(const pending_request& p, const std::string& worker_id) {
  if (listening())
    emit("snakepit.stream.start", json::object(),
         {{"pool", pool_},
          {"worker_id", worker_id},
          {"command", p.req.command},
          {"correlation_id", p.correlation_id()}});
}

void pool_events::request_stop(const execute_result& res, const request_ident& who,
                               std::chrono::microseconds took, bool stream) {
  if (!listening())
    return;
  json measurements{{"duration_us", took.count()}};
  auto metadata = request_stop_metadata(pool_, who, res);
  emit(res ? "snakepit.request.stop" : "snakepit.request.exception", measurements,
       metadata);
  if (stream)
    emit("snakepit.stream.stop", measurements, metadata);
}

void pool_events::enqueued(const pending_request& p, size_t queue_size) {
  if (listening())
    emit("snakepit.queue.enqueued", {{"queue_size", queue_size}},
         {{"pool", pool_},
          {"command", p.req.command},
          {"correlation_id", p.correlation_id()},
          {"pinned_worker", p.pinned_worker}});
}

void pool_events::dequeued(const pending_request& p, const std::string& worker_id,
                           pool_time now) {
  if (listening())
    emit("snakepit.queue.dequeued", {{"wait_us", micros(now - p.accepted)}},
         {{"pool", pool_},
          {"worker_id", worker_id},
          {"correlation_id", p.correlation_id()}});
}

void pool_events::saturated(const pending_request& p, size_t queue_size,
                            size_t max_queue_size) {
  uint64_t held_back = 0;
  if (log_->enabled(adapters::log_level::warn) && saturation_log_->admit(held_back))
    log_->warn("pool saturated: request refused", {{"pool", pool_},
                                                   {"command", p.req.command},
                                                   {"correlation_id", p.correlation_id()},
                                                   {"queue_size", queue_size},
                                                   {"refused_unlogged", held_back}});
  if (listening())
    emit("snakepit.pool.saturated",
         {{"queue_size", queue_size}, {"max_queue_size", max_queue_size}},
         {{"pool", pool_}, {"correlation_id", p.correlation_id()}});
}

void pool_events::queue_timeout(const pending_request& p, bool deadline_passed) {
  uint64_t held_back = 0;
  if (log_->enabled(adapters::log_level::warn) && queue_timeout_log_->admit(held_back))
    log_->warn(deadline_passed ? "request deadline passed in the queue"
                               : "queue timeout: no worker became free",
               {{"pool", pool_},
                {"command", p.req.command},
                {"correlation_id", p.correlation_id()},
                {"timed_out_unlogged", held_back}});
  if (listening())
    emit("snakepit.queue.timeout", json::object(),
         {{"pool", pool_},
          {"correlation_id", p.correlation_id()},
          {"deadline_passed", deadline_passed}});
}

void pool_events::retried(const pending_request& p, const std::string& dead_worker,
                          std::chrono::milliseconds delay) {
  if (listening())
    emit("snakepit.request.retried",
         {{"attempt", p.attempt}, {"delay_ms", delay.count()}},
         {{"pool", pool_},
          {"worker_id", dead_worker},
          {"correlation_id", p.correlation_id()}});
}

void pool_events::capacity_reached(const std::string& worker_id, size_t capacity,
                                   uint32_t load) {
  if (listening())
    emit("snakepit.pool.capacity_reached", {{"capacity", capacity}, {"load", load}},
         {{"pool", pool_}, {"worker_id", worker_id}});
}

// --- the pool and its workers ----------------------------------------------------

void pool_events::init_started(size_t total_workers) {
  if (listening())
    emit("snakepit.pool.init_started", {{"total_workers", total_workers}},
         {{"pool", pool_}});
}

void pool_events::init_complete(std::chrono::milliseconds took, size_t ready,
                                size_t total, const caf::error& first_error) {
  if (!listening())
    return;
  json md{{"pool", pool_}};
  if (first_error)
    md["error"] = describe(first_error);
  emit(
    "snakepit.pool.init_complete",
    {{"duration_ms", took.count()}, {"ready_workers", ready}, {"total_workers", total}},
    md);
}

void pool_events::worker_ready(const std::string& id, int pid, bool restarted,
                               size_t workers) {
  if (listening())
    emit(restarted ? "snakepit.worker.restarted" : "snakepit.worker.ready",
         {{"workers", workers}}, {{"pool", pool_}, {"worker_id", id}, {"pid", pid}});
}

void pool_events::worker_terminated(const std::string& id, uint64_t requests,
                                    const caf::error& reason) {
  if (listening())
    emit("snakepit.worker.terminated", {{"requests", requests}},
         {{"pool", pool_}, {"worker_id", id}, {"reason", caf::to_string(reason)}});
}

void pool_events::worker_crash(const std::string& id, const std::string& cause) {
  if (listening())
    emit("snakepit.worker.crash", json::object(),
         {{"pool", pool_}, {"worker_id", id}, {"cause", cause}});
}

void pool_events::worker_tainted(const std::string& id, const std::string& cause,
                                 std::chrono::milliseconds duration) {
  log(adapters::log_level::warn, "worker tainted after a crash",
      {{"worker_id", id}, {"cause", cause}, {"duration_ms", duration.count()}});
  if (listening())
    emit("snakepit.worker.tainted", {{"duration_ms", duration.count()}},
         {{"pool", pool_}, {"worker_id", id}, {"cause", cause}});
}

void pool_events::recycle_started(const std::string& id, const std::string& reason) {
  log(adapters::log_level::info, "recycling worker: starting its replacement",
      {{"worker_id", id}, {"reason", reason}});
}

void pool_events::worker_recycled(const std::string& id, const recycle_info& info,
                                  uint64_t requests, std::chrono::milliseconds uptime) {
  log(adapters::log_level::info, "worker recycled",
      {{"worker_id", id}, {"reason", info.reason}});
  if (!listening())
    return;
  json m{{"requests", requests}, {"uptime_ms", uptime.count()}};
  if (info.rss_bytes > 0)
    m["memory_mb"] = static_cast<double>(info.rss_bytes) / (1 << 20);
  emit("snakepit.worker.recycled", m,
       {{"pool", pool_}, {"worker_id", id}, {"reason", info.reason}});
}

// --- the circuit breaker ---------------------------------------------------------

void pool_events::circuit_opened(const std::string& worker_id, int failures,
                                 const caf::error& err, std::chrono::milliseconds reset) {
  log(adapters::log_level::error,
      "circuit open: worker starts keep failing; restarts stop until the probe",
      {{"worker_id", worker_id},
       {"failures", failures},
       {"error", describe(err)},
       {"reset_ms", reset.count()}});
  if (listening())
    emit("snakepit.circuit_breaker.opened", {{"failures", failures}},
         {{"pool", pool_}, {"worker_id", worker_id}, {"error", describe(err)}});
}

void pool_events::circuit_half_open() {
  log(adapters::log_level::info, "circuit half-open: starting a probe worker",
      adapters::log_fields::object());
  if (listening())
    emit("snakepit.circuit_breaker.half_open", json::object(), {{"pool", pool_}});
}

void pool_events::circuit_closed(const std::string& worker_id) {
  if (worker_id.empty()) {
    if (listening())
      emit("snakepit.circuit_breaker.closed", json::object(), {{"pool", pool_}});
    return;
  }
  log(adapters::log_level::warn, "circuit closed: workers start again",
      {{"worker_id", worker_id}});
  if (listening())
    emit("snakepit.circuit_breaker.closed", json::object(),
         {{"pool", pool_}, {"worker_id", worker_id}});
}

void pool_events::resized(size_t from, size_t to) {
  log(adapters::log_level::info, "pool resized", {{"from", from}, {"to", to}});
  if (listening())
    emit("snakepit.pool.resized", {{"from", from}, {"to", to}}, {{"pool", pool_}});
}

void pool_events::worker_draining(const std::string& id, const char* reason) {
  if (listening())
    emit("snakepit.worker.draining", json::object(),
         {{"pool", pool_}, {"worker_id", id}, {"reason", reason}});
}

void pool_events::call_circuit_opened(uint32_t run, std::chrono::milliseconds reset) {
  log(adapters::log_level::error,
      "circuit open: calls keep failing (worker_crashed or timeout); new calls get "
      "circuit_open until a trial call succeeds",
      {{"failures", run}, {"reset_ms", reset.count()}});
  if (listening())
    emit("snakepit.circuit_breaker.opened", {{"failures", run}},
         {{"pool", pool_}, {"reason", "calls"}});
}

void pool_events::call_circuit_half_open() {
  log(adapters::log_level::info, "circuit half-open: the next call is the trial",
      adapters::log_fields::object());
  if (listening())
    emit("snakepit.circuit_breaker.half_open", json::object(),
         {{"pool", pool_}, {"reason", "calls"}});
}

void pool_events::call_circuit_closed(bool trial_ok) {
  if (trial_ok)
    log(adapters::log_level::warn, "circuit closed: the trial call succeeded",
        adapters::log_fields::object());
  if (listening())
    emit("snakepit.circuit_breaker.closed", json::object(),
         {{"pool", pool_}, {"reason", "calls"}});
}

} // namespace snakepit::actors::detail
