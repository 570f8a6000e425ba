// The bridge server's live tokens: fresh random tokens, refused once revoked, and
// nothing but an exact live token admitted.
#include "actors/sessions/token_registry.hpp"

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

using snakepit::actors::token_registry;

TEST_SUITE("actors.sessions.token_registry") {

  TEST_CASE("tokens are 64 distinct hex digits, valid until revoked") {
    token_registry reg;
    std::set<std::string> seen;
    for (int i = 0; i < 100; ++i) {
      auto t = reg.issue();
      REQUIRE(t);
      CHECK(t->size() == 64);
      CHECK(t->find_first_not_of("0123456789abcdef") == std::string::npos);
      seen.insert(*t);
    }
    CHECK(seen.size() == 100);
    CHECK(reg.size() == 100);
    auto first = *seen.begin();
    CHECK(reg.valid(first));
    reg.revoke(first);
    reg.revoke(first); // idempotent
    CHECK_FALSE(reg.valid(first));
    CHECK(reg.size() == 99);
    CHECK(reg.valid(*seen.rbegin()));
  }

  TEST_CASE("only an exact live token is valid") {
    token_registry reg;
    auto t = reg.issue();
    REQUIRE(t);
    auto flipped = *t;
    flipped[10] = flipped[10] == 'a' ? 'b' : 'a';
    CHECK_FALSE(reg.valid(flipped));
    CHECK_FALSE(reg.valid(t->substr(0, 63)));
    CHECK_FALSE(reg.valid(*t + "0"));
    CHECK_FALSE(reg.valid(""));
    CHECK_FALSE(token_registry{}.valid(*t)); // another runtime's registry
    CHECK(reg.valid(*t));
  }

  TEST_CASE("issue, check and revoke from many threads at once") {
    token_registry reg;
    std::vector<std::thread> ts;
    std::atomic<int> bad{0};
    for (int i = 0; i < 4; ++i)
      ts.emplace_back([&] {
        for (int j = 0; j < 200; ++j) {
          auto t = reg.issue();
          if (!t) {
            ++bad;
            continue;
          }
          if (!reg.valid(*t))
            ++bad;
          reg.revoke(*t);
          if (reg.valid(*t))
            ++bad;
        }
      });
    for (auto& th : ts)
      th.join();
    CHECK(bad == 0);
    CHECK(reg.size() == 0);
  }
}
