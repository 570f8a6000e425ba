// Fuzz target `http`: the HTTP parsing of the metrics endpoint and the control socket
// on any bytes: a request head as the server reads it (parse_http_request, then the
// query's parameters) and a whole reply as the CLI's client reads it
// (parse_http_reply).
#include <string>

#include "adapters/http_server.hpp"
#include "tests/fuzz/fuzz_target.hpp"

namespace {

namespace sa = snakepit::adapters;
using snakepit::fuzz::require;

void request(std::string_view head) {
  auto parsed = sa::parse_http_request(head);
  if (auto* refusal = std::get_if<sa::http_response>(&parsed)) {
    require(refusal->status == 400 || refusal->status == 405, "refused with 400 or 405");
    return;
  }
  auto& req = std::get<sa::http_request>(parsed);
  require(req.method == "GET" || req.method == "HEAD" || req.method == "POST",
          "only GET, HEAD and POST reach a handler");
  require(req.path.find('?') == std::string::npos, "the path has no query");
  require(head.find(req.path) != std::string_view::npos, "the path is from the head");
  for (const char* key : {"pool", "n", "", "a=b"})
    if (auto value = req.param(key))
      require(req.query.find(*value) != std::string::npos,
              "a parameter is from the query");
  // Keys taken from the query itself (every '&'-separated item up to its '=').
  for (size_t pos = 0; pos < req.query.size();) {
    auto end = req.query.find('&', pos);
    auto item = req.query.substr(pos, end == std::string::npos ? end : end - pos);
    require(req.param(item.substr(0, item.find('='))).has_value(),
            "every key of the query is found");
    if (end == std::string::npos)
      break;
    pos = end + 1;
  }
}

void reply(std::string_view bytes) {
  auto parsed = sa::parse_http_reply(bytes, "fuzz.sock");
  if (!parsed)
    return;
  require(bytes.substr(0, 9) == "HTTP/1.1 ", "a reply starts with its status line");
  require(parsed->body.size() + 4 <= bytes.size(), "the body is within the reply");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto text = snakepit::fuzz::text_of(data, size);
  request(text);
  reply(text);
  return 0;
}
