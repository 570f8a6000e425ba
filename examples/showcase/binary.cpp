// Binary payloads: a float64 array travels as raw bytes (a binary parameter) that
// numpy reads with frombuffer, comes back as bytes, and is compared with the same
// array sent as a JSON list. Then a payload past the pool's message-size limit.
#include "showcase.hpp"

#include <cstring>
#include <numeric>

namespace showcase {

namespace {

constexpr size_t side = 256; // a 256 x 256 float64 array: 512 KiB

std::vector<double> make_array() {
  std::vector<double> v(side * side);
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<double>(i % 1000) * 0.5;
  return v;
}

std::string as_bytes(const std::vector<double>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(double));
}

/// The array as bytes in, its statistics out; then the scaled array back as bytes.
void bytes_round_trip(app& a, const std::vector<double>& v) {
  snakepit::execute_options opts;
  opts.binary_args["data"] = as_bytes(v);
  auto t0 = std::chrono::steady_clock::now();
  auto r =
    a.rt.execute("array_stats", {{"dtype", "float64"}, {"shape", {side, side}}}, opts);
  fmt::print("   as bytes:     {:7.2f} ms  {}\n", ms_since(t0),
             r ? r->result.dump() : "");
  double sum = std::accumulate(v.begin(), v.end(), 0.0);
  if (a.ck.ok(r, "array_stats on bytes"))
    a.ck.that(
      r->result["shape"] == json({side, side}) &&
        std::abs(r->result.value("sum", 0.0) - sum) < 1e-6 * sum,
      fmt::format("numpy saw a {}x{} array with the host's sum {}", side, side, sum));
  auto back = a.rt.execute("scale_array", {{"factor", 2.0}}, opts);
  if (!a.ck.ok(back, "scale_array"))
    return;
  std::vector<double> doubled(back->binary_result.size() / sizeof(double));
  std::memcpy(doubled.data(), back->binary_result.data(), back->binary_result.size());
  bool same = doubled.size() == v.size();
  for (size_t i = 0; same && i < v.size(); ++i)
    same = doubled[i] == 2 * v[i];
  a.ck.that(same, fmt::format("scale_array returned {} bytes, every value doubled",
                              back->binary_result.size()));
}

/// The same array as a JSON list, for comparison (timed, not checked for speed).
void json_round_trip(app& a, const std::vector<double>& v) {
  auto t0 = std::chrono::steady_clock::now();
  auto r = a.rt.execute("array_stats", {{"data", v}, {"dtype", "float64"}});
  fmt::print("   as JSON list: {:7.2f} ms  ({} bytes of JSON text)\n", ms_since(t0),
             json(v).dump().size());
  a.ck.that(r && r->result.value("bytes", 0) == static_cast<int>(v.size() * 8),
            "the JSON list gives the same array");
}

/// One byte past the limit: refused before it takes a worker.
void past_the_limit(app& a) {
  size_t limit = a.cfg.pools[0].max_message_bytes;
  snakepit::execute_options opts;
  opts.binary_args["data"] = std::string(limit, '\0');
  auto r = a.rt.execute("array_stats", {{"dtype", "uint8"}}, opts);
  fmt::print("   {} bytes (+ the name 'data') with max_message_bytes = {}:\n   -> {}\n",
             limit, limit, r ? "accepted?" : snakepit::describe(r.error()));
  a.ck.that(!r && r.error() == snakepit::errc::payload_too_large,
            "the runtime refuses it with payload_too_large");
  opts.binary_args["data"] = std::string(limit / 2, '\x01');
  auto ok = a.rt.execute("array_stats", {{"dtype", "uint8"}}, opts);
  a.ck.that(ok && ok->result.value("bytes", 0) == static_cast<int>(limit / 2),
            fmt::format("half the limit ({} bytes) goes through", limit / 2));
}

} // namespace

void run_binary(app& a) {
  section("Binary payloads: a numpy array as bytes, and the size limit");
  auto v = make_array();
  bytes_round_trip(a, v);
  json_round_trip(a, v);
  past_the_limit(a);
}

} // namespace showcase
