"""Threads with smtplib against asyncio with aiosmtplib, for many SMTP connections in one process.

How the send's connections were chosen. Both push the same pre-built message over N
connections to Postfix's smtp-sink for a fixed time; printed: messages a second, CPU time a
message and the process's peak memory (ru_maxrss). Run by hand, each case in a fresh process:

    .venv/bin/pip install aiosmtplib      # only this comparison needs it
    .venv/bin/python bench/compare_concurrency.py
"""

from __future__ import annotations

import asyncio
import os
import resource
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_send import Sink

MESSAGE = (
    b"From: jane@example.org\r\nTo: reader@example.org\r\nSubject: a test\r\n\r\n"
    + b"A line of a newsletter, as long as most lines are in one.\r\n" * 150
)
SECONDS = 12.0


def threads(port: int, connections: int) -> int:
    """smtplib, one thread a connection (as the send does)."""
    sent = [0] * connections
    until = time.monotonic() + SECONDS

    def connection(i: int) -> None:
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=60)
        while time.monotonic() < until:
            smtp.sendmail("jane@example.org", ["reader@example.org"], MESSAGE)
            sent[i] += 1
        smtp.quit()

    workers = [threading.Thread(target=connection, args=(i,)) for i in range(connections)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(sent)


def asyncio_case(port: int, connections: int) -> int:
    """aiosmtplib, one task a connection, one event loop."""
    import aiosmtplib

    async def main() -> int:
        until = time.monotonic() + SECONDS

        async def connection() -> int:
            count = 0
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
            await smtp.connect()
            while time.monotonic() < until:
                await smtp.sendmail("jane@example.org", ["reader@example.org"], MESSAGE)
                count += 1
            await smtp.quit()
            return count

        return sum(await asyncio.gather(*(connection() for _ in range(connections))))

    return asyncio.run(main())


def measure(kind: str, port: int, connections: int) -> None:
    started, cpu = time.perf_counter(), time.process_time()
    sent = (threads if kind == "threads" else asyncio_case)(port, connections)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{kind:<22} {connections:>5} {sent / seconds:>9,.0f} {cpu / sent * 1e6:>10,.0f}"
        f" {peak:>8,.1f}",
        flush=True,
    )


def main() -> None:
    if len(sys.argv) == 4:  # one case, in its own process
        measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
        return
    print(f"{'client':<22} {'conns':>5} {'msgs/s':>9} {'CPU us/msg':>10} {'peak MB':>8}")
    for wait, counts in ((1, (200, 1000)), (0, (1, 4))):
        sink = Sink(wait_seconds=wait)
        print(f"-- smtp-sink{' -w 1' if wait else ''} (loopback)")
        try:
            for connections in counts:
                for kind in ("threads", "asyncio"):
                    subprocess.run(
                        [sys.executable, __file__, kind, str(sink.port), str(connections)],
                        check=True,
                        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
                    )
        finally:
            sink.stop()


if __name__ == "__main__":
    main()
