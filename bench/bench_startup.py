"""How long a command takes to start, beside the floor of importing Typer alone (issue #24).

Every command pays for its imports before it does anything; `--help` should pay for little more
than Typer. Runs each command N times in turn (interleaved, so a busy moment hits all alike) and
prints the median wall time of each and its ratio to `python -c "import typer"`.

    .venv/bin/python bench/bench_startup.py            # 11 rounds
    .venv/bin/python bench/bench_startup.py --rounds 21
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "posts").mkdir()
        (home / ".env").write_text("NEWSLETTER_FROM=Bench <bench@example.org>\n")
        newsletter = str(BIN / "newsletter")
        for i in range(20):
            subprocess.run(
                [newsletter, "subscribers", "add", f"reader{i}@example.org"],
                cwd=home,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        cases = {
            'python -c "import typer"': [sys.executable, "-c", "import typer"],
            "newsletter --help": [newsletter, "--help"],
            "newsletter send --help": [newsletter, "send", "--help"],
            "newsletter subscribers list (20 readers)": [newsletter, "subscribers", "list"],
            "newsletter log": [newsletter, "log"],
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, command in cases.items():
                times[name].append(timed(command, home))
    floor = statistics.median(times['python -c "import typer"'])
    print(f"{rounds} rounds, load average {os.getloadavg()[0]:.1f}")
    print(f"{'command':<44} {'median ms':>10} {'ratio':>6}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<44} {median * 1000:>10.0f} {median / floor:>6.2f}")


if __name__ == "__main__":
    main()
