"""Many connections in one process, signing in others: exactly-once and the rate limit hold."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter import parallel
from newsletter.config import load_settings
from newsletter.posts import find_post
from newsletter.sender import send_post

from .conftest import Cli, SmtpSink, write_env
from .test_reliability import deliveries, finish_and_check_each_had_it_once, seed_readers

SLUG = "ofsted-joint-inspections"


def sign_with_dkim(project: Path, cli: Cli) -> None:
    """A new key and the settings that use it: a big signed send starts signing processes."""
    cli("dkim", "generate", "--selector", "news", "--domain", "example.org")
    write_env(project, DKIM_KEY_FILE="dkim.key", DKIM_SELECTOR="news", DKIM_DOMAIN="example.org")


@pytest.fixture
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan as on two cores (one signing process) whatever this machine has."""
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)


@pytest.mark.parametrize(
    ("connections", "due", "signed", "cores", "layout"),
    [
        (4, 20_000, True, 2, (4, 1)),  # the sender keeps a core, the other signs
        (4, 20_000, False, 2, (4, 0)),  # unsigned: threads overlap the waiting
        (1000, 20_000, True, 2, (1000, 1)),
        (1000, 1_000_000, False, 2, (1000, 0)),
        (200, 4_000, True, 4, (200, 2)),  # one signing process per 2,000 readers at most
        (200, 1_000, True, 2, (100, 0)),  # one connection per 10 readers at the most
        (4, 20_000, True, 1, (4, 0)),  # pinned to one core: the connections sign
        (7, 20_000, True, 8, (7, 7)),
        (1, 1_000_000, True, 2, (1, 1)),
    ],
)
def test_plan_sizes_connections_and_signing_processes(
    project: Path,
    connections: int,
    due: int,
    signed: bool,
    cores: int,
    layout: tuple[int, int],
) -> None:
    settings = load_settings(
        project,
        environ={
            "NEWSLETTER_SMTP_HOST": "127.0.0.1",
            "NEWSLETTER_SMTP_CONNECTIONS": str(connections),
        },
    )
    plan = parallel.plan(settings, due, signed=signed, cores=cores)
    assert (plan.connections, plan.signers) == layout


def newsletter_on_two_cores(project: Path, *args: str) -> subprocess.Popen[bytes]:
    """`newsletter ARGS` in its own process group, planning as on two cores."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    code = (
        "import newsletter.parallel as p; p.usable_cores = lambda: 2; "
        "from newsletter.cli import app; app(prog_name='newsletter')"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, "-C", str(project), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["parent", "process-group"])
def test_sigkill_at_many_connections_per_process_repeats_at_most_one_per_connection(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli, kill: str
) -> None:
    """40 connections as threads of one process, a signing process beside it: killed
    mid-send (the parent alone, as the OOM killer would, or the whole group), then run
    again: everyone has it once, except at most the one message each connection had in
    flight. The signing process does not outlive the send."""
    connections = 40
    sign_with_dkim(smtp_project, cli)
    write_env(smtp_project, SMTP_CONNECTIONS=connections)
    readers = seed_readers(smtp_project, 6000)
    settings = load_settings(smtp_project, environ={})
    assert parallel.plan(settings, len(readers), signed=True, cores=2).signers == 1

    first = newsletter_on_two_cores(smtp_project, "send", "--yes")
    wait_until(lambda: len(smtp_sink.received) >= 1500, "the send did not get going")
    assert first.poll() is None, first.communicate()
    signers = children(first.pid)
    assert signers, "no signing process"
    if kill == "parent":
        first.send_signal(signal.SIGKILL)
    else:
        os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert len(smtp_sink.received) < len(readers), "the send finished before it was killed"
    wait_until(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in signers),
        "a signing process outlived the send",
        seconds=10,
    )

    finish_and_check_each_had_it_once(
        newsletter_on_two_cores(smtp_project, "send", "--yes"), smtp_sink, readers, connections
    )
    assert Counter(d.status for d in deliveries(smtp_project).values()) == Counter(
        {"sent": len(readers)}
    )


@pytest.mark.slow
def test_a_signing_process_that_dies_stops_the_run_and_loses_nothing(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    """The signing process killed mid-send: the send stops with one line and a non-zero exit,
    every reader is either sent or still pending, and the next run mails each of the rest
    once: a clean stop repeats nobody."""
    sign_with_dkim(smtp_project, cli)
    write_env(smtp_project, SMTP_CONNECTIONS=8)
    readers = seed_readers(smtp_project, 6000)

    first = newsletter_on_two_cores(smtp_project, "send", "--yes")
    wait_until(lambda: len(smtp_sink.received) >= 1000, "the send did not get going")
    assert first.poll() is None, first.communicate()
    for pid in children(first.pid):
        os.kill(pid, signal.SIGKILL)
    out, err = first.communicate(timeout=60)
    assert first.returncode != 0
    assert "a signing process ended unexpectedly" in out.decode() + err.decode()
    assert "Traceback" not in err.decode()
    statuses = Counter(d.status for d in deliveries(smtp_project).values())
    assert set(statuses) <= {"sent", "pending"} and statuses["pending"] > 0, statuses
    assert statuses["sent"] == len(smtp_sink.received)

    second = newsletter_on_two_cores(smtp_project, "send", "--yes")
    _, err = second.communicate(timeout=180)
    assert second.returncode == 0, err.decode()
    assert smtp_sink.per_recipient() == Counter(readers), "each reader exactly once"


@pytest.mark.slow
def test_rate_limit_holds_across_all_connections(
    smtp_project: Path,
    smtp_sink: SmtpSink,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    two_cores: None,
) -> None:
    """20 connections share one NEWSLETTER_SMTP_RATE, with their messages signed by a
    signing process and by themselves: the server sees no more than the rate (judged on
    the times it took each message, with room for jitter)."""
    monkeypatch.setattr(parallel, "READERS_PER_SIGNER", 50)
    rate, count = 100, 300
    sign_with_dkim(smtp_project, cli)
    readers = seed_readers(smtp_project, count)
    settings = load_settings(
        smtp_project,
        environ={"NEWSLETTER_SMTP_CONNECTIONS": "20", "NEWSLETTER_SMTP_RATE": str(rate)},
    )
    assert parallel.plan(settings, count, signed=True).signers == 1
    report = send_post(settings, find_post(settings.posts_dir, SLUG))
    assert report.sent == count and smtp_sink.per_recipient() == Counter(readers)
    assert smtp_sink.connections >= 20  # it really went over all the connections

    times = sorted(r.at for r in smtp_sink.received)
    span = times[-1] - times[0]
    assert span >= 0.9 * (count - 1) / rate, span  # one budget for every connection
    busiest = max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))
    assert busiest <= 1.3 * rate, busiest


def test_a_thousand_connections_get_room_for_their_sockets() -> None:
    """A common soft limit of open files (1,024) would stop the 1,000th connection."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        parallel._room_for_sockets(1000)
        lifted = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert lifted == (1100 if hard == resource.RLIM_INFINITY else min(1100, hard))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
