"""Benchmark: the subscribe limiter's cost per request as the number of clients grows.

Run by hand, not in CI:  .venv/bin/python bench/bench_limiter.py

The limiter runs on the event loop for every subscribe request. The released one rebuilt its
whole table on each request past 10,000 clients (1.8 ms at 20,000, 6.2 ms at 60,000); this
prints microseconds per request at 1,000 / 20,000 / 60,000 clients and the ratio to the first,
which should stay near 1.
"""

from __future__ import annotations

import time

from newsletter.web import ClientLimiter


def per_request(clients: int, requests: int = 20_000) -> float:
    now = [0.0]
    limiter = ClientLimiter(limit=5, clock=lambda: now[0], max_clients=100_000)
    for n in range(clients):
        now[0] += 0.01
        limiter.allow(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    started = time.perf_counter()
    for n in range(requests):
        now[0] += 0.0001
        limiter.allow(f"172.16.{n // 256 % 256}.{n % 256}")
    return (time.perf_counter() - started) / requests * 1e6


def main() -> None:
    baseline = per_request(1_000)
    print(f"{'clients':>8}  {'us/request':>10}  ratio")
    for clients in (1_000, 20_000, 60_000):
        cost = baseline if clients == 1_000 else per_request(clients)
        print(f"{clients:>8,}  {cost:>10.2f}  {cost / baseline:.2f}")


if __name__ == "__main__":
    main()
