#include "actors/pool/detail/worker_table.hpp"

#include <algorithm>

namespace snakepit::actors::detail {

worker_record& worker_table::add(const std::string& id) {
  auto& rec = records_[id];
  rec.id = id;
  rec.member = true;
  return rec;
}

worker_record* worker_table::find(const std::string& id) {
  auto i = records_.find(id);
  return i == records_.end() ? nullptr : &i->second;
}

const worker_record* worker_table::find(const std::string& id) const {
  auto i = records_.find(id);
  return i == records_.end() ? nullptr : &i->second;
}

worker_incarnation* worker_table::live(const std::string& id) {
  auto* rec = find(id);
  return rec != nullptr && rec->live ? &*rec->live : nullptr;
}

void worker_table::forget_if_gone(const std::string& id) {
  auto i = records_.find(id);
  if (i != records_.end() && !i->second.member && !i->second.live)
    records_.erase(i);
}

worker_incarnation& worker_table::make_live(worker_record& rec, worker_incarnation inc) {
  if (rec.live)
    rec.live->slot->offered.store(false); // (its down is still on the way)
  else
    ++live_count_;
  if (std::find(order_.begin(), order_.end(), rec.id) == order_.end())
    order_.push_back(rec.id);
  rec.live = std::move(inc);
  dirty_ = true;
  return *rec.live;
}

void worker_table::drop_live(worker_record& rec) {
  if (!rec.live)
    return;
  rec.live->slot->offered.store(false); // its blocking callers get the crash
  rec.live.reset();
  --live_count_;
  order_.erase(std::remove(order_.begin(), order_.end(), rec.id), order_.end());
  dirty_ = true;
}

void worker_table::withdraw(const std::string& id) {
  auto i = std::find(order_.begin(), order_.end(), id);
  if (i != order_.end()) {
    order_.erase(i);
    dirty_ = true;
  }
}

void worker_table::reinstate(const std::string& id) {
  if (std::find(order_.begin(), order_.end(), id) == order_.end()) {
    order_.push_back(id);
    dirty_ = true;
  }
}

size_t worker_table::member_count() const {
  return static_cast<size_t>(std::count_if(
    records_.begin(), records_.end(), [](const auto& kv) { return kv.second.member; }));
}

size_t worker_table::leaving_count() const {
  return static_cast<size_t>(
    std::count_if(records_.begin(), records_.end(),
                  [](const auto& kv) { return kv.second.member && kv.second.leaving; }));
}

size_t worker_table::recycling_count() const {
  return static_cast<size_t>(
    std::count_if(records_.begin(), records_.end(),
                  [](const auto& kv) { return kv.second.recycling.has_value(); }));
}

bool worker_table::any_taint(pool_time now) const {
  return std::any_of(records_.begin(), records_.end(),
                     [&](const auto& kv) { return kv.second.tainted(now); });
}

bool worker_table::untainted_ready(pool_time now) const {
  return std::any_of(order_.begin(), order_.end(), [&](const std::string& id) {
    return !records_.at(id).tainted(now);
  });
}

std::optional<std::vector<lane_slot_ptr>> worker_table::take_published_slots() {
  if (!dirty_)
    return std::nullopt;
  dirty_ = false;
  std::vector<lane_slot_ptr> slots;
  slots.reserve(order_.size());
  for (auto& id : order_)
    slots.push_back(records_.at(id).live->slot);
  return slots;
}

} // namespace snakepit::actors::detail
