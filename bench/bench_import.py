"""Benchmark: `newsletter subscribers import` of a million-row Mailchimp export.

Run by hand, not in CI:  .venv/bin/python bench/bench_import.py [--rows 1000000]

1. writes a Mailchimp "subscribed" CSV of N rows (names, opt-in times and IPs, 50 domains);
2. measures the floor in the same run: a Python process that only reads the file with the csv
   module (no checks, no database);
3. runs `newsletter subscribers import` on it into a fresh newsletter, as the author would (its
   own process), then the same file again (everyone already there: the second-import path);
4. prints seconds, CPU seconds, peak memory (the process's maximum RSS) and the ratio to the
   floor, against the targets: at most 60 s and 150 MB for a million rows.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NEWSLETTER = Path(sys.executable).parent / "newsletter"
TARGET_SECONDS = 60.0
TARGET_MB = 150.0
HEADER = (
    "Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,"
    "CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,LAST_CHANGED,LEID,EUID,"
    "NOTES,TAGS\n"
)
FLOOR_SCRIPT = """
import csv, sys
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    print(sum(1 for _ in csv.reader(f)))
"""


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu_seconds: float
    peak_mb: float
    output: str


def measure(command: list[str], cwd: Path) -> Run:
    """Run `command` as its own process; wall time, CPU time and its peak RSS."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{output}")
    return Run(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, output.strip())


def write_export(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write(HEADER)
        for i in range(rows):
            minute, second = divmod(i % 3600, 60)
            out.write(
                f"reader{i}@example{i % 50}.org,Reader,Number {i},2,"
                f"2015-02-{i % 28 + 1:02d} 10:{minute:02d}:{second:02d},192.0.2.{i % 250},"
                f"2015-02-{i % 28 + 1:02d} 10:{minute:02d}:{second:02d},192.0.2.{i % 250},"
                f",,,,,GB,,2015-03-01 00:00:00,{i},e{i:09d},,\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        work = Path(tmp)
        export = work / "subscribed_members_export.csv"
        write_export(export, args.rows)
        size_mb = export.stat().st_size / 1e6
        (work / "news" / "posts").mkdir(parents=True)
        floor = measure([sys.executable, "-c", FLOOR_SCRIPT, str(export)], work)
        first = measure([str(NEWSLETTER), "-C", "news", "subscribers", "import", str(export)], work)
        again = measure([str(NEWSLETTER), "-C", "news", "subscribers", "import", str(export)], work)
    print(f"{args.rows:,} rows, {size_mb:.0f} MB (Mailchimp subscribed export)")
    print(f"{'run':<42} {'seconds':>8} {'CPU s':>7} {'peak MB':>8} {'x floor':>8}")
    for name, run in (
        ("floor: csv.reader only", floor),
        ("newsletter subscribers import", first),
        ("the same file again (all kept)", again),
    ):
        print(
            f"{name:<42} {run.seconds:>8.1f} {run.cpu_seconds:>7.1f} {run.peak_mb:>8.1f}"
            f" {run.seconds / floor.seconds:>8.1f}"
        )
    print(f"import said: {first.output.splitlines()[-1]}")
    scale = 1_000_000 / args.rows
    ok = first.seconds * scale <= TARGET_SECONDS and first.peak_mb <= TARGET_MB
    print(
        f"target for 1,000,000 rows: <= {TARGET_SECONDS:.0f} s and <= {TARGET_MB:.0f} MB: "
        f"{'met' if ok else 'NOT met'} (load average now {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
