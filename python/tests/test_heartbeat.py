"""The worker's heartbeat toward the host: miss counting, dependent/independent, flags."""

import asyncio
import itertools

import pytest

from snakepit_bridge.config import parse_config
from snakepit_bridge.heartbeat import HeartbeatConfig, run_host_heartbeat

BASE = ["--adapter", "a.b.C", "--socket", "/tmp/x.sock"]


def run(cfg, ping, budget=2.0):
    lost = []

    async def main():
        task = asyncio.ensure_future(run_host_heartbeat(cfg, ping, lost.append))
        try:
            await asyncio.wait_for(asyncio.shield(task), budget)
        except asyncio.TimeoutError:
            task.cancel()
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

    async def ping(timeout):
        if not next(results):
            raise RuntimeError("late")

    lost = run(HeartbeatConfig(interval_ms=5, timeout_ms=50, max_missed=3), ping, 0.5)
    assert lost == []


def test_an_independent_worker_only_logs():
    async def ping(timeout):
        raise RuntimeError("unavailable")

    lost = run(HeartbeatConfig(interval_ms=5, timeout_ms=50, max_missed=2, dependent=False),
               ping, 0.3)
    assert lost == []


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
