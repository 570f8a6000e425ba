"""Throughput, startup and memory of the stdio bridge (a script, not a pytest module).

    PYTHONPATH=python /usr/bin/python3 python/tests/stdio_bench.py [--calls 20000]
        [--window 64] [--workers 1] [--tool echo] [--startup 10] [--mp]

Pipelined round trips: one driver thread keeps up to --window requests in flight per
bridge and sends a new one for each response it reads; the figure is responses per
second over all bridges. --workers N drives N bridges at once (the host's pool of 4
against multiprocessing.Pool(4)); --mp also measures Pool(4).apply_async of a no-op on
this machine for comparison. --startup N spawns N bridges one after the other and
reports spawn-to-first-pong time and the idle RSS.

Bytecode: start-up depends on the package's .pyc files existing; compile them first
(``python3 -m compileall python/snakepit_bridge``) unless PYTHONDONTWRITEBYTECODE is
unset and the tree is writable.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

PYTHON_DIR = Path(__file__).resolve().parents[1]
INTERPRETER = "/usr/bin/python3"
SHOWCASE = "snakepit_bridge.adapters.showcase.ShowcaseAdapter"
_len = struct.Struct(">I")


def spawn(adapter: str = SHOWCASE, env: Dict[str, str] = None) -> subprocess.Popen:
    full = dict(os.environ)
    full["PYTHONPATH"] = str(PYTHON_DIR)
    full.update(env or {})
    return subprocess.Popen([INTERPRETER, "-m", "snakepit_bridge.stdio", "--adapter", adapter],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=full,
                            bufsize=0)


def frame(obj: dict) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return _len.pack(len(body)) + body


def read_frame(f) -> dict:
    head = f.read(4)
    (n,) = _len.unpack(head)
    return json.loads(f.read(n))


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ms(pid: int) -> float:
    """User + system CPU time of *pid* so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def bench_startup(runs: int) -> None:
    times: List[float] = []
    rss: List[int] = []
    cpu: List[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = spawn()
        p.stdin.write(frame({"id": 1, "command": "ping", "args": {}}))
        pong = read_frame(p.stdout)
        times.append((time.perf_counter() - t0) * 1000)
        assert pong["success"], pong
        time.sleep(0.2)
        rss.append(rss_kb(p.pid))
        cpu.append(cpu_ms(p.pid))
        p.stdin.close()
        p.wait(5)
    times.sort()
    print(f"startup (spawn to first pong): min {times[0]:.1f} ms, median "
          f"{times[len(times) // 2]:.1f} ms over {runs} runs; CPU of the bridge to ready: "
          f"median {sorted(cpu)[len(cpu) // 2]:.0f} ms; idle RSS: median "
          f"{sorted(rss)[len(rss) // 2] / 1024:.1f} MiB")


def bench_throughput(calls: int, window: int, workers: int, tool: str,
                     env: Dict[str, str], args: Dict = None) -> float:
    procs = [spawn(env=env) for _ in range(workers)]
    try:
        for p in procs:  # ready (and hooks run) before timing
            p.stdin.write(frame({"id": 0, "command": "ping", "args": {}}))
            read_frame(p.stdout)
        template = json.dumps({"id": 0, "command": tool, "args": args or {},
                               "deadline_ms": 30000,
                               "timestamp": "2024-01-01T00:00:00.000Z"},
                              separators=(",", ":"))
        prefix, suffix = template.split('"id":0', 1)

        def request(i: int) -> bytes:
            body = f'{prefix}"id":{i}{suffix}'.encode()
            return _len.pack(len(body)) + body

        by_fd = {p.stdout.fileno(): p for p in procs}
        bufs = {fd: bytearray() for fd in by_fd}
        sent = {fd: 0 for fd in by_fd}
        done = 0
        failures = 0
        per = calls // workers
        next_id = 1
        cpu0 = sum(cpu_ms(p.pid) for p in procs)
        start = time.perf_counter()
        for fd, p in by_fd.items():
            n = min(window, per)
            os.write(p.stdin.fileno(), b"".join(request(next_id + k) for k in range(n)))
            next_id += n
            sent[fd] = n
        poller = select.poll()
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        target = per * workers
        while done < target:
            for fd, _ in poller.poll():
                data = os.read(fd, 1 << 20)
                if not data:
                    raise RuntimeError("a bridge closed its output")
                buf = bufs[fd]
                buf += data
                off, got = 0, 0
                while len(buf) - off >= 4:
                    (n,) = _len.unpack_from(buf, off)
                    if len(buf) - off - 4 < n:
                        break
                    if b'"success":true' not in buf[off + 4:off + 4 + n]:
                        failures += 1
                    off += 4 + n
                    got += 1
                del buf[:off]
                done += got
                more = min(got, per - sent[fd])
                if more > 0:
                    os.write(by_fd[fd].stdin.fileno(),
                             b"".join(request(next_id + k) for k in range(more)))
                    next_id += more
                    sent[fd] += more
        elapsed = time.perf_counter() - start
        cpu = sum(cpu_ms(p.pid) for p in procs) - cpu0
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(5)
    rate = done / elapsed
    print(f"{tool}: {done} calls through {workers} bridge(s), window {window}: "
          f"{rate:,.0f} calls/s ({elapsed * 1000:.0f} ms, {failures} failures; bridge CPU "
          f"{cpu * 1000 / max(done, 1):.1f} us per call)")
    return rate


def _noop() -> None:
    return None


def bench_mp(calls: int, window: int) -> float:
    import multiprocessing

    with multiprocessing.Pool(4) as pool:
        pool.apply_async(_noop).get()
        start = time.perf_counter()
        pending = []
        for _ in range(calls):
            pending.append(pool.apply_async(_noop))
            if len(pending) >= window * 4:
                pending.pop(0).get()
        for r in pending:
            r.get()
        elapsed = time.perf_counter() - start
    rate = calls / elapsed
    print(f"multiprocessing.Pool(4).apply_async(no-op): {calls} calls: {rate:,.0f} calls/s")
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--tool", default="echo")
    ap.add_argument("--args", default="{}", help="the tool's arguments (JSON)")
    ap.add_argument("--threads", type=int, default=1, help="SNAKEPIT_THREADS")
    ap.add_argument("--startup", type=int, default=0, help="measure N starts")
    ap.add_argument("--mp", action="store_true", help="also measure multiprocessing.Pool(4)")
    args = ap.parse_args()
    if args.startup:
        bench_startup(args.startup)
    bench_throughput(args.calls, args.window, args.workers, args.tool,
                     {"SNAKEPIT_THREADS": str(args.threads)}, json.loads(args.args))
    if args.mp:
        bench_mp(args.calls, args.window)


if __name__ == "__main__":
    sys.exit(main())
