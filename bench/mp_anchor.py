"""Anchor: Python's own multiprocessing.Pool(4), what a Python user would reach for.

Prints one JSON object: sequential `apply` latency percentiles (ms) and
`apply_async` throughput (calls/s) of a trivial function, like the `ping` tool.
"""
import json
import multiprocessing as mp
import sys
import time


def ping():
    return "pong"


def main():
    n_seq = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    n_async = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    with mp.Pool(4) as pool:
        for _ in range(200):  # warm-up
            pool.apply(ping)
        lat = []
        for _ in range(n_seq):
            t0 = time.perf_counter()
            pool.apply(ping)
            lat.append((time.perf_counter() - t0) * 1000.0)
        lat.sort()
        t0 = time.perf_counter()
        results = [pool.apply_async(ping) for _ in range(n_async)]
        for r in results:
            r.get()
        elapsed = time.perf_counter() - t0
    print(json.dumps({
        "apply_p50_ms": lat[len(lat) // 2],
        "apply_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "async_throughput": n_async / elapsed,
    }))


if __name__ == "__main__":
    main()
