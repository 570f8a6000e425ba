// Fuzz target `stdio_frames`: what a stdio worker (Python or Node) writes to its
// stdout, as the host reads it: length-prefixed JSON frames (decode_frame), each
// checked (head_of) and read as a chunk, a reply, a failure or a ping's capabilities.
// The input is the worker's whole output; frames are decoded one after another, as
// the connection does, until an error or the end.
#include <string>

#include "adapters/detail/stdio_frames.hpp"
#include "adapters/errors.hpp"
#include "tests/fuzz/fuzz_target.hpp"

namespace {

namespace sd = snakepit::adapters::detail;
using snakepit::fuzz::require;

/// Small, so that the length check is reached as well as long frames.
constexpr size_t max_message_bytes = 1 << 16;

void read_frame(nlohmann::json frame) {
  auto head = sd::head_of(frame);
  if (!head) {
    require(head.error() == snakepit::errc::protocol_error,
            "a bad head is protocol_error");
    return;
  }
  if (head->chunk) {
    auto value = sd::chunk_value(frame);
    require(value.is_object(), "a chunk's value is an object");
    return;
  }
  if (auto i = frame.find("result"); i != frame.end())
    sd::capabilities_of(*i);
  sd::dump(frame);
  if (!sd::succeeded(frame)) {
    require(static_cast<bool>(sd::error_of(frame)), "a failure frame is an error");
    return;
  }
  auto reply = sd::reply_of(frame);
  if (!reply)
    require(reply.error() == snakepit::errc::protocol_error,
            "a bad reply is protocol_error");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto rest = snakepit::fuzz::text_of(data, size);
  while (!rest.empty()) {
    auto step = sd::decode_frame(rest, max_message_bytes);
    if (!step) {
      require(step.error() == snakepit::errc::protocol_error,
              "a bad frame is protocol_error");
      return 0;
    }
    if (!step->value) {
      require(step->size == 0 || step->size > rest.size(),
              "waits only for missing bytes");
      return 0;
    }
    require(step->size >= 4 && step->size <= rest.size(), "a frame is within the input");
    read_frame(std::move(*step->value));
    rest.remove_prefix(step->size);
  }
  return 0;
}
