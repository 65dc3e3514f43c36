"""Many connections per process, one process per core: exactly-once and the rate limit hold."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from newsletter import parallel
from newsletter.config import load_settings
from newsletter.posts import find_post
from newsletter.sender import send_post

from .conftest import Cli, SmtpSink, write_env
from .test_reliability import _newsletter, deliveries, seed_readers

SLUG = "ofsted-joint-inspections"
CORES = len(os.sched_getaffinity(0))


def sign_with_dkim(project: Path, cli: Cli) -> None:
    """A new key and the settings that use it: a signed send spreads over processes."""
    cli("dkim", "generate", "--selector", "news", "--domain", "example.org")
    write_env(project, DKIM_KEY_FILE="dkim.key", DKIM_SELECTOR="news", DKIM_DOMAIN="example.org")


@pytest.mark.parametrize(
    ("connections", "due", "signed", "cores", "layout", "first_share"),
    [
        (4, 20_000, True, 2, (2, 4), 2),
        (4, 20_000, False, 2, (1, 4), 4),  # unsigned: threads overlap the waiting
        (1000, 20_000, True, 2, (2, 1000), 500),
        (1000, 1_000_000, False, 2, (1, 1000), 1000),
        (200, 4_000, True, 2, (2, 200), 100),
        (200, 1_000, True, 2, (1, 100), 100),  # one connection per 10 readers at the most
        (4, 20_000, True, 1, (1, 4), 4),  # pinned to one core: one process, threads
        (7, 20_000, True, 3, (3, 7), 3),
        (1, 1_000_000, True, 2, (1, 1), 1),
    ],
)
def test_plan_spreads_connections_over_processes_by_core(
    project: Path,
    connections: int,
    due: int,
    signed: bool,
    cores: int,
    layout: tuple[int, int],
    first_share: int,
) -> None:
    settings = load_settings(
        project,
        environ={
            "NEWSLETTER_SMTP_HOST": "127.0.0.1",
            "NEWSLETTER_SMTP_CONNECTIONS": str(connections),
        },
    )
    plan = parallel.plan(settings, due, signed=signed, cores=cores)
    assert (plan.processes, plan.connections) == layout
    assert plan.threads(0) == first_share
    assert sum(plan.threads(shard) for shard in range(plan.processes)) == plan.connections


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["parent", "process-group"])
def test_sigkill_at_many_connections_per_process_repeats_at_most_one_per_connection(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli, kill: str
) -> None:
    """40 connections in two processes of 20 threads (a signed send takes one process per
    core): killed mid-send (the parent alone, as the OOM killer would, or the whole group),
    then run again: everyone has it once, except at most the one message each connection
    had in flight."""
    connections = 40
    sign_with_dkim(smtp_project, cli)
    write_env(smtp_project, SMTP_CONNECTIONS=connections)
    readers = seed_readers(smtp_project, 6000)
    settings = load_settings(smtp_project, environ={})
    assert parallel.plan(settings, len(readers), signed=True).processes == min(2, CORES)

    first = _newsletter(smtp_project, "send", "--yes")
    deadline = time.monotonic() + 90
    while len(smtp_sink.received) < 1500:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the send did not get going"
        time.sleep(0.005)
    if kill == "parent":
        first.send_signal(signal.SIGKILL)
    else:
        os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert len(smtp_sink.received) < len(readers), "the send finished before it was killed"

    second = _newsletter(smtp_project, "send", "--yes")
    out, err = second.communicate(timeout=180)
    assert second.returncode == 0, err.decode()
    assert out.decode().splitlines()[-1].startswith("Sent ")

    counts = smtp_sink.per_recipient()
    assert set(counts) == set(readers), "a reader was missed"
    repeats = {r: n for r, n in counts.items() if n > 1}
    assert all(n == 2 for n in repeats.values())
    assert len(repeats) <= connections, repeats
    ids: dict[str, set[str]] = defaultdict(set)
    for received in smtp_sink.received:
        ids[received.rcpt_tos[0]].add(received.message["Message-ID"])
    assert all(len(ids[r]) == 1 for r in repeats), "a repeat must carry the same Message-ID"
    assert Counter(d.status for d in deliveries(smtp_project).values()) == Counter(
        {"sent": len(readers)}
    )


@pytest.mark.slow
def test_rate_limit_holds_across_all_connections_and_processes(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 connections in two processes share one NEWSLETTER_SMTP_RATE: the server sees no
    more than the rate (judged on the times it took each message, with room for jitter)."""
    monkeypatch.setattr(parallel, "READERS_PER_PROCESS", 50)  # two processes for 300 readers
    rate, count = 100, 300
    sign_with_dkim(smtp_project, cli)
    readers = seed_readers(smtp_project, count)
    settings = load_settings(
        smtp_project,
        environ={"NEWSLETTER_SMTP_CONNECTIONS": "20", "NEWSLETTER_SMTP_RATE": str(rate)},
    )
    assert parallel.plan(settings, count, signed=True).processes == min(2, CORES)
    report = send_post(settings, find_post(settings.posts_dir, SLUG))
    assert report.sent == count and smtp_sink.per_recipient() == Counter(readers)
    assert smtp_sink.connections >= 20  # it really went over all the connections

    times = sorted(r.at for r in smtp_sink.received)
    span = times[-1] - times[0]
    assert span >= 0.9 * (count - 1) / rate, span  # a shared budget, not one per process
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
