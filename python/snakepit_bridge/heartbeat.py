"""The worker's heartbeat toward the host (upstream ``snakepit_bridge/heartbeat.py``).

The host pings each worker; this is the other direction: the worker calls the host
bridge server's ``Heartbeat`` every interval. After ``max_missed`` unanswered calls in
a row a *dependent* worker stops itself (its process group with it), so a host that is
alive but no longer answering — stopped, deadlocked — does not keep workers forever.
(A host that exits is noticed at once through the lifeline pipe.) An independent
worker only logs the misses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

log = logging.getLogger("snakepit_bridge.heartbeat")


@dataclass
class HeartbeatConfig:
    enabled: bool = True
    interval_ms: int = 2000
    timeout_ms: int = 10000
    max_missed: int = 3
    initial_delay_ms: int = 0
    dependent: bool = True


async def run_host_heartbeat(cfg: HeartbeatConfig, ping: Callable[[float], Awaitable[Any]],
                             on_lost: Callable[[str], None]) -> None:
    """Pings until cancelled, or until the host is declared lost (dependent mode)."""
    import asyncio  # here: config imports this module, and the stdio bridge never needs asyncio

    if cfg.initial_delay_ms > 0:
        await asyncio.sleep(cfg.initial_delay_ms / 1000.0)
    missed = 0
    while True:
        try:
            await ping(cfg.timeout_ms / 1000.0)
            missed = 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is a miss
            missed += 1
            log.warning("host heartbeat missed (%d of %d): %s", missed, cfg.max_missed,
                        getattr(exc, "details", lambda: exc)() if hasattr(exc, "details")
                        else exc)
            if missed >= cfg.max_missed:
                if cfg.dependent:
                    on_lost(f"the host missed {missed} heartbeats")
                    return
                missed = 0
        await asyncio.sleep(cfg.interval_ms / 1000.0)
