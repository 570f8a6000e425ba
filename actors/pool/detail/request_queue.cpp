#include "actors/pool/detail/request_queue.hpp"

namespace snakepit::actors::detail {

void request_queue::push_back(pending_request p) {
  auto id = p.id;
  queue_.push_back(std::move(p));
  index_[id] = std::prev(queue_.end());
}

void request_queue::push_front(pending_request p) {
  auto id = p.id;
  queue_.push_front(std::move(p));
  index_[id] = queue_.begin();
}

pending_request request_queue::take(iterator& pos) {
  auto p = std::move(*pos);
  index_.erase(p.id);
  pos = queue_.erase(pos);
  return p;
}

std::optional<pending_request> request_queue::take(uint64_t id) {
  auto i = index_.find(id);
  if (i == index_.end())
    return std::nullopt;
  auto pos = i->second;
  return take(pos);
}

void request_queue::take_if(const std::function<bool(const pending_request&)>& pred,
                            const std::function<void(pending_request&)>& fn) {
  for (auto q = queue_.begin(); q != queue_.end();) {
    if (pred(*q)) {
      auto p = take(q);
      fn(p);
    } else {
      ++q;
    }
  }
}

void request_queue::take_all(const std::function<void(pending_request&)>& fn) {
  auto all = std::move(queue_);
  queue_.clear();
  index_.clear();
  for (auto& p : all)
    fn(p);
}

} // namespace snakepit::actors::detail
