// Execution modes side by side: the same small job as stateless calls, as calls of one
// session, and as one stream; timed with the real calls, then the trade-offs.
#include "showcase.hpp"

namespace showcase {

namespace {

constexpr int calls = 20;

/// `calls` stateless computations; the mean time per call (negative on failure).
double stateless(app& a) {
  a.rt.execute("compute", {{"op", "mul"}, {"a", 0}, {"b", 0}}); // warm-up, not timed
  auto t0 = std::chrono::steady_clock::now();
  bool all_right = true;
  for (int i = 1; i <= calls; ++i) {
    auto r = a.rt.execute("compute", {{"op", "mul"}, {"a", i}, {"b", i}});
    all_right = all_right && r && r->result == json(i * i);
  }
  double per_call = ms_since(t0) / calls;
  a.ck.that(all_right, fmt::format("{} stateless compute calls returned i*i", calls));
  return per_call;
}

/// `calls` increments in one session; the mean time per call.
double in_session(app& a) {
  auto sid = new_session(a, "modes");
  if (!sid || !a.ck.ok(a.rt.execute_in_session(*sid, "init_session"), "init_session"))
    return -1;
  auto t0 = std::chrono::steady_clock::now();
  json last;
  for (int i = 1; i <= calls; ++i)
    if (auto r = a.rt.execute_in_session(*sid, "increment_counter"))
      last = r->result;
  double per_call = ms_since(t0) / calls;
  a.ck.that(last.value("value", 0) == calls,
            fmt::format("the session counter reached {} (got {})", calls, last.dump()));
  drop_session(a, *sid);
  return per_call;
}

struct stream_timing {
  double first_ms = -1;
  double total_ms = 0;
};

/// One stream of `calls` chunks, 10 ms apart: time to the first chunk and in total.
stream_timing streaming(app& a) {
  stream_timing out;
  int chunks = 0;
  json final_chunk;
  auto t0 = std::chrono::steady_clock::now();
  auto err = a.rt.execute_stream("stream_squares", {{"count", calls}, {"delay_ms", 10}},
                                 [&](const json& chunk, bool is_final) {
                                   if (out.first_ms < 0)
                                     out.first_ms = ms_since(t0);
                                   if (is_final)
                                     final_chunk = chunk;
                                   else
                                     ++chunks;
                                   return true;
                                 });
  out.total_ms = ms_since(t0);
  a.ck.that(
    !err && chunks == calls && final_chunk.value("sum", 0) == 2870,
    fmt::format("stream: {} chunks then the final sum 2870 (got {} chunks, {}; {})",
                calls, chunks, final_chunk.dump(), snakepit::describe(err)));
  return out;
}

} // namespace

void run_modes(app& a) {
  section("Execution modes: stateless vs session vs streaming");
  double s = stateless(a);
  double ss = in_session(a);
  auto st = streaming(a);
  fmt::print(R"(
   measured on this machine (small calls, 4 workers):
     stateless  execute              {:6.2f} ms per call
     session    execute_in_session   {:6.2f} ms per call (each increment also makes
                                             two host round trips from Python)
     streaming  execute_stream       first chunk after {:.1f} ms, {} chunks in {:.1f} ms
                                             (the tool sleeps 10 ms per chunk)

   stateless (execute): any worker serves any call, so it spreads over the pool and a
     worker crash loses nothing but the call; nothing survives between calls.
   session (execute_in_session): state lives in the host's session store, so it
     survives worker crashes and any worker can serve the next call (affinity `hint`
     only prefers the last one); every state access from Python is a round trip to
     the host, and the state must be JSON.
   streaming (execute_stream): results arrive while the tool runs (progress, early
     halt, bounded memory with flow control); the stream holds a worker until it
     ends, and a failure arrives after the chunks already delivered, so a consumer
     must handle partial results. A failed stream is not retried for you.
)",
             s, ss, st.first_ms, calls, st.total_ms);
}

} // namespace showcase
