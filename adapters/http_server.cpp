#include "adapters/http_server.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <thread>

#include <fmt/format.h>

#include "adapters/errors.hpp"

namespace snakepit::adapters {

namespace {

using clock = std::chrono::steady_clock;

/// Largest request head we read; a GET needs far less.
constexpr size_t max_request_bytes = 8192;
/// Budget for a client to send its request head and take the reply.
constexpr std::chrono::milliseconds client_budget{2000};

std::string sys_error(const std::string& what) {
  return fmt::format("{}: {}", what, std::strerror(errno));
}

int ms_left(clock::time_point deadline) {
  auto left =
    std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

/// Waits for `events` on `fd` until `deadline`; false on timeout or error.
bool wait_fd(int fd, short events, clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, ms_left(deadline));
    if (rc > 0)
      return true;
    if (rc == 0 || errno != EINTR)
      return false;
  }
}

bool write_all(int fd, const std::string& data, clock::time_point deadline) {
  size_t done = 0;
  while (done < data.size()) {
    auto n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) &&
        wait_fd(fd, POLLOUT, deadline))
      continue;
    return false;
  }
  return true;
}

const char* reason_of(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 400:
    return "Bad Request";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 503:
    return "Service Unavailable";
  default:
    return status < 400 ? "OK" : "Error";
  }
}

std::string render(const http_response& r, bool with_body) {
  auto head = fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n"
                          "Connection: close\r\n",
                          r.status, reason_of(r.status), r.content_type, r.body.size());
  if (r.status == 405)
    head += "Allow: GET, HEAD, POST\r\n";
  head += "\r\n";
  return with_body ? head + r.body : head;
}

} // namespace

std::optional<std::string> http_request::param(const std::string& key) const {
  size_t pos = 0;
  while (pos <= query.size()) {
    auto end = query.find('&', pos);
    if (end == std::string::npos)
      end = query.size();
    auto item = std::string_view{query}.substr(pos, end - pos);
    auto eq = item.find('=');
    if (item.substr(0, eq) == key)
      return eq == std::string_view::npos ? std::string{}
                                          : std::string{item.substr(eq + 1)};
    pos = end + 1;
  }
  return std::nullopt;
}

std::variant<http_request, http_response> parse_http_request(std::string_view head) {
  auto line_end = head.find("\r\n");
  auto line = head.substr(0, line_end);
  auto sp1 = line.find(' ');
  auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (line_end == std::string_view::npos || sp2 == std::string_view::npos ||
      line.substr(sp2 + 1, 5) != "HTTP/")
    return http_response{400, "text/plain; charset=utf-8", "malformed request\n"};
  http_request hr;
  hr.method = line.substr(0, sp1);
  hr.path = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (auto q = hr.path.find('?'); q != std::string::npos) {
    hr.query = hr.path.substr(q + 1);
    hr.path.resize(q);
  }
  if (hr.method != "GET" && hr.method != "HEAD" && hr.method != "POST")
    return http_response{405, "text/plain; charset=utf-8",
                         "only GET, HEAD and POST are served\n"};
  return hr;
}

struct http_server::impl {
  int listen_fd = -1;
  int wake[2] = {-1, -1};
  std::string address;
  std::string unix_path;
  http_handler handler;
  std::thread thread;
  std::atomic<bool> stopped{false};

  ~impl() {
    for (int fd : {listen_fd, wake[0], wake[1]})
      if (fd >= 0)
        ::close(fd);
  }

  void serve(int fd) {
    auto deadline = clock::now() + client_budget;
    std::string req;
    char buf[1024];
    while (req.find("\r\n\r\n") == std::string::npos && req.size() < max_request_bytes) {
      if (!wait_fd(fd, POLLIN, deadline))
        return;
      auto n = ::recv(fd, buf, sizeof(buf), 0);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return;
      req.append(buf, static_cast<size_t>(n));
    }
    http_response res;
    bool with_body = true;
    auto parsed = parse_http_request(req);
    if (auto* refusal = std::get_if<http_response>(&parsed)) {
      res = std::move(*refusal);
    } else {
      auto& hr = std::get<http_request>(parsed);
      with_body = hr.method != "HEAD";
      try {
        res = handler(hr);
      } catch (const std::exception& e) {
        res = {503, "text/plain; charset=utf-8", std::string{e.what()} + "\n"};
      }
    }
    write_all(fd, render(res, with_body), deadline);
  }

  void run() {
    for (;;) {
      pollfd fds[2] = {{listen_fd, POLLIN, 0}, {wake[0], POLLIN, 0}};
      int rc = ::poll(fds, 2, -1);
      if (rc < 0 && errno == EINTR)
        continue;
      if (rc < 0 || stopped.load() || (fds[1].revents & POLLIN))
        return;
      if (!(fds[0].revents & POLLIN))
        continue;
      int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0)
        continue;
      serve(fd);
      ::close(fd);
    }
  }
};

namespace {

caf::expected<std::unique_ptr<http_server::impl>> make_impl(int fd,
                                                            http_handler handler) {
  auto p = std::make_unique<http_server::impl>();
  p->listen_fd = fd;
  p->handler = std::move(handler);
  if (::pipe2(p->wake, O_CLOEXEC) != 0)
    return make_error(errc::start_failed, sys_error("http server: pipe"));
  if (::listen(fd, 16) != 0)
    return make_error(errc::start_failed, sys_error("http server: listen"));
  return p;
}

} // namespace

caf::expected<std::unique_ptr<http_server>>
http_server::listen_tcp(const std::string& address, http_handler handler) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size())
    return make_error(errc::invalid_config,
                      fmt::format("metrics address '{}': expected host:port", address));
  auto host = address.substr(0, colon);
  auto port = address.substr(colon + 1);
  if (host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (port.find_first_not_of("0123456789") != std::string::npos || port.size() > 5 ||
      std::stoul(port) > 65535)
    return make_error(errc::invalid_config,
                      fmt::format("metrics address '{}': bad port '{}'", address, port));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0)
    return make_error(errc::invalid_config, fmt::format("metrics address '{}': {}",
                                                        address, ::gai_strerror(rc)));
  std::string last_error = "no address";
  int fd = -1;
  for (auto* ai = found; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                  ai->ai_protocol);
    if (fd < 0) {
      last_error = std::strerror(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      last_error = std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  if (fd < 0)
    return make_error(
      errc::start_failed,
      fmt::format("metrics address '{}': cannot bind: {}", address, last_error));
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  char text[NI_MAXHOST] = {0};
  char serv[NI_MAXSERV] = {0};
  ::getnameinfo(reinterpret_cast<sockaddr*>(&bound), len, text, sizeof(text), serv,
                sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV);
  auto p = make_impl(fd, std::move(handler));
  if (!p) {
    ::close(fd);
    return p.error();
  }
  (*p)->address = bound.ss_family == AF_INET6 ? fmt::format("[{}]:{}", text, serv)
                                              : fmt::format("{}:{}", text, serv);
  std::unique_ptr<http_server> srv{new http_server(std::move(*p))};
  srv->impl_->thread = std::thread{[raw = srv->impl_.get()] { raw->run(); }};
  return srv;
}

caf::expected<std::unique_ptr<http_server>>
http_server::listen_unix(const std::string& path, http_handler handler) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(sa.sun_path))
    return make_error(errc::invalid_config,
                      fmt::format("socket path '{}': empty or longer than {} bytes", path,
                                  sizeof(sa.sun_path) - 1));
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return make_error(errc::start_failed, sys_error("control socket"));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    auto err = make_error(errc::start_failed, sys_error("control socket " + path));
    ::close(fd);
    return err;
  }
  ::chmod(path.c_str(), 0600);
  auto p = make_impl(fd, std::move(handler));
  if (!p) {
    ::close(fd);
    ::unlink(path.c_str());
    return p.error();
  }
  (*p)->address = path;
  (*p)->unix_path = path;
  std::unique_ptr<http_server> srv{new http_server(std::move(*p))};
  srv->impl_->thread = std::thread{[raw = srv->impl_.get()] { raw->run(); }};
  return srv;
}

http_server::http_server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

http_server::~http_server() {
  stop();
}

void http_server::stop() {
  if (impl_->stopped.exchange(true))
    return;
  char one = 1;
  while (::write(impl_->wake[1], &one, 1) < 0 && errno == EINTR) {
  }
  if (impl_->thread.joinable())
    impl_->thread.join();
  if (!impl_->unix_path.empty())
    ::unlink(impl_->unix_path.c_str());
}

const std::string& http_server::address() const {
  return impl_->address;
}

caf::expected<http_reply> http_get_unix(const std::string& path,
                                        const std::string& target,
                                        std::chrono::milliseconds timeout) {
  return http_request_unix(path, "GET", target, timeout);
}

caf::expected<http_reply> http_request_unix(const std::string& path,
                                            const std::string& method,
                                            const std::string& target,
                                            std::chrono::milliseconds timeout) {
  auto deadline = clock::now() + timeout;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof(sa.sun_path))
    return make_error(errc::invalid_argument, "socket path too long: " + path);
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return make_error(errc::unavailable, sys_error("socket"));
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } guard{fd};
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0)
    return make_error(errc::unavailable, sys_error("cannot connect to " + path));
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  auto req = fmt::format("{} {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                         method, target);
  if (!write_all(fd, req, deadline))
    return make_error(errc::unavailable, "cannot send the request to " + path);
  std::string resp;
  char buf[4096];
  for (;;) {
    if (!wait_fd(fd, POLLIN, deadline))
      return make_error(
        errc::timeout,
        fmt::format("no complete reply from {} within {} ms", path, timeout.count()));
    auto n = ::recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (n < 0)
      return make_error(errc::unavailable, sys_error("reading from " + path));
    if (n == 0)
      break;
    resp.append(buf, static_cast<size_t>(n));
  }
  return parse_http_reply(resp, path);
}

caf::expected<http_reply> parse_http_reply(std::string_view reply,
                                           const std::string& origin) {
  auto head_end = reply.find("\r\n\r\n");
  if (reply.substr(0, 9) != "HTTP/1.1 " || head_end == std::string_view::npos ||
      reply.size() < 12)
    return make_error(errc::internal, "malformed HTTP reply from " + origin);
  http_reply out;
  out.status = std::atoi(std::string{reply.substr(9, 3)}.c_str());
  out.body = reply.substr(head_end + 4);
  return out;
}

} // namespace snakepit::adapters
