// The minimal HTTP server behind the metrics endpoint and the control socket: real
// sockets, real requests (raw ones for the malformed cases), clean stop.
#include "adapters/http_server.hpp"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include <doctest/doctest.h>

#include "adapters/errors.hpp"
#include "tests/support/checks.hpp"
#include "tests/support/files.hpp"

using namespace snakepit;
using namespace snakepit::adapters;
using namespace std::chrono_literals;

namespace {

http_handler echo_path(std::atomic<int>* calls = nullptr) {
  return [calls](const http_request& req) {
    if (calls)
      ++*calls;
    if (req.path == "/missing")
      return http_response{404, "text/plain", "no\n"};
    if (req.method == "POST")
      return http_response{200, "text/plain",
                           "posted " + req.path + " n=" + req.param("n").value_or("-")};
    return http_response{200, "text/plain", "path=" + req.path};
  };
}

/// A connected client socket (blocking, 20 s receive timeout so no test hangs).
int connect_unix(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  timeval tv{20, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strcpy(sa.sun_path, path.c_str());
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0);
  return fd;
}

/// Everything `fd` receives until EOF (or the receive timeout); closes it.
std::string read_all(int fd) {
  std::string out;
  char buf[1024];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0)
    out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

/// Sends `raw` to the unix socket and reads the whole reply.
std::string raw_exchange(const std::string& path, const std::string& raw) {
  int fd = connect_unix(path);
  REQUIRE(::send(fd, raw.data(), raw.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(raw.size()));
  return read_all(fd);
}

/// A request head with `n` header lines of about `width` bytes each.
std::string head_with(size_t n, size_t width = 10) {
  std::string out = "GET /h HTTP/1.1\r\n";
  for (size_t i = 0; i < n; ++i)
    out += "X-" + std::to_string(i) + ": " + std::string(width, 'v') + "\r\n";
  return out + "\r\n";
}

bool status_is(const std::string& reply, int status) {
  return reply.rfind("HTTP/1.1 " + std::to_string(status) + " ", 0) == 0;
}

} // namespace

TEST_SUITE("adapters.http_server") {

  TEST_CASE("a unix-socket server answers GET, strips the query, and goes away on stop") {
    snakepit::testing::temp_dir dir{"http-test"};
    auto sock = dir.path + "/control.sock";
    auto srv = http_server::listen_unix(sock, echo_path());
    REQUIRE_OK(srv);
    CHECK((*srv)->address() == sock);
    struct stat st;
    REQUIRE(::stat(sock.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    auto r = http_get_unix(sock, "/stats?x=1", 5s);
    REQUIRE_OK(r);
    CHECK(r->status == 200);
    CHECK(r->body == "path=/stats");
    auto missing = http_get_unix(sock, "/missing", 5s);
    REQUIRE(missing);
    CHECK(missing->status == 404);
    (*srv)->stop();
    (*srv)->stop(); // idempotent
    CHECK(::stat(sock.c_str(), &st) != 0);
    auto gone = http_get_unix(sock, "/stats", 2s);
    REQUIRE_FALSE(gone);
    CHECK(gone.error() == errc::unavailable);
  }

  TEST_CASE("the query's parameters") {
    http_request req{"GET", "/scale", "pool=a&size=12&flag&empty="};
    CHECK(req.param("pool") == "a");
    CHECK(req.param("size") == "12");
    CHECK(req.param("flag") == "");
    CHECK(req.param("empty") == "");
    CHECK_FALSE(req.param("pol").has_value());
    CHECK_FALSE(req.param("").has_value());
    CHECK_FALSE(http_request{"GET", "/", ""}.param("x").has_value());
  }

  TEST_CASE("POST reaches the handler with its query, the client sends it") {
    snakepit::testing::temp_dir dir{"http-test"};
    auto sock = dir.path + "/s.sock";
    auto srv = http_server::listen_unix(sock, echo_path());
    REQUIRE(srv);
    auto r = http_request_unix(sock, "POST", "/scale?n=3", 5s);
    REQUIRE_OK(r);
    CHECK(r->status == 200);
    CHECK(r->body == "posted /scale n=3");
    srv->reset();
  }

  TEST_CASE("malformed requests get 400, other methods 405, HEAD no body") {
    snakepit::testing::temp_dir dir{"http-test"};
    auto sock = dir.path + "/s.sock";
    std::atomic<int> calls{0};
    auto srv = http_server::listen_unix(sock, echo_path(&calls));
    REQUIRE(srv);
    auto bad = raw_exchange(sock, "garbage\r\n\r\n");
    CHECK(bad.rfind("HTTP/1.1 400 ", 0) == 0);
    auto put = raw_exchange(sock, "PUT /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(put.rfind("HTTP/1.1 405 ", 0) == 0);
    CHECK(put.find("Allow: GET, HEAD, POST") != std::string::npos);
    auto head = raw_exchange(sock, "HEAD /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(head.rfind("HTTP/1.1 200 ", 0) == 0);
    CHECK(head.find("Content-Length: 11\r\n") != std::string::npos);
    CHECK(head.substr(head.size() - 4) == "\r\n\r\n");
    CHECK(calls == 1); // the handler ran for HEAD only
    srv->reset();
  }

  TEST_CASE("clients that never finish their request do not hold up the others") {
    snakepit::testing::temp_dir dir{"http-test"};
    auto sock = dir.path + "/s.sock";
    http_limits limits;
    limits.request_timeout = 60s; // far longer than the prompt client waits
    auto srv = http_server::listen_unix(sock, echo_path(), limits);
    REQUIRE(srv);
    std::vector<int> idle;
    for (int i = 0; i < 8; ++i) {
      idle.push_back(connect_unix(sock));
      REQUIRE(::send(idle.back(), "GET /", 5, MSG_NOSIGNAL) == 5);
    }
    auto r = http_get_unix(sock, "/after", 5s);
    REQUIRE_OK(r);
    CHECK(r->body == "path=/after");
    for (int fd : idle)
      ::close(fd);
    srv->reset();
  }

  TEST_CASE("a client dripping its request byte by byte gets 408 at the deadline") {
    snakepit::testing::temp_dir dir{"http-test"};
    auto sock = dir.path + "/s.sock";
    http_limits limits;
    limits.request_timeout = 300ms;
    std::atomic<int> calls{0};
    auto srv = http_server::listen_unix(sock, echo_path(&calls), limits);
    REQUIRE(srv);
    int fd = connect_unix(sock);
    std::string req = "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n";
    // One byte every 100 ms: each arrives well within any idle timer, the whole
    // request does not arrive within the deadline.
    bool cut = false;
    for (char ch : req) {
      if (::send(fd, &ch, 1, MSG_NOSIGNAL) != 1) {
        cut = true;
        break;
      }
      std::this_thread::sleep_for(100ms);
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 0) > 0)
        break; // the server answered already
    }
    auto reply = read_all(fd);
    CHECK_MSG((status_is(reply, 408) || (cut && reply.empty())), reply);
    CHECK(calls == 0);
    srv->reset();
  }

  TEST_CASE("a request head over the size limit gets 431, the limit itself is fine") {
    snakepit::testing::temp_dir dir{"http-test"};
    auto sock = dir.path + "/s.sock";
    std::atomic<int> calls{0};
    auto srv = http_server::listen_unix(sock, echo_path(&calls));
    REQUIRE(srv);
    auto huge = raw_exchange(sock, head_with(1, 20 * 1024));
    CHECK_MSG(status_is(huge, 431), huge.substr(0, 80));
    CHECK(huge.find("larger than 16384 bytes") != std::string::npos);
    // A head that never ends is cut at the limit too, without waiting for its end.
    auto endless = raw_exchange(sock, "GET / HTTP/1.1\r\nX: " + std::string(40000, 'v'));
    CHECK(status_is(endless, 431));
    auto fits = raw_exchange(sock, head_with(1, 15 * 1024));
    CHECK(status_is(fits, 200));
    CHECK(calls == 1);
    srv->reset();
  }

  TEST_CASE("more than 100 header lines get 431, 100 are fine") {
    snakepit::testing::temp_dir dir{"http-test"};
    auto sock = dir.path + "/s.sock";
    std::atomic<int> calls{0};
    auto srv = http_server::listen_unix(sock, echo_path(&calls));
    REQUIRE(srv);
    auto many = raw_exchange(sock, head_with(101));
    CHECK(status_is(many, 431));
    CHECK(many.find("more than 100 header lines") != std::string::npos);
    CHECK(status_is(raw_exchange(sock, head_with(100)), 200));
    CHECK(calls == 1);
    srv->reset();
  }

  TEST_CASE("a body over 1 MiB gets 413 before it is sent, a chunked one 501, a small "
            "one is read and the request answered") {
    snakepit::testing::temp_dir dir{"http-test"};
    auto sock = dir.path + "/s.sock";
    std::atomic<int> calls{0};
    auto srv = http_server::listen_unix(sock, echo_path(&calls));
    REQUIRE(srv);
    // The head announces 2 MB and no byte of the body follows: the answer comes anyway.
    auto big = raw_exchange(sock, "POST /x HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n");
    CHECK_MSG(status_is(big, 413), big);
    // Refused while the client is still sending its body: the reply still arrives.
    auto sending =
      raw_exchange(sock, "POST /x HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n" +
                           std::string(100000, 'b'));
    CHECK_MSG(status_is(sending, 413), sending);
    auto chunked = raw_exchange(
      sock,
      "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    CHECK(status_is(chunked, 501));
    auto bad = raw_exchange(sock, "POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n");
    CHECK(status_is(bad, 400));
    CHECK(calls == 0);
    auto small =
      raw_exchange(sock, "POST /x?n=2 HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789");
    CHECK(status_is(small, 200));
    CHECK(small.find("posted /x n=2") != std::string::npos);
    CHECK(calls == 1);
    srv->reset();
  }

  TEST_CASE(
    "past the connection limit the oldest unfinished request gives way with 503") {
    snakepit::testing::temp_dir dir{"http-test"};
    auto sock = dir.path + "/s.sock";
    http_limits limits;
    limits.max_connections = 4;
    limits.request_timeout = 60s;
    auto srv = http_server::listen_unix(sock, echo_path(), limits);
    REQUIRE(srv);
    std::vector<int> idle;
    for (int i = 0; i < 4; ++i) {
      idle.push_back(connect_unix(sock));
      REQUIRE(::send(idle.back(), "GET /", 5, MSG_NOSIGNAL) == 5);
      std::this_thread::sleep_for(20ms); // accepted in this order
    }
    auto r = http_get_unix(sock, "/after", 5s);
    REQUIRE_OK(r);
    CHECK(r->body == "path=/after");
    CHECK(status_is(read_all(idle.front()), 503));
    for (size_t i = 1; i < idle.size(); ++i)
      ::close(idle[i]);
    srv->reset();
  }

  TEST_CASE(
    "TCP: port 0 binds a free loopback port, a taken port and bad addresses fail typed") {
    auto srv = http_server::listen_tcp("127.0.0.1:0", echo_path());
    REQUIRE_OK(srv);
    auto addr = (*srv)->address();
    REQUIRE(addr.rfind("127.0.0.1:", 0) == 0);
    CHECK(std::atoi(addr.c_str() + 10) > 0);
    auto taken = http_server::listen_tcp(addr, echo_path());
    REQUIRE_FALSE(taken);
    CHECK(taken.error() == errc::start_failed);
    for (auto bad : {"127.0.0.1", "127.0.0.1:x", "127.0.0.1:70000"}) {
      CAPTURE(bad);
      auto r = http_server::listen_tcp(bad, echo_path());
      REQUIRE_FALSE(r);
      CHECK(r.error() == errc::invalid_config);
    }
    auto v6 = http_server::listen_tcp("[::1]:0", echo_path());
    if (v6) // hosts without IPv6 loopback cannot bind it; the others report [::1]:port
      CHECK((*v6)->address().rfind("[::1]:", 0) == 0);
  }

  TEST_CASE("a unix socket path that is too long is refused with invalid_config") {
    auto r = http_server::listen_unix("/tmp/" + std::string(200, 'x'), echo_path());
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::invalid_config);
  }

  TEST_CASE("the request and reply parsers work on bytes alone (as fuzzed)") {
    auto ok = parse_http_request("POST /scale?pool=a&n=2 HTTP/1.1\r\nHost: x\r\n\r\n");
    REQUIRE(std::holds_alternative<http_request>(ok));
    auto& req = std::get<http_request>(ok);
    CHECK(req.method == "POST");
    CHECK(req.path == "/scale");
    CHECK(req.param("n") == std::optional<std::string>{"2"});
    for (auto bad :
         {"", "GET\r\n", "GET /x\r\n", "GET /x FTP/1\r\n", "GET /x HTTP/1.1"}) {
      CAPTURE(bad);
      auto r = parse_http_request(bad);
      REQUIRE(std::holds_alternative<http_response>(r));
      CHECK(std::get<http_response>(r).status == 400);
    }
    auto put = parse_http_request("PUT / HTTP/1.1\r\n\r\n");
    REQUIRE(std::holds_alternative<http_response>(put));
    CHECK(std::get<http_response>(put).status == 405);
    auto reply = parse_http_reply("HTTP/1.1 404 Not Found\r\nA: b\r\n\r\nnone", "s");
    REQUIRE(reply);
    CHECK(reply->status == 404);
    CHECK(reply->body == "none");
    CHECK(parse_http_reply("HTTP/1.1 200", "s").error() == errc::internal);
  }

} // TEST_SUITE
