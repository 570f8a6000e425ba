#include "actors/sessions/session_store.hpp"

#include <sys/random.h>

#include <cerrno>
#include <cstdio>
#include <limits>
#include <unordered_map>

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "adapters/errors.hpp"

namespace snakepit::actors {

using json = nlohmann::json;

caf::error session_store_config::validate() const {
  if (ttl.count() <= 0)
    return make_error(errc::invalid_config, "session ttl must be positive");
  if (sweep_interval.count() <= 0)
    return make_error(errc::invalid_config, "session sweep_interval must be positive");
  if (max_sessions == 0)
    return make_error(errc::invalid_config, "max_sessions must be positive");
  if (!(warn_ratio > 0.0 && warn_ratio <= 1.0))
    return make_error(errc::invalid_config, "session warn_ratio must be in (0, 1]");
  return caf::none;
}

caf::error validate_session_id(const std::string& id) {
  if (id.empty())
    return make_error(errc::invalid_session_id, "empty session id");
  if (id.size() > max_session_id_length)
    return make_error(
      errc::invalid_session_id,
      fmt::format("session id longer than {} characters", max_session_id_length));
  for (unsigned char c : id)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '_' || c == '-'))
      return make_error(
        errc::invalid_session_id,
        fmt::format("session id {:?} has a character outside [A-Za-z0-9_-]",
                    id.substr(0, 64)));
  return caf::none;
}

std::string generate_session_id() {
  unsigned char buf[16];
  size_t got = 0;
  while (got < sizeof(buf)) {
    auto n = ::getrandom(buf + got, sizeof(buf) - got, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      // getrandom cannot fail otherwise on Linux >= 3.17 with a valid buffer.
      std::abort();
    }
    got += static_cast<size_t>(n);
  }
  std::string out = "sess_";
  for (auto b : buf)
    out += fmt::format("{:02x}", b);
  return out;
}

namespace {

/// The periodic TTL sweep; only the store sends it, to itself.
using session_sweep_atom = caf::atom_constant<caf::atom("sesssweep")>;

/// The store's own view of its interface: the public one plus its private timer.
using session_store_private =
  session_store_actor::extend<caf::reacts_to<session_sweep_atom>>;

struct session {
  std::chrono::system_clock::time_point created;
  std::chrono::system_clock::time_point last_accessed_wall;
  caf::actor_clock::time_point last_accessed;
  std::string last_worker;
  std::map<std::string, std::string> metadata;
  std::map<std::string, json> state;
  uint64_t requests = 0;
};

struct session_store_state {
  static inline const char* name = "snakepit.session_store";
  session_store_config cfg;
  std::unordered_map<std::string, session> sessions;
  bool warned = false;
};

using self_ptr = session_store_private::stateful_pointer<session_store_state>;

void touch(self_ptr self, session& s) {
  s.last_accessed = self->clock().now();
  s.last_accessed_wall = std::chrono::system_clock::now();
}

void check_warning(self_ptr self) {
  auto& st = self->state;
  auto threshold =
    static_cast<size_t>(st.cfg.warn_ratio * static_cast<double>(st.cfg.max_sessions));
  if (st.sessions.size() >= threshold && !st.warned) {
    st.warned = true;
    if (st.cfg.on_warning)
      st.cfg.on_warning(st.sessions.size(), st.cfg.max_sessions);
    else
      fmt::print(stderr,
                 "snakepit: session_store holds {} sessions ({}% of max_sessions {})\n",
                 st.sessions.size(), st.sessions.size() * 100 / st.cfg.max_sessions,
                 st.cfg.max_sessions);
  } else if (st.sessions.size() < threshold) {
    st.warned = false;
  }
}

/// The session `id`, created when missing. Null with `err` set on a bad id or quota.
session* find_or_create(self_ptr self, const std::string& id, caf::error& err) {
  auto& st = self->state;
  if (auto i = st.sessions.find(id); i != st.sessions.end()) {
    touch(self, i->second);
    return &i->second;
  }
  if (auto e = validate_session_id(id)) {
    err = std::move(e);
    return nullptr;
  }
  if (st.sessions.size() >= st.cfg.max_sessions) {
    err = make_error(errc::quota_exceeded,
                     fmt::format("max_sessions ({}) reached", st.cfg.max_sessions));
    return nullptr;
  }
  auto& s = st.sessions[id];
  s.created = std::chrono::system_clock::now();
  touch(self, s);
  check_warning(self);
  if (st.cfg.on_create)
    st.cfg.on_create(id);
  return &s;
}

session* find(self_ptr self, const std::string& id) {
  auto& st = self->state;
  auto i = st.sessions.find(id);
  if (i == st.sessions.end())
    return nullptr;
  touch(self, i->second);
  return &i->second;
}

caf::error not_found(const std::string& id) {
  return make_error(errc::session_not_found, id);
}

json parse_or_null(const std::string& text) {
  auto v = json::parse(text, nullptr, false);
  return v.is_discarded() ? json{} : v;
}

/// Whether an integer JSON value is within int64_t (an unsigned one may not be).
bool fits_int64(const json& v) {
  return !v.is_number_unsigned() ||
         v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
}

void sweep(self_ptr self) {
  auto& st = self->state;
  auto now = self->clock().now();
  std::vector<std::string> expired;
  for (auto& [id, s] : st.sessions)
    if (now - s.last_accessed >= st.cfg.ttl)
      expired.push_back(id);
  for (auto& id : expired) {
    st.sessions.erase(id);
    if (st.cfg.on_expire)
      st.cfg.on_expire(id);
  }
  check_warning(self);
}

// --- handlers ----------------------------------------------------------------------

caf::result<std::string> create(self_ptr self, std::string& id,
                                session_metadata& metadata) {
  if (id.empty()) {
    do
      id = generate_session_id();
    while (self->state.sessions.count(id) > 0);
  }
  caf::error err;
  auto* s = find_or_create(self, id, err);
  if (!s)
    return err;
  for (auto& [k, v] : metadata)
    s->metadata[k] = v;
  return id;
}

void touch(self_ptr self, const std::string& id, std::string& worker) {
  caf::error err;
  if (auto* s = find_or_create(self, id, err)) {
    ++s->requests;
    if (!worker.empty())
      s->last_worker = std::move(worker);
  }
}

caf::result<session_info> info(self_ptr self, const std::string& id) {
  auto* s = find(self, id);
  if (!s)
    return not_found(id);
  session_info out;
  out.id = id;
  out.created = s->created;
  out.last_accessed = s->last_accessed_wall;
  out.last_worker = s->last_worker;
  out.metadata = s->metadata;
  for (auto& kv : s->state)
    out.state_keys.push_back(kv.first);
  out.request_count = s->requests;
  out.ttl = self->state.cfg.ttl;
  return out;
}

int32_t cleanup(self_ptr self, const std::string& id) {
  auto& sessions = self->state.sessions;
  auto i = sessions.find(id);
  if (i == sessions.end())
    return 0;
  auto n = static_cast<int32_t>(i->second.state.size()) + 1;
  sessions.erase(i);
  check_warning(self);
  if (self->state.cfg.on_cleanup)
    self->state.cfg.on_cleanup(id, n);
  return n;
}

caf::result<bool, std::string> state_get(self_ptr self, const std::string& id,
                                         const std::string& key) {
  caf::error err;
  auto* s = find_or_create(self, id, err);
  if (!s)
    return err;
  auto i = s->state.find(key);
  if (i == s->state.end())
    return {false, std::string{"null"}};
  return {true, i->second.dump()};
}

caf::result<caf::ok_atom> state_put(self_ptr self, const std::string& id,
                                    std::string& key, const std::string& value) {
  caf::error err;
  auto* s = find_or_create(self, id, err);
  if (!s)
    return err;
  s->state[std::move(key)] = parse_or_null(value);
  return caf::ok_atom::value;
}

caf::result<bool, std::string> state_cas(self_ptr self, const std::string& id,
                                         std::string& key, const std::string& expected,
                                         const std::string& value) {
  caf::error err;
  auto* s = find_or_create(self, id, err);
  if (!s)
    return err;
  auto i = s->state.find(key);
  json current = i == s->state.end() ? json{} : i->second;
  if (current != parse_or_null(expected))
    return {false, current.dump()};
  auto v = parse_or_null(value);
  auto text = v.dump();
  s->state[std::move(key)] = std::move(v);
  return {true, std::move(text)};
}

std::vector<std::string> state_keys(self_ptr self, const std::string& id) {
  std::vector<std::string> keys;
  if (auto* s = find(self, id))
    for (auto& kv : s->state)
      keys.push_back(kv.first);
  return keys;
}

caf::result<std::string> state_incr(self_ptr self, const std::string& id,
                                    std::string& key, const std::string& by_text) {
  caf::error err;
  auto* s = find_or_create(self, id, err);
  if (!s)
    return err;
  auto by = parse_or_null(by_text);
  if (!by.is_number())
    return make_error(errc::invalid_argument,
                      fmt::format("increment of {:?} by a non-number: {}", key, by_text));
  auto& slot = s->state[key];
  if (slot.is_null())
    slot = 0;
  if (!slot.is_number())
    return make_error(errc::invalid_argument,
                      fmt::format("state {:?} is not a number: {}", key, slot.dump()));
  if (slot.is_number_integer() && by.is_number_integer()) {
    // Signed overflow is undefined behaviour; a count past int64 is refused.
    int64_t sum = 0;
    if (!fits_int64(slot) || !fits_int64(by) ||
        __builtin_add_overflow(slot.get<int64_t>(), by.get<int64_t>(), &sum))
      return make_error(
        errc::invalid_argument,
        fmt::format("increment of {:?} by {} overflows a 64-bit integer", key, by_text));
    slot = sum;
  } else {
    slot = slot.get<double>() + by.get<double>();
  }
  return slot.dump();
}

session_store_private::behavior_type session_store_impl(self_ptr self,
                                                        session_store_config cfg) {
  self->state.cfg = std::move(cfg);
  self->delayed_send(self, self->state.cfg.sweep_interval, session_sweep_atom::value);
  return {
    [=](session_sweep_atom) {
      sweep(self);
      self->delayed_send(self, self->state.cfg.sweep_interval, session_sweep_atom::value);
    },
    [=](session_create_atom, std::string& id, session_metadata& metadata) {
      return create(self, id, metadata);
    },
    [=](session_touch_atom, const std::string& id, std::string& worker) {
      touch(self, id, worker);
    },
    [=](session_info_atom, const std::string& id) { return info(self, id); },
    // Asking does not count as using: a worker's Heartbeat must not keep a session
    // alive past its TTL.
    [=](session_exists_atom, const std::string& id) {
      return self->state.sessions.count(id) > 0;
    },
    [=](session_cleanup_atom, const std::string& id) { return cleanup(self, id); },
    [=](session_count_atom) {
      return static_cast<uint64_t>(self->state.sessions.size());
    },
    [=](state_get_atom, const std::string& id, const std::string& key) {
      return state_get(self, id, key);
    },
    [=](state_put_atom, const std::string& id, std::string& key,
        const std::string& value) { return state_put(self, id, key, value); },
    [=](state_cas_atom, const std::string& id, std::string& key,
        const std::string& expected,
        const std::string& value) { return state_cas(self, id, key, expected, value); },
    [=](state_delete_atom, const std::string& id, const std::string& key) {
      auto* s = find(self, id);
      return s != nullptr && s->state.erase(key) > 0;
    },
    [=](state_keys_atom, const std::string& id) { return state_keys(self, id); },
    [=](state_incr_atom, const std::string& id, std::string& key, const std::string& by) {
      return state_incr(self, id, key, by);
    },
  };
}

} // namespace

session_store_actor spawn_session_store(caf::actor_system& sys,
                                        session_store_config cfg) {
  return sys.spawn(session_store_impl, std::move(cfg));
}

void touch_session(const session_store_actor& store, std::string id,
                   std::string worker_id) {
  caf::anon_send(store, session_touch_atom::value, std::move(id), std::move(worker_id));
}

supervision::child_spec session_store_child(std::string id, session_store_config cfg) {
  return supervision::worker_child(
    std::move(id),
    [](self_ptr self, session_store_config c) {
      return session_store_impl(self, std::move(c));
    },
    std::move(cfg));
}

} // namespace snakepit::actors
