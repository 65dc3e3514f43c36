"""What an attack on the released code found (issue #15), one section per finding.

Real parts throughout: subprocess sends, a real SMTP server on loopback, real uvicorn, a real
tmpfs that fills up, real file modes under the usual umask.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlite_utils import Database
from typer.testing import CliRunner

from newsletter import db as store
from newsletter.config import load_settings
from newsletter.dkim import generate_key
from newsletter.files import make_private_dir, open_private
from newsletter.keys import reader_tokens
from newsletter.posts import find_post
from newsletter.sender import send_post
from newsletter.web import ClientLimiter

from .conftest import Cli, LiveServer, SmtpSink, add_readers, free_port, wait_for, write_env
from .test_web import browser, subscribe

SLUG = "weekly-notes"


def write_post(project: Path, title: str = "Weekly notes", slug: str = SLUG) -> None:
    """A post of the test's own (never the author's), in a posts folder of its own.

    `title` goes into double-quoted YAML as written, so escapes such as \\v reach the title.
    """
    posts = project / "hardening-posts"
    posts.mkdir(exist_ok=True)
    (posts / f"{slug}.md").write_text(
        f'---\ntitle: "{title}"\ndate: 2024-05-01\nslug: {slug}\n---\n\nHello, readers.\n',
        encoding="utf-8",
    )
    write_env(project, POSTS_DIR="hardening-posts")


def newsletter_process(project: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    environ.update({f"NEWSLETTER_{k}": v for k, v in env.items()})
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "-C", str(project), *args],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


# --- 1. two sends by two names of one database ------------------------------------------------


@pytest.mark.parametrize("spelling", ["NEWSLETTER_DB is a symlink", "-C names another folder"])
def test_a_send_is_locked_out_whatever_name_reaches_the_database(
    smtp_project: Path, smtp_sink: SmtpSink, tmp_path: Path, monkeypatch, spelling: str
) -> None:
    write_post(smtp_project)
    write_env(smtp_project, SMTP_RATE=100, SMTP_CONNECTIONS=1)  # slow enough to still run
    database = store.open_db(smtp_project / "newsletter.db")
    readers = add_readers(database, 150)
    database.close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = elsewhere / "same.db"
    link.symlink_to(smtp_project / "newsletter.db")
    if spelling == "NEWSLETTER_DB is a symlink":
        directory = smtp_project
        monkeypatch.setenv("NEWSLETTER_DB", str(link))
    else:  # a second folder set up for the same list, named with a detour
        shutil.copy(smtp_project / ".env", elsewhere / ".env")
        write_env(
            elsewhere,
            DB="same.db",
            POSTS_DIR=smtp_project / "hardening-posts",
            TEMPLATES_DIR=smtp_project / "templates",
        )
        directory = Path(f"{tmp_path}/elsewhere/../elsewhere")

    first = newsletter_process(smtp_project, "send", "--yes")
    deadline = time.monotonic() + 30
    while not smtp_sink.received:
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.01)
    second = Cli(directory, CliRunner())("send", "--yes", ok=False)
    assert first.poll() is None, "the first send should still be running"
    assert second.stderr.endswith(
        "Error: another `newsletter send` is running on this database; wait for it to finish\n"
    )
    assert second.exit_code == 1
    first.communicate(timeout=60)
    assert first.returncode == 0
    assert smtp_sink.per_recipient() == Counter({r: 1 for r in readers})


# --- 2. owner-only files ------------------------------------------------------------------------


def test_the_database_its_wal_and_shm_and_the_outbox_are_owner_only(
    project: Path, cli: Cli, usual_umask: None
) -> None:
    write_post(project)
    for folder in ("outbox", "outbox/new", "outbox/cur", "outbox/tmp"):
        (project / folder).mkdir(mode=0o755)  # a Maildir made by hand, open to all
    cli("subscribers", "add", "ann@example.org", "--name", "Ann")
    database = store.open_db(project / "newsletter.db")
    try:
        database.execute("UPDATE subscribers SET name = 'Ann A.'")  # -wal and -shm exist now
        files = [project / f"newsletter.db{suffix}" for suffix in ("", "-wal", "-shm")]
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    finally:
        database.close()
    cli("send", "--yes")
    outbox = project / "outbox"
    messages = list((outbox / "new").iterdir())
    assert len(messages) == 1
    assert (mode(outbox), mode(messages[0])) == (0o700, 0o600)
    assert mode(project / "newsletter.db-send.lock") == 0o600


def test_open_private_writes_owner_only_and_never_through_a_symlink(tmp_path: Path) -> None:
    """The helper for exports and .env (used by `subscribers export` and `init`)."""
    old = os.umask(0)
    try:
        with open_private(tmp_path / "new.csv") as out:
            out.write("email\n")
        existing = tmp_path / "old.csv"
        existing.write_text("secret")
        existing.chmod(0o644)
        with open_private(existing) as out:
            out.write("email\n")
        (tmp_path / "planted").symlink_to(tmp_path / "target")
        with pytest.raises(OSError), open_private(tmp_path / "planted"):
            pass
        make_private_dir(tmp_path / "exports" / "2024")
    finally:
        os.umask(old)
    assert (mode(tmp_path / "new.csv"), mode(existing)) == (0o600, 0o600)
    assert existing.read_text() == "email\n"
    assert not (tmp_path / "target").exists()
    assert (mode(tmp_path / "exports"), mode(tmp_path / "exports" / "2024")) == (0o700, 0o700)


def test_doctor_warns_when_others_can_read_the_database_env_or_key(
    project: Path, cli: Cli, usual_umask: None
) -> None:
    generate_key(project / "dkim.key", "news", "example.org")
    write_env(project, DKIM_KEY_FILE="dkim.key", DKIM_SELECTOR="news", DKIM_DOMAIN="example.org")
    cli("subscribers", "add", "ann@example.org")
    shared = [project / "newsletter.db", project / ".env", project / "dkim.key"]
    for path in shared:
        path.chmod(0o644)

    def permissions_line() -> str:
        out = cli("doctor", ok=False).stdout
        return next(line for line in out.splitlines() if line[9:].startswith("Permissions"))

    line = permissions_line()
    assert line.startswith("warning  Permissions")
    assert f"other users can read {' '.join(map(str, shared))}: run `chmod 600 " in line
    for path in shared:
        path.chmod(0o600)
    assert permissions_line().startswith("ok       Permissions")


# --- 4. an erasure while the reader's delivery is being retried ---------------------------------


def test_an_erasure_during_a_send_leaves_the_address_nowhere(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    write_post(smtp_project)
    write_env(
        smtp_project,
        SMTP_RETRY_DELAY="0.5",
        SMTP_MAX_ATTEMPTS=3,
        MAX_CONSECUTIVE_FAILURES=1,
        SMTP_CONNECTIONS=1,
    )
    cli("subscribers", "add", "ann@example.org")
    smtp_sink.reject["ann@example.org"] = "451 4.2.1 <ann@example.org>: mailbox busy, try later"
    tried = threading.Event()
    refuse = smtp_sink.handle_RCPT

    async def handle_RCPT(server, session, envelope, address, rcpt_options):
        tried.set()
        return await refuse(server, session, envelope, address, rcpt_options)

    smtp_sink.handle_RCPT = handle_RCPT  # type: ignore[method-assign]
    settings = load_settings(smtp_project, environ={})
    sending = threading.Thread(target=send_post, args=(settings, find_post(settings.posts_dir)))
    sending.start()
    assert tried.wait(10), "the send did not reach the server"
    cli("subscribers", "delete", "ann@example.org")  # between two tries
    sending.join(30)
    assert not sending.is_alive()

    database = store.open_db(smtp_project / "newsletter.db")
    try:
        (delivery,) = store.iter_deliveries(database, SLUG)
        run = store.last_send(database, SLUG)
        kept = database.execute(
            "SELECT group_concat(coalesce(last_reply, '') || coalesce(email, '')) FROM deliveries"
        ).fetchone()[0] + (run["note"] or "")
    finally:
        database.close()
    assert delivery.attempts == 3  # the retries went on after the erasure
    assert "ann@example.org" not in kept.lower(), kept
    assert delivery.last_reply == "451 4.2.1 <(erased)>: mailbox busy, try later"
    assert run["note"].startswith("1 deliveries in a row failed (last: (erased): 451 4.2.1")
    assert delivery.status == "skipped"  # not left due, for a reader who is no more


def test_a_run_note_keeps_addresses_when_nobody_was_erased(db: Database) -> None:
    """The sender's address or SMTP login in a note is not a reader's: it stays."""
    send_id = store.start_send(db, SLUG, "real")
    note = "the SMTP server 127.0.0.1:25 refused the login for jane@example.org: 535 5.7.8"
    store.finish_send(
        db, send_id, status="stopped", sent=0, failed=0, bounced=0, skipped=0, note=note
    )
    assert store.last_send(db, SLUG)["note"] == note


# --- 5. control characters in header values -----------------------------------------------------

CONTROLS = {
    "VT": ("\\v", "U+000B"),
    "FF": ("\\f", "U+000C"),
    "FS": ("\\x1c", "U+001C"),
    "LS": ("\\L", "U+2028"),
    "NEL": ("\\N", "U+0085"),
    "NUL": ("\\0", "U+0000"),
    "ESC": ("\\e", "U+001B"),
    "DEL": ("\\x7f", "U+007F"),
}


@pytest.mark.parametrize("control", CONTROLS.values(), ids=CONTROLS.keys())
def test_a_control_character_in_a_post_title_is_one_line_naming_the_field(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli, control: tuple[str, str]
) -> None:
    escape, code = control
    write_post(smtp_project, title=f"Weekly{escape}notes", slug="bad-title")
    cli("subscribers", "add", "ann@example.org")
    result = cli("send", "--yes", ok=False)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: the title of the post 'bad-title' ")
    assert f"holds {code}" in result.stderr and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output
    assert smtp_sink.received == []


@pytest.mark.parametrize("character", ["\u2028", "\x85", "\x1b", "\x7f"])
def test_a_control_character_in_newsletter_title_is_one_line(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli, monkeypatch, character: str
) -> None:
    write_post(smtp_project)
    cli("subscribers", "add", "ann@example.org")
    monkeypatch.setenv("NEWSLETTER_TITLE", f"Notes{character}from Leeds")
    result = cli("send", "--yes", ok=False)
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: NEWSLETTER_TITLE must be one line without control characters\n"
    )
    assert smtp_sink.received == []


def test_a_stored_name_with_a_line_separator_is_mended_in_to(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    write_post(smtp_project)
    database = store.open_db(smtp_project / "newsletter.db")
    database.execute(  # written by other means than the checked entry points
        "INSERT INTO subscribers (email, name, status, source, created_at, status_changed_at)"
        " VALUES ('eve@example.org', ?, 'active', 'cli', '2020', '2020')",
        ["Eve\u2028Bcc\x85x\x1bz"],
    )
    database.close()
    cli("send", "--yes")
    (received,) = smtp_sink.received
    assert str(received.message["To"]) == "Eve Bcc x z <eve@example.org>"


# --- 6. one-line errors: a full or read-only disk, a template not in UTF-8 ----------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MB tmpfs (mounting needs root; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """Take all the free space of `disk` but `leave` bytes."""
    info = os.statvfs(disk)
    filler = disk / "filler"
    with filler.open("wb") as out:
        out.write(b"\0" * max(info.f_bavail * info.f_frsize - leave, 0))
    return filler


FULL = (
    "Error: the database: database or disk is full; free some space and run the command again"
    " (what was done before is kept)\n"
)


def test_an_import_onto_a_full_disk_is_one_line_and_changes_nothing(
    project: Path, cli: Cli, small_disk: Path, tmp_path: Path
) -> None:
    write_env(project, DB=small_disk / "newsletter.db")
    cli("subscribers", "add", "ann@example.org")
    big = tmp_path / "big.csv"
    big.write_text(
        "email,name\n" + "".join(f"reader{i}@example.org,Reader {i}\n" for i in range(60_000))
    )
    result = cli("subscribers", "import", str(big), ok=False)
    assert (result.exit_code, result.stderr) == (1, FULL)
    assert "Traceback" not in result.output
    assert cli("subscribers", "list").stdout.endswith("\n1 reader\n")


def test_a_full_disk_during_a_send_is_one_line_and_the_next_send_finishes(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli, small_disk: Path
) -> None:
    write_post(smtp_project)
    write_env(smtp_project, DB=small_disk / "newsletter.db", SMTP_CONNECTIONS=1)
    database = store.open_db(small_disk / "newsletter.db")
    readers = add_readers(database, 300)
    database.close()
    filler = fill(small_disk, leave=256 * 1024)  # room to queue, not to log every delivery

    result = cli("send", "--yes", ok=False)
    assert (result.exit_code, result.stderr) == (1, FULL)
    assert 0 < len(smtp_sink.received) < len(readers)

    filler.unlink()
    again = cli("send", "--yes")
    assert again.stdout.splitlines()[-1].startswith("Sent ")
    counts = smtp_sink.per_recipient()
    assert set(counts) == set(readers)
    assert sum(counts.values()) - len(readers) <= 1  # the one in flight when the disk filled
    database = store.open_db(small_disk / "newsletter.db")
    runs = [row[0] for row in database.execute("SELECT status FROM sends ORDER BY id")]
    database.close()
    assert runs[-1] == "finished" and "running" not in runs


@pytest.mark.parametrize("command", [("subscribers", "add", "bob@example.org"), ("send", "--yes")])
def test_a_read_only_database_is_one_line(
    project: Path, cli: Cli, small_disk: Path, command: tuple[str, ...]
) -> None:
    write_post(project)
    write_env(project, DB=small_disk / "newsletter.db")
    cli("subscribers", "add", "ann@example.org")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = cli(*command, ok=False)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "the database file and its folder must be writable by this user" in result.stderr
    assert "Traceback" not in result.output


def test_a_template_that_is_not_utf8_is_one_line(project: Path, cli: Cli) -> None:
    write_post(project)
    cli("subscribers", "add", "ann@example.org")
    (project / "templates" / "email.txt").write_bytes(
        "Caf\u00e9 {{ post.title }}\n".encode("latin-1")
    )
    result = cli("send", "--yes", ok=False)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: template email.txt in {project / 'templates'} is not UTF-8 text (byte 3); "
        "save it as UTF-8\n"
    )


def test_a_dotenv_that_is_not_utf8_is_one_line(project: Path, cli: Cli) -> None:
    (project / ".env").write_bytes("NEWSLETTER_TITLE=Caf\u00e9\n".encode("latin-1"))
    result = cli("subscribers", "list", ok=False)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {project / '.env'} is not UTF-8 text (byte 20); save it as UTF-8\n"
    )


# --- 7. a stranger's name -----------------------------------------------------------------------


def test_the_name_comes_from_the_newest_request_and_only_once_confirmed(
    start_server: Callable[..., LiveServer], smtp_sink: SmtpSink, db: Database, cli: Cli
) -> None:
    server = start_server()
    with browser(server, "203.0.113.66") as stranger:
        subscribe(stranger, "ann@example.org", "Visit spam.example for cheap pills")
    wait_for(lambda: smtp_sink.received)
    (confirmation,) = smtp_sink.received
    assert str(confirmation.message["To"]) == "ann@example.org"  # no unconfirmed name
    pending = store.get_subscriber(db, "ann@example.org")
    assert pending is not None and pending.name == ""
    with browser(server, "198.51.100.7") as owner:
        subscribe(owner, "ann@example.org", "Ann Archer")  # too soon for a second email
    server.stop()  # once every request is dealt with
    assert len(smtp_sink.received) == 1

    text = confirmation.message.get_body(("plain",)).get_content()
    link = re.search(r"/confirm/\S+", text)
    assert link, text
    again = start_server()
    assert httpx.post(f"{again.url}{link.group(0)}").status_code == 200
    ann = store.get_subscriber(db, "ann@example.org")
    assert ann is not None and (ann.status, ann.name) == ("active", "Ann Archer")


def test_names_are_capped_at_100_characters(cli: Cli) -> None:
    cli("subscribers", "add", "ann@example.org", "--name", "A" * 100)
    result = cli("subscribers", "add", "bob@example.org", "--name", "B" * 101, ok=False)
    assert result.stderr == "Error: a name may be at most 100 characters long\n"


# --- 8. the subscribe limiter costs the same however many clients it holds ----------------------


class Moment(float):
    """A clock reading that counts every sum and comparison made with it."""

    operations = 0

    def _count(name: str):
        def method(self, other):
            Moment.operations += 1
            return getattr(float(self), name)(float(other))

        return method

    for _name in ("__sub__", "__rsub__", "__lt__", "__le__", "__gt__", "__ge__", "__add__"):
        locals()[_name] = _count(_name)
    del _name


def operations_per_request(clients: int, window_requests: int = 200) -> float:
    now = [0.0]
    limiter = ClientLimiter(limit=5, clock=lambda: Moment(now[0]))
    for n in range(clients):
        now[0] += 0.001
        limiter.allow(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    Moment.operations = 0
    for n in range(window_requests):
        now[0] += 0.001
        limiter.allow(f"172.16.{n // 256}.{n % 256}")
    return Moment.operations / window_requests


def test_the_subscribe_limiter_does_constant_work_per_request() -> None:
    few, many = operations_per_request(1_000), operations_per_request(10_500)
    assert many <= few + 2, (few, many)
    assert many < 10


def test_the_limiter_still_forgets_clients_after_the_hour_and_stays_bounded() -> None:
    now = [0.0]
    limiter = ClientLimiter(limit=1, clock=lambda: now[0], max_clients=100)
    assert limiter.allow("192.0.2.1") and not limiter.allow("192.0.2.1")
    for n in range(500):
        limiter.allow(f"10.0.{n // 256}.{n % 256}")
    assert len(limiter) == 100
    now[0] = 3601.0
    assert limiter.allow("192.0.2.1")
    assert len(limiter) == 1


def test_forgetting_expired_requests_is_an_index_range_not_a_scan(db: Database) -> None:
    """Run at every subscribe request: its cost must not grow with a flood of pending rows."""
    plan = db.execute(
        "EXPLAIN QUERY PLAN DELETE FROM subscribers WHERE status = 'pending' AND source = 'web'"
        " AND status_changed_at < ?",
        ["2020-01-01"],
    ).fetchall()
    assert "(status=? AND status_changed_at<?)" in plan[0][3], plan


# --- 9. the confirmation emails: one queue, off the request path -------------------------------


def test_confirmation_emails_go_out_one_at_a_time_from_a_queue_off_the_request_path(
    live_server: LiveServer, smtp_sink: SmtpSink
) -> None:
    """The mail server holds the first confirmation email. Meanwhile more requests, for new
    and known addresses, are answered at once, and their emails wait in the queue: the work
    behind one answer neither delays another nor runs beside it, whatever the address."""
    release = threading.Event()
    in_progress: list[str] = []
    most = [0]
    take = smtp_sink.handle_DATA

    async def handle_DATA(server, session, envelope):
        in_progress.append(envelope.rcpt_tos[0])
        most[0] = max(most[0], len(in_progress))
        while not release.is_set():
            await asyncio.sleep(0.01)
        in_progress.remove(envelope.rcpt_tos[0])
        return await take(server, session, envelope)

    smtp_sink.handle_DATA = handle_DATA  # type: ignore[method-assign]
    addresses = ["first@example.org", "second@example.org", "third@example.org"]
    try:
        with browser(live_server) as client:
            for address in [*addresses, "first@example.org"]:
                assert subscribe(client, address).status_code == 200
            wait_for(lambda: in_progress)
            time.sleep(0.3)  # time for any other email to reach the server beside it
            assert in_progress == ["first@example.org"] and smtp_sink.received == []
    finally:
        release.set()
    live_server.stop()
    assert most[0] == 1
    assert smtp_sink.per_recipient() == Counter({a: 1 for a in addresses})


# --- 10. tokens stay out of the access log ------------------------------------------------------


def test_serve_keeps_tokens_out_of_the_access_log(smtp_project: Path, db: Database) -> None:
    settings = load_settings(smtp_project, environ={})
    reader = store.add_subscriber(db, "ann@example.org")
    token = reader_tokens(settings, db).unsubscribe(reader.public_id)
    port = free_port()
    server = newsletter_process(smtp_project, "serve", "--port", str(port))
    try:

        def page() -> httpx.Response | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/unsubscribe/{token}", timeout=5)
            except httpx.TransportError:
                assert server.poll() is None, server.communicate()
                return None

        assert wait_for(page, timeout=30).status_code == 200
        httpx.get(f"http://127.0.0.1:{port}/confirm/{token}?x=1", timeout=5)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        out, err = server.communicate(timeout=30)
    log = out.decode() + err.decode()
    assert '"GET /unsubscribe/[token] HTTP/1.1" 200' in log, log
    assert '"GET /confirm/[token]?x=1 HTTP/1.1" 400' in log, log
    assert token not in log


# --- 11. redirects and terminal output ----------------------------------------------------------


def test_the_slash_redirect_does_not_echo_the_host_header(live_server: LiveServer) -> None:
    answer = httpx.get(f"{live_server.url}/posts", headers={"Host": "evil.example"})
    assert answer.status_code == 307
    assert answer.headers["location"] == "/posts/"


def test_log_and_list_show_control_characters_escaped(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    write_post(smtp_project)
    cli("subscribers", "add", "ann@example.org")
    smtp_sink.reject["ann@example.org"] = "550 5.1.1 \x1b]0;owned\x07\x1b[2J gone"
    sent = cli("send", "--yes", ok=False)  # the only reader refused: the breaker stops the run
    assert sent.exit_code == 1 and "\x1b" not in sent.output and "\\x1b]0;owned" in sent.output
    database = store.open_db(smtp_project / "newsletter.db")
    database.execute("UPDATE subscribers SET name = 'Eve\x1b[31m'")
    database.close()
    log = cli("log", SLUG).stdout
    listing = cli("subscribers", "list", "--status", "all").stdout
    assert "\x1b" not in log + listing and "\x07" not in log
    assert "550 5.1.1 \\x1b]0;owned\\x07\\x1b[2J gone" in log
    assert "Eve\\x1b[31m" in listing


# --- 12. erasure is complete ------------------------------------------------------------------


def test_secure_delete_is_on_for_every_connection(db: Database) -> None:
    assert db.execute("PRAGMA secure_delete").fetchone() == (1,)


def test_an_erased_address_is_in_no_file_of_the_database(project: Path, cli: Cli) -> None:
    """While `serve` holds the database open, the erasure's old pages stay in the -wal file."""
    cli("subscribers", "add", "erase.me@example.org", "--name", "Erase Me")
    cli("subscribers", "add", "keep.me@example.org")
    serving = sqlite3.connect(project / "newsletter.db")
    serving.execute("SELECT count(*) FROM subscribers").fetchone()
    try:
        cli("subscribers", "delete", "erase.me@example.org")
        files = sorted(project.glob("newsletter.db*"))
        assert project / "newsletter.db" in files
        for path in files:
            assert b"erase.me@example.org" not in path.read_bytes(), path.name
    finally:
        serving.close()


def test_an_erasure_takes_the_persons_mail_out_of_the_outbox(project: Path, cli: Cli) -> None:
    write_post(project)
    cli("subscribers", "add", "ann@example.org", "--name", "Ann")
    cli("subscribers", "add", "bob@example.org")
    cli("send", "--yes")
    assert len(list((project / "outbox" / "new").iterdir())) == 2
    done = cli("subscribers", "delete", "ANN@example.org")
    assert done.stdout == (
        "Deleted ann@example.org and erased them from the send log and 1 messages in the outbox\n"
    )
    (left,) = (project / "outbox" / "new").iterdir()
    assert b"bob@example.org" in left.read_bytes() and b"ann@" not in left.read_bytes()


# --- 13. the author's removal is not the reader's to undo ---------------------------------------


def test_the_resubscribe_button_cannot_undo_the_authors_removal(
    live_server: LiveServer, db: Database, cli: Cli
) -> None:
    reader = store.add_subscriber(db, "troll@example.org")
    token = reader_tokens(live_server.settings, db).unsubscribe(reader.public_id)
    cli("subscribers", "remove", "troll@example.org")
    with browser(live_server) as client:
        page = client.get(f"/unsubscribe/{token}")
        back = client.post(f"/resubscribe/{token}")
        again = client.post(f"/unsubscribe/{token}")  # the reader's own click after
        back_again = client.post(f"/resubscribe/{token}")
    assert "You are unsubscribed" in page.text and "/resubscribe/" not in page.text
    assert back.status_code == 400 and "the author took this address off the list" in back.text
    assert "/resubscribe/" not in again.text and back_again.status_code == 400
    troll = store.get_subscriber(db, "troll@example.org")
    assert troll is not None and (troll.status, troll.status_reason) == ("unsubscribed", "author")


def test_the_authors_removal_after_the_readers_own_unsubscribe_still_holds(
    live_server: LiveServer, db: Database, cli: Cli
) -> None:
    reader = store.add_subscriber(db, "troll@example.org")
    token = reader_tokens(live_server.settings, db).unsubscribe(reader.public_id)
    with browser(live_server) as client:
        client.post(f"/unsubscribe/{token}")  # the reader's own: theirs to undo
        cli("subscribers", "remove", "troll@example.org")  # then the author's, for cause
        back = client.post(f"/resubscribe/{token}")
    assert back.status_code == 400 and "the author took this address off the list" in back.text
    troll = store.get_subscriber(db, "troll@example.org")
    assert troll is not None and (troll.status, troll.status_reason) == ("unsubscribed", "author")


def test_the_form_cannot_undo_the_authors_removal_either(
    live_server: LiveServer, db: Database, cli: Cli, smtp_sink: SmtpSink
) -> None:
    store.add_subscriber(db, "troll@example.org")
    cli("subscribers", "remove", "troll@example.org")
    with browser(live_server) as client:
        assert subscribe(client, "troll@example.org").status_code == 200  # the same answer
    live_server.stop()
    assert smtp_sink.received == []


def test_the_readers_own_unsubscribe_can_still_be_undone(
    live_server: LiveServer, db: Database
) -> None:
    reader = store.add_subscriber(db, "ann@example.org")
    token = reader_tokens(live_server.settings, db).unsubscribe(reader.public_id)
    with browser(live_server) as client:
        gone = client.post(f"/unsubscribe/{token}")
        assert f'action="/resubscribe/{token}"' in gone.text
        assert client.post(f"/resubscribe/{token}").status_code == 200
    back = store.get_subscriber(db, "ann@example.org")
    assert back is not None and back.status == "active"
