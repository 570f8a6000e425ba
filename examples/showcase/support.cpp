// Helpers shared by the demos: checks, headings, timing and reading session state
// straight from the host's session store.
#include "showcase.hpp"

#include <caf/scoped_actor.hpp>

#include "actors/sessions/session_store.hpp"

namespace showcase {

bool checker::that(bool ok, std::string_view what) {
  if (!ok)
    ++failures_;
  fmt::print("   {} {}\n", ok ? "[ok]  " : "[FAIL]", what);
  return ok;
}

void section(std::string_view title) {
  fmt::print("\n== {}\n", title);
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
    .count();
}

std::optional<json> host_state(snakepit::runtime& rt, const std::string& sid,
                               const std::string& key) {
  auto store = snakepit::actors::as_session_store(rt.session_store());
  caf::scoped_actor self{rt.system()};
  std::optional<json> out;
  snakepit::actors::get_state(self, store, sid, key)
    .receive(
      [&](bool found, const std::string& text) {
        if (found)
          out = json::parse(text, nullptr, false);
      },
      [&](caf::error&) {});
  return out;
}

void put_host_state(snakepit::runtime& rt, const std::string& sid, const std::string& key,
                    const json& value) {
  auto store = snakepit::actors::as_session_store(rt.session_store());
  caf::scoped_actor self{rt.system()};
  snakepit::actors::put_state(self, store, sid, key, value.dump())
    .receive([](caf::ok_atom) {}, [](caf::error&) {});
}

std::optional<std::string> new_session(app& a, const std::string& demo) {
  auto sid = a.rt.create_session(std::nullopt, {{"demo", demo}});
  if (!a.ck.ok(sid, "create a session"))
    return std::nullopt;
  fmt::print("   session {}\n", *sid);
  return *sid;
}

void drop_session(app& a, const std::string& sid) {
  auto removed = a.rt.cleanup_session(sid);
  if (a.ck.ok(removed, "cleanup_session"))
    fmt::print("   cleanup_session removed {} entries\n", *removed);
  auto info = a.rt.get_session_info(sid);
  a.ck.that(!info && info.error() == snakepit::errc::session_not_found,
            "the session is gone afterwards (session_not_found)");
}

} // namespace showcase
