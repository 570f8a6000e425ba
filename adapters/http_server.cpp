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
#include <cctype>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "adapters/errors.hpp"

namespace snakepit::adapters {

namespace {

using clock = std::chrono::steady_clock;

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
  case 408:
    return "Request Timeout";
  case 413:
    return "Content Too Large";
  case 431:
    return "Request Header Fields Too Large";
  case 501:
    return "Not Implemented";
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

/// One open connection: its request as read so far, then its reply being sent.
struct http_connection {
  enum class phase { reading, writing, draining };
  int fd = -1;
  clock::time_point deadline;
  phase state = phase::reading;
  std::string in;
  /// Where the body starts once the head is complete; npos before.
  size_t body_at = std::string::npos;
  /// The request's Content-Length once the head is complete.
  size_t body_len = 0;
  /// Body bytes received (and dropped).
  size_t body_seen = 0;
  std::string out;
  size_t sent = 0;
  /// Whether the reply refuses the request (the rest of it is then drained).
  bool refused = false;
};

namespace {

http_response refusal(int status, std::string text) {
  return {status, "text/plain; charset=utf-8", std::move(text) + "\n"};
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
    v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t'))
    v.remove_suffix(1);
  return v;
}

/// What a complete head says about the body: its length, or the refusal to send.
struct body_plan {
  size_t length = 0;
  std::optional<http_response> refused;
};

/// Counts the head's header lines and reads Content-Length / Transfer-Encoding.
body_plan plan_body(std::string_view head, const http_limits& limits) {
  body_plan plan;
  size_t count = 0;
  size_t pos = head.find("\r\n");
  while (pos != std::string_view::npos && pos + 2 < head.size()) {
    auto end = head.find("\r\n", pos + 2);
    auto line = head.substr(pos + 2, end - pos - 2);
    pos = end;
    if (line.empty())
      break;
    if (++count > limits.max_headers) {
      plan.refused =
        refusal(431, fmt::format("more than {} header lines", limits.max_headers));
      return plan;
    }
    auto colon = line.find(':');
    if (colon == std::string_view::npos)
      continue;
    auto name = line.substr(0, colon);
    auto value = trim(line.substr(colon + 1));
    if (iequals(name, "transfer-encoding")) {
      plan.refused = refusal(501, "chunked request bodies are not accepted");
      return plan;
    }
    if (iequals(name, "content-length")) {
      if (value.empty() || value.size() > 12 ||
          value.find_first_not_of("0123456789") != std::string_view::npos) {
        plan.refused = refusal(400, "malformed Content-Length");
        return plan;
      }
      plan.length = std::stoull(std::string{value});
      if (plan.length > limits.max_body_bytes) {
        plan.refused = refusal(
          413, fmt::format("request body larger than {} bytes", limits.max_body_bytes));
        return plan;
      }
    }
  }
  return plan;
}

} // namespace

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
  http_limits limits;
  std::thread thread;
  std::atomic<bool> stopped{false};
  std::vector<http_connection> conns;

  ~impl() {
    for (auto& c : conns)
      ::close(c.fd);
    for (int fd : {listen_fd, wake[0], wake[1]})
      if (fd >= 0)
        ::close(fd);
  }

  /// The reply to a complete request head (the handler's, or a refusal).
  std::pair<http_response, bool> answer(const std::string& head) {
    auto parsed = parse_http_request(head);
    if (auto* refused = std::get_if<http_response>(&parsed))
      return {std::move(*refused), true};
    auto& hr = std::get<http_request>(parsed);
    try {
      return {handler(hr), hr.method != "HEAD"};
    } catch (const std::exception& e) {
      return {refusal(503, e.what()), true};
    }
  }

  /// Switches `c` to sending `res`; a refusal ends the connection after it.
  void reply(http_connection& c, const http_response& res, bool with_body, bool refused) {
    c.out = render(res, with_body);
    c.sent = 0;
    c.refused = refused;
    c.state = http_connection::phase::writing;
    c.deadline = clock::now() + limits.request_timeout;
    c.in.clear();
    c.in.shrink_to_fit();
  }

  /// Looks at what `c` has read: waits for more, refuses, or answers.
  void examine(http_connection& c) {
    if (c.body_at == std::string::npos) {
      auto end = c.in.find("\r\n\r\n");
      if (end == std::string::npos || end + 4 > limits.max_head_bytes) {
        if (end != std::string::npos || c.in.size() > limits.max_head_bytes)
          reply(c,
                refusal(431, fmt::format("request head larger than {} bytes",
                                         limits.max_head_bytes)),
                true, true);
        return;
      }
      c.body_at = end + 4;
      c.body_seen = c.in.size() - c.body_at;
      c.in.resize(c.body_at); // the body is counted, not kept
      auto plan = plan_body(std::string_view{c.in}.substr(0, end + 2), limits);
      if (plan.refused)
        return reply(c, *plan.refused, true, true);
      c.body_len = plan.length;
    }
    if (c.body_seen < c.body_len)
      return; // the body is still coming
    auto [res, with_body] = answer(c.in.substr(0, c.body_at));
    reply(c, res, with_body, false);
  }

  /// Reads what `c` has; false when the connection is done with.
  bool on_readable(http_connection& c) {
    char buf[4096];
    for (;;) {
      auto n = ::recv(c.fd, buf, sizeof(buf), 0);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        break;
      if (n <= 0)
        return false; // EOF or error: nobody to answer
      if (c.state == http_connection::phase::draining)
        continue;
      if (c.body_at == std::string::npos)
        c.in.append(buf, static_cast<size_t>(n));
      else
        c.body_seen += static_cast<size_t>(n);
      examine(c);
      if (c.state != http_connection::phase::reading)
        break;
    }
    return true;
  }

  /// Sends what `c` still owes; false when the connection is done with.
  bool on_writable(http_connection& c) {
    while (c.sent < c.out.size()) {
      auto n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return true;
      if (n <= 0)
        return false;
      c.sent += static_cast<size_t>(n);
    }
    if (!c.refused)
      return false;
    // The client may still be sending what was refused: closing now would reset the
    // connection and could lose the reply. Read and drop until it closes (or the
    // deadline), having said we are done.
    ::shutdown(c.fd, SHUT_WR);
    c.state = http_connection::phase::draining;
    c.deadline = clock::now() + std::min<std::chrono::milliseconds>(
                                  limits.request_timeout, std::chrono::seconds{1});
    return true;
  }

  /// The deadline of `c` passed: a request still incomplete gets 408 (one try).
  void expire(http_connection& c) {
    if (c.state != http_connection::phase::reading)
      return;
    auto text = render(refusal(408, "request not complete in time"), true);
    ::send(c.fd, text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }

  /// Takes new connections; past the limit the oldest still reading is dropped.
  void accept_all() {
    for (;;) {
      int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0)
        return;
      if (conns.size() >= limits.max_connections)
        evict_oldest_reader();
      if (conns.size() >= limits.max_connections) {
        ::close(fd); // every slot is answering: the newcomer waits no better
        continue;
      }
      http_connection c;
      c.fd = fd;
      c.deadline = clock::now() + limits.request_timeout;
      conns.push_back(std::move(c));
    }
  }

  void evict_oldest_reader() {
    auto oldest = conns.end();
    for (auto i = conns.begin(); i != conns.end(); ++i)
      if (i->state == http_connection::phase::reading &&
          (oldest == conns.end() || i->deadline < oldest->deadline))
        oldest = i;
    if (oldest == conns.end())
      return;
    auto text = render(refusal(503, "too many connections"), true);
    ::send(oldest->fd, text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    ::close(oldest->fd);
    conns.erase(oldest);
  }

  /// One poll over the listener, the wake pipe and every connection; false to stop.
  bool step() {
    std::vector<pollfd> fds{{listen_fd, POLLIN, 0}, {wake[0], POLLIN, 0}};
    auto next = clock::time_point::max();
    for (auto& c : conns) {
      fds.push_back({c.fd,
                     static_cast<short>(
                       c.state == http_connection::phase::writing ? POLLOUT : POLLIN),
                     0});
      next = std::min(next, c.deadline);
    }
    // (+1: ms_left rounds down, and waking before the deadline would spin)
    int rc = ::poll(fds.data(), fds.size(), conns.empty() ? -1 : ms_left(next) + 1);
    if (rc < 0 && errno == EINTR)
      return true;
    if (rc < 0 || stopped.load() || (fds[1].revents & POLLIN))
      return false;
    auto now = clock::now();
    std::vector<http_connection> kept;
    for (size_t i = 0; i < conns.size(); ++i) {
      auto& c = conns[i];
      auto ev = fds[i + 2].revents;
      bool open = true;
      if (ev & (POLLIN | POLLHUP | POLLERR))
        open =
          c.state == http_connection::phase::writing ? on_writable(c) : on_readable(c);
      if (open && (ev & POLLOUT))
        open = on_writable(c);
      if (open && now >= c.deadline) {
        expire(c); // too slow to ask, to take its reply, or to go
        open = false;
      }
      if (open)
        kept.push_back(std::move(c));
      else
        ::close(c.fd);
    }
    conns = std::move(kept);
    if (fds[0].revents & POLLIN)
      accept_all();
    return true;
  }

  void run() {
    while (step()) {
    }
    for (auto& c : conns) // stopped: whoever is still connected gets EOF now
      ::close(c.fd);
    conns.clear();
  }
};

namespace {

caf::expected<std::unique_ptr<http_server::impl>> make_impl(int fd, http_handler handler,
                                                            http_limits limits) {
  auto p = std::make_unique<http_server::impl>();
  p->listen_fd = fd;
  p->handler = std::move(handler);
  p->limits = limits;
  if (::pipe2(p->wake, O_CLOEXEC) != 0)
    return make_error(errc::start_failed, sys_error("http server: pipe"));
  if (::listen(fd, 64) != 0)
    return make_error(errc::start_failed, sys_error("http server: listen"));
  return p;
}

} // namespace

caf::expected<std::unique_ptr<http_server>>
http_server::listen_tcp(const std::string& address, http_handler handler,
                        http_limits limits) {
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
  auto p = make_impl(fd, std::move(handler), limits);
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
http_server::listen_unix(const std::string& path, http_handler handler,
                         http_limits limits) {
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
  auto p = make_impl(fd, std::move(handler), limits);
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
