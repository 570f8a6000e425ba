// Streaming through the pool, end-to-end deadlines, correlation ids and payload
// limits, with real Python workers (issue: streaming, correlation ids, deadlines).
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include <caf/all.hpp>

#include "actors/atoms.hpp"
#include "actors/pool/pool.hpp"
#include "harness.hpp"

using namespace std::chrono_literals;
using snakepit::errc;
using snakepit::json;
using namespace snakepit::testing;

namespace {

using chunk_atom = snakepit::actors::stream_chunk_atom;
using end_atom = snakepit::actors::stream_end_atom;

} // namespace

TEST_SUITE("integration.streaming") {

  TEST_CASE("a stream delivers its chunks in order and the last one is final") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    std::vector<json> chunks;
    std::vector<bool> finals;
    auto err = (*rt)->execute_stream("stream_progress", {{"steps", 5}},
                                     [&](const json& c, bool is_final) {
                                       chunks.push_back(c);
                                       finals.push_back(is_final);
                                       return true;
                                     });
    CHECK_OK(err);
    // Five data chunks; the tool does not mark one final, so an empty final follows.
    REQUIRE(chunks.size() >= 5);
    for (int i = 0; i < 5; ++i) {
      CHECK(chunks[static_cast<size_t>(i)].value("step", -1) == i + 1);
      CHECK(chunks[static_cast<size_t>(i)].value("total", -1) == 5);
    }
    CHECK(finals.back());
    for (size_t i = 0; i + 1 < finals.size(); ++i)
      CHECK_FALSE(finals[i]);
    stop_and_check(**rt);
  }

  TEST_CASE("halting after three chunks stops the stream, closes the generator and frees "
            "the worker") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    int seen = 0;
    auto err =
      (*rt)->execute_stream("stream_progress", {{"steps", 1000}, {"delay_ms", 5}},
                            [&](const json&, bool) { return ++seen < 3; });
    CHECK_OK(err);
    CHECK(seen == 3);
    // The single worker is free again at once: a unary call goes through.
    snakepit::execute_options opts;
    opts.timeout = 5s;
    auto next = (*rt)->execute("ping", json::object(), opts);
    CHECK_OK(next);
    CHECK(eventually([&] {
      auto s = (*rt)->get_stats();
      return s && s->busy == 0;
    }));
    stop_and_check(**rt);
  }

  TEST_CASE("a stream queues behind a busy worker and completes") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    std::promise<snakepit::execute_result> first;
    (*rt)->execute_async("sleep", {{"ms", 400}}, {}, [&](snakepit::execute_result r) {
      first.set_value(std::move(r));
    });
    REQUIRE(eventually([&] {
      auto s = (*rt)->get_stats();
      return s && s->busy == 1;
    }));
    int seen = 0;
    auto err =
      (*rt)->execute_stream("stream_progress", {{"steps", 3}}, [&](const json&, bool) {
        ++seen;
        return true;
      });
    CHECK_OK(err);
    CHECK(seen >= 3);
    CHECK(first.get_future().get());
    auto stats = (*rt)->get_stats();
    REQUIRE(stats);
    CHECK(stats->queued >= 1);
    stop_and_check(**rt);
  }

  TEST_CASE("a slow consumer holds the producer back instead of buffering everything") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto probe = temp_file("flow");
    // The tool records how far it got; the consumer sleeps on every chunk.
    int seen = 0;
    auto err = (*rt)->execute_stream(
      "stream_record", {{"steps", 600}, {"path", probe}, {"size", 65536}},
      [&](const json&, bool) {
        ++seen;
        if (seen == 5) {
          // Give the producer time to run ahead if nothing held it back.
          std::this_thread::sleep_for(1500ms);
          auto produced =
            std::count(std::istreambuf_iterator<char>(std::ifstream{probe}.rdbuf()),
                       std::istreambuf_iterator<char>(), '\n');
          // Bounded: host queue (32) + the worker's queue (100) + HTTP/2 windows,
          // far below the 600 chunks (39 MB) the tool would produce unthrottled.
          CHECK(produced < 600);
        }
        return true;
      });
    CHECK_OK(err);
    CHECK(seen >= 600);
    ::unlink(probe.c_str());
    stop_and_check(**rt);
  }

  TEST_CASE("an error after two chunks arrives after them, as tool_error") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    int seen = 0;
    auto err =
      (*rt)->execute_stream("stream_fail", {{"after", 2}}, [&](const json&, bool) {
        ++seen;
        return true;
      });
    CHECK(seen == 2);
    REQUIRE(err);
    CHECK_MSG(is_error(err, errc::tool_error), explain(err));
    auto py = snakepit::python_error_of(err);
    REQUIRE(py);
    CHECK(py->type == "RuntimeError");
    stop_and_check(**rt);
  }

  TEST_CASE("a stream whose deadline passes ends with timeout") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    snakepit::execute_options opts;
    opts.timeout = 300ms;
    int seen = 0;
    auto err = (*rt)->execute_stream(
      "stream_progress", {{"steps", 100}, {"delay_ms", 50}},
      [&](const json&, bool) {
        ++seen;
        return true;
      },
      opts);
    REQUIRE(err);
    CHECK_MSG(is_error(err, errc::timeout), explain(err));
    CHECK(seen < 100);
    auto next = (*rt)->execute("ping");
    CHECK(next);
    stop_and_check(**rt);
  }

  TEST_CASE("a host actor receives stream chunks and the end as messages") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    {
      caf::scoped_actor self{(*rt)->system()};
      snakepit::execute_request req;
      req.command = "stream_progress";
      req.args = {{"steps", 4}};
      snakepit::actors::stream_to_sender(
        self.ptr(), snakepit::actors::pool_handle((*rt)->pool()), req);
      int chunks = 0;
      bool ended = false;
      while (!ended) {
        bool got = false;
        self->receive(
          [&](chunk_atom, const json&, bool) {
            ++chunks;
            got = true;
          },
          [&](end_atom, const caf::error& err) {
            CHECK_FALSE(err);
            ended = true;
            got = true;
          },
          caf::after(10s) >> [] {});
        if (!got)
          break;
      }
      CHECK(ended);
      CHECK(chunks >= 4);
    }
    stop_and_check(**rt);
  }

  namespace {

  /// Skips chunks until the end of a windowed stream; its error, or `internal` when
  /// no end arrives within 10 s.
  caf::error end_of_stream(caf::scoped_actor& self) {
    caf::error out = caf::make_error(errc::internal, "no end of stream");
    for (bool ended = false; !ended;)
      self->receive([&](chunk_atom, uint64_t, const json&, bool) {},
                    [&](end_atom, uint64_t, const caf::error& err) {
                      out = err;
                      ended = true;
                    },
                    caf::after(10s) >> [&] { ended = true; });
    return out;
  }

  size_t lines_in(const std::string& path) {
    auto text = read_file(path);
    return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
  }

  } // namespace

  TEST_CASE(
    "a windowed actor stream holds the producer back until the host acknowledges") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto probe = temp_file("window");
    {
      caf::scoped_actor self{(*rt)->system()};
      snakepit::execute_request req;
      req.command = "stream_record";
      req.args = {{"steps", 400}, {"path", probe}, {"size", 65536}};
      snakepit::actors::stream_to_sender(
        self.ptr(), snakepit::actors::pool_handle((*rt)->pool()), req, 4);
      // No acks: exactly the window arrives, and the producer stops far short of 400.
      size_t got = 0;
      uint64_t id = 0;
      bool more = true;
      while (more)
        self->receive(
          [&](chunk_atom, uint64_t sid, const json&, bool) {
            id = sid;
            ++got;
          },
          caf::after(1500ms) >> [&] { more = false; });
      CHECK(got == 4);
      auto produced = lines_in(probe);
      CHECK(produced < 400);
      // Acknowledge each chunk as it is handled: the rest arrives, in order, then the
      // end.
      snakepit::actors::ack_stream(self.ptr(),
                                   snakepit::actors::pool_handle((*rt)->pool()), id,
                                   static_cast<uint32_t>(got));
      bool ended = false;
      bool final_seen = false;
      while (!ended) {
        bool any = false;
        self->receive(
          [&](chunk_atom, uint64_t sid, const json& chunk, bool is_final) {
            CHECK(sid == id);
            if (!is_final)
              CHECK(chunk.value("step", 0) == static_cast<int>(got) + 1);
            final_seen = final_seen || is_final;
            ++got;
            snakepit::actors::ack_stream(
              self.ptr(), snakepit::actors::pool_handle((*rt)->pool()), id, 1);
            any = true;
          },
          [&](end_atom, uint64_t sid, const caf::error& err) {
            CHECK(sid == id);
            CHECK_OK(err);
            ended = true;
            any = true;
          },
          caf::after(10s) >> [] {});
        if (!any)
          break;
      }
      CHECK(ended);
      CHECK(final_seen);
      CHECK(got >= 400);
    }
    ::unlink(probe.c_str());
    CHECK((*rt)->execute("ping"));
    stop_and_check(**rt);
  }

  TEST_CASE("a windowed actor stream can be halted, and one never acknowledged ends at "
            "its deadline") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    {
      caf::scoped_actor self{(*rt)->system()};
      snakepit::execute_request req;
      req.command = "stream_progress";
      req.args = {{"steps", 1000}};
      snakepit::actors::stream_to_sender(
        self.ptr(), snakepit::actors::pool_handle((*rt)->pool()), req, 2);
      uint64_t id = 0;
      self->receive([&](chunk_atom, uint64_t sid, const json&, bool) { id = sid; },
                    caf::after(10s) >> [] { FAIL("no chunk"); });
      snakepit::actors::halt_stream(self.ptr(),
                                    snakepit::actors::pool_handle((*rt)->pool()), id);
      auto end_err = end_of_stream(self);
      CHECK_OK(end_err);
      // The worker is free again at once.
      CHECK((*rt)->execute("ping"));

      // Never acknowledged: the deadline ends it with timeout and frees the worker.
      req.opts.timeout = 700ms;
      auto t0 = std::chrono::steady_clock::now();
      snakepit::actors::stream_to_sender(
        self.ptr(), snakepit::actors::pool_handle((*rt)->pool()), req, 2);
      end_err = end_of_stream(self);
      CHECK_MSG(is_error(end_err, errc::timeout), explain(end_err));
      CHECK(std::chrono::steady_clock::now() - t0 < 5s);
      CHECK((*rt)->execute("ping"));
    }
    stop_and_check(**rt);
  }

} // TEST_SUITE

TEST_SUITE("integration.deadlines") {

  TEST_CASE(
    "the caller's timeout reaches Python and a long tool is cut off at the deadline") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    snakepit::execute_options opts;
    opts.timeout = 200ms;
    auto t0 = std::chrono::steady_clock::now();
    auto res = (*rt)->execute("async_sleep", {{"ms", 5000}}, opts);
    auto took = std::chrono::steady_clock::now() - t0;
    REQUIRE_FALSE(res);
    CHECK_ERROR(res, errc::timeout);
    CHECK(took < 3s); // generous: the 5 s tool did not have to finish
    auto meta = (*rt)->execute("request_metadata", json::object());
    REQUIRE_OK(meta);
    CHECK(meta->result.contains("timeout_ms"));
    CHECK(meta->result.contains("correlation_id"));
    stop_and_check(**rt);
  }

  TEST_CASE("time spent in the queue counts against the deadline, and such a request "
            "never runs") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto probe = temp_file("deadline");
    std::promise<snakepit::execute_result> busy;
    (*rt)->execute_async("sleep", {{"ms", 800}}, {}, [&](snakepit::execute_result r) {
      busy.set_value(std::move(r));
    });
    REQUIRE(eventually([&] {
      auto s = (*rt)->get_stats();
      return s && s->busy == 1;
    }));
    snakepit::execute_options opts;
    opts.timeout = 200ms;
    auto res =
      (*rt)->execute("slow_probe", {{"path", probe}, {"value", 1}, {"ms", 1}}, opts);
    REQUIRE_FALSE(res);
    CHECK_ERROR(res, errc::timeout);
    CHECK(busy.get_future().get());
    std::this_thread::sleep_for(200ms);
    CHECK(read_file(probe).empty());
    ::unlink(probe.c_str());
    stop_and_check(**rt);
  }

  TEST_CASE(
    "a correlation id is generated when absent and the caller's is passed through") {
    auto rt = snakepit::runtime::start(small_config(1));
    REQUIRE_OK(rt);
    auto generated = (*rt)->execute("request_metadata", json::object());
    REQUIRE_OK(generated);
    auto gen_id = generated->result.value("correlation_id", std::string{});
    CHECK_FALSE(gen_id.empty());
    snakepit::execute_options opts;
    opts.correlation_id = "req-42-abc";
    auto mine = (*rt)->execute("request_metadata", json::object(), opts);
    REQUIRE(mine);
    CHECK(mine->result.value("correlation_id", std::string{}) == "req-42-abc");
    auto again = (*rt)->execute("request_metadata", json::object());
    REQUIRE(again);
    CHECK(again->result.value("correlation_id", std::string{}) != gen_id);
    stop_and_check(**rt);
  }

  TEST_CASE("every error a caller gets carries the request's correlation id") {
    auto cfg = small_config(1);
    cfg.pools[0].queue.max_size = 1;
    cfg.pools[0].queue.timeout = 100ms;
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    auto& r = **rt;
    auto with_cid = [](std::string cid) {
      snakepit::execute_options o;
      o.correlation_id = std::move(cid);
      return o;
    };
    // Raised in Python, cut off by the deadline, the worker dying under it.
    auto raised = r.execute("fail", {{"message", "no"}}, with_cid("cid-raise"));
    REQUIRE_FALSE(raised);
    CHECK(snakepit::correlation_id_of(raised.error()) == "cid-raise");
    CHECK(snakepit::python_error_of(raised.error())->type == "ValueError");
    auto slow = with_cid("cid-deadline");
    slow.timeout = 200ms;
    auto late = r.execute("async_sleep", {{"ms", 3000}}, slow);
    REQUIRE_FALSE(late);
    CHECK(is_error(late.error(), errc::timeout));
    CHECK(snakepit::correlation_id_of(late.error()) == "cid-deadline");
    auto old_pid = serving_workers(r)->front().pid;
    auto crashed = r.execute("crash", {{"code", 3}}, with_cid("cid-crash"));
    REQUIRE_FALSE(crashed);
    CHECK(is_error(crashed.error(), errc::worker_crashed));
    CHECK(snakepit::correlation_id_of(crashed.error()) == "cid-crash");
    REQUIRE(eventually([&] {
      auto ws = serving_workers(r);
      return ws && ws->size() == 1 && ws->front().pid != old_pid;
    }));
    // Rejected by the pool before any worker: unknown tool, queue timeout, queue full.
    REQUIRE(r.execute("ping"));
    auto unknown = r.execute("no_such_tool", json::object(), with_cid("cid-unknown"));
    REQUIRE_FALSE(unknown);
    CHECK(snakepit::correlation_id_of(unknown.error()) == "cid-unknown");
    std::promise<snakepit::execute_result> busy, queued, rejected;
    r.execute_async("sleep", {{"ms", 500}}, {}, [&](snakepit::execute_result res) {
      busy.set_value(std::move(res));
    });
    REQUIRE(eventually([&] { return r.get_stats()->busy == 1; }));
    r.execute_async(
      "ping", json::object(), with_cid("cid-queued"),
      [&](snakepit::execute_result res) { queued.set_value(std::move(res)); });
    r.execute_async(
      "ping", json::object(), with_cid("cid-full"),
      [&](snakepit::execute_result res) { rejected.set_value(std::move(res)); });
    auto q = queued.get_future().get();
    auto f = rejected.get_future().get();
    busy.get_future().wait();
    REQUIRE_FALSE(q);
    CHECK(is_error(q.error(), errc::queue_timeout));
    CHECK(snakepit::correlation_id_of(q.error()) == "cid-queued");
    REQUIRE_FALSE(f);
    CHECK(is_error(f.error(), errc::pool_saturated));
    CHECK(snakepit::correlation_id_of(f.error()) == "cid-full");
    // A stream that fails, and an error whose id the pool generated.
    auto stream_err = r.execute_stream(
      "stream_fail", {{"after", 1}}, [](const json&, bool) { return true; },
      with_cid("cid-stream"));
    CHECK(is_error(stream_err, errc::tool_error));
    CHECK(snakepit::correlation_id_of(stream_err) == "cid-stream");
    auto anonymous = r.execute("fail");
    REQUIRE_FALSE(anonymous);
    CHECK(snakepit::correlation_id_of(anonymous.error()).rfind("default-", 0) == 0);
    stop_and_check(r);
  }

  TEST_CASE("a 50 MiB binary round trip works and an over-limit payload is rejected "
            "before sending") {
    auto cfg = small_config(1);
    auto rt = snakepit::runtime::start(cfg);
    REQUIRE_OK(rt);
    std::string blob(50u << 20, '\0');
    for (size_t i = 0; i < blob.size(); i += 4096)
      blob[i] = static_cast<char>(i / 4096);
    snakepit::execute_options opts;
    opts.binary_args = {{"blob", blob}};
    opts.timeout = 60s;
    auto res = (*rt)->execute("bytes_concat", json::object(), opts);
    REQUIRE_OK(res);
    CHECK(res->binary_result.size() == blob.size());
    CHECK(res->binary_result == blob);
    snakepit::execute_options big;
    big.binary_args = {{"blob", std::string((100u << 20) + 1, 'x')}};
    auto rejected = (*rt)->execute("bytes_echo", json::object(), big);
    REQUIRE_FALSE(rejected);
    CHECK_ERROR(rejected, errc::payload_too_large);
    auto ok = (*rt)->execute("ping");
    CHECK(ok); // the worker stays healthy
    stop_and_check(**rt);
  }

} // TEST_SUITE
