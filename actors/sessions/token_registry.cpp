#include "actors/sessions/token_registry.hpp"

#include <sys/random.h>

#include <algorithm>
#include <array>
#include <cerrno>

#include "adapters/errors.hpp"

namespace snakepit::actors {

namespace {

constexpr size_t token_bytes = 32;

/// `n` bytes from the kernel's CSPRNG; false if it cannot give them.
bool random_bytes(unsigned char* out, size_t n) {
  size_t done = 0;
  while (done < n) {
    auto got = ::getrandom(out + done, n - done, 0);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      return false;
    done += static_cast<size_t>(got);
  }
  return true;
}

/// `a == b` in time that depends only on the lengths.
bool same(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

} // namespace

caf::expected<std::string> token_registry::issue() {
  std::array<unsigned char, token_bytes> raw;
  if (!random_bytes(raw.data(), raw.size()))
    return make_error(errc::internal, "no random bytes for a bridge token");
  static constexpr char digits[] = "0123456789abcdef";
  std::string token;
  token.reserve(2 * token_bytes);
  for (auto b : raw) {
    token.push_back(digits[b >> 4]);
    token.push_back(digits[b & 0xf]);
  }
  std::lock_guard<std::mutex> guard{mtx_};
  live_.push_back(token);
  return token;
}

void token_registry::revoke(const std::string& token) {
  std::lock_guard<std::mutex> guard{mtx_};
  live_.erase(std::remove(live_.begin(), live_.end(), token), live_.end());
}

bool token_registry::valid(std::string_view token) const {
  if (token.size() != 2 * token_bytes)
    return false;
  bool found = false;
  std::lock_guard<std::mutex> guard{mtx_};
  for (auto& t : live_) // no early exit: every live token is compared
    found |= same(t, token);
  return found;
}

size_t token_registry::size() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return live_.size();
}

} // namespace snakepit::actors
