#include "actors/distribution/node.hpp"

#include <atomic>
#include <map>
#include <utility>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>
#include <caf/openssl/publish.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <fmt/format.h>

#include "actors/distribution/gateway.hpp"
#include "actors/distribution/node_link.hpp"
#include "actors/distribution/wire.hpp"
#include "adapters/errors.hpp"
#include "adapters/log.hpp"

namespace snakepit::distribution {

struct node::impl {
  // Destroyed bottom-up: the runtime before the system it lives in.
  std::unique_ptr<caf::actor_system_config> sys_cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::unique_ptr<snakepit::runtime> rt;
  caf::actor gateway;
  std::string host;
  std::atomic<uint16_t> port{0};
  bool stopped = false;

  caf::error stop() {
    if (stopped)
      return caf::none;
    stopped = true;
    // Hosts lose the gateway first (their calls in flight fail with node_down, as
    // at a crash of the node), then the pools stop.
    if (gateway) {
      if (port != 0 && sys->has_openssl_manager()) {
        // (0.17.6's openssl::unpublish sends a message its manager does not take.)
        caf::scoped_actor self{*sys};
        self
          ->request(sys->openssl_manager().actor_handle(), std::chrono::seconds{5},
                    caf::unpublish_atom::value, gateway.address(),
                    static_cast<uint16_t>(port))
          .receive([] {}, [](caf::error&) {});
      } else if (port != 0)
        sys->middleman().unpublish(gateway, port);
      caf::anon_send_exit(gateway, caf::exit_reason::user_shutdown);
      gateway = nullptr;
    }
    return rt ? rt->stop() : caf::none;
  }
};

node::node(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

node::~node() {
  if (!impl_)
    return;
  impl_->stop();
  impl_->rt.reset();
  impl_->sys.reset();
}

caf::expected<std::unique_ptr<node>> node::start(config cfg, node_options opts,
                                                 start_options sopts) {
  if (opts.host.empty())
    return caf::make_error(errc::invalid_config, "node: an empty listen address");
  if (!is_loopback(opts.host) && !opts.allow_insecure && !cfg.node_allow_insecure &&
      !cfg.tls.enabled())
    return caf::make_error(
      errc::invalid_config,
      fmt::format(
        "node: listening on {} without TLS lets anyone who reaches that "
        "address run calls on its workers; set node_allow_insecure "
        "(or --allow-insecure) to do it anyway (docs/distribution.md \"Security\")",
        opts.host));
  if (opts.load_interval.count() <= 0)
    return caf::make_error(errc::invalid_config, "node: load_interval must be positive");
  if (auto err = cfg.validate())
    return err;
  if (auto err = check_tls(cfg.tls))
    return err;
  auto p = std::make_unique<impl>();
  p->host = opts.host;
  p->sys_cfg = std::make_unique<caf::actor_system_config>();
  configure_system(*p->sys_cfg);
  prepare_distributed_system(*p->sys_cfg, cfg.node_heartbeat, cfg.node_timeout, cfg.tls);
  p->sys = std::make_unique<caf::actor_system>(*p->sys_cfg);
  auto rt = snakepit::runtime::start(*p->sys, cfg, std::move(sopts));
  if (!rt)
    return std::move(rt.error());
  p->rt = std::move(*rt);
  std::map<std::string, std::chrono::milliseconds> timeouts;
  for (auto& pool : cfg.pools)
    timeouts[pool.name] = pool.request_timeout;
  gateway_options gopts;
  auto* r = p->rt.get();
  gopts.find_pool = [r](const std::string& name) {
    return name.empty() ? caf::actor{} : r->pool(name);
  };
  gopts.pool_names = [r] { return r->pool_names(); };
  gopts.request_timeout = [timeouts](const std::string& name) {
    auto i = timeouts.find(name);
    return i == timeouts.end() ? std::chrono::milliseconds{60000} : i->second;
  };
  gopts.load_interval = opts.load_interval;
  auto* raw = p.get();
  gopts.node_name = [raw] { return fmt::format("{}:{}", raw->host, raw->port.load()); };
  p->gateway = spawn_gateway(*p->sys, std::move(gopts));
  // With TLS only the TLS port exists: a plain publish would open a plain port
  // beside it on the same broker.
  auto tls = cfg.tls.enabled();
  if (tls && !uses_tls(*p->sys)) {
    p->stop();
    return caf::make_error(errc::invalid_config,
                           "tls: the openssl module did not enable authentication");
  }
  auto port =
    tls ? caf::openssl::publish(p->gateway, opts.port, opts.host.c_str(), true)
        : p->sys->middleman().publish(p->gateway, opts.port, opts.host.c_str(), true);
  if (!port) {
    auto err = caf::make_error(errc::unavailable,
                               fmt::format("node: cannot listen on {}:{}: {}", opts.host,
                                           opts.port, p->sys->render(port.error())));
    p->stop();
    return err;
  }
  p->port = *port;
  if (!is_loopback(opts.host) && !tls)
    p->rt->log().warn("node listening without TLS (allow_insecure)",
                      {{"address", fmt::format("{}:{}", opts.host, *port)}});
  p->rt->log().info("node listening",
                    {{"address", fmt::format("{}:{}", opts.host, *port)},
                     {"protocol", protocol_version},
                     {"tls", tls}});
  return std::unique_ptr<node>{new node(std::move(p))};
}

caf::error node::stop() {
  return impl_->stop();
}

uint16_t node::port() const {
  return impl_->port;
}

std::string node::address() const {
  return fmt::format("{}:{}", impl_->host, impl_->port.load());
}

snakepit::runtime& node::runtime() {
  return *impl_->rt;
}

} // namespace snakepit::distribution
