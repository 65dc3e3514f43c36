"""Under SMTP faults, crashes and concurrent runs, no reader is lost and none is mailed twice."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from newsletter import db as store
from newsletter.config import load_settings
from newsletter.posts import find_post
from newsletter.sender import send_post

from .conftest import Cli, SmtpSink, add_readers, as_from_a_terminal, write_env

SLUG = "ofsted-joint-inspections"


def run_send(project: Path, **env: str):
    settings = load_settings(
        project, environ={f"NEWSLETTER_{k.upper()}": v for k, v in env.items()}
    )
    return send_post(settings, find_post(settings.posts_dir))


def seed_readers(project: Path, count: int) -> list[str]:
    database = store.open_db(project / "newsletter.db")
    try:
        return add_readers(database, count)
    finally:
        database.close()


def deliveries(project: Path) -> dict[str, store.Delivery]:
    database = store.open_db(project / "newsletter.db")
    try:
        return {d.email: d for d in store.iter_deliveries(database, SLUG) if not d.test}
    finally:
        database.close()


def test_faulty_server_every_good_reader_gets_exactly_one(
    smtp_project: Path, smtp_sink: SmtpSink
) -> None:
    readers = seed_readers(smtp_project, 300)
    rejected_rcpt = {
        readers[i]: f"550 5.1.1 <{readers[i]}>: Recipient address rejected" for i in (7, 150)
    }
    rejected_data = {readers[200]: "554 5.7.1 Message refused"}
    smtp_sink.reject.update(rejected_rcpt)
    smtp_sink.reject_data.update(rejected_data)
    smtp_sink.tempfail_every = 7
    smtp_sink.drop_every = 11

    # About one DATA in four fails, so a message can fail all its tries: it stays failed and
    # the next run takes just those, as the author would do.
    reports = [run_send(smtp_project, SMTP_MAX_ATTEMPTS="6", MAX_CONSECUTIVE_FAILURES="50")]
    while reports[-1].failed > 1 and len(reports) < 4:  # 5.7.1 (the sender's) fails every run
        reports.append(run_send(smtp_project, SMTP_MAX_ATTEMPTS="6"))

    good = set(readers) - set(rejected_rcpt) - set(rejected_data)
    assert smtp_sink.per_recipient() == Counter({r: 1 for r in good})
    assert sum(r.sent for r in reports) == 297
    assert (reports[0].bounced, reports[-1].failed, reports[0].stopped) == (2, 1, None)
    assert smtp_sink.tempfail_count > 10 and smtp_sink.drop_count > 10
    log = deliveries(smtp_project)
    assert {e for e, d in log.items() if d.status == "bounced"} == set(rejected_rcpt)
    assert log[readers[7]].last_reply == rejected_rcpt[readers[7]]
    assert (log[readers[200]].status, log[readers[200]].last_reply) == (
        "failed",
        "554 5.7.1 Message refused",
    )
    assert max(d.attempts for d in log.values()) > 1  # the faults really forced retries
    database = store.open_db(smtp_project / "newsletter.db")
    # 5.1.1 is a hard bounce: out at once. 5.7.1 is the sender's fault: never held against
    # the reader; the delivery stays failed and every run tries it again.
    assert store.get_subscriber(database, readers[7]).status == "bounced"
    assert store.get_subscriber(database, readers[200]).status == "active"
    assert store.get_subscriber(database, readers[200]).bounces == 0
    database.close()
    # Bounced deliveries are not retried; only the one refused for the sender's reasons is.
    again = run_send(smtp_project)
    assert again.due == 1 and len(smtp_sink.received) == 297


def test_soft_bounces_put_a_reader_out_after_the_limit(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    write_env(smtp_project, BOUNCE_LIMIT=2)
    cli("subscribers", "add", "flaky@example.org")
    cli("subscribers", "add", "fine@example.org")  # one refused of one would trip the breaker
    smtp_sink.reject["flaky@example.org"] = "552 5.2.2 mailbox full"
    cli("send", "four-not-three", "--yes")
    assert cli("subscribers", "list", "--status", "bounced").stdout.endswith("0 readers\n")
    cli("send", "mandatory-reporting-in-wales", "--yes")
    assert "flaky@example.org" in cli("subscribers", "list", "--status", "bounced").stdout
    third = cli("send", "airline-pilot-test", "--yes")
    assert "to 1 of 1 active readers" in third.stdout


def test_transient_failures_stay_failed_and_a_later_send_retries_just_those(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    readers = seed_readers(smtp_project, 20)
    smtp_sink.reject[readers[3]] = "450 4.2.1 mailbox busy, try later"
    smtp_sink.reject[readers[4]] = "451 4.3.0 greylisted"
    result = cli("send", "--yes")
    assert result.stdout.splitlines()[-1].startswith("Sent 18, failed 2, bounced 0")
    assert f"  failed: {readers[3]}: 450 4.2.1 mailbox busy, try later\n" in result.stderr
    log = deliveries(smtp_project)
    assert (log[readers[3]].status, log[readers[3]].attempts) == ("failed", 4)
    assert "failed" in cli("log").stdout and " failed    2" in cli("log").stdout

    del smtp_sink.reject[readers[3]], smtp_sink.reject[readers[4]]
    before = len(smtp_sink.received)
    retry = cli("send", SLUG, "--yes")
    assert "to 2 of 20 active readers" in retry.stdout
    assert len(smtp_sink.received) == before + 2
    assert smtp_sink.per_recipient() == Counter({r: 1 for r in readers})
    assert deliveries(smtp_project)[readers[3]].status == "sent"


def test_too_many_failures_in_a_row_stop_the_run(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    write_env(smtp_project, MAX_CONSECUTIVE_FAILURES=5, SMTP_MAX_ATTEMPTS=2, SMTP_CONNECTIONS=1)
    readers = seed_readers(smtp_project, 200)
    smtp_sink.tempfail_every = 1  # the server is sick: every message 451
    result = cli("send", "--yes", ok=False)
    assert result.exit_code == 1
    assert "Error: stopped early: 5 deliveries in a row failed (last: " in result.stderr
    log = deliveries(smtp_project)
    statuses = Counter(d.status for d in log.values())
    assert statuses == Counter({"failed": 5, "pending": 195})
    run = database_last_send(smtp_project)
    assert run["status"] == "stopped"
    smtp_sink.tempfail_every = 0
    cli("send", "--yes")
    assert smtp_sink.per_recipient() == Counter({r: 1 for r in readers})


def database_last_send(project: Path) -> dict:
    database = store.open_db(project / "newsletter.db")
    try:
        return store.last_send(database, SLUG)
    finally:
        database.close()


def test_a_server_that_drops_every_connection_stops_the_run_and_loses_nothing(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    """A connection that drops on every message: retried, then failed, then stopped; nothing lost."""
    write_env(smtp_project, MAX_CONSECUTIVE_FAILURES=3, SMTP_MAX_ATTEMPTS=2, SMTP_CONNECTIONS=1)
    readers = seed_readers(smtp_project, 10)
    smtp_sink.drop_every = 1
    result = cli("send", "--yes", ok=False)
    assert "connection lost" in result.stderr and "stopped early" in result.stderr
    assert smtp_sink.received == []
    smtp_sink.drop_every = 0
    cli("send", "--yes")
    assert smtp_sink.per_recipient() == Counter({r: 1 for r in readers})


def _newsletter(project: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "-C", str(project), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal would make it
        preexec_fn=as_from_a_terminal,
    )


@pytest.mark.slow
def test_sigkill_mid_send_then_rerun_mails_each_reader_once(
    smtp_project: Path, smtp_sink: SmtpSink
) -> None:
    connections = 4
    write_env(smtp_project, SMTP_CONNECTIONS=connections)
    readers = seed_readers(smtp_project, 3000)

    first = _newsletter(smtp_project, "send", "--yes")
    deadline = time.monotonic() + 60
    while len(smtp_sink.received) < 800:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the send did not get going"
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = len(smtp_sink.received)
    assert killed_at < len(readers), "the send finished before it could be killed"

    finish_and_check_each_had_it_once(
        _newsletter(smtp_project, "send", "--yes"), smtp_sink, readers, connections
    )
    log = deliveries(smtp_project)
    assert Counter(d.status for d in log.values()) == Counter({"sent": 3000})
    database = store.open_db(smtp_project / "newsletter.db")
    runs = database.execute("SELECT status FROM sends ORDER BY id").fetchall()
    database.close()
    assert runs == [("interrupted",), ("finished",)]


def finish_and_check_each_had_it_once(
    second: subprocess.Popen[bytes], smtp_sink: SmtpSink, readers: list[str], connections: int
) -> None:
    """The send after a kill finishes; everyone has the post once, except at most the one
    message each connection had in flight, which came again with the same Message-ID."""
    out, err = second.communicate(timeout=180)
    assert second.returncode == 0, err.decode()
    assert out.decode().splitlines()[-1].startswith("Sent ")
    counts = smtp_sink.per_recipient()
    assert set(counts) == set(readers), "a reader was missed"
    repeats = {r: n for r, n in counts.items() if n > 1}
    assert all(n == 2 for n in repeats.values())
    assert len(repeats) <= connections, repeats  # at most the one in flight per connection
    ids: dict[str, set[str]] = defaultdict(set)
    for received in smtp_sink.received:
        ids[received.rcpt_tos[0]].add(received.message["Message-ID"])
    assert all(len(ids[r]) == 1 for r in repeats), "a repeat must carry the same Message-ID"


def test_a_second_send_at_the_same_time_refuses(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    write_env(smtp_project, SMTP_RATE=100)  # slow enough to still be running
    readers = seed_readers(smtp_project, 150)
    first = _newsletter(smtp_project, "send", "--yes")
    deadline = time.monotonic() + 30
    while not smtp_sink.received:
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.01)
    second = cli("send", "--yes", ok=False)
    assert first.poll() is None, "the first send should still be running"
    assert second.exit_code == 1
    assert second.stderr.endswith(
        "Error: another `newsletter send` is running on this database; wait for it to finish\n"
    )
    first.communicate(timeout=60)
    assert first.returncode == 0
    assert smtp_sink.per_recipient() == Counter({r: 1 for r in readers})


def test_header_injection_through_a_stored_name_is_neutralised(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    """Names are checked on the way in; a row written by other means still cannot add headers."""
    database = store.open_db(smtp_project / "newsletter.db")
    database.execute(
        "INSERT INTO subscribers (email, name, status, source, created_at, status_changed_at)"
        " VALUES ('eve@example.org', ?, 'active', 'cli', '2020', '2020')",
        ["Eve\r\nBcc: victim@example.org"],
    )
    database.close()
    cli("send", "--yes")
    (received,) = smtp_sink.received
    assert received.message["Bcc"] is None
    assert b"\r\nBcc:" not in received.data


def test_template_error_at_send_time_sends_and_records_nothing(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    cli("subscribers", "add", "ann@example.org")
    (smtp_project / "templates" / "email.txt").write_text("{% for x in %}\n")
    result = cli("send", "--yes", ok=False)
    assert result.exit_code == 1
    assert result.stderr.endswith(
        f"Error: {smtp_project / 'templates' / 'email.txt'}, line 1: Expected an expression, got 'end of statement block'\n"
    )
    assert smtp_sink.received == [] and deliveries(smtp_project) == {}


def test_a_server_that_stops_answering_times_out_and_is_retried(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    write_env(smtp_project, SMTP_TIMEOUT="0.3", SMTP_CONNECTIONS=2)
    readers = seed_readers(smtp_project, 12)
    smtp_sink.stall_every, smtp_sink.stall_seconds = 5, 1.0
    result = cli("send", "--yes")
    assert result.stdout.splitlines()[-1].startswith("Sent 12, failed 0")
    assert smtp_sink.per_recipient() == Counter({r: 1 for r in readers})
    assert any(d.attempts > 1 for d in deliveries(smtp_project).values())


def test_serve_and_send_share_the_database_at_the_same_time(
    start_server, smtp_project: Path, smtp_sink: SmtpSink
) -> None:
    """Readers leave through the web app while a real `newsletter send` runs: nobody sees
    'database is locked', the send finishes, and nobody who left before their turn is mailed."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from newsletter.keys import reader_tokens

    server = start_server()
    database = store.open_db(smtp_project / "newsletter.db")
    readers = add_readers(database, 1500)
    tokens = reader_tokens(server.settings, database)
    leaving = [store.get_subscriber(database, r) for r in readers[::10]]
    database.close()

    send = _newsletter(smtp_project, "send", "--yes")
    wait_for_first = time.monotonic() + 30
    while not smtp_sink.received:
        assert time.monotonic() < wait_for_first and send.poll() is None
        time.sleep(0.005)

    def one_click(subscriber: store.Subscriber) -> int:
        url = f"{server.url}/unsubscribe/{tokens.unsubscribe(subscriber.public_id)}"
        return httpx.post(url, data={"List-Unsubscribe": "One-Click"}, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(one_click, leaving))
    out, err = send.communicate(timeout=120)

    assert answers == [200] * len(leaving)
    assert send.returncode == 0, err.decode()
    assert "locked" not in err.decode() + out.decode()
    log = deliveries(smtp_project)
    counts = smtp_sink.per_recipient()
    assert set(counts.values()) == {1}
    left = {s.email for s in leaving}
    skipped = {e for e, d in log.items() if d.status == "skipped"}
    assert skipped <= left and skipped, "some readers should have left before their turn"
    assert not (skipped & set(counts)), "a reader who left before their turn was mailed"
    assert {e for e, d in log.items() if d.status == "sent"} == set(counts)
    assert len(counts) + len(skipped) == len(readers)
    database = store.open_db(smtp_project / "newsletter.db")
    assert all(store.get_subscriber(database, e).status == "unsubscribed" for e in left)
    database.close()


def test_parallel_send_stops_early_too_and_loses_nothing(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    write_env(smtp_project, MAX_CONSECUTIVE_FAILURES=8, SMTP_MAX_ATTEMPTS=1, SMTP_CONNECTIONS=4)
    readers = seed_readers(smtp_project, 800)
    smtp_sink.tempfail_every = 1
    result = cli("send", "--yes", ok=False)
    assert "Error: stopped early: 8 deliveries in a row failed" in result.stderr
    statuses = Counter(d.status for d in deliveries(smtp_project).values())
    assert 8 <= statuses["failed"] < 400, statuses  # the other processes stop soon after
    assert statuses["failed"] + statuses["pending"] == 800
    smtp_sink.tempfail_every = 0
    cli("send", "--yes")
    assert smtp_sink.per_recipient() == Counter({r: 1 for r in readers})


@pytest.mark.parametrize("connections", [1, 4])
def test_ctrl_c_stops_cleanly_and_the_next_send_finishes(
    smtp_project: Path, smtp_sink: SmtpSink, connections: int
) -> None:
    write_env(smtp_project, SMTP_CONNECTIONS=connections, SMTP_RATE=300)
    readers = seed_readers(smtp_project, 800)
    first = _newsletter(smtp_project, "send", "--yes")
    deadline = time.monotonic() + 120  # a deadline for a loaded machine, not a pace
    while len(smtp_sink.received) < 100:
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C does: the whole group
    out, err = first.communicate(timeout=120)
    assert first.returncode == 1
    assert out.decode().splitlines()[-1].startswith("Sent ")
    assert err.decode().endswith(
        "Error: stopped early: interrupted; run `newsletter send` again to finish\n"
    )
    assert "Traceback" not in err.decode()
    assert database_last_send(smtp_project)["status"] == "stopped"
    second = _newsletter(smtp_project, "send", "--yes")
    second.communicate(timeout=120)
    assert second.returncode == 0
    counts = smtp_sink.per_recipient()
    assert set(counts) == set(readers)
    assert sum(counts.values()) - len(readers) <= connections  # the ones in flight, at most


class _SilentAfterData:
    """An SMTP server that takes `answered` messages, then answers the next DATA's 354,
    reads the message and says nothing more: a Ctrl-C lands while the sender is
    mid-message, waiting on it."""

    def __init__(self, answered: int) -> None:
        self.answered = answered
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.in_message = threading.Event()
        self.quit_seen = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 silent ESMTP\r\n")
            in_data, taken = False, 0
            for line in lines:
                if in_data and taken == self.answered:  # the silent one
                    self.in_message.set()
                    if line.upper() == b"QUIT\r\n":
                        self.quit_seen.set()
                elif in_data:
                    if line == b".\r\n":
                        conn.sendall(b"250 OK\r\n")
                        in_data, taken = False, taken + 1
                elif line[:4].upper() == b"EHLO":
                    conn.sendall(b"250-silent\r\n250 PIPELINING\r\n")
                elif line[:4].upper() == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    in_data = True
                else:
                    conn.sendall(b"250 OK\r\n")


@pytest.mark.parametrize("connections", [1, 3])
def test_ctrl_c_mid_message_stops_without_waiting_on_the_server(
    project: Path, connections: int
) -> None:
    """Ctrl-C while the server holds a half-sent message (and, with 3, two connections wait
    for a greeting that never comes): the send ends in seconds, not after
    NEWSLETTER_SMTP_TIMEOUT; a QUIT written into the message would wait that long too."""
    server = _SilentAfterData(answered=25)  # past the circuit breaker's one-by-one start
    write_env(
        project,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=server.port,
        SMTP_SECURITY="none",
        SMTP_TIMEOUT=3600,
        SMTP_CONNECTIONS=connections,
    )
    readers = seed_readers(project, 30)
    send = _newsletter(project, "send", "--yes")
    assert server.in_message.wait(120), "the send never reached the message text"
    os.killpg(send.pid, signal.SIGINT)
    _, err = send.communicate(timeout=120)  # a deadline; before the fix it waits an hour
    assert send.returncode == 1
    assert err.decode().endswith(
        "Error: stopped early: interrupted; run `newsletter send` again to finish\n"
    )
    assert not server.quit_seen.is_set(), "a QUIT was written into the message"
    assert database_last_send(project)["status"] == "stopped"
    log = deliveries(project)
    statuses = Counter(log[r].status for r in readers)
    assert statuses["sent"] == 25, statuses  # the server took 25; the rest go next run
    assert statuses["pending"] + statuses["failed"] == 5, statuses
