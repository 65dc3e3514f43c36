"""Benchmark: `newsletter send` against the mail server's ceiling, on loopback.

Run by hand, not in CI:  .venv/bin/python bench/bench_send.py [--readers 20000] [--quick]

1. starts a sink: Postfix's smtp-sink when installed (apt-get install postfix), else aiosmtpd
   in its own process;
2. measures the ceiling: pre-built copies of the same email pushed with plain smtplib over one
   reused connection;
3. measures `newsletter send` of a real post to N imported readers over 1 and several
   connections (each a separate process, as the author runs it);
4. prints messages per second, the ratio to the ceiling, CPU time per reader and peak memory,
   and the same send at 1,000 and 100,000 readers for the memory curve;
5. times importing 100,000 CSV rows, `subscribers list --status active` and `log SLUG`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SLUG = "ofsted-joint-inspections"
SINK_SCRIPT = """
import asyncio, sys
from aiosmtpd.controller import Controller
class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"
controller = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("ready", flush=True)
sys.stdin.read()
"""


@dataclass
class Measured:
    label: str
    messages: int
    seconds: float
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    wall_seconds: float = 0.0  # the whole command, interpreter start included
    output: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sink(port: int) -> tuple[subprocess.Popen[bytes], str]:
    smtp_sink = shutil.which("smtp-sink") or (
        "/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None
    )
    if smtp_sink:
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        process = subprocess.Popen([smtp_sink, *user, f"127.0.0.1:{port}", "256"])
        kind = "Postfix smtp-sink"
    else:
        process = subprocess.Popen(
            [sys.executable, "-c", SINK_SCRIPT, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert process.stdout is not None
        process.stdout.readline()
        kind = "aiosmtpd (install postfix for smtp-sink)"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, kind
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the sink did not start")


def make_project(root: Path, port: int, connections: int) -> Path:
    project = root / f"news-{connections}"
    if not project.exists():
        project.mkdir()
        shutil.copytree(REPO / "posts", project / "posts")
        shutil.copytree(REPO / "templates", project / "templates")
    (project / ".env").write_text(
        "NEWSLETTER_FROM='Jane Author <jane@example.org>'\n"
        "NEWSLETTER_TITLE='Child Protection Notes'\n"
        "NEWSLETTER_POSTAL_ADDRESS='1 High Street, Leeds'\n"
        "NEWSLETTER_SECRET_KEY=bench-key\n"
        "NEWSLETTER_SMTP_HOST=127.0.0.1\n"
        f"NEWSLETTER_SMTP_PORT={port}\n"
        "NEWSLETTER_SMTP_SECURITY=none\n"
        f"NEWSLETTER_SMTP_CONNECTIONS={connections}\n"
        "NEWSLETTER_SMTP_MESSAGES_PER_CONNECTION=100000\n"
    )
    return project


def run(project: Path, *args: str) -> Measured:
    """Run `newsletter ARGS` in its own process; wall time, CPU time and peak memory.

    For a send, `seconds` is the send's own time from its summary line (interpreter start and
    rendering excluded, as for the ceiling); `wall_seconds` is the whole command.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "-C", str(project), *args],
            env=env,
            stdout=out,
            stderr=err,
        )
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        output, errors = out.read().decode(), err.read().decode()
    if status != 0:
        raise SystemExit(f"newsletter {' '.join(args)} failed: {errors}")
    summary = re.search(r"^Sent \d+.* in ([\d.]+)s", output, re.M)
    return Measured(
        label=" ".join(args),
        messages=0,
        seconds=float(summary.group(1)) if summary else wall,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,
        wall_seconds=wall,
        output=output,
    )


def write_csv(path: Path, count: int) -> None:
    with path.open("w") as f:
        f.write("Email Address,First Name,Last Name\n")
        for i in range(count):
            f.write(f"reader{i}@example.org,Reader,Number {i}\n")


def fresh_list(project: Path, csv_file: Path) -> Measured:
    for name in ("newsletter.db", "newsletter.db-wal", "newsletter.db-shm"):
        (project / name).unlink(missing_ok=True)
    return run(project, "subscribers", "import", str(csv_file))


def sample_message(project: Path) -> bytes:
    """One real message of the post, as the sender builds it, for the ceiling run."""
    sys.path.insert(0, str(REPO))
    from newsletter.config import load_settings
    from newsletter.message import IssueMessages
    from newsletter.posts import find_post
    from newsletter.sender import prepare_issue

    settings = load_settings(project, environ={})
    issue = prepare_issue(settings, find_post(settings.posts_dir, SLUG))
    return IssueMessages(issue, settings).for_reader(1, "reader1@example.org", "Reader", "t").data


def ceiling(port: int, message: bytes, count: int) -> Measured:
    """Pre-built copies pushed with plain smtplib over one reused connection."""
    conn = smtplib.SMTP("127.0.0.1", port)
    conn.ehlo()
    started = time.perf_counter()
    for i in range(count):
        conn.sendmail("jane@example.org", [f"reader{i}@example.org"], message)
    seconds = time.perf_counter() - started
    conn.quit()
    return Measured("smtplib, pre-built, 1 connection", count, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="skip the 100,000-reader runs")
    options = parser.parse_args()
    n = options.readers

    port = free_port()
    sink, kind = start_sink(port)
    root = Path(tempfile.mkdtemp(prefix="newsletter-bench-"))
    try:
        print(f"sink: {kind} on 127.0.0.1:{port}; {os.cpu_count()} CPUs; work dir {root}")
        one = make_project(root, port, 1)
        many = make_project(root, port, options.connections)
        message = sample_message(one)
        print(f"message: {len(message):,} bytes ({SLUG})\n")

        # The ceiling is measured before and after the sends, and the higher one is used, so a
        # machine that got busier during the run cannot flatter the ratio.
        before = ceiling(port, message, n)
        rows = []
        csv_n = root / f"readers-{n}.csv"
        write_csv(csv_n, n)
        for project, label in ((one, "1 connection"), (many, f"{options.connections} connections")):
            fresh_list(project, csv_n)
            result = run(project, "send", SLUG, "--yes")
            result.label, result.messages = f"newsletter send, {label}", n
            rows.append(result)
        after = ceiling(port, message, n)
        top = max(before, after, key=lambda m: m.rate)
        top.label = f"smtplib, pre-built, 1 connection ({'before' if top is before else 'after'})"
        rows.insert(0, top)
        print(f"ceiling before the sends {before.rate:,.0f}/s, after {after.rate:,.0f}/s")

        print(
            f"{'run':<36} {'msgs':>7} {'seconds':>8} {'msgs/s':>8} {'ratio':>6}"
            f" {'wall s':>7} {'CPU us/reader':>14} {'peak MB':>8}"
        )
        for row in rows:
            cpu = f"{row.cpu_seconds / row.messages * 1e6:,.0f}" if row.cpu_seconds else "-"
            peak = f"{row.peak_rss_mb:,.0f}" if row.peak_rss_mb else "-"
            wall = f"{row.wall_seconds:.2f}" if row.wall_seconds else "-"
            print(
                f"{row.label:<36} {row.messages:>7,} {row.seconds:>8.2f} {row.rate:>8,.0f}"
                f" {row.rate / top.rate:>6.2f} {wall:>7} {cpu:>14} {peak:>8}"
            )

        print("\nmemory curve (1 connection):")
        sizes = [1_000] + ([] if options.quick else [100_000])
        peaks = {}
        for size in sizes:
            csv_size = root / f"readers-{size}.csv"
            write_csv(csv_size, size)
            imported = fresh_list(one, csv_size)
            sent = run(one, "send", SLUG, "--yes")
            peaks[size] = sent.peak_rss_mb
            print(
                f"  {size:>7,} readers: peak {sent.peak_rss_mb:,.1f} MB, "
                f"{size / sent.seconds:,.0f} msgs/s (import {imported.seconds:.2f}s)"
            )
            if size == 100_000:
                print(f"  import of 100,000 rows: {imported.seconds:.2f}s (process start included)")
                for args in (("subscribers", "list", "--status", "active"), ("log", SLUG)):
                    timed = run(one, *args)
                    print(f"  {' '.join(args)} on 100,000: {timed.seconds:.2f}s")
        if len(peaks) == 2:
            print(f"  peak memory ratio 100,000 / 1,000: {peaks[100_000] / peaks[1_000]:.2f}")
    finally:
        sink.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
