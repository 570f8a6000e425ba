#include "adapters/bridge_client.hpp"

#include <atomic>
#include <deque>
#include <mutex>
#include <thread>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "adapters/wire.hpp"
#include "snakepit_bridge.grpc.pb.h"

namespace snakepit::adapters {

namespace detail {

namespace {

// Matches the Python server's limits (grpc.max_{send,receive}_message_length = 100 MiB).
constexpr int max_message_size = 100 * 1024 * 1024;

bool printable_ascii(const std::string& text) {
  for (auto c : text)
    if (c < 0x20 || c > 0x7e)
      return false;
  return true;
}

} // namespace

struct call_base;

/// A completion-queue tag: which call, and which step of it completed.
struct call_tag {
  call_base* call;
  int step;
};

// The completion queue orders an operation's start (any thread) before its completion
// (a poller thread) with synchronisation inside gRPC, which ThreadSanitizer cannot see
// in Debian's uninstrumented libgrpc. Under TSan, the hand-over of a tag is annotated
// as the release/acquire pair it is; elsewhere these compile to nothing.
#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_release(void* addr);
extern "C" void __tsan_acquire(void* addr);
inline void* handoff(call_tag& tag) {
  __tsan_release(&tag);
  return &tag;
}
inline void take_back(void* tag) {
  __tsan_acquire(tag);
}
#else
inline void* handoff(call_tag& tag) {
  return &tag;
}
inline void take_back(void*) {}
#endif

/// One RPC in flight. Owned by itself: it deletes itself after its final callback.
struct call_base {
  explicit call_base(std::shared_ptr<client_state> owner) : owner(std::move(owner)) {}
  virtual ~call_base() = default;
  /// Runs on a poller thread for every completed tag of this call.
  virtual void proceed(bool ok, int step) = 0;
  /// Streams only: issue the next read after a pause.
  virtual void read_next() {}
  /// Streams only: after a cancel from outside the stream's handle (shutdown, the
  /// owner's cancel_all), a stream paused by its consumer has no operation in the
  /// queue to fail; this issues one so the call completes instead of waiting forever.
  virtual void drain_if_paused() {}
  /// StreamTelemetry only: queue control messages; the stream's control mutex is held.
  virtual void send_locked(const telemetry_control&) {}

  /// Requests cancellation; the call still completes through the queue.
  void cancel(errc reason) {
    auto expected = static_cast<uint8_t>(errc::none);
    cancel_reason.compare_exchange_strong(expected, static_cast<uint8_t>(reason));
    ctx.TryCancel();
  }

  /// Turns the final status into our error, naming our own cancellations precisely.
  caf::error status_error(const grpc::Status& status) const {
    auto reason = static_cast<errc>(cancel_reason.load());
    if (status.error_code() == grpc::StatusCode::CANCELLED && reason != errc::none)
      return make_error(reason, reason == errc::shutting_down
                                  ? "grpc runtime shutting down"
                                  : "call cancelled by its owner");
    return error_from_status(status);
  }

  void prepare(std::chrono::milliseconds timeout, const std::string& correlation_id) {
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    if (!correlation_id.empty() && printable_ascii(correlation_id))
      ctx.AddMetadata("x-snakepit-correlation-id", correlation_id);
  }

  std::shared_ptr<client_state> owner;
  grpc::ClientContext ctx;
  std::atomic<uint8_t> cancel_reason{static_cast<uint8_t>(errc::none)};
};

struct runtime_state {
  grpc::CompletionQueue cq;
  std::vector<std::thread> threads;
  mutable std::mutex mtx;
  bool shutting_down = false;
  bool cq_shut = false;
  std::unordered_set<call_base*> calls;

  ~runtime_state() {
    // Normally the threads were joined by shutdown(). If the last reference died on a
    // poller thread (shutdown from a callback), the threads have left their loops or are
    // about to; joining ourselves is impossible, so let them go.
    for (auto& t : threads)
      if (t.joinable())
        t.detach();
  }

  bool on_poller_thread() const {
    auto self = std::this_thread::get_id();
    for (const auto& t : threads)
      if (t.get_id() == self)
        return true;
    return false;
  }

  /// Registers `call` and runs `start` under the lock, so the queue can never be shut
  /// down between the check and the first operation on it.
  template<class Start>
  bool start(call_base* call, Start&& start_fn) {
    std::lock_guard<std::mutex> guard{mtx};
    if (shutting_down)
      return false;
    calls.insert(call);
    start_fn();
    return true;
  }

  /// The queue is shut down once stopping and nothing is in flight; the pollers then
  /// drain it and leave their loops. Requires the lock.
  void shutdown_queue_if_idle() {
    if (shutting_down && calls.empty() && !cq_shut) {
      cq_shut = true;
      cq.Shutdown();
    }
  }

  /// Unregisters `call`; after this, cancel() can no longer reach it.
  void finished(call_base* call) {
    std::lock_guard<std::mutex> guard{mtx};
    calls.erase(call);
    shutdown_queue_if_idle();
  }

  void cancel(const client_state* owner, errc reason) {
    std::lock_guard<std::mutex> guard{mtx};
    for (auto* call : calls)
      if (owner == nullptr || call->owner.get() == owner) {
        call->cancel(reason);
        call->drain_if_paused();
      }
  }

  size_t count(const client_state* owner) const {
    std::lock_guard<std::mutex> guard{mtx};
    if (owner == nullptr)
      return calls.size();
    size_t n = 0;
    for (auto* call : calls)
      if (call->owner.get() == owner)
        ++n;
    return n;
  }

  void poll() {
    void* tag = nullptr;
    bool ok = false;
    while (cq.Next(&tag, &ok)) {
      take_back(tag);
      auto* t = static_cast<call_tag*>(tag);
      t->call->proceed(ok, t->step);
    }
  }

  void shutdown() {
    {
      std::lock_guard<std::mutex> guard{mtx};
      if (!shutting_down) {
        shutting_down = true;
        for (auto* call : calls) {
          call->cancel(errc::shutting_down);
          call->drain_if_paused();
        }
      }
      shutdown_queue_if_idle();
    }
    // From a callback we can only cancel: the pollers finish on their own once the
    // cancelled calls have completed.
    if (on_poller_thread())
      return;
    for (auto& t : threads)
      if (t.joinable())
        t.join();
  }
};

struct client_state {
  std::shared_ptr<runtime_state> runtime;
  std::string target;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<bridge::BridgeService::Stub> stub;
  /// Blocking calls have a connection of their own: on the shared one, whichever
  /// thread polls it (a completion thread waiting on the telemetry stream, say)
  /// reads the reply and wakes the caller, a hand-off the caller's own poll avoids.
  std::once_flag sync_once;
  std::shared_ptr<grpc::Channel> sync_channel;
  std::unique_ptr<bridge::BridgeService::Stub> sync_stub;
  /// Blocking calls in progress (`bridge_client::call`), so cancel_all reaches them.
  std::mutex sync_mtx;
  std::unordered_set<grpc::ClientContext*> sync_calls;
};

namespace {

/// The last step of every call: unregisters it (cancel_all no longer reaches it),
/// reports `result` to its owner and frees it.
template<class Call, class Result>
void complete(Call* call, Result result) {
  call->owner->runtime->finished(call);
  if (call->done)
    call->done(std::move(result));
  delete call;
}

grpc::ChannelArguments channel_args() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(max_message_size);
  args.SetMaxSendMessageSize(max_message_size);
  return args;
}

} // namespace

namespace {

/// A unary RPC: one Finish tag, one callback.
template<class Response, class Result>
struct unary_call final : call_base {
  using done_fn = std::function<void(caf::expected<Result>)>;
  using convert_fn = caf::expected<Result> (*)(const Response&);

  unary_call(std::shared_ptr<client_state> owner, done_fn done, convert_fn convert)
    : call_base(std::move(owner)), done(std::move(done)), convert(convert) {}

  void proceed(bool, int) override {
    complete(this, status.ok() ? convert(response)
                               : caf::expected<Result>{status_error(status)});
  }

  Response response;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<Response>> reader;
  done_fn done;
  convert_fn convert;
  call_tag finish_tag{this, 0};
};

caf::expected<std::string> convert_ping(const bridge::PingResponse& response) {
  return response.message();
}

caf::expected<tool_reply> convert_execute(const bridge::ExecuteToolResponse& response) {
  return decode_response(response);
}

} // namespace

} // namespace detail

/// Shared between a stream and its consumer: pause/resume/cancel bookkeeping.
struct grpc_stream_control final : stream_control::backend {
  std::mutex mtx;
  detail::call_base* call = nullptr; ///< the stream; null once it finished
  bool paused = false;
  bool resume_requested = false;
  bool cancelled = false;

  void resume() override;
  void cancel() override;
  void send(const telemetry_control& ctl) override;
};

namespace detail {

namespace {

/// A streaming call with a consumer-side handle (`stream_control`).
struct controlled_call : call_base {
  explicit controlled_call(std::shared_ptr<client_state> owner)
    : call_base(std::move(owner)), control(std::make_shared<grpc_stream_control>()) {
    control->call = this;
  }

  void drain_if_paused() override {
    std::lock_guard<std::mutex> guard{control->mtx};
    if (control->paused) {
      control->paused = false;
      read_next(); // fails at once: the call is cancelled
    }
  }

  /// Detaches the handle: pause/resume/cancel on it do nothing from now on.
  void release_control() {
    std::lock_guard<std::mutex> guard{control->mtx};
    control->call = nullptr;
  }

  std::shared_ptr<grpc_stream_control> control;
};

/// A server-streaming RPC: start, then reads until the stream ends, then Finish.
struct stream_call final : controlled_call {
  enum step_id { start_step, read_step, finish_step };

  stream_call(std::shared_ptr<client_state> owner,
              std::function<stream_step(nlohmann::json, bool)> on_chunk,
              std::function<void(caf::error)> done)
    : controlled_call(std::move(owner)), on_chunk(std::move(on_chunk)),
      done(std::move(done)) {}

  void read_next() override {
    chunk.Clear();
    reader->Read(&chunk, handoff(read_tag));
  }

  void proceed(bool ok, int step) override {
    switch (step) {
    case start_step:
      if (ok)
        reader->Read(&chunk, handoff(read_tag));
      else
        reader->Finish(&status, handoff(finish_tag));
      return;
    case read_step: {
      if (!ok) {
        reader->Finish(&status, handoff(finish_tag));
        return;
      }
      auto next = stream_step::more;
      if (!halted && on_chunk)
        next = on_chunk(decode_chunk(chunk.data()), chunk.is_final());
      if (next == stream_step::halt) {
        // The consumer has seen enough: cancel and drain what is already queued.
        halted = true;
        ctx.TryCancel();
      } else if (next == stream_step::pause && !halted) {
        std::lock_guard<std::mutex> guard{control->mtx};
        if (!control->resume_requested && !control->cancelled) {
          control->paused = true;
          return; // no read outstanding: the producer is held back by flow control
        }
        control->resume_requested = false;
      }
      read_next();
      return;
    }
    default:
      release_control();
      complete(this, halted ? caf::error{} : status_error(status));
    }
  }

  bridge::ToolChunk chunk;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncReader<bridge::ToolChunk>> reader;
  std::function<stream_step(nlohmann::json, bool)> on_chunk;
  std::function<void(caf::error)> done;
  bool halted = false;
  call_tag start_tag{this, start_step};
  call_tag read_tag{this, read_step};
  call_tag finish_tag{this, finish_step};
};

/// StreamTelemetry: start, then reads until the worker ends the stream, then Finish.
/// Control messages are written one at a time beside the outstanding read; Finish is
/// issued only once no write is outstanding, so after it nothing else can complete
/// and the call can delete itself.
struct telemetry_call final : controlled_call {
  enum step_id { start_step, read_step, finish_step, write_step };

  telemetry_call(std::shared_ptr<client_state> owner,
                 std::function<void(python_event)> on_event,
                 std::function<void(caf::error)> done)
    : controlled_call(std::move(owner)), on_event(std::move(on_event)),
      done(std::move(done)) {}

  void read_next() override {
    event.Clear();
    stream->Read(&event, handoff(read_tag));
  }

  void send_locked(const telemetry_control& ctl) override {
    if (finishing)
      return;
    bridge::TelemetryControl toggle;
    toggle.mutable_toggle()->set_enabled(ctl.enabled);
    bridge::TelemetryControl sampling;
    sampling.mutable_sampling()->set_sampling_rate(ctl.sampling_rate);
    for (const auto& p : ctl.sampling_patterns)
      sampling.mutable_sampling()->add_event_patterns(p);
    bridge::TelemetryControl filter;
    for (const auto& p : ctl.allow)
      filter.mutable_filter()->add_allow(p);
    for (const auto& p : ctl.deny)
      filter.mutable_filter()->add_deny(p);
    filter.mutable_filter(); // an empty filter clears an earlier one
    pending.push_back(std::move(toggle));
    pending.push_back(std::move(sampling));
    pending.push_back(std::move(filter));
    if (started && !writing)
      write_next_locked();
  }

  void write_next_locked() {
    writing = true;
    outgoing = std::move(pending.front());
    pending.pop_front();
    stream->Write(outgoing, handoff(write_tag));
  }

  /// The stream is over (failed start, or the last read): Finish once no write is
  /// outstanding.
  void begin_finish() {
    std::lock_guard<std::mutex> guard{control->mtx};
    finishing = true;
    pending.clear();
    if (!writing)
      stream->Finish(&status, handoff(finish_tag));
  }

  static python_event convert(const bridge::TelemetryEvent& ev) {
    python_event out;
    for (const auto& part : ev.event_parts()) {
      if (!out.name.empty())
        out.name += '.';
      out.name += part;
    }
    for (const auto& [key, value] : ev.measurements()) {
      switch (value.value_case()) {
      case bridge::TelemetryValue::kIntValue:
        out.measurements[key] = value.int_value();
        break;
      case bridge::TelemetryValue::kFloatValue:
        out.measurements[key] = value.float_value();
        break;
      case bridge::TelemetryValue::kStringValue:
        out.measurements[key] = value.string_value();
        break;
      default:
        break;
      }
    }
    for (const auto& [key, value] : ev.metadata())
      out.metadata.emplace(key, value);
    out.timestamp_ns = ev.timestamp_ns();
    out.correlation_id = ev.correlation_id();
    return out;
  }

  void proceed(bool ok, int step) override {
    switch (step) {
    case start_step:
      if (!ok) {
        begin_finish();
        return;
      }
      {
        std::lock_guard<std::mutex> guard{control->mtx};
        started = true;
        if (!pending.empty() && !writing)
          write_next_locked();
      }
      read_next();
      return;
    case read_step:
      if (!ok) {
        begin_finish();
        return;
      }
      if (on_event)
        on_event(convert(event));
      read_next();
      return;
    case write_step: {
      std::lock_guard<std::mutex> guard{control->mtx};
      writing = false;
      if (!ok)
        pending.clear(); // the stream is going away; its read fails next
      if (finishing)
        stream->Finish(&status, handoff(finish_tag));
      else if (!pending.empty())
        write_next_locked();
      return;
    }
    default:
      release_control();
      complete(this, status_error(status));
    }
  }

  bridge::TelemetryEvent event;
  grpc::Status status;
  std::unique_ptr<
    grpc::ClientAsyncReaderWriter<bridge::TelemetryControl, bridge::TelemetryEvent>>
    stream;
  std::function<void(python_event)> on_event;
  std::function<void(caf::error)> done;
  // Guarded by control->mtx:
  std::deque<bridge::TelemetryControl> pending;
  bridge::TelemetryControl outgoing;
  bool started = false;
  bool writing = false;
  bool finishing = false;
  call_tag start_tag{this, start_step};
  call_tag read_tag{this, read_step};
  call_tag finish_tag{this, finish_step};
  call_tag write_tag{this, write_step};
};

caf::error runtime_gone() {
  return make_error(errc::shutting_down, "grpc runtime shut down");
}

caf::error no_client() {
  return make_error(errc::internal, "bridge_client used without a target");
}

/// Registers `call` and issues its first operations (`issue`, under the runtime's
/// lock); when the runtime is gone, frees the call and tells its owner so instead.
template<class Call, class Issue>
void start_call(client_state& client, Call* call, Issue&& issue) {
  if (client.runtime->start(call, std::forward<Issue>(issue)))
    return;
  if constexpr (std::is_base_of_v<controlled_call, Call>)
    call->release_control();
  auto done = std::move(call->done);
  delete call;
  done(runtime_gone());
}

} // namespace

} // namespace detail

// --- grpc_runtime ---------------------------------------------------------------------

grpc_runtime::grpc_runtime(size_t threads)
  : state_(std::make_shared<detail::runtime_state>()) {
  if (threads == 0)
    threads = 1;
  // Each poller keeps the state alive, so a runtime dropped from inside a callback
  // cannot destroy the queue under a running poller.
  for (size_t i = 0; i < threads; ++i)
    state_->threads.emplace_back([st = state_] { st->poll(); });
}

grpc_runtime::~grpc_runtime() {
  shutdown();
}

void grpc_runtime::shutdown() {
  state_->shutdown();
}

size_t grpc_runtime::in_flight() const {
  return state_->count(nullptr);
}

// --- bridge_client --------------------------------------------------------------------

bridge_client::bridge_client(grpc_runtime& runtime, std::string target)
  : state_(std::make_shared<detail::client_state>()) {
  if (!target.empty() && target.front() == '/')
    target = "unix:" + target;
  state_->runtime = runtime.state();
  state_->target = std::move(target);
  state_->channel = grpc::CreateCustomChannel(
    state_->target, grpc::InsecureChannelCredentials(), detail::channel_args());
  state_->stub = bridge::BridgeService::NewStub(state_->channel);
}

const std::string& bridge_client::target() const {
  static const std::string empty;
  return state_ ? state_->target : empty;
}

void bridge_client::ping(std::string message, std::chrono::milliseconds timeout,
                         std::function<void(caf::expected<std::string>)> done) {
  if (!state_) {
    done(detail::no_client());
    return;
  }
  using call_t = detail::unary_call<bridge::PingResponse, std::string>;
  auto* call = new call_t(state_, std::move(done), detail::convert_ping);
  call->prepare(timeout, {});
  bridge::PingRequest request;
  request.set_message(std::move(message));
  detail::start_call(*state_, call, [&] {
    call->reader =
      state_->stub->PrepareAsyncPing(&call->ctx, request, &state_->runtime->cq);
    call->reader->StartCall();
    call->reader->Finish(&call->response, &call->status, handoff(call->finish_tag));
  });
}

void bridge_client::execute(tool_call tc, std::chrono::milliseconds timeout,
                            std::function<void(caf::expected<tool_reply>)> done) {
  if (!state_) {
    done(detail::no_client());
    return;
  }
  using call_t = detail::unary_call<bridge::ExecuteToolResponse, tool_reply>;
  auto* call = new call_t(state_, std::move(done), detail::convert_execute);
  call->prepare(timeout, tc.correlation_id);
  bridge::ExecuteToolRequest request;
  encode_request(tc, false, &request);
  detail::start_call(*state_, call, [&] {
    call->reader =
      state_->stub->PrepareAsyncExecuteTool(&call->ctx, request, &state_->runtime->cq);
    call->reader->StartCall();
    call->reader->Finish(&call->response, &call->status, handoff(call->finish_tag));
  });
}

caf::expected<tool_reply> bridge_client::call(const tool_call& tc,
                                              std::chrono::milliseconds timeout) {
  if (!state_)
    return detail::no_client();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  if (!tc.correlation_id.empty() && detail::printable_ascii(tc.correlation_id))
    ctx.AddMetadata("x-snakepit-correlation-id", tc.correlation_id);
  bridge::ExecuteToolRequest request;
  encode_request(tc, false, &request);
  bridge::ExecuteToolResponse response;
  auto& st = *state_;
  std::call_once(st.sync_once, [&st] {
    auto args = detail::channel_args();
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1); // a connection of its own
    st.sync_channel =
      grpc::CreateCustomChannel(st.target, grpc::InsecureChannelCredentials(), args);
    st.sync_stub = bridge::BridgeService::NewStub(st.sync_channel);
  });
  {
    std::lock_guard<std::mutex> guard{state_->sync_mtx};
    state_->sync_calls.insert(&ctx);
  }
  auto status = st.sync_stub->ExecuteTool(&ctx, request, &response);
  {
    std::lock_guard<std::mutex> guard{state_->sync_mtx};
    state_->sync_calls.erase(&ctx);
  }
  if (!status.ok())
    return error_from_status(status);
  return decode_response(response);
}

void bridge_client::execute_stream(tool_call tc, std::chrono::milliseconds timeout,
                                   std::function<bool(nlohmann::json, bool)> on_chunk,
                                   std::function<void(caf::error)> done) {
  execute_stream(
    std::move(tc), timeout,
    [fn = std::move(on_chunk)](nlohmann::json chunk, bool is_final) {
      return !fn || fn(std::move(chunk), is_final) ? stream_step::more
                                                   : stream_step::halt;
    },
    std::move(done));
}

void grpc_stream_control::resume() {
  std::lock_guard<std::mutex> guard{mtx};
  if (call == nullptr)
    return;
  if (paused) {
    paused = false;
    call->read_next();
  } else {
    resume_requested = true;
  }
}

void grpc_stream_control::send(const telemetry_control& ctl) {
  std::lock_guard<std::mutex> guard{mtx};
  if (call != nullptr)
    call->send_locked(ctl);
}

void grpc_stream_control::cancel() {
  std::lock_guard<std::mutex> guard{mtx};
  if (call == nullptr || cancelled)
    return;
  cancelled = true;
  call->cancel(errc::cancelled);
  if (paused) {
    // Drain: the pending read fails after the cancel and the stream finishes.
    paused = false;
    call->read_next();
  }
}

stream_control
bridge_client::execute_stream(tool_call tc, std::chrono::milliseconds timeout,
                              std::function<stream_step(nlohmann::json, bool)> on_chunk,
                              std::function<void(caf::error)> done) {
  stream_control control;
  if (!state_) {
    done(detail::no_client());
    return control;
  }
  auto* call = new detail::stream_call(state_, std::move(on_chunk), std::move(done));
  control = stream_control{call->control};
  call->prepare(timeout, tc.correlation_id);
  bridge::ExecuteToolRequest request;
  encode_request(tc, true, &request);
  detail::start_call(*state_, call, [&] {
    call->reader = state_->stub->PrepareAsyncExecuteStreamingTool(&call->ctx, request,
                                                                  &state_->runtime->cq);
    call->reader->StartCall(handoff(call->start_tag));
  });
  return control;
}

stream_control bridge_client::stream_telemetry(std::function<void(python_event)> on_event,
                                               std::function<void(caf::error)> done) {
  stream_control control;
  if (!state_) {
    done(detail::no_client());
    return control;
  }
  auto* call = new detail::telemetry_call(state_, std::move(on_event), std::move(done));
  control = stream_control{call->control};
  detail::start_call(*state_, call, [&] {
    call->stream =
      state_->stub->PrepareAsyncStreamTelemetry(&call->ctx, &state_->runtime->cq);
    call->stream->StartCall(handoff(call->start_tag));
  });
  return control;
}

void bridge_client::cancel_all() {
  if (!state_)
    return;
  state_->runtime->cancel(state_.get(), errc::cancelled);
  std::lock_guard<std::mutex> guard{state_->sync_mtx};
  for (auto* ctx : state_->sync_calls)
    ctx->TryCancel();
}

size_t bridge_client::in_flight() const {
  return state_ ? state_->runtime->count(state_.get()) : 0;
}

} // namespace snakepit::adapters
