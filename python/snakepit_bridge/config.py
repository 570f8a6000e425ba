"""Worker configuration: one frozen dataclass built from the command line and the env.

The command line is the contract with the C++ host (see docs/python.md). Upstream
Snakepit flags are accepted too, so a host written for upstream can start this worker.
"""

from __future__ import annotations

import os
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from .heartbeat import HeartbeatConfig

if TYPE_CHECKING:
    import argparse

#: Message size limit for both directions (matches upstream).
MAX_MESSAGE_BYTES = 100 * 1024 * 1024

#: Environment variables the host sets to limit native thread pools. Reported by the
#: showcase ``info`` tool; never overridden by the worker.
THREAD_LIMIT_VARS = (
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OMP_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)

_TRUTHY = {"1", "true", "yes", "on"}


def truthy(value: Optional[str]) -> bool:
    """Whether an environment value means "on" (``1``, ``true``, ``yes``, ``on``)."""
    return value is not None and value.strip().lower() in _TRUTHY


@dataclass(frozen=True)
class WorkerConfig:
    """Everything the worker needs to know, fixed at startup."""

    adapter: Optional[str] = None  # "pkg.module.Class"; None only with --health-check
    socket: Optional[str] = None  # unix socket path; preferred transport
    port: Optional[int] = None  # TCP port on 127.0.0.1 when no socket (0 = ephemeral)
    ready_file: Optional[str] = None  # where the bound address is written once serving
    ready_file_from_env: bool = False  # ready_file came from SNAKEPIT_READY_FILE only
    worker_id: str = ""
    parent_fd: Optional[int] = None  # read end of the host's lifeline pipe
    run_id: Optional[str] = None
    instance_name: Optional[str] = None
    instance_token: Optional[str] = None
    elixir_address: Optional[str] = None  # host bridge server; None = no callbacks
    # SNAKEPIT_BRIDGE_TOKEN: sent with every call to the host; kept out of repr (logs)
    bridge_token: Optional[str] = field(default=None, repr=False)
    grace_period_ms: int = 2000  # in-flight RPCs get this long on SIGTERM
    max_workers: int = 16  # threads running sync tools
    cancel_grace_ms: int = 5000  # a cancelled sync tool still running after it: exit
    heartbeat: HeartbeatConfig = field(default_factory=HeartbeatConfig)  # toward the host
    health_check: bool = False
    list_tools: bool = False  # print the adapter's tools as JSON and exit
    process_group: bool = False  # SNAKEPIT_PROCESS_GROUP
    log_level: str = "warning"  # SNAKEPIT_LOG_LEVEL
    log_format: str = "text"  # SNAKEPIT_LOG_FORMAT: text | json

    @property
    def grace_period_s(self) -> float:
        return self.grace_period_ms / 1000.0

    def listen_address(self) -> str:
        """The gRPC address the server binds."""
        if self.socket:
            return f"unix:{self.socket}"
        return f"127.0.0.1:{self.port or 0}"

    def validate(self) -> None:
        """Raise ``ValueError`` with a clear message when the configuration is unusable."""
        if not self.health_check and not self.adapter:
            raise ValueError("--adapter is required (pkg.module.ClassName)")
        if self.adapter and "." not in self.adapter:
            raise ValueError(f"--adapter must be pkg.module.ClassName, got {self.adapter!r}")
        if self.health_check or self.list_tools:
            return
        if self.socket is not None:
            if not os.path.isabs(self.socket):
                raise ValueError(f"--socket must be an absolute path, got {self.socket!r}")
            # sockaddr_un.sun_path is 108 bytes including the terminating NUL.
            if len(os.fsencode(self.socket)) > 107:
                raise ValueError(f"--socket path is longer than 107 bytes: {self.socket!r}")
        elif self.port is None:
            raise ValueError("one of --socket or --port is required")
        if self.port is not None and not 0 <= self.port <= 65535:
            raise ValueError(f"--port out of range: {self.port}")
        if self.grace_period_ms < 0:
            raise ValueError("--grace-period-ms must be >= 0")
        if self.max_workers < 1:
            raise ValueError("--max-workers must be >= 1")
        if self.cancel_grace_ms < 0:
            raise ValueError("--cancel-grace-ms must be >= 0")
        if self.parent_fd is not None and self.parent_fd < 0:
            raise ValueError("--parent-fd must be >= 0")


def build_parser() -> argparse.ArgumentParser:
    # argparse is imported here: showcase adapters import this module for constants,
    # and the stdio bridge parses its two flags itself.
    import argparse

    class _Parser(argparse.ArgumentParser):
        """argparse that raises instead of printing usage and exiting."""

        def error(self, message: str) -> None:  # type: ignore[override]
            raise ValueError(message)

    p = _Parser(prog="python3 -m snakepit_bridge", add_help=True,
                description="Snakepit Python worker (gRPC BridgeService server).")
    p.add_argument("--adapter", help="adapter class, pkg.module.ClassName")
    p.add_argument("--socket", help="absolute unix socket path to serve on")
    p.add_argument("--port", type=int, help="TCP port on 127.0.0.1 when no --socket (0 = any)")
    p.add_argument("--ready-file", help="file to write the bound address to once serving")
    p.add_argument("--worker-id", help="worker id used in logs (env SNAKEPIT_WORKER_ID)")
    p.add_argument("--parent-fd", type=int,
                   help="read end of the host lifeline pipe (env SNAKEPIT_PARENT_FD)")
    p.add_argument("--snakepit-run-id")
    p.add_argument("--snakepit-instance-name")
    p.add_argument("--snakepit-instance-token")
    p.add_argument("--elixir-address", help="host bridge server address for callbacks")
    p.add_argument("--grace-period-ms", type=int, default=2000)
    p.add_argument("--max-workers", type=int, default=16)
    p.add_argument("--cancel-grace-ms", type=int, default=5000,
                   help="exit when a cancelled sync tool still runs after this (0: never)")
    p.add_argument("--health-check", action="store_true",
                   help="import the adapter and exit 0 (ok) or 1")
    p.add_argument("--list-tools", action="store_true",
                   help="print the adapter's tools as a JSON array on stdout and exit")
    # The worker's heartbeat toward the host (upstream's flags and defaults).
    p.add_argument("--heartbeat-enabled", nargs="?", const="true")
    p.add_argument("--heartbeat-interval-ms", type=int)
    p.add_argument("--heartbeat-timeout-ms", type=int)
    p.add_argument("--heartbeat-max-missed", type=int)
    p.add_argument("--heartbeat-initial-delay-ms", type=int)
    p.add_argument("--heartbeat-dependent", action="store_true")
    p.add_argument("--heartbeat-independent", action="store_true")
    p.add_argument("--thread-safety-check", action="store_true")
    return p


def _truthy_flag(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def heartbeat_config(ns: argparse.Namespace, env: Mapping[str, str]) -> HeartbeatConfig:
    """Upstream's merge: defaults, then ``SNAKEPIT_HEARTBEAT_CONFIG`` (JSON), then flags."""
    hb = HeartbeatConfig()
    raw = env.get("SNAKEPIT_HEARTBEAT_CONFIG", "").strip()
    if raw:
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"SNAKEPIT_HEARTBEAT_CONFIG is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ValueError("SNAKEPIT_HEARTBEAT_CONFIG must be a JSON object")
        hb.enabled = bool(doc.get("enabled", hb.enabled))
        hb.interval_ms = int(doc.get("interval_ms", hb.interval_ms))
        hb.timeout_ms = int(doc.get("timeout_ms", hb.timeout_ms))
        hb.max_missed = int(doc.get("max_missed_heartbeats", hb.max_missed))
        hb.initial_delay_ms = int(doc.get("initial_delay_ms", hb.initial_delay_ms))
        hb.dependent = bool(doc.get("dependent", hb.dependent))
    if ns.heartbeat_enabled is not None:
        hb.enabled = _truthy_flag(ns.heartbeat_enabled, "--heartbeat-enabled")
    if ns.heartbeat_interval_ms is not None:
        hb.interval_ms = ns.heartbeat_interval_ms
    if ns.heartbeat_timeout_ms is not None:
        hb.timeout_ms = ns.heartbeat_timeout_ms
    if ns.heartbeat_max_missed is not None:
        hb.max_missed = ns.heartbeat_max_missed
    if ns.heartbeat_initial_delay_ms is not None:
        hb.initial_delay_ms = ns.heartbeat_initial_delay_ms
    if ns.heartbeat_dependent:
        hb.dependent = True
    if ns.heartbeat_independent:
        hb.dependent = False
    if hb.interval_ms <= 0 or hb.timeout_ms <= 0:
        raise ValueError("heartbeat interval and timeout must be positive")
    if hb.max_missed < 1:
        raise ValueError("--heartbeat-max-missed must be >= 1")
    return hb


def parse_config(argv: Sequence[str], env: Mapping[str, str] = os.environ) -> WorkerConfig:
    """Build a validated ``WorkerConfig`` from *argv* (without the program name) and *env*.

    Raises ``ValueError`` on bad input.
    """
    ns = build_parser().parse_args(list(argv))

    ready_file = ns.ready_file
    ready_from_env = False
    if not ready_file and env.get("SNAKEPIT_READY_FILE"):
        ready_file = env["SNAKEPIT_READY_FILE"]
        ready_from_env = True

    parent_fd = ns.parent_fd
    if parent_fd is None and env.get("SNAKEPIT_PARENT_FD", "").strip():
        try:
            parent_fd = int(env["SNAKEPIT_PARENT_FD"])
        except ValueError:
            raise ValueError(f"SNAKEPIT_PARENT_FD is not an integer: {env['SNAKEPIT_PARENT_FD']!r}")

    elixir_address = (ns.elixir_address or env.get("SNAKEPIT_GRPC_ADDRESS")
                      or env.get("SNAKEPIT_ELIXIR_ADDRESS") or None)

    port = ns.port
    if (ns.socket is None and port is None and ns.health_check is False
            and not ns.list_tools and ready_from_env):
        port = 0  # upstream hosts pass --port 0; be lenient when they do not

    cfg = WorkerConfig(
        adapter=ns.adapter,
        socket=ns.socket,
        port=port,
        ready_file=ready_file,
        ready_file_from_env=ready_from_env,
        worker_id=ns.worker_id or env.get("SNAKEPIT_WORKER_ID", ""),
        parent_fd=parent_fd,
        run_id=ns.snakepit_run_id,
        instance_name=ns.snakepit_instance_name,
        instance_token=ns.snakepit_instance_token,
        elixir_address=elixir_address,
        bridge_token=env.get("SNAKEPIT_BRIDGE_TOKEN") or None,
        grace_period_ms=ns.grace_period_ms,
        max_workers=ns.max_workers,
        cancel_grace_ms=ns.cancel_grace_ms,
        heartbeat=heartbeat_config(ns, env),
        health_check=ns.health_check,
        list_tools=ns.list_tools,
        process_group=truthy(env.get("SNAKEPIT_PROCESS_GROUP")),
        log_level=(env.get("SNAKEPIT_LOG_LEVEL") or "warning").strip().lower(),
        log_format=(env.get("SNAKEPIT_LOG_FORMAT") or "text").strip().lower(),
    )
    cfg.validate()
    return cfg


_current: Optional[WorkerConfig] = None


def set_current(cfg: Optional[WorkerConfig]) -> None:
    """Record the running worker's configuration (done once by the server)."""
    global _current
    _current = cfg


def current() -> Optional[WorkerConfig]:
    """The running worker's configuration, or None outside a worker (e.g. in tests)."""
    return _current


def current_worker_id() -> str:
    """The worker id from the running config, else env ``SNAKEPIT_WORKER_ID``."""
    if _current is not None and _current.worker_id:
        return _current.worker_id
    return os.environ.get("SNAKEPIT_WORKER_ID", "")
