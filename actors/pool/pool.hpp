// The pool actor (upstream Snakepit.Pool): its typed interface, the functions
// hosts and the runtime use to talk to it (as OTP callers use
// `supervisor:start_child/2` instead of building messages), and its child spec.
// The decisions live in detail/pool_core.hpp; the actor in pool.cpp is a shell.
//
//   auto pool = actors::pool_handle(rt->pool());        // typed handle
//   actors::execute_async(pool, req, {on_reply});       // reply through a callback
//   actors::stream_to_sender(self, pool, req, 8);       // chunks as messages, window 8
//   self->request(pool, 5s, get_stats_atom::value).receive(...);
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_cast.hpp>
#include <caf/replies_to.hpp>
#include <caf/send.hpp>
#include <caf/typed_actor.hpp>

#include "actors/atoms.hpp"
#include "actors/config/config.hpp"
#include "actors/pool/stream_sink.hpp"
#include "actors/types.hpp"
#include "actors/worker/worker_env.hpp"
#include "supervision/child_spec.hpp"

namespace snakepit::actors {

/// What hosts and the runtime send a pool. Replies as given; errors are
/// `snakepit::errc` values carrying the call's correlation id.
///
/// - `execute_atom, execute_request` -> the reply, or an error.
/// - `execute_cb_atom, execute_request, callback_sink`: the reply goes to the
///   callback (facade path; may run on the gRPC thread).
/// - `stream_atom, execute_request, stream_sink_ptr`: chunks to the sink.
/// - `stream_atom, execute_request`: the sender gets `stream_chunk_atom, json,
///   bool is_final` per chunk, then `stream_end_atom, caf::error`.
/// - `stream_atom, execute_request, uint32_t window`: the same with the stream's
///   id first in every chunk and end; at most `window` unacknowledged chunks
///   (`stream_ack_atom, id, n`); `stream_halt_atom, id` stops it (a clean end follows).
/// - `await_ready_atom` -> ok once startup is over with a ready worker, else
///   start_failed; `get_stats_atom`, `list_workers_atom`; `init_status_atom, id`
///   -> worker_init_status; `recycle_atom, id` -> ok or invalid_argument;
///   `resize_atom, size_t` -> ok, invalid_argument or shutting_down; `drain_atom`
///   -> ok (new work fails with shutting_down); `python_telemetry_atom`
///   (forwarded to every worker).
using pool_actor = caf::typed_actor<
  caf::replies_to<execute_atom, execute_request>::with<execute_reply>,
  caf::reacts_to<execute_cb_atom, execute_request, callback_sink>,
  caf::reacts_to<stream_atom, execute_request, stream_sink_ptr>,
  caf::reacts_to<stream_atom, execute_request>,
  caf::reacts_to<stream_atom, execute_request, uint32_t>,
  caf::reacts_to<stream_ack_atom, uint64_t, uint32_t>,
  caf::reacts_to<stream_halt_atom, uint64_t>,
  caf::replies_to<await_ready_atom>::with<caf::ok_atom>,
  caf::replies_to<get_stats_atom>::with<pool_stats>,
  caf::replies_to<list_workers_atom>::with<std::vector<worker_info>>,
  caf::replies_to<init_status_atom, std::string>::with<worker_init_status>,
  caf::replies_to<resize_atom, size_t>::with<caf::ok_atom>,
  caf::replies_to<recycle_atom, std::string>::with<caf::ok_atom>,
  caf::replies_to<drain_atom>::with<caf::ok_atom>, caf::reacts_to<python_telemetry_atom>>;

/// The typed handle of a pool found by name (the name table holds `caf::actor`).
inline pool_actor pool_handle(const caf::actor& hdl) {
  return caf::actor_cast<pool_actor>(hdl);
}

/// Runs `req`; the reply (or error) goes to `cb.fn`, possibly on the gRPC thread.
inline void execute_async(const pool_actor& pool, execute_request req, callback_sink cb) {
  caf::anon_send(pool, execute_cb_atom::value, std::move(req), std::move(cb));
}

/// Streams `req` into `sink` (chunks on the gRPC thread, then its end).
inline void stream_to(const pool_actor& pool, execute_request req, stream_sink_ptr sink) {
  caf::anon_send(pool, stream_atom::value, std::move(req), std::move(sink));
}

/// Streams `req` to `self` as messages: `stream_chunk_atom, json, bool is_final`,
/// then `stream_end_atom, caf::error`.
template<class Self>
void stream_to_sender(Self* self, const pool_actor& pool, execute_request req) {
  self->send(pool, stream_atom::value, std::move(req));
}

/// Streams `req` to `self` with flow control: `stream_chunk_atom, uint64_t id,
/// json, bool is_final` ... `stream_end_atom, uint64_t id, caf::error`; at most
/// `window` chunks unacknowledged (see `ack_stream`).
template<class Self>
void stream_to_sender(Self* self, const pool_actor& pool, execute_request req,
                      uint32_t window) {
  self->send(pool, stream_atom::value, std::move(req), window);
}

/// `n` more chunks of windowed stream `id` were consumed.
template<class Self>
void ack_stream(Self* self, const pool_actor& pool, uint64_t id, uint32_t n) {
  self->send(pool, stream_ack_atom::value, id, n);
}

/// Stops windowed stream `id`; its end follows without an error.
template<class Self>
void halt_stream(Self* self, const pool_actor& pool, uint64_t id) {
  self->send(pool, stream_halt_atom::value, id);
}

// Requests return CAF's response handle: an actor continues with `.then(ok, err)`,
// a `caf::scoped_actor` with `.receive(ok, err)`. `self` is an actor pointer or a
// scoped_actor.

/// Runs `req` and replies with its `execute_reply` or error (`timeout` is the
/// request's own budget; the call's budget is `req.opts.timeout`).
template<class Self, class Timeout>
auto execute(Self&& self, const pool_actor& pool, execute_request req, Timeout timeout) {
  return self->request(pool, timeout, execute_atom::value, std::move(req));
}

/// Replies ok once startup is over with a ready worker, else start_failed.
template<class Self, class Timeout>
auto await_ready(Self&& self, const pool_actor& pool, Timeout timeout) {
  return self->request(pool, timeout, await_ready_atom::value);
}

/// Replies with the pool's `pool_stats`.
template<class Self, class Timeout>
auto get_stats(Self&& self, const pool_actor& pool, Timeout timeout) {
  return self->request(pool, timeout, get_stats_atom::value);
}

/// Replies with the pool's workers (`std::vector<worker_info>`, by id).
template<class Self, class Timeout>
auto list_workers(Self&& self, const pool_actor& pool, Timeout timeout) {
  return self->request(pool, timeout, list_workers_atom::value);
}

/// Replies with how worker `id`'s initialisation stands (`worker_init_status`).
template<class Self, class Timeout>
auto init_status(Self&& self, const pool_actor& pool, std::string id, Timeout timeout) {
  return self->request(pool, timeout, init_status_atom::value, std::move(id));
}

/// Sets the pool's number of workers to `n` (pool_core::resize); replies ok once
/// the change is under way (not when the workers are ready or gone).
template<class Self, class Timeout>
auto resize(Self&& self, const pool_actor& pool, size_t n, Timeout timeout) {
  return self->request(pool, timeout, resize_atom::value, n);
}

/// Recycles worker `id` now; replies ok, or invalid_argument for an unknown id.
template<class Self, class Timeout>
auto recycle_worker(Self&& self, const pool_actor& pool, std::string id,
                    Timeout timeout) {
  return self->request(pool, timeout, recycle_atom::value, std::move(id));
}

/// Enters shutdown: new and waiting calls fail with shutting_down; replies ok.
template<class Self, class Timeout>
auto drain(Self&& self, const pool_actor& pool, Timeout timeout) {
  return self->request(pool, timeout, drain_atom::value);
}

/// The session store dropped `session_id`: the pool forgets its binding.
inline void forget_session(const caf::actor& pool, std::string session_id) {
  caf::anon_send(pool, session_forget_atom::value, std::move(session_id));
}

/// Tells every worker of the pool to send the current Python telemetry settings.
inline void push_python_telemetry(const pool_actor& pool) {
  caf::anon_send(pool, python_telemetry_atom::value);
}

/// Child spec of one pool. It finds the worker supervisor under the process name
/// "worker_sup" in `env->names` and is registered as "pool:<name>" when spawned.
supervision::child_spec pool_spec(pool_config cfg, std::shared_ptr<const worker_env> env);

} // namespace snakepit::actors
