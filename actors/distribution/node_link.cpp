#include "actors/distribution/node_link.hpp"

#include <algorithm>
#include <deque>
#include <optional>
#include <unordered_map>
#include <utility>

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/middleman_actor.hpp>
#include <fmt/format.h>

#include "actors/atoms.hpp"
#include "actors/observability/telemetry.hpp"
#include "actors/pool/stream_sink.hpp"
#include "actors/types.hpp"
#include "actors/worker/request_trace.hpp"
#include "adapters/errors.hpp"

namespace snakepit::distribution {

// --- The directory ------------------------------------------------------------------

const char* to_string(node_state x) {
  switch (x) {
  case node_state::connecting:
    return "connecting";
  case node_state::connected:
    return "connected";
  case node_state::down:
    return "down";
  }
  return "unknown";
}

void node_directory::add(const std::string& name, const std::string& address,
                         caf::actor link) {
  std::lock_guard<std::mutex> guard{mtx_};
  entry e;
  e.view.name = name;
  e.view.address = address;
  e.view.since = std::chrono::system_clock::now();
  e.link = std::move(link);
  entries_.push_back(std::move(e));
}

void node_directory::set_link(const std::string& name, caf::actor link) {
  std::lock_guard<std::mutex> guard{mtx_};
  for (auto& e : entries_)
    if (e.view.name == name)
      e.link = link;
}

void node_directory::set_state(const std::string& name, node_state state,
                               std::string error) {
  std::lock_guard<std::mutex> guard{mtx_};
  for (auto& e : entries_)
    if (e.view.name == name) {
      if (e.view.state != state)
        e.view.since = std::chrono::system_clock::now();
      e.view.state = state;
      if (!error.empty())
        e.view.last_error = std::move(error);
    }
}

void node_directory::set_loads(const std::string& name, std::vector<pool_load> loads) {
  std::lock_guard<std::mutex> guard{mtx_};
  for (auto& e : entries_)
    if (e.view.name == name)
      e.view.pools = std::move(loads);
}

void node_directory::end_call(const std::string& name, const std::string& pool,
                              bool lost) {
  std::lock_guard<std::mutex> guard{mtx_};
  for (auto& e : entries_)
    if (e.view.name == name) {
      auto& n = e.in_flight[pool];
      if (n > 0)
        --n;
      if (lost)
        ++e.view.failed;
    }
}

uint32_t node_directory::free_of(const entry& e, const pool_load& load) {
  auto own = e.in_flight.count(load.pool) ? e.in_flight.at(load.pool) : 0u;
  auto busy = std::max(load.load, own);
  return load.queued > 0 || busy >= load.capacity ? 0 : load.capacity - busy;
}

namespace {

const pool_load* find_load(const node_view& v, const std::string& pool) {
  for (auto& p : v.pools)
    if (p.pool == pool)
      return &p;
  return nullptr;
}

} // namespace

std::optional<node_route> node_directory::pick(const std::string& pool,
                                               const std::string& exclude, bool reserve,
                                               bool only_free) {
  std::lock_guard<std::mutex> guard{mtx_};
  entry* best = nullptr;
  const pool_load* best_load = nullptr;
  uint32_t best_free = 0;
  for (auto& e : entries_) {
    if (e.view.state != node_state::connected || e.view.name == exclude)
      continue;
    auto* load = find_load(e.view, pool);
    if (!load)
      continue;
    auto free = free_of(e, *load);
    if (!best || free > best_free) {
      best = &e;
      best_load = load;
      best_free = free;
    }
  }
  if (!best)
    return std::nullopt;
  if (reserve && (best_free > 0 || !only_free)) {
    ++best->view.calls;
    ++best->in_flight[pool];
  }
  return node_route{best->link, best->view.name,
                    std::chrono::milliseconds{best_load->request_timeout_ms}, best_free};
}

std::optional<node_route> node_directory::pick_node(const std::string& node,
                                                    const std::string& pool) {
  std::lock_guard<std::mutex> guard{mtx_};
  for (auto& e : entries_) {
    if (e.view.name != node || e.view.state != node_state::connected)
      continue;
    auto* load = find_load(e.view, pool);
    if (!load)
      return std::nullopt;
    ++e.view.calls;
    ++e.in_flight[pool];
    return node_route{e.link, e.view.name,
                      std::chrono::milliseconds{load->request_timeout_ms},
                      free_of(e, *load)};
  }
  return std::nullopt;
}

std::optional<std::string> node_directory::session_place(const std::string& id) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = sessions_.find(id);
  if (i == sessions_.end())
    return std::nullopt;
  return i->second;
}

void node_directory::place_session(const std::string& id, const std::string& node,
                                   size_t cap) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (sessions_.insert_or_assign(id, node).second)
    session_order_.push_back(id);
  while (sessions_.size() > std::max<size_t>(cap, 1) && !session_order_.empty()) {
    sessions_.erase(session_order_.front());
    session_order_.pop_front();
  }
  // Ids forgotten earlier stay in the order until they come up; keep it bounded.
  if (session_order_.size() > 2 * std::max<size_t>(cap, 1) + 64) {
    std::deque<std::string> live;
    for (auto& s : session_order_)
      if (sessions_.count(s))
        live.push_back(s);
    session_order_ = std::move(live);
  }
}

void node_directory::forget_session(const std::string& id) {
  std::lock_guard<std::mutex> guard{mtx_};
  sessions_.erase(id);
}

uint32_t node_directory::free_capacity(const std::string& pool) const {
  std::lock_guard<std::mutex> guard{mtx_};
  uint32_t sum = 0;
  for (auto& e : entries_)
    if (e.view.state == node_state::connected)
      if (auto* load = find_load(e.view, pool))
        sum += free_of(e, *load);
  return sum;
}

bool node_directory::serves(const std::string& pool) const {
  std::lock_guard<std::mutex> guard{mtx_};
  return std::any_of(entries_.begin(), entries_.end(),
                     [&](const entry& e) { return find_load(e.view, pool) != nullptr; });
}

std::vector<std::pair<std::string, caf::actor>>
node_directory::serving(const std::string& pool) const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<std::pair<std::string, caf::actor>> out;
  for (auto& e : entries_)
    if (e.view.state == node_state::connected && e.link && find_load(e.view, pool))
      out.emplace_back(e.view.name, e.link);
  return out;
}

std::vector<node_view> node_directory::nodes() const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<node_view> out;
  for (auto& e : entries_)
    out.push_back(e.view);
  return out;
}

std::vector<caf::actor> node_directory::links() const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<caf::actor> out;
  for (auto& e : entries_)
    out.push_back(e.link);
  return out;
}

void node_directory::clear() {
  std::lock_guard<std::mutex> guard{mtx_};
  entries_.clear();
  sessions_.clear();
  session_order_.clear();
}

// --- The link actor -----------------------------------------------------------------

namespace {

/// Link-internal: time for the next connection attempt (its generation).
using link_retry_atom = caf::atom_constant<caf::atom("linkretry")>;
/// Link-internal, from a stream's caller: take chunks of stream `id` again.
using link_resume_atom = caf::atom_constant<caf::atom("lnkresume")>;
/// Link-internal, from a stream's caller: stop stream `id`.
using link_halt_atom = caf::atom_constant<caf::atom("lnkhalt")>;
/// Link-internal: stream `id`'s budget and margin are spent.
using link_guard_atom = caf::atom_constant<caf::atom("lnkguard")>;

/// Acknowledgements go back in batches of this many chunks (fewer messages; the
/// window stays open since it is larger).
constexpr uint32_t ack_batch = std::max<uint32_t>(1, node_stream_window / 4);

/// How long past a call's budget the link waits for the node's answer before it
/// calls the node lost for that call (the node's pool answers by the deadline).
constexpr auto node_reply_margin = std::chrono::seconds{2};

/// How long a node has to answer for its pool's figures.
constexpr auto node_stats_timeout = std::chrono::seconds{5};

struct pending_call {
  execute_request req;
  callback_sink sink;
  std::chrono::steady_clock::time_point deadline;
  std::chrono::steady_clock::time_point started;
};

/// A stream running on the node, as its caller's sink sees it.
struct pending_stream {
  execute_request req;
  actors::stream_sink_ptr sink;
  std::chrono::steady_clock::time_point started;
  uint32_t unacked = 0; ///< chunks the sink took that the node was not told of
  bool paused = false;  ///< the sink asked for no more until it resumes
  bool halted = false;  ///< a halt went to the node; its end follows
  /// Chunks that arrived while the sink was paused (at most the node's window:
  /// the node sends no more unacknowledged), handed on when it resumes.
  std::deque<std::pair<json, bool>> held;
  /// The node's end, when it came while chunks were held: it follows them.
  std::optional<caf::error> held_end;
};

/// The caller's handle on a stream to a node: resume and cancel become messages
/// to the link (weakly held: a stream outliving its link controls nothing).
class link_stream_control final : public adapters::stream_control::backend {
 public:
  link_stream_control(caf::actor_addr link, uint64_t id)
    : link_(std::move(link)), id_(id) {}

  void resume() override {
    if (auto hdl = caf::actor_cast<caf::actor>(link_))
      caf::anon_send(hdl, link_resume_atom::value, id_);
  }

  void cancel() override {
    if (auto hdl = caf::actor_cast<caf::actor>(link_))
      caf::anon_send(hdl, link_halt_atom::value, id_);
  }

 private:
  caf::actor_addr link_;
  uint64_t id_;
};

struct link_state {
  link_state() = default;
  link_state(const link_state&) = delete;
  link_state& operator=(const link_state&) = delete;
  /// Whatever is still in flight when the actor goes (a crash; an orderly stop
  /// has answered everything already) fails instead of being lost.
  ~link_state();

  link_options opts;
  caf::actor gateway;
  node_state state = node_state::connecting;
  std::chrono::milliseconds backoff{0};
  uint64_t generation = 0;
  uint64_t next_call = 0;
  std::unordered_map<uint64_t, pending_call> pending;
  uint64_t next_stream = 0;
  std::unordered_map<uint64_t, pending_stream> streams;
  static inline const char* name = "snakepit.node_link";
};

using link_actor = caf::stateful_actor<link_state>;

link_state::~link_state() {
  if (!opts.directory)
    return;
  for (auto& [id, call] : pending) {
    opts.directory->end_call(opts.name, call.req.opts.pool, false);
    if (call.sink.fn)
      call.sink.fn(with_correlation_id(
        caf::make_error(errc::internal, "the node link stopped with the call in flight"),
        call.req.opts.correlation_id));
  }
  for (auto& [id, s] : streams) {
    opts.directory->end_call(opts.name, s.req.opts.pool, false);
    s.sink->end(with_correlation_id(
      caf::make_error(errc::internal, "the node link stopped with the stream running"),
      s.req.opts.correlation_id));
  }
  opts.directory->set_state(opts.name, node_state::down, "its node link stopped");
}

std::string address_of(const link_options& o) {
  return fmt::format("{}:{}", o.host, o.port);
}

caf::error node_down(const link_state& st, const execute_request& req,
                     const std::string& why) {
  return with_correlation_id(
    caf::make_error(errc::node_down,
                    fmt::format("pool {} on node {} ({}): {}", req.opts.pool,
                                st.opts.name, address_of(st.opts), why)),
    req.opts.correlation_id);
}

void deliver(callback_sink& sink, execute_result res) {
  if (sink.fn)
    sink.fn(std::move(res));
  sink.fn = nullptr;
}

// --- Telemetry: the events of a local call, with the node that ran it ---------------

bool listening(const link_state& st) {
  return st.opts.telemetry && st.opts.telemetry->active();
}

void emit_start(const link_state& st, const execute_request& req, bool stream) {
  if (!listening(st))
    return;
  // The node's queue wait is the node's to report: 0 here.
  auto md = actors::request_start_metadata(req.opts.pool, "", req, stream);
  md["node"] = st.opts.name;
  st.opts.telemetry->emit("snakepit.request.start", {{"queue_us", 0}}, md);
  if (stream)
    st.opts.telemetry->emit("snakepit.stream.start", json::object(),
                            {{"pool", req.opts.pool},
                             {"worker_id", ""},
                             {"command", req.command},
                             {"correlation_id", req.opts.correlation_id},
                             {"node", st.opts.name}});
}

void emit_stop(const link_state& st, const execute_request& req,
               const execute_result& res, std::chrono::steady_clock::time_point started,
               bool stream) {
  if (!listening(st))
    return;
  auto took = std::chrono::duration_cast<std::chrono::microseconds>(
    std::chrono::steady_clock::now() - started);
  auto md = actors::request_stop_metadata(
    req.opts.pool,
    actors::request_ident{req.command, res ? res->worker_id : std::string{},
                          req.opts.correlation_id},
    res);
  md["node"] = st.opts.name;
  json measurements{{"duration_us", took.count()}};
  st.opts.telemetry->emit(res ? "snakepit.request.stop" : "snakepit.request.exception",
                          measurements, md);
  if (stream)
    st.opts.telemetry->emit("snakepit.stream.stop", measurements, md);
}

void connect(link_actor* self);

void schedule_retry(link_actor* self, const std::string& why, bool logged = false) {
  auto& st = self->state;
  // The first failure of a series is a warning, the retries that follow debug.
  if (st.opts.log && !logged)
    st.opts.log->log(
      st.backoff.count() == 0 ? adapters::log_level::warn : adapters::log_level::debug,
      "cannot reach node; retrying",
      {{"node", st.opts.name}, {"address", address_of(st.opts)}, {"reason", why}});
  st.gateway = nullptr;
  st.state = node_state::down;
  st.opts.directory->set_state(st.opts.name, node_state::down, why);
  st.backoff = st.backoff.count() == 0 ? st.opts.retry_min
                                       : std::min(st.opts.retry_max, st.backoff * 2);
  self->delayed_send(self, st.backoff, link_retry_atom::value, ++st.generation);
}

void on_gateway(link_actor* self, caf::actor gw, uint64_t gen) {
  auto& st = self->state;
  node_hello mine;
  mine.node = st.opts.self_name;
  self->request(gw, st.opts.connect_timeout, node_hello_atom::value, std::move(mine))
    .then(
      [self, gw, gen](node_hello& theirs) {
        auto& st = self->state;
        if (gen != st.generation)
          return;
        if (auto err = check_hello(theirs)) {
          schedule_retry(self, describe(err));
          return;
        }
        st.gateway = gw;
        st.state = node_state::connected;
        st.backoff = std::chrono::milliseconds{0};
        self->monitor(gw);
        if (st.opts.log)
          st.opts.log->info("node connected", {{"node", st.opts.name},
                                               {"address", address_of(st.opts)},
                                               {"pools", theirs.pools.size()},
                                               {"version", theirs.version}});
        if (listening(st))
          st.opts.telemetry->emit(
            "snakepit.node.connected", {{"pools", theirs.pools.size()}},
            {{"node", st.opts.name}, {"address", address_of(st.opts)}});
        st.opts.directory->set_loads(st.opts.name, std::move(theirs.pools));
        st.opts.directory->set_state(st.opts.name, node_state::connected);
      },
      [self, gen](caf::error& err) {
        if (gen == self->state.generation)
          schedule_retry(self, "handshake: " + describe(err));
      });
}

void connect(link_actor* self) {
  auto& st = self->state;
  st.state = node_state::connecting;
  auto gen = st.generation;
  if (st.opts.log)
    st.opts.log->debug("connecting to node",
                       {{"node", st.opts.name}, {"address", address_of(st.opts)}});
  auto mm = connector(self->system());
  self
    ->request(mm, st.opts.connect_timeout, caf::connect_atom::value, st.opts.host,
              st.opts.port)
    .then(
      [self, gen](caf::node_id&, caf::strong_actor_ptr& ptr, std::set<std::string>&) {
        if (gen != self->state.generation)
          return;
        auto gw = caf::actor_cast<caf::actor>(ptr);
        if (!gw) {
          schedule_retry(self, "no gateway published at that port");
          return;
        }
        on_gateway(self, std::move(gw), gen);
      },
      [self, gen](caf::error& err) {
        if (gen == self->state.generation)
          schedule_retry(self, "connect: " + describe(err));
      });
}

/// The call `id` ended with `res` (or was already ended by a node loss).
void finish(link_actor* self, uint64_t id, execute_result res) {
  auto i = self->state.pending.find(id);
  if (i == self->state.pending.end())
    return;
  auto call = std::move(i->second);
  self->state.pending.erase(i);
  self->state.opts.directory->end_call(self->state.opts.name, call.req.opts.pool,
                                       !res && res.error() == errc::node_down);
  emit_stop(self->state, call.req, res, call.started, false);
  deliver(call.sink, std::move(res));
}

/// Stream `id` ended with `err` (none: cleanly); nothing when it already did.
void end_stream(link_actor* self, uint64_t id, caf::error err) {
  auto& st = self->state;
  auto i = st.streams.find(id);
  if (i == st.streams.end())
    return;
  auto s = std::move(i->second);
  st.streams.erase(i);
  st.opts.directory->end_call(st.opts.name, s.req.opts.pool,
                              err && err == errc::node_down);
  if (err && correlation_id_of(err).empty())
    err = with_correlation_id(std::move(err), s.req.opts.correlation_id);
  emit_stop(st, s.req, err ? execute_result{err} : execute_result{execute_reply{}},
            s.started, true);
  s.sink->end(std::move(err));
}

/// Asks the node to stop stream `id` (its end follows); the caller takes no more.
void halt_stream(link_actor* self, pending_stream& s, uint64_t id) {
  if (s.halted)
    return;
  s.halted = true;
  if (self->state.gateway)
    self->send(self->state.gateway, node_halt_atom::value, id);
}

/// Every stream running on the node ends with `reason` after the chunks already
/// handed to their sinks (chunks held for a paused sink are dropped: its caller
/// never took them).
void end_all_streams(link_actor* self,
                     const std::function<caf::error(const execute_request&)>& reason) {
  std::vector<uint64_t> ids;
  for (auto& [id, s] : self->state.streams)
    ids.push_back(id);
  for (auto id : ids)
    end_stream(self, id, reason(self->state.streams.at(id).req));
}

/// The node is gone: every call in flight there fails with node_down, except the
/// idempotent ones, which go to another node or the local pool with what is left
/// of their budget.
void fail_pending(link_actor* self, const std::string& why) {
  auto& st = self->state;
  auto calls = std::move(st.pending);
  st.pending.clear();
  auto now = std::chrono::steady_clock::now();
  for (auto& [id, call] : calls) {
    st.opts.directory->end_call(st.opts.name, call.req.opts.pool, true);
    if (call.sink.abandoned && call.sink.abandoned->load())
      continue;
    auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(call.deadline - now);
    if (call.req.opts.idempotent && left.count() > 0) {
      caf::actor alt;
      if (auto route = st.opts.directory->pick(call.req.opts.pool, st.opts.name, true))
        alt = route->link;
      else if (st.opts.local_pool)
        alt = st.opts.local_pool(call.req.opts.pool);
      if (alt) {
        call.req.opts.timeout = left;
        self->send(alt, actors::execute_cb_atom::value, std::move(call.req),
                   std::move(call.sink));
        continue;
      }
    }
    auto err = node_down(st, call.req, why);
    emit_stop(st, call.req, err, call.started, false);
    deliver(call.sink, std::move(err));
  }
}

/// The connection to the gateway is gone (its down message, or a call that failed
/// in transport, whichever comes first): the calls in flight fail or move, the
/// node counts as down, a reconnection is scheduled.
void lose_gateway(link_actor* self, const std::string& why) {
  auto& st = self->state;
  if (!st.gateway)
    return;
  if (st.opts.log)
    st.opts.log->warn("node lost", {{"node", st.opts.name},
                                    {"address", address_of(st.opts)},
                                    {"calls_in_flight", st.pending.size()},
                                    {"streams", st.streams.size()},
                                    {"reason", why}});
  if (listening(st))
    st.opts.telemetry->emit(
      "snakepit.node.down",
      {{"calls_in_flight", st.pending.size()}, {"streams", st.streams.size()}},
      {{"node", st.opts.name}, {"address", address_of(st.opts)}, {"reason", why}});
  self->demonitor(st.gateway);
  // Down first: a caller woken by its node_down must see the node down.
  schedule_retry(self, why, true);
  fail_pending(self, why);
  end_all_streams(self, [self, &why](const execute_request& req) {
    return node_down(self->state, req, why);
  });
}

/// Runs a stream on the node: the caller's sink gets a control whose resume and
/// cancel come back here as messages; its chunks come as `node_chunk_atom`.
void open_stream(link_actor* self, execute_request& req, actors::stream_sink_ptr sink) {
  auto& st = self->state;
  if (!sink)
    return;
  if (!st.gateway) {
    st.opts.directory->end_call(st.opts.name, req.opts.pool, true);
    sink->end(node_down(st, req, fmt::format("not connected ({})", to_string(st.state))));
    return;
  }
  auto budget = req.opts.timeout;
  if (budget.count() <= 0) {
    st.opts.directory->end_call(st.opts.name, req.opts.pool, false);
    sink->end(
      with_correlation_id(caf::make_error(errc::timeout, "no budget left for the stream"),
                          req.opts.correlation_id));
    return;
  }
  auto id = ++st.next_stream;
  sink->attach(
    adapters::stream_control{std::make_shared<link_stream_control>(self->address(), id)});
  emit_start(st, req, true);
  self->send(st.gateway, node_stream_atom::value, id, to_remote(req, budget),
             node_stream_window);
  // The node ends the stream by its deadline; past that and a margin the node
  // counts as lost for this stream.
  self->delayed_send(self, budget + node_reply_margin, link_guard_atom::value, id);
  pending_stream s;
  s.req = std::move(req);
  s.sink = std::move(sink);
  s.started = std::chrono::steady_clock::now();
  st.streams.emplace(id, std::move(s));
}

/// One chunk to the caller's sink, whose answer decides whether the node hears
/// of it now (acknowledged), later (paused) or is told to stop (halt).
void hand_on(link_actor* self, pending_stream& s, uint64_t id, json chunk,
             bool is_final) {
  auto& st = self->state;
  switch (s.sink->on_chunk(std::move(chunk), is_final)) {
  case adapters::stream_step::more:
    if (++s.unacked >= ack_batch && !s.paused && st.gateway) {
      self->send(st.gateway, node_ack_atom::value, id, s.unacked);
      s.unacked = 0;
    }
    return;
  case adapters::stream_step::pause:
    ++s.unacked;
    s.paused = true;
    return;
  case adapters::stream_step::halt:
    halt_stream(self, s, id);
    return;
  }
}

/// One chunk of stream `id` from the node: to the caller's sink, whose answer
/// decides whether the node hears of it now (acknowledged), later (paused) or
/// is told to stop (halt).
void on_chunk(link_actor* self, uint64_t id, const std::string& text, bool is_final) {
  auto& st = self->state;
  auto i = st.streams.find(id);
  if (i == st.streams.end() || i->second.halted)
    return; // ended, or stopping: what was in flight is dropped
  auto& s = i->second;
  auto chunk = json::parse(text, nullptr, false);
  if (chunk.is_discarded()) {
    halt_stream(self, s, id);
    end_stream(
      self, id,
      caf::make_error(errc::protocol_error,
                      fmt::format("a chunk from node {} is not JSON", st.opts.name)));
    return;
  }
  // A paused sink takes nothing until it resumes (a windowed consumer's window
  // holds); what the node had in flight waits here.
  if (s.paused) {
    s.held.emplace_back(std::move(chunk), is_final);
    return;
  }
  hand_on(self, s, id, std::move(chunk), is_final);
}

/// Stream `id` resumed: the held chunks go to its sink until it pauses again,
/// then the node's end if it came, else the node hears of what was taken.
void resume_stream(link_actor* self, uint64_t id) {
  auto& st = self->state;
  auto i = st.streams.find(id);
  if (i == st.streams.end() || !i->second.paused)
    return;
  auto& s = i->second;
  s.paused = false;
  while (!s.paused && !s.halted && !s.held.empty()) {
    auto [chunk, is_final] = std::move(s.held.front());
    s.held.pop_front();
    hand_on(self, s, id, std::move(chunk), is_final);
  }
  if (s.paused)
    return;
  if (s.held_end) {
    auto err = std::move(*s.held_end);
    end_stream(self, id, std::move(err));
    return;
  }
  if (s.unacked > 0 && !s.halted && st.gateway)
    self->send(st.gateway, node_ack_atom::value, id, s.unacked);
  s.unacked = 0;
}

caf::behavior node_link(link_actor* self, link_options opts) {
  self->state.opts = std::move(opts);
  // A (re)started link is the node's link from now on.
  self->state.opts.directory->set_link(self->state.opts.name,
                                       caf::actor_cast<caf::actor>(self));
  self->state.opts.directory->set_state(self->state.opts.name, node_state::connecting);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (!st.gateway || dm.source != st.gateway.address())
      return;
    lose_gateway(self,
                 dm.reason ? describe(dm.reason) : std::string{"connection closed"});
  });
  // An orderly stop (the runtime's) fails what is in flight with shutting_down;
  // any other exit reason is a failure of the link, which its supervisor
  // restarts: internal, naming the reason.
  self->set_exit_handler([self](caf::exit_msg& em) {
    auto orderly = em.reason == caf::exit_reason::user_shutdown;
    auto why = orderly ? caf::make_error(errc::shutting_down, "the runtime is stopping")
                       : caf::make_error(errc::internal,
                                         "the node link stopped: " + describe(em.reason));
    for (auto& [id, call] : self->state.pending) {
      self->state.opts.directory->end_call(self->state.opts.name, call.req.opts.pool,
                                           false);
      deliver(call.sink, with_correlation_id(why, call.req.opts.correlation_id));
    }
    self->state.pending.clear();
    end_all_streams(self, [&why](const execute_request&) { return why; });
    self->quit(em.reason);
  });
  connect(self);
  return {
    [self](link_retry_atom, uint64_t gen) {
      if (gen == self->state.generation)
        connect(self);
    },
    [self](node_load_atom, std::vector<pool_load>& loads) {
      auto& st = self->state;
      if (st.gateway &&
          self->current_sender() == caf::actor_cast<caf::strong_actor_ptr>(st.gateway))
        st.opts.directory->set_loads(st.opts.name, std::move(loads));
    },
    [self](actors::execute_cb_atom, execute_request& req, callback_sink& sink) {
      auto& st = self->state;
      if (!st.gateway) {
        st.opts.directory->end_call(st.opts.name, req.opts.pool, true);
        deliver(sink, node_down(st, req,
                                fmt::format("not connected ({})", to_string(st.state))));
        return;
      }
      auto budget = req.opts.timeout;
      if (budget.count() <= 0) {
        st.opts.directory->end_call(st.opts.name, req.opts.pool, false);
        deliver(sink, with_correlation_id(
                        caf::make_error(errc::timeout, "no budget left for the call"),
                        req.opts.correlation_id));
        return;
      }
      auto id = ++st.next_call;
      auto call = to_remote(req, budget);
      emit_start(st, req, false);
      auto now = std::chrono::steady_clock::now();
      st.pending.emplace(
        id, pending_call{std::move(req), std::move(sink), now + budget, now});
      self
        ->request(st.gateway, budget + node_reply_margin, node_call_atom::value,
                  std::move(call))
        .then([self, id](remote_result& res) { finish(self, id, from_remote(res)); },
              [self, id](caf::error& err) {
                auto i = self->state.pending.find(id);
                if (i == self->state.pending.end())
                  return;
                if (err != caf::sec::request_timeout) {
                  // The connection broke under the call: the node is lost for
                  // every call, not just this one (its down message may follow).
                  lose_gateway(self, describe(err));
                  return;
                }
                finish(self, id,
                       node_down(self->state, i->second.req,
                                 "no answer within the call's budget"));
              });
    },
    [self](actors::stream_atom, execute_request& req, actors::stream_sink_ptr& sink) {
      open_stream(self, req, std::move(sink));
    },
    [self](node_stats_atom, std::string& pool) -> caf::result<remote_pool_figures> {
      auto& st = self->state;
      auto lost = [&st, pool](const std::string& why) {
        return caf::make_error(errc::node_down,
                               fmt::format("pool {} on node {} ({}): {}", pool,
                                           st.opts.name, address_of(st.opts), why));
      };
      if (!st.gateway)
        return lost(fmt::format("not connected ({})", to_string(st.state)));
      auto rp = self->make_response_promise<remote_pool_figures>();
      self->request(st.gateway, node_stats_timeout, node_stats_atom::value, pool)
        .then([rp](remote_pool_figures& x) mutable { rp.deliver(std::move(x)); },
              [rp, lost](caf::error& err) mutable {
                // The node's own refusals (pool_not_found) pass on as they are.
                rp.deliver(errc_of(err) ? std::move(err) : lost(describe(err)));
              });
      return rp;
    },
    [self](node_chunk_atom, uint64_t id, std::string& text, bool is_final) {
      on_chunk(self, id, text, is_final);
    },
    [self](node_end_atom, uint64_t id, caf::error& err) {
      // After the chunks held for a paused sink (a halted stream drops them).
      if (auto i = self->state.streams.find(id); i != self->state.streams.end() &&
                                                 !i->second.halted &&
                                                 !i->second.held.empty()) {
        i->second.held_end = std::move(err);
        return;
      }
      end_stream(self, id, std::move(err));
    },
    [self](link_resume_atom, uint64_t id) { resume_stream(self, id); },
    [self](link_halt_atom, uint64_t id) {
      if (auto i = self->state.streams.find(id); i != self->state.streams.end())
        halt_stream(self, i->second, id);
    },
    [self](link_guard_atom, uint64_t id) {
      auto i = self->state.streams.find(id);
      if (i == self->state.streams.end())
        return;
      halt_stream(self, i->second, id);
      end_stream(self, id,
                 node_down(self->state, i->second.req,
                           "the stream did not end within its budget"));
    },
  };
}

} // namespace

caf::actor spawn_node_link(caf::actor_system& sys, link_options opts) {
  return sys.spawn(node_link, std::move(opts));
}

supervision::child_spec node_link_child(link_options opts) {
  auto id = "node:" + opts.name;
  auto spec = supervision::worker_child(std::move(id), node_link, std::move(opts));
  // Its calls fail at once on the exit message; nothing to wait for.
  spec.shutdown = supervision::shutdown_spec::after(std::chrono::seconds{5});
  return spec;
}

} // namespace snakepit::distribution
