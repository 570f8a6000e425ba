#include "actors/runtime/detail/service_stack.hpp"

#include <utility>

namespace snakepit::detail {

void service_stack::add(service svc) {
  services_.push_back(std::move(svc));
  started_.push_back(false);
}

void service_stack::add(std::string name, std::function<caf::error()> start,
                        std::function<caf::error()> stop) {
  add(service{std::move(name), std::move(start), std::move(stop)});
}

caf::error service_stack::start() {
  for (size_t i = 0; i < services_.size(); ++i) {
    if (started_[i])
      continue;
    auto& svc = services_[i];
    if (auto err = svc.start ? svc.start() : caf::error{}) {
      // The failed service left nothing behind; what started before it goes down.
      stop_below(i);
      return err;
    }
    started_[i] = true;
  }
  return caf::none;
}

caf::error service_stack::stop() {
  return stop_below(services_.size());
}

caf::error service_stack::stop_below(size_t end) {
  caf::error first;
  for (size_t i = end; i-- > 0;) {
    if (!started_[i])
      continue;
    // Marked before the stop runs: a stop that throws is not retried.
    started_[i] = false;
    if (!services_[i].stop)
      continue;
    if (auto err = services_[i].stop(); err && !first)
      first = std::move(err);
  }
  return first;
}

std::vector<std::string> service_stack::running() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < services_.size(); ++i)
    if (started_[i])
      out.push_back(services_[i].name);
  return out;
}

} // namespace snakepit::detail
