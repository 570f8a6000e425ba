#include "adapters/wire.hpp"

#include <google/protobuf/wrappers.pb.h>

#include <doctest/doctest.h>

using namespace snakepit;
using namespace snakepit::adapters;
using nlohmann::json;

namespace {

google::protobuf::Any any_of(const std::string& type_url, const std::string& value) {
  google::protobuf::Any any;
  any.set_type_url(type_url);
  any.set_value(value);
  return any;
}

} // namespace

TEST_SUITE("adapters.wire") {

  TEST_CASE(
    "each argument is sent as raw JSON in a StringValue-typed Any and decodes back") {
    json args = {{"n", 42},
                 {"x", 1.5},
                 {"s", "h\u00e9llo"},
                 {"flag", true},
                 {"none", nullptr},
                 {"list", {1, "two", 3.0}},
                 {"map", {{"a", {{"b", 1}}}}}};
    google::protobuf::Map<std::string, google::protobuf::Any> out;
    encode_params(args, &out);
    REQUIRE(out.size() == args.size());
    for (const auto& [key, value] : args.items()) {
      REQUIRE(out.count(key) == 1);
      const auto& any = out.at(key);
      CHECK(any.type_url() == "type.googleapis.com/google.protobuf.StringValue");
      CHECK(json::parse(any.value()) == value);
      CHECK(decode_any(any) == value);
    }
    CHECK(out.at("s").value() == "\"h\u00e9llo\"");
  }

  TEST_CASE(
    "a non-object argument becomes the single parameter value and null sends nothing") {
    google::protobuf::Map<std::string, google::protobuf::Any> out;
    encode_params(json::array({1, 2}), &out);
    REQUIRE(out.size() == 1);
    CHECK(decode_any(out.at("value")) == json::array({1, 2}));
    google::protobuf::Map<std::string, google::protobuf::Any> none;
    encode_params(nullptr, &none);
    CHECK(none.empty());
  }

  TEST_CASE(
    "a request carries parameters, binary parameters, metadata and the correlation id") {
    tool_call call;
    call.session_id = "s1";
    call.tool_name = "add";
    call.args = {{"a", 1}};
    call.binary_args = {{"blob", std::string("\0\1\2", 3)}};
    call.metadata = {{"thread_sensitive", "true"}};
    call.correlation_id = "corr-1";
    bridge::ExecuteToolRequest req;
    encode_request(call, true, &req);
    CHECK(req.session_id() == "s1");
    CHECK(req.tool_name() == "add");
    CHECK(req.stream());
    CHECK(req.parameters().at("a").value() == "1");
    CHECK(req.binary_parameters().at("blob") == std::string("\0\1\2", 3));
    CHECK(req.metadata().at("thread_sensitive") == "true");
    CHECK(req.metadata().at("correlation_id") == "corr-1");
  }

  TEST_CASE("decode_any handles empty, non-JSON text and binary values") {
    CHECK(decode_any(any_of("type.googleapis.com/snakepit.string", "")).is_null());
    CHECK(decode_any(any_of("x", "not json")) == json("not json"));
    auto bin = decode_any(any_of("x", std::string("\xff\xfe\x00", 3)));
    CHECK(bin == json{{"raw_data_base64", "//4A"}});
  }

  TEST_CASE("bytes that start with JSON text and go on after a NUL are not that JSON") {
    // nlohmann's parser stops at a NUL byte: " null\0<bytes>" decoded as null, "1\0…"
    // as 1, and the payload was lost (tests/fuzz/regressions/wire/json_then_nul.bin).
    auto bytes = std::string("1\0\xff", 3);
    CHECK(decode_any(any_of("x", bytes)) == json{{"raw_data_base64", "MQD/"}});
    CHECK(decode_any(any_of("x", std::string(" null\0x", 7))) ==
          json(std::string(" null\0x", 7)));
    CHECK(decode_chunk(bytes) == json{{"raw_data_base64", "MQD/"}});
    auto err = parse_error_payload(std::string("{\"type\":\"E\"}\0", 13));
    CHECK(err.type == "Error");
  }

  TEST_CASE("decode_any unpacks the well-known wrappers upstream workers send") {
    google::protobuf::Any any;
    google::protobuf::StringValue s;
    s.set_value("hello");
    any.PackFrom(s);
    CHECK(decode_any(any) == json("hello"));
    google::protobuf::BoolValue b;
    b.set_value(true);
    any.PackFrom(b);
    CHECK(decode_any(any) == json(true));
    google::protobuf::Int64Value i;
    i.set_value(-42);
    any.PackFrom(i);
    CHECK(decode_any(any) == json(-42));
    google::protobuf::DoubleValue d;
    d.set_value(2.5);
    any.PackFrom(d);
    CHECK(decode_any(any) == json(2.5));
    // A StringValue whose text is JSON stays a string: the wrapper says what it is.
    s.set_value("[1, 2]");
    any.PackFrom(s);
    CHECK(decode_any(any) == json("[1, 2]"));
    // Our own convention wins: JSON text under a StringValue type_url is JSON, even
    // where its bytes would also parse as a (garbage) StringValue message.
    for (const char* text : {"1", "123456789", "\"\"", "17.5", "{}"}) {
      any.set_type_url("type.googleapis.com/google.protobuf.StringValue");
      any.set_value(text);
      CHECK(decode_any(any) == json::parse(text));
    }
  }

  TEST_CASE("the result type is the last dotted segment of the type_url") {
    CHECK(any_type("type.googleapis.com/snakepit.map") == "map");
    CHECK(any_type("type.googleapis.com/snakepit.tensor.binary") == "binary");
    CHECK(any_type("type.googleapis.com/google.protobuf.StringValue") == "StringValue");
    CHECK(any_type("plain") == "plain");
  }

  TEST_CASE("a ValueError payload with traceback and context is parsed completely") {
    auto payload =
      json{{"type", "ValueError"},
           {"message", "boom"},
           {"stacktrace", {"f.py:1 in f", "g.py:2 in g"}},
           {"traceback", "Traceback (most recent call last):\nValueError: boom"},
           {"context", {{"tool_name", "explode"}, {"session_id", "s"}}}}
        .dump();
    auto e = parse_error_payload(payload);
    CHECK(e.type == "ValueError");
    CHECK(e.message == "boom");
    CHECK(e.traceback.find("Traceback") == 0);
    CHECK(e.stacktrace == std::vector<std::string>{"f.py:1 in f", "g.py:2 in g"});
    CHECK(json::parse(e.context_json)["tool_name"] == "explode");
    auto err = error_from_payload(payload);
    CHECK(err == errc::tool_error);
    CHECK(describe(err) == "tool_error: ValueError: boom");
  }

  TEST_CASE("a non-JSON error message becomes a tool error of type Error") {
    auto e = parse_error_payload("something broke");
    CHECK(e.type == "Error");
    CHECK(e.message == "something broke");
    CHECK(e.traceback.empty());
    auto j = parse_error_payload("[1,2]");
    CHECK(j.type == "Error");
    CHECK(j.message == "[1,2]");
    CHECK(error_from_payload("something broke") == errc::tool_error);
  }

  TEST_CASE("UnknownToolError and InvalidArgumentError map to their own codes") {
    auto unknown =
      error_from_payload(R"({"type":"UnknownToolError","message":"no tool x"})");
    CHECK(unknown == errc::unknown_tool);
    CHECK(message_of(unknown) == "no tool x");
    auto invalid =
      error_from_payload(R"({"type":"InvalidArgumentError","message":"bad n"})");
    CHECK(invalid == errc::invalid_argument);
    CHECK(describe(invalid) == "invalid_argument: bad n");
  }

  TEST_CASE("a successful response keeps result, type, binary, metadata and time") {
    bridge::ExecuteToolResponse resp;
    resp.set_success(true);
    *resp.mutable_result() =
      any_of("type.googleapis.com/snakepit.tensor.binary", R"({"shape":[2]})");
    resp.set_binary_result(std::string("\x80\x04", 2));
    (*resp.mutable_metadata())["worker"] = "w1";
    resp.set_execution_time_ms(12);
    auto reply = decode_response(resp);
    REQUIRE(reply);
    CHECK(reply->result == json{{"shape", {2}}});
    CHECK(reply->result_type == "binary");
    CHECK(reply->binary_result == std::string("\x80\x04", 2));
    CHECK(reply->metadata.at("worker") == "w1");
    CHECK(reply->execution_time_ms == 12);
  }

  TEST_CASE("a failed response becomes the in-band error") {
    bridge::ExecuteToolResponse resp;
    resp.set_success(false);
    resp.set_error_message(R"({"type":"KeyError","message":"'k'"})");
    auto reply = decode_response(resp);
    REQUIRE_FALSE(reply);
    CHECK(describe(reply.error()) == "tool_error: KeyError: 'k'");
  }

  TEST_CASE("chunks decode by the upstream rules") {
    CHECK(decode_chunk(R"({"i":1})") == json{{"i", 1}});
    CHECK(decode_chunk("[1,2]") == json{{"data", {1, 2}}});
    CHECK(decode_chunk("3.5") == json{{"data", 3.5}});
    CHECK(decode_chunk("\"text\"") == json{{"data", "text"}});
    CHECK(decode_chunk("hello") == json{{"raw_data_base64", "aGVsbG8="}});
    CHECK(decode_chunk("") == json::object());
  }

  TEST_CASE("base64 matches the RFC 4648 test vectors") {
    CHECK(base64_encode("") == "");
    CHECK(base64_encode("f") == "Zg==");
    CHECK(base64_encode("fo") == "Zm8=");
    CHECK(base64_encode("foo") == "Zm9v");
    CHECK(base64_encode("foob") == "Zm9vYg==");
    CHECK(base64_encode("fooba") == "Zm9vYmE=");
    CHECK(base64_encode("foobar") == "Zm9vYmFy");
  }

  TEST_CASE("grpc status codes map to our errors with the message kept") {
    using grpc::StatusCode;
    CHECK_FALSE(error_from_status(grpc::Status::OK));
    struct row {
      StatusCode code;
      errc expected;
    };
    for (auto [code, expected] :
         {row{StatusCode::DEADLINE_EXCEEDED, errc::timeout},
          row{StatusCode::UNAVAILABLE, errc::unavailable},
          row{StatusCode::CANCELLED, errc::cancelled},
          row{StatusCode::INVALID_ARGUMENT, errc::invalid_argument},
          row{StatusCode::NOT_FOUND, errc::unknown_tool},
          row{StatusCode::UNIMPLEMENTED, errc::unknown_tool},
          row{StatusCode::INTERNAL, errc::internal},
          row{StatusCode::UNKNOWN, errc::internal},
          row{StatusCode::PERMISSION_DENIED, errc::internal},
          row{StatusCode::RESOURCE_EXHAUSTED, errc::internal}}) {
      CAPTURE(static_cast<int>(code));
      auto err = error_from_status(grpc::Status{code, "the message"});
      CHECK(err == expected);
      CHECK(message_of(err).find("the message") != std::string::npos);
    }
  }

  TEST_CASE("an INTERNAL status carrying an error payload becomes a tool error") {
    auto err = error_from_status(grpc::Status{
      grpc::StatusCode::INTERNAL, R"({"type":"RuntimeError","message":"mid-stream"})"});
    CHECK(err == errc::tool_error);
    CHECK(describe(err) == "tool_error: RuntimeError: mid-stream");
  }

} // TEST_SUITE
