// Polling for real-time tests: a condition is awaited with a generous deadline and
// never timed (speed belongs in bench/).
#pragma once

#include <chrono>
#include <thread>

namespace snakepit::testing {

/// Polls `pred` until it holds or `deadline` has passed; returns its last value.
template<class Pred>
bool eventually(Pred pred, std::chrono::milliseconds deadline = std::chrono::seconds{20},
                std::chrono::milliseconds interval = std::chrono::milliseconds{10}) {
  auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    if (pred())
      return true;
    std::this_thread::sleep_for(interval);
  }
  return pred();
}

} // namespace snakepit::testing
