// Session state owned by the host: counters and a small model live in the host's
// session store; a call made while the session's worker is busy runs on another
// worker and still sees the same state.
#include "showcase.hpp"

#include <thread>

namespace showcase {

namespace {

/// Calls `tool` in the session and prints which worker served it.
snakepit::execute_result call(app& a, const std::string& sid, const std::string& tool,
                              json args = json::object()) {
  auto r = a.rt.execute_in_session(sid, tool, std::move(args));
  if (r)
    fmt::print("   {:<18} -> {:<40} [{}]\n", tool, r->result.dump(), r->worker_id);
  return r;
}

/// Waits until Python recorded (key `holding`) that a held call is running.
std::string wait_for_holder(app& a, const std::string& sid) {
  for (int i = 0; i < 250; ++i) {
    if (auto h = host_state(a.rt, sid, "holding"); h && h->is_string())
      return h->get<std::string>();
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
  return {};
}

/// While one call of the session holds its worker (until the host releases it), the
/// next calls run elsewhere.
void busy_worker_elsewhere(app& a, const std::string& sid) {
  fmt::print("   -- one call holds its worker until the host releases it; meanwhile:\n");
  snakepit::execute_result held = caf::error{};
  std::thread holder([&] {
    held = a.rt.execute_in_session(sid, "get_worker_info", {{"hold", true}});
  });
  auto holding = wait_for_holder(a, sid);
  auto r = call(a, sid, "increment_counter");
  auto p = call(a, sid, "predict", {{"name", "price"}, {"x", {3.0, 4.0}}});
  put_host_state(a.rt, sid, "release", true);
  holder.join();
  a.ck.that(!holding.empty(), "the held call recorded its worker in the session");
  if (a.ck.ok(r, "increment_counter while the worker is held")) {
    a.ck.that(r->worker_id != holding,
              fmt::format("it ran on another worker ({} while {} is held)", r->worker_id,
                          holding));
    a.ck.that(r->result.value("value", 0) == 4, "and saw the same counter: 3 + 1 = 4");
  }
  if (a.ck.ok(p, "predict with the session's model"))
    a.ck.that(p->result.value("y", 0.0) == 9.0, "price model: 2*3 + 0.5*4 + 1 = 9");
  a.ck.ok(held, "the held call, once released");
}

/// What the host sees in its own store, without asking Python.
void host_side_view(app& a, const std::string& sid) {
  auto counter = host_state(a.rt, sid, "counter");
  a.ck.that(counter && *counter == json(4),
            fmt::format("the host's store holds counter = {}",
                        counter ? counter->dump() : "nothing"));
  auto model = host_state(a.rt, sid, "model:price");
  a.ck.that(model && model->contains("weights"),
            fmt::format("and the model: {}", model ? model->dump() : "nothing"));
  if (auto info = a.rt.get_session_info(sid))
    fmt::print("   session info: {} requests, last worker {}, keys {}\n",
               info->request_count, info->last_worker, json(info->state_keys).dump());
  auto summary = call(a, sid, "session_summary");
  if (a.ck.ok(summary, "session_summary"))
    a.ck.that(summary->result.value("command_count", 0) == 7,
              "command_count = 4 increments + register + predict + worker info = 7");
}

} // namespace

void run_sessions(app& a) {
  section("Session state owned by the host");
  auto sid = new_session(a, "sessions");
  if (!sid)
    return;
  if (!a.ck.ok(call(a, *sid, "init_session"), "init_session"))
    return;
  for (int i = 0; i < 3; ++i)
    call(a, *sid, "increment_counter");
  a.ck.ok(call(a, *sid, "register_model",
               {{"name", "price"}, {"weights", {2.0, 0.5}}, {"bias", 1.0}}),
          "register_model");
  busy_worker_elsewhere(a, *sid);
  host_side_view(a, *sid);
  drop_session(a, *sid);
}

} // namespace showcase
