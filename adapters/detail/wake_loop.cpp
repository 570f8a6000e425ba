#include "adapters/detail/wake_loop.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

namespace snakepit::adapters::detail {

namespace {

constexpr uint64_t wake_key = ~uint64_t{0};

} // namespace

wake_loop::wake_loop() {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  evfd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  add(evfd_, wake_key);
}

wake_loop::~wake_loop() {
  ::close(evfd_);
  ::close(epfd_);
}

void wake_loop::add(int fd, uint64_t key) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = key;
  ::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
}

void wake_loop::remove(int fd) {
  ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
}

void wake_loop::wake() {
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(evfd_, &one, sizeof(one));
}

bool wake_loop::wait(std::vector<uint64_t>& ready) {
  constexpr int max_events = 64;
  epoll_event events[max_events];
  ready.clear();
  int n = 0;
  do {
    n = ::epoll_wait(epfd_, events, max_events, -1);
  } while (n < 0 && errno == EINTR);
  if (n < 0)
    return false;
  for (int i = 0; i < n; ++i) {
    if (events[i].data.u64 == wake_key) {
      uint64_t count = 0;
      [[maybe_unused]] auto r = ::read(evfd_, &count, sizeof(count));
      continue;
    }
    ready.push_back(events[i].data.u64);
  }
  return true;
}

} // namespace snakepit::adapters::detail
