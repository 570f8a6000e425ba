#include "actors/distribution/node_link.hpp"

#include <algorithm>
#include <unordered_map>
#include <utility>

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/middleman_actor.hpp>
#include <fmt/format.h>

#include "actors/atoms.hpp"
#include "actors/types.hpp"
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

/// How long past a call's budget the link waits for the node's answer before it
/// calls the node lost for that call (the node's pool answers by the deadline).
constexpr auto node_reply_margin = std::chrono::seconds{2};

struct pending_call {
  execute_request req;
  callback_sink sink;
  std::chrono::steady_clock::time_point deadline;
};

struct link_state {
  link_options opts;
  caf::actor gateway;
  node_state state = node_state::connecting;
  std::chrono::milliseconds backoff{0};
  uint64_t generation = 0;
  uint64_t next_call = 0;
  std::unordered_map<uint64_t, pending_call> pending;
  static inline const char* name = "snakepit.node_link";
};

using link_actor = caf::stateful_actor<link_state>;

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
  auto mm = self->system().middleman().actor_handle();
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
  deliver(call.sink, std::move(res));
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
    deliver(call.sink, node_down(st, call.req, why));
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
                                    {"reason", why}});
  self->demonitor(st.gateway);
  // Down first: a caller woken by its node_down must see the node down.
  schedule_retry(self, why, true);
  fail_pending(self, why);
}

caf::behavior node_link(link_actor* self, link_options opts) {
  self->state.opts = std::move(opts);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (!st.gateway || dm.source != st.gateway.address())
      return;
    lose_gateway(self,
                 dm.reason ? describe(dm.reason) : std::string{"connection closed"});
  });
  self->set_exit_handler([self](caf::exit_msg& em) {
    for (auto& [id, call] : self->state.pending)
      deliver(call.sink, with_correlation_id(caf::make_error(errc::shutting_down,
                                                             "the runtime is stopping"),
                                             call.req.opts.correlation_id));
    self->state.pending.clear();
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
      st.pending.emplace(id, pending_call{std::move(req), std::move(sink),
                                          std::chrono::steady_clock::now() + budget});
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
  };
}

} // namespace

caf::actor spawn_node_link(caf::actor_system& sys, link_options opts) {
  return sys.spawn(node_link, std::move(opts));
}

} // namespace snakepit::distribution
