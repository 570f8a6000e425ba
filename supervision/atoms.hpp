// Message atoms of the supervision area, declared once so every module agrees.
// They name the calls of OTP's supervisor API (which_children, start_child, ...),
// of Elixir's DynamicSupervisor and Registry, plus the supervisor's own timers.
#pragma once

#include <caf/atom.hpp>

namespace snakepit::supervision {

/// Request: list the children (`std::vector<child_info>`).
using which_children_atom = caf::atom_constant<caf::atom("which_chld")>;
/// Request: count the children (`child_counts`).
using count_children_atom = caf::atom_constant<caf::atom("count_chld")>;
/// Request: start a stopped child again by id.
using restart_child_atom = caf::atom_constant<caf::atom("restrt_chl")>;
/// Request: remove a stopped child's spec.
using delete_child_atom = caf::atom_constant<caf::atom("delete_chl")>;
/// Request: stop a child (by id, or by handle on a dynamic supervisor).
using terminate_child_atom = caf::atom_constant<caf::atom("term_child")>;
/// Request: add and start a new child.
using start_child_atom = caf::atom_constant<caf::atom("start_chld")>;

/// Start acknowledgement sent by a `start_ack`: `(ack_atom, uint64_t ticket, caf::actor)`
/// on success, `(ack_atom, uint64_t ticket, caf::error)` on failure.
using ack_atom = caf::atom_constant<caf::atom("sp_ack")>;

/// Internal timer: a child did not acknowledge its start in time.
using start_timeout_atom = caf::atom_constant<caf::atom("sp_start_t")>;
/// Internal timer: a child ignored its shutdown request; escalate to kill.
using kill_timer_atom = caf::atom_constant<caf::atom("sp_kill_t")>;
/// Internal: retry a restart that failed (OTP's try_again_restart).
using try_again_atom = caf::atom_constant<caf::atom("sp_again")>;

} // namespace snakepit::supervision
