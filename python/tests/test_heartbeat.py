"""The worker's heartbeat toward the host: miss counting, dependent/independent, flags."""

import asyncio
import itertools

import pytest

from snakepit_bridge.config import parse_config
from snakepit_bridge.heartbeat import HeartbeatConfig, run_host_heartbeat

BASE = ["--adapter", "a.b.C", "--socket", "/tmp/x.sock"]


def run(cfg, ping, budget=2.0, pings=None):
    """Runs the heartbeat until it ends, or `pings` calls of `ping` were made, or
    `budget` seconds passed (then it is cancelled); returns the reasons it gave up."""
    lost = []
    made = 0

    async def counted(timeout):
        nonlocal made
        made += 1
        if pings is not None and made >= pings:
            enough.set()
        return await ping(timeout)

    async def main():
        nonlocal enough
        enough = asyncio.Event()
        task = asyncio.ensure_future(run_host_heartbeat(cfg, counted, lost.append))
        waiter = asyncio.ensure_future(enough.wait())
        await asyncio.wait({task, waiter}, timeout=budget,
                           return_when=asyncio.FIRST_COMPLETED)
        for t in (task, waiter):
            t.cancel()
        await asyncio.gather(task, waiter, return_exceptions=True)
    enough = None
    asyncio.run(main())
    return lost


def test_a_dependent_worker_gives_up_after_max_missed_failures():
    calls = []

    async def ping(timeout):
        calls.append(timeout)
        raise RuntimeError("unavailable")

    lost = run(HeartbeatConfig(interval_ms=10, timeout_ms=50, max_missed=3), ping)
    assert len(lost) == 1 and "3 heartbeats" in lost[0]
    assert len(calls) == 3
    assert calls[0] == pytest.approx(0.05)


def test_an_answer_resets_the_count():
    results = itertools.cycle([False, False, True])
    calls = []

    async def ping(timeout):
        calls.append(timeout)
        if not next(results):
            raise RuntimeError("late")

    # 12 pings: 8 misses, never 3 in a row; without the reset the 3rd miss (5th ping)
    # would end it.
    lost = run(HeartbeatConfig(interval_ms=5, timeout_ms=50, max_missed=3), ping,
               budget=30.0, pings=12)
    assert lost == []
    assert len(calls) >= 12


def test_an_independent_worker_only_logs(caplog):
    calls = []

    async def ping(timeout):
        calls.append(timeout)
        raise RuntimeError("unavailable")

    # 6 misses in a row, 3 times max_missed: a dependent worker would have given up.
    with caplog.at_level("WARNING", logger="snakepit_bridge.heartbeat"):
        lost = run(HeartbeatConfig(interval_ms=5, timeout_ms=50, max_missed=2,
                                   dependent=False), ping, budget=30.0, pings=6)
    assert lost == []
    assert len(calls) >= 6
    missed = [r.getMessage() for r in caplog.records if "heartbeat missed" in r.getMessage()]
    assert len(missed) >= 6
    assert "unavailable" in missed[0]


def test_flags_and_env_configure_it():
    cfg = parse_config(BASE)
    assert cfg.heartbeat == HeartbeatConfig()
    cfg = parse_config(BASE + ["--heartbeat-enabled", "false", "--heartbeat-interval-ms", "50",
                               "--heartbeat-timeout-ms", "70", "--heartbeat-max-missed", "4",
                               "--heartbeat-independent"])
    assert cfg.heartbeat == HeartbeatConfig(enabled=False, interval_ms=50, timeout_ms=70,
                                            max_missed=4, dependent=False)
    env = {"SNAKEPIT_HEARTBEAT_CONFIG": '{"interval_ms": 123, "max_missed_heartbeats": 5}'}
    cfg = parse_config(BASE + ["--heartbeat-max-missed", "6"], env)
    assert cfg.heartbeat.interval_ms == 123 and cfg.heartbeat.max_missed == 6
    with pytest.raises(ValueError):
        parse_config(BASE + ["--heartbeat-enabled", "maybe"])
    with pytest.raises(ValueError):
        parse_config(BASE, {"SNAKEPIT_HEARTBEAT_CONFIG": "not json"})
    with pytest.raises(ValueError):
        parse_config(BASE + ["--cancel-grace-ms", "-1"])
