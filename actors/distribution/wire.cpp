#include "actors/distribution/wire.hpp"

#include <algorithm>
#include <utility>

#include <memory>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/middleman_actor.hpp>
#include <caf/openssl/manager.hpp>
#include <caf/timespan.hpp>
#include <dlfcn.h>
#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "actors/observability/metrics.hpp"
#include "adapters/detail/json_text.hpp"
#include "adapters/errors.hpp"

namespace snakepit::distribution {

void register_wire_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<pool_load>("snakepit.pool_load");
  cfg.add_message_type<std::vector<pool_load>>("snakepit.pool_loads");
  cfg.add_message_type<node_hello>("snakepit.node_hello");
  cfg.add_message_type<remote_call>("snakepit.remote_call");
  cfg.add_message_type<remote_result>("snakepit.remote_result");
  cfg.add_message_type<remote_worker>("snakepit.remote_worker");
  cfg.add_message_type<remote_pool_figures>("snakepit.remote_pool_figures");
}

namespace {

/// `pool_stats`'s counters in the order `remote_pool_figures::counters` holds them.
template<class Stats, class F>
void each_counter(Stats& s, F f) {
  f(s.workers), f(s.starting), f(s.available), f(s.busy), f(s.in_flight), f(s.capacity),
    f(s.requests), f(s.direct), f(s.completed), f(s.errors), f(s.queued),
    f(s.queue_depth), f(s.queue_timeouts), f(s.saturations), f(s.worker_crashes),
    f(s.restarts), f(s.recycles);
}

} // namespace

remote_pool_figures to_remote(const pool_stats& stats,
                              const std::vector<worker_info>& workers) {
  remote_pool_figures out;
  out.pool = stats.pool;
  each_counter(stats, [&](auto x) { out.counters.push_back(static_cast<uint64_t>(x)); });
  for (size_t i = 0; i < latency_histogram::bucket_count; ++i)
    if (auto n = stats.latency.bucket(i); n > 0) {
      out.latency_buckets.push_back(static_cast<uint32_t>(i));
      out.latency_counts.push_back(n);
    }
  out.latency_sum_us = stats.latency.sum_us();
  out.latency_min_us = stats.latency.min_us();
  out.latency_max_us = stats.latency.max_us();
  for (auto& w : workers)
    out.workers.push_back(remote_worker{w.id, w.pid, w.state, w.requests,
                                        w.uptime.count(), w.load, w.capacity, w.tainted});
  return out;
}

caf::expected<pool_stats> stats_of(const remote_pool_figures& x) {
  pool_stats out;
  size_t expected = 0;
  each_counter(out, [&](auto&) { ++expected; });
  if (x.counters.size() != expected)
    return make_error(errc::protocol_error,
                      fmt::format("the figures of pool {} carry {} counters, not {}",
                                  x.pool, x.counters.size(), expected));
  out.pool = x.pool;
  size_t i = 0;
  each_counter(out, [&](auto& field) {
    field = static_cast<std::remove_reference_t<decltype(field)>>(x.counters[i++]);
  });
  out.latency =
    latency_histogram::from_buckets(x.latency_buckets, x.latency_counts, x.latency_sum_us,
                                    x.latency_min_us, x.latency_max_us);
  derive_stats(out);
  return out;
}

std::vector<worker_info> workers_of(const remote_pool_figures& x,
                                    const std::string& node) {
  std::vector<worker_info> out;
  for (auto& w : x.workers) {
    worker_info info;
    info.id = node + "/" + w.id;
    info.pid = w.pid;
    info.state = w.state;
    info.requests = w.requests;
    info.uptime = std::chrono::milliseconds{w.uptime_ms};
    info.load = static_cast<size_t>(w.load);
    info.capacity = static_cast<size_t>(w.capacity);
    info.tainted = w.tainted;
    out.push_back(std::move(info));
  }
  return out;
}

void prepare_distributed_system(caf::actor_system_config& cfg,
                                std::chrono::milliseconds heartbeat,
                                std::chrono::milliseconds silence,
                                const tls_config& tls) {
  cfg.load<caf::io::middleman>();
  if (tls.enabled()) {
    // After the middleman: the openssl module refuses to start without it.
    cfg.load<caf::openssl::manager>();
    cfg.set("openssl.certificate", tls.certificate);
    cfg.set("openssl.key", tls.key);
    cfg.set("openssl.cafile", tls.ca);
    if (!tls.passphrase.empty())
      cfg.set("openssl.passphrase", tls.passphrase);
  }
  register_wire_types(cfg);
  if (heartbeat.count() > 0) {
    cfg.set("middleman.heartbeat-interval", caf::timespan{heartbeat});
    cfg.set("middleman.connection-timeout", caf::timespan{silence});
  }
}

remote_call to_remote(const execute_request& req, std::chrono::milliseconds budget) {
  remote_call out;
  auto& o = req.opts;
  out.pool = o.pool;
  out.command = req.command;
  out.args_json = req.args.dump();
  out.binary_args = o.binary_args;
  out.session_id = o.session_id;
  out.affinity = o.affinity;
  out.correlation_id = o.correlation_id;
  out.metadata = o.metadata;
  out.budget_ms = budget.count();
  out.idempotent = o.idempotent;
  return out;
}

caf::expected<execute_request> from_remote(const remote_call& call) {
  if (call.budget_ms <= 0)
    return make_error(
      errc::protocol_error,
      fmt::format("a remote call with a budget of {} ms", call.budget_ms));
  auto args = adapters::detail::parse_json_text(call.args_json);
  if (args.is_discarded() || !args.is_object())
    return with_correlation_id(make_error(errc::invalid_argument,
                                          "the arguments of a remote call are not a "
                                          "JSON object"),
                               call.correlation_id);
  execute_request req;
  req.command = call.command;
  req.args = std::move(args);
  auto& o = req.opts;
  o.timeout = std::chrono::milliseconds{call.budget_ms};
  o.pool = call.pool;
  o.correlation_id = call.correlation_id;
  o.binary_args = call.binary_args;
  o.session_id = call.session_id;
  o.affinity = call.affinity;
  o.idempotent = call.idempotent;
  o.metadata = call.metadata;
  return req;
}

remote_result to_remote(const execute_result& res) {
  remote_result out;
  if (!res) {
    out.error = res.error();
    return out;
  }
  out.result_json = res->result.dump();
  out.binary_result = res->binary_result;
  out.worker_id = res->worker_id;
  out.execution_time_ms = res->execution_time_ms;
  return out;
}

execute_result from_remote(const remote_result& res) {
  if (res.error)
    return res.error;
  auto value = adapters::detail::parse_json_text(res.result_json);
  if (value.is_discarded())
    return make_error(
      errc::protocol_error,
      fmt::format("worker {}: a remote reply whose result is not JSON", res.worker_id));
  execute_reply out;
  out.result = std::move(value);
  out.binary_result = res.binary_result;
  out.worker_id = res.worker_id;
  out.execution_time_ms = res.execution_time_ms;
  return out;
}

caf::expected<std::pair<std::string, uint16_t>> parse_address(const std::string& text) {
  auto bad = [&](const char* why) {
    return caf::make_error(
      errc::invalid_config,
      fmt::format("node address \"{}\": {} (expected HOST:PORT)", text, why));
  };
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return bad("no host");
  auto host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  auto digits = text.substr(colon + 1);
  if (digits.empty() || digits.size() > 5 ||
      !std::all_of(digits.begin(), digits.end(),
                   [](char c) { return c >= '0' && c <= '9'; }))
    return bad("no port");
  auto port = std::stoul(digits);
  if (port > 65535)
    return bad("port out of range");
  return std::make_pair(host, static_cast<uint16_t>(port));
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

caf::error check_hello(const node_hello& theirs) {
  if (theirs.protocol == protocol_version)
    return caf::none;
  return make_error(
    errc::protocol_error,
    fmt::format("{} speaks node protocol {} (snakepit {}), this process "
                "speaks {}: refused",
                theirs.node.empty() ? std::string{"the peer"} : theirs.node,
                theirs.protocol, theirs.version, protocol_version));
}

namespace {

/// OpenSSL's latest error as text (its queue emptied).
std::string openssl_reason() {
  std::string out;
  while (auto code = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof(buf));
    if (!out.empty())
      out += "; ";
    out += buf;
  }
  return out.empty() ? std::string{"no reason given"} : out;
}

int passphrase_of(char* buf, int size, int, void* user) {
  auto& pass = *static_cast<const std::string*>(user);
  if (size <= 0 || pass.size() >= static_cast<size_t>(size))
    return 0;
  std::copy(pass.begin(), pass.end(), buf);
  return static_cast<int>(pass.size());
}

} // namespace

caf::error check_tls(const tls_config& tls) {
  if (!tls.enabled())
    return caf::none;
  auto bad = [](const std::string& what, const std::string& file) {
    return make_error(errc::invalid_config,
                      fmt::format("tls.{}: {}: {}", what, file, openssl_reason()));
  };
  ERR_clear_error();
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx{SSL_CTX_new(TLS_method()),
                                                        &SSL_CTX_free};
  if (!ctx)
    return make_error(errc::internal,
                      "tls: cannot create an OpenSSL context: " + openssl_reason());
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), tls.certificate.c_str()) != 1)
    return bad("certificate", tls.certificate);
  SSL_CTX_set_default_passwd_cb(ctx.get(), passphrase_of);
  SSL_CTX_set_default_passwd_cb_userdata(ctx.get(),
                                         const_cast<std::string*>(&tls.passphrase));
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), tls.key.c_str(), SSL_FILETYPE_PEM) != 1)
    return bad("key", tls.key + (tls.passphrase.empty() ? " (no passphrase given)" : ""));
  if (SSL_CTX_check_private_key(ctx.get()) != 1)
    return bad("key", tls.key + " does not belong to " + tls.certificate);
  if (SSL_CTX_load_verify_locations(ctx.get(), tls.ca.c_str(), nullptr) != 1)
    return bad("ca", tls.ca);
  return caf::none;
}

bool uses_tls(caf::actor_system& sys) {
  return sys.has_openssl_manager() && sys.openssl_manager().authentication_enabled();
}

caf::actor connector(caf::actor_system& sys) {
  if (sys.has_openssl_manager())
    return caf::actor_cast<caf::actor>(sys.openssl_manager().actor_handle());
  return caf::actor_cast<caf::actor>(sys.middleman().actor_handle());
}

} // namespace snakepit::distribution

// --- OpenSSL's error queue around CAF's TLS calls -------------------------------------
//
// OpenSSL requires the calling thread's error queue to be empty before each TLS I/O
// call, or SSL_get_error misreads the next call's outcome. CAF 0.17.6's openssl
// module never empties it (the only calls that would are in log statements compiled
// out of Debian's build). So one refused handshake on a node's middleman thread
// left its errors behind, and the next read of any other connection on that thread
// came back as a failure: a host with the wrong certificate knocked every good
// host off the node (tests/distribution, "TLS: ..."). These definitions take the
// place of libssl's in this program (CAF's module calls them through the PLT) and
// clear the queue first, then call libssl's own.

namespace {

template<class F>
F next_definition(const char* name) {
  return reinterpret_cast<F>(::dlsym(RTLD_NEXT, name));
}

} // namespace

extern "C" {

int SSL_read(SSL* ssl, void* buf, int num) {
  static auto real = next_definition<int (*)(SSL*, void*, int)>("SSL_read");
  ERR_clear_error();
  return real(ssl, buf, num);
}

int SSL_write(SSL* ssl, const void* buf, int num) {
  static auto real = next_definition<int (*)(SSL*, const void*, int)>("SSL_write");
  ERR_clear_error();
  return real(ssl, buf, num);
}

int SSL_accept(SSL* ssl) {
  static auto real = next_definition<int (*)(SSL*)>("SSL_accept");
  ERR_clear_error();
  return real(ssl);
}

int SSL_connect(SSL* ssl) {
  static auto real = next_definition<int (*)(SSL*)>("SSL_connect");
  ERR_clear_error();
  return real(ssl);
}

} // extern "C"
