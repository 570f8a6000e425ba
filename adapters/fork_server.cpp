#include "adapters/fork_server.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "adapters/detail/linux.hpp"
#include "adapters/errors.hpp"

namespace snakepit::adapters {

namespace {

using detail::errno_text;
using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;

constexpr size_t max_reply = 64 * 1024;
constexpr size_t cmdline_room = 8192;
/// How long one request may wait for its reply once the template is ready (a copy
/// takes milliseconds; a template stuck this long is broken).
constexpr std::chrono::milliseconds reply_timeout{5000};

/// Waits until `fd` is readable or `deadline` passes; false on timeout.
bool wait_readable(int fd, clock_type::time_point deadline) {
  for (;;) {
    auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
    if (left.count() < 0)
      left = std::chrono::milliseconds{0};
    pollfd pfd{fd, POLLIN, 0};
    auto rc = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (rc > 0)
      return true;
    if (rc == 0)
      return false;
    if (errno != EINTR)
      return true; // let the read report it
  }
}

/// One message from the template, parsed; an error names what went wrong.
caf::expected<json> read_message(int fd, clock_type::time_point deadline) {
  if (!wait_readable(fd, deadline))
    return make_error(errc::start_failed, "the worker template did not answer in time");
  std::string buf(max_reply, '\0');
  ssize_t n;
  do {
    n = ::recv(fd, buf.data(), buf.size(), 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0)
    return make_error(errc::start_failed,
                      "reading from the worker template failed: " + errno_text(errno));
  if (n == 0)
    return make_error(errc::start_failed, "the worker template exited");
  buf.resize(static_cast<size_t>(n));
  auto doc = json::parse(buf, nullptr, false);
  if (doc.is_discarded() || !doc.is_object())
    return make_error(errc::start_failed, "the worker template sent no JSON object");
  return doc;
}

/// Sends `payload` with `fd` attached (none when fd < 0).
int send_message(int sock, const std::string& payload, int fd) {
  iovec iov{const_cast<char*>(payload.data()), payload.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (fd >= 0) {
    std::memset(control, 0, sizeof(control));
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    auto* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cm), &fd, sizeof(int));
  }
  ssize_t n;
  do {
    n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? errno : 0;
}

} // namespace

caf::expected<std::unique_ptr<fork_server>> fork_server::launch(process_spec spec) {
  int sv[2];
  // SEQPACKET: message boundaries without framing, and descriptors ride along.
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return make_error(errc::start_failed,
                      "cannot create the worker template's socket: " + errno_text(errno));
  auto executable = spec.executable;
  // The padding is the room in which each copy writes its own command line
  // (forkserver.py, set_cmdline), so ps and the sweep by run id see the worker.
  spec.args = {"-m", module, std::string(cmdline_room, '_')};
  spec.stdin_fd = sv[1];
  spec.new_process_group = true;
  auto proc = spawn_process(spec);
  ::close(sv[1]);
  if (!proc) {
    ::close(sv[0]);
    return std::move(proc.error());
  }
  return std::unique_ptr<fork_server>{
    new fork_server(std::move(*proc), sv[0], std::move(executable))};
}

fork_server::fork_server(child_process proc, int sock, std::string executable)
  : proc_(std::move(proc)), pid_(proc_.pid()), pgid_(proc_.pgid()), sock_(sock),
    executable_(std::move(executable)), launched_(clock_type::now()) {}

fork_server::~fork_server() {
  if (sock_ >= 0)
    ::close(sock_);
  // EOF ends the template's loop at once; a template still importing (or stuck) is
  // killed. Its workers are in their own groups and are not touched.
  auto deadline = clock_type::now() + std::chrono::milliseconds{200};
  while (proc_.alive() && clock_type::now() < deadline)
    ::usleep(2000);
  if (proc_.alive())
    proc_.signal_group(SIGKILL);
}

bool fork_server::usable() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return failure_.empty();
}

std::string fork_server::failure() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return failure_;
}

caf::error fork_server::fail(std::string why) {
  failure_ = std::move(why);
  return make_error(errc::start_failed, failure_);
}

caf::error fork_server::await_ready(std::chrono::milliseconds timeout) {
  if (ready_)
    return caf::none;
  auto msg = read_message(sock_, launched_ + timeout);
  if (!msg)
    return fail(describe(msg.error()));
  if (!msg->value("ready", false))
    return fail("the worker template cannot serve: " +
                msg->value("error", std::string{"no reason given"}));
  ready_ = true;
  return caf::none;
}

caf::expected<child_process> fork_server::spawn(const process_spec& spec,
                                                std::chrono::milliseconds ready_timeout) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (!failure_.empty())
    return make_error(errc::start_failed, failure_);
  if (spec.executable != executable_ || spec.args.size() < 2 || spec.args[0] != "-m" ||
      spec.args[1] != "snakepit_bridge")
    return make_error(errc::start_failed,
                      "the worker template starts only '<python> -m snakepit_bridge'");
  if (auto err = await_ready(ready_timeout))
    return err;
  json env = json::array();
  bool lifeline_env = false;
  for (const auto& [k, v] : spec.env) {
    env.push_back({k, v});
    lifeline_env = lifeline_env || k == "SNAKEPIT_LIFELINE_FD";
  }
  if (spec.pass_lifeline && !lifeline_env)
    env.push_back({"SNAKEPIT_LIFELINE_FD", std::to_string(lifeline_child_fd())});
  json req{{"module", spec.args[1]},
           {"argv", std::vector<std::string>(spec.args.begin() + 2, spec.args.end())},
           {"env", std::move(env)},
           {"cwd", spec.cwd}};
  if (auto err = send_message(sock_, req.dump(), spec.stderr_fd))
    return fail("writing to the worker template failed: " + errno_text(err));
  auto reply = read_message(sock_, clock_type::now() + reply_timeout);
  if (!reply)
    return fail(describe(reply.error()));
  if (auto i = reply->find("pid"); i != reply->end() && i->is_number_integer()) {
    auto pid = i->get<pid_t>();
    return adopt_child(pid, spec.new_process_group);
  }
  // The template answered but could not copy itself (e.g. EAGAIN): this worker fails
  // over to a spawn, the template stays usable.
  return make_error(errc::start_failed,
                    "the worker template could not start the worker: " +
                      reply->value("error", std::string{"no reason given"}));
}

} // namespace snakepit::adapters
