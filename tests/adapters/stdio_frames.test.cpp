#include "adapters/detail/stdio_frames.hpp"

#include <doctest/doctest.h>

#include "adapters/stdio_client.hpp"

using namespace snakepit;
using namespace snakepit::adapters;
using nlohmann::json;

TEST_SUITE("adapters.stdio_frames") {

  TEST_CASE("frames are decoded one at a time and a partial one waits for its bytes") {
    auto two = encode_frame(R"({"id":1,"success":true})") + encode_frame(R"({"id":2})");
    auto first = detail::decode_frame(two, 1024);
    REQUIRE(first);
    REQUIRE(first->value);
    CHECK((*first->value)["id"] == 1);
    CHECK(first->size == 4 + 23);
    auto partial = std::string_view{two}.substr(first->size, 6);
    auto waiting = detail::decode_frame(partial, 1024);
    REQUIRE(waiting);
    CHECK_FALSE(waiting->value);
    CHECK(waiting->size == 4 + 8);
    auto prefix_only = detail::decode_frame(partial.substr(0, 3), 1024);
    REQUIRE(prefix_only);
    CHECK(prefix_only->size == 0);
  }

  TEST_CASE("an oversized or non-JSON frame is a protocol_error") {
    auto big = detail::decode_frame(encode_frame(std::string(100, ' ')), 99);
    REQUIRE_FALSE(big);
    CHECK(big.error() == errc::protocol_error);
    CHECK(message_of(big.error()).find("100 bytes exceeds max_message_bytes (99)") !=
          std::string::npos);
    auto junk = detail::decode_frame(encode_frame("{oops"), 1024);
    REQUIRE_FALSE(junk);
    CHECK(junk.error() == errc::protocol_error);
    // JSON, then a NUL and more bytes: not JSON (nlohmann alone stops at the NUL).
    auto nul = detail::decode_frame(encode_frame(std::string("{\"id\":1}\0x", 10)), 1024);
    REQUIRE_FALSE(nul);
    CHECK(nul.error() == errc::protocol_error);
  }

  TEST_CASE("a frame's head needs an object, an unsigned id and success or chunk") {
    CHECK(detail::head_of(json::array()).error() == errc::protocol_error);
    CHECK(detail::head_of(json{{"id", -1}, {"success", true}}).error() ==
          errc::protocol_error);
    CHECK(detail::head_of(json{{"id", 3}}).error() == errc::protocol_error);
    auto chunk = detail::head_of(json{{"id", 3u}, {"chunk", 1}});
    REQUIRE(chunk);
    CHECK(chunk->id == 3);
    CHECK(chunk->chunk);
  }

  TEST_CASE("execution_time_ms is kept when it fits an int64 and is 0 otherwise") {
    auto millis = [](json value) {
      json frame{{"id", 1}, {"success", true}, {"execution_time_ms", std::move(value)}};
      auto reply = detail::reply_of(frame);
      REQUIRE(reply);
      return reply->execution_time_ms;
    };
    CHECK(millis(12) == 12);
    CHECK(millis(12.9) == 12);
    // A double far out of range converted with get<int64_t>() was undefined behaviour
    // (tests/fuzz/regressions/stdio_frames/execution_time_1e300.bin).
    CHECK(millis(1e300) == 0);
    CHECK(millis(-1e300) == 0);
    CHECK(millis(18446744073709551615u) == 0);
    CHECK(millis("12") == 0);
  }

  TEST_CASE("binary_result must be base64") {
    json frame{{"id", 1}, {"success", true}, {"binary_result", "AAE="}};
    auto reply = detail::reply_of(frame);
    REQUIRE(reply);
    CHECK(reply->binary_result == std::string("\x00\x01", 2));
    json bad{{"id", 1}, {"success", true}, {"binary_result", "not base64!"}};
    CHECK(detail::reply_of(bad).error() == errc::protocol_error);
  }
}
