"""`newsletter send` against a real SMTP server on loopback (aiosmtpd)."""

import email
import email.policy
import json
import mailbox
import re
from pathlib import Path

import pytest
from itsdangerous import URLSafeSerializer

from newsletter import db as store
from newsletter.config import load_settings
from newsletter.posts import find_post
from newsletter.sender import send_post

from .conftest import Cli, SmtpSink, add_readers, write_env

SLUG = "ofsted-joint-inspections"


def open_project_db(project: Path):
    return store.open_db(project / "newsletter.db")


def test_every_active_reader_gets_exactly_one_personal_message(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    cli("subscribers", "add", "ann@example.org", "--name", "Ann Åberg")
    cli("subscribers", "add", "bob@example.org")
    cli("subscribers", "add", "gone@example.org")
    cli("subscribers", "remove", "gone@example.org")
    database = open_project_db(smtp_project)
    add_readers(database, 20)
    bounced = store.add_subscriber(database, "bounced@example.org", status="bounced")
    assert bounced.status == "bounced"

    result = cli("send", "--yes")
    assert result.stdout.splitlines()[-1].startswith("Sent 22, failed 0, bounced 0, skipped 0 in ")

    counts = smtp_sink.per_recipient()
    assert set(counts) == {"ann@example.org", "bob@example.org"} | {
        f"reader{i}@example.org" for i in range(20)
    }
    assert set(counts.values()) == {1}

    key = store.stored_secret_key(database)
    signer = URLSafeSerializer(key, salt="newsletter.unsubscribe")
    urls = set()
    for received in smtp_sink.received:
        message = received.message
        (to_address,) = received.rcpt_tos
        assert received.mail_from == "jane@example.org"
        assert message["From"] == "Jane Author <jane@example.org>"
        assert message["Subject"] == find_post(smtp_project / "posts").title
        assert message["Date"]
        assert message["To"].addresses[0].addr_spec == to_address
        assert re.fullmatch(
            rf"<{SLUG}\.[0-9a-f]{{16}}\.[0-9a-f]{{12}}@example\.org>", message["Message-ID"]
        )
        assert message["List-Id"] == '"Child Protection Notes" <child-protection-notes.example.org>'
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = re.fullmatch(
            r"<(https://news\.example\.org/unsubscribe/(.+))>", message["List-Unsubscribe"]
        )
        assert url, message["List-Unsubscribe"]
        subscriber = store.get_subscriber(database, to_address)
        assert signer.loads(url.group(2)) == [subscriber.public_id, SLUG]
        assert to_address not in url.group(1)
        urls.add(url.group(1))
        assert message.get_content_type() == "multipart/alternative"
        text_part, html_part = message.get_payload()
        assert text_part.get_content_type() == "text/plain"
        assert html_part.get_content_type() == "text/html"
        assert url.group(1) in text_part.get_content()
        assert f'href="{url.group(1)}"' in html_part.get_content()
        assert b"\r\n" in received.data and b"\n" not in received.data.replace(b"\r\n", b"")
    assert len(urls) == 22  # each reader's link is their own
    ann = next(r for r in smtp_sink.received if r.rcpt_tos == ["ann@example.org"]).message
    assert str(ann["To"]) == "Ann Åberg <ann@example.org>"
    database.close()


def test_second_send_sends_nothing_and_new_readers_get_it(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    cli("subscribers", "add", "ann@example.org")
    cli("send", "--yes")
    again = cli("send", "--yes")
    assert "has already been sent to every active reader; nothing to do." in again.stdout
    assert len(smtp_sink.received) == 1
    cli("subscribers", "add", "late@example.org")
    cli("send", SLUG, "--yes")
    assert smtp_sink.per_recipient() == {"ann@example.org": 1, "late@example.org": 1}


def test_message_id_is_stable_per_post_and_reader(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    cli("subscribers", "add", "ann@example.org")
    cli("send", "--yes")
    cli("send", "--to", "ann@example.org")
    database = open_project_db(smtp_project)
    (delivery,) = [d for d in store.iter_deliveries(database, SLUG) if not d.test]
    database.close()
    first, test_copy = smtp_sink.received
    assert first.message["Message-ID"] == delivery.message_id
    assert test_copy.message["Message-ID"] != delivery.message_id


def test_dry_run_renders_and_sends_nothing(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    database = open_project_db(smtp_project)
    add_readers(database, 30)
    result = cli("send", "--dry-run")
    assert re.search(r"Dry run: 30 messages rendered \([\d.]+ MB\), nothing sent", result.stdout)
    assert smtp_sink.received == [] and smtp_sink.connections == 0
    assert list(store.iter_deliveries(database, SLUG)) == []
    database.close()


def test_test_copy_goes_to_anyone_and_does_not_count(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    cli("subscribers", "add", "ann@example.org")
    result = cli("send", "--to", "editor@example.com")
    assert "Sent a test copy of" in result.stdout
    assert smtp_sink.per_recipient() == {"editor@example.com": 1}
    assert "not sent" in cli("posts").stdout.splitlines()[0]
    log = [json.loads(line) for line in cli("log", SLUG, "--json").stdout.splitlines()]
    assert [(d["email"], d["test"], d["status"]) for d in log] == [
        ("editor@example.com", 1, "sent")
    ]
    cli("send", "--yes")
    assert smtp_sink.per_recipient() == {"editor@example.com": 1, "ann@example.org": 1}


def test_log_matches_what_the_server_received(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    database = open_project_db(smtp_project)
    add_readers(database, 12)
    smtp_sink.reject["reader3@example.org"] = "550 5.1.1 <reader3@example.org>: user unknown"
    cli("send", "--yes")
    summary = cli("log").stdout.splitlines()
    assert len(summary) == 1
    assert re.match(rf"{SLUG}\s+sent\s+11\s+failed\s+0\s+bounced\s+1\s+pending\s+0", summary[0])
    lines = [json.loads(line) for line in cli("log", SLUG, "--json").stdout.splitlines()]
    sent = {d["email"]: d["message_id"] for d in lines if d["status"] == "sent"}
    received = {r.rcpt_tos[0]: r.message["Message-ID"] for r in smtp_sink.received}
    assert sent == received
    reader3 = next(d for d in lines if d["email"] == "reader3@example.org")
    assert reader3["status"] == "bounced"
    assert reader3["last_reply"] == "550 5.1.1 <reader3@example.org>: user unknown"
    assert all(
        d["last_reply"].startswith("250 2.0.0 OK queued") for d in lines if d["status"] == "sent"
    )
    assert store.get_subscriber(database, "reader3@example.org").status == "bounced"
    table = cli("log", SLUG).stdout
    assert "reader3@example.org" in table and "bounced" in table
    runs = database.execute("SELECT kind, status, sent, bounced FROM sends").fetchall()
    assert runs == [("real", "finished", 11, 1)]
    database.close()


def test_maildir_outbox_is_the_default(project: Path, cli: Cli) -> None:
    cli("subscribers", "add", "ann@example.org", "--name", "Ann")
    cli("subscribers", "add", "bob@example.org")
    result = cli("send", "--yes")
    assert "via the outbox outbox/" in result.stdout
    box = mailbox.Maildir(project / "outbox", create=False)
    messages = [email.message_from_bytes(m.as_bytes(), policy=email.policy.default) for m in box]
    assert sorted(m["To"].addresses[0].addr_spec for m in messages) == [
        "ann@example.org",
        "bob@example.org",
    ]
    assert all(m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for m in messages)
    assert cli("send", "--yes").stdout.endswith("nothing to do.\n")
    assert len(list(box)) == 2


def test_connection_refused_is_a_clear_error_and_nothing_is_marked(project: Path, cli: Cli) -> None:
    from .conftest import free_port

    port = free_port()
    write_env(project, SMTP_HOST="127.0.0.1", SMTP_PORT=port, SMTP_SECURITY="none")
    cli("subscribers", "add", "ann@example.org")
    result = cli("send", "--yes", ok=False)
    assert result.exit_code == 1
    assert result.stderr.endswith(
        f"Error: cannot connect to the SMTP server 127.0.0.1:{port}: connection refused\n"
    )
    database = open_project_db(project)
    assert [d.status for d in store.iter_deliveries(database, SLUG)] == ["pending"]
    run = store.last_send(database, SLUG)
    assert run["status"] == "stopped" and "connection refused" in run["note"]
    database.close()


def test_login_refused_is_a_clear_error(smtp_project: Path, smtp_sink: SmtpSink, cli: Cli) -> None:
    write_env(smtp_project, SMTP_USERNAME="jane", SMTP_PASSWORD="wrong-password")
    cli("subscribers", "add", "ann@example.org")
    result = cli("send", "--yes", ok=False)
    assert result.exit_code == 1
    assert re.search(
        rf"Error: the SMTP server 127.0.0.1:{smtp_sink.port} refused the login for jane: 535 ",
        result.stderr,
    )
    assert "wrong-password" not in result.output
    assert smtp_sink.received == []


def test_login_accepted(smtp_project: Path, smtp_sink: SmtpSink, cli: Cli) -> None:
    write_env(smtp_project, SMTP_USERNAME="jane", SMTP_PASSWORD="right-password")
    cli("subscribers", "add", "ann@example.org")
    cli("send", "--yes")
    assert smtp_sink.per_recipient() == {"ann@example.org": 1}


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (
            "none",
            ["send", "--yes"],
            "Error: there are no active subscribers; add one with `newsletter subscribers add EMAIL`\n",
        ),
        (
            "reader",
            ["send", "no-such-post", "--yes"],
            "Error: no post with slug 'no-such-post'; the posts are: ",
        ),
        (
            "no-from",
            ["send", "--yes"],
            "Error: NEWSLETTER_FROM is not set: add e.g. NEWSLETTER_FROM='Jane Author <jane@example.org>' to .env\n",
        ),
        ("reader", ["send"], "Error: not sending without confirmation: run with --yes\n"),
        ("reader", ["send", "--to", "nope"], "Error: 'nope' is not a valid email address"),
    ],
)
def test_send_refuses_clearly(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli, setup: str, args: list[str], message: str
) -> None:
    if setup != "none":
        cli("subscribers", "add", "ann@example.org")
    if setup == "no-from":
        env = (smtp_project / ".env").read_text()
        (smtp_project / ".env").write_text(
            "\n".join(line for line in env.splitlines() if not line.startswith("NEWSLETTER_FROM"))
        )
    result = cli(*args, ok=False)
    assert result.exit_code == 1
    assert result.stderr.split("Warning")[0].startswith(message) or message in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert smtp_sink.received == []


def test_unsubscribed_during_the_run_is_skipped(smtp_project: Path, smtp_sink: SmtpSink) -> None:
    """A reader who leaves while a send is under way gets nothing from the rest of the run."""
    settings = load_settings(smtp_project, environ={"NEWSLETTER_SMTP_CONNECTIONS": "1"})
    database = store.open_db(settings.db_path)
    add_readers(database, 40)
    last = store.get_subscriber(database, "reader39@example.org")
    seen: list[str] = []

    def progress(outcome: str) -> None:
        seen.append(outcome)
        if len(seen) == 5:  # the web app would do this when the reader clicks
            store.set_status(database, last.id, "unsubscribed")

    report = send_post(settings, find_post(settings.posts_dir), progress=progress)
    assert (report.sent, report.skipped) == (39, 1)
    assert "reader39@example.org" not in smtp_sink.per_recipient()
    statuses = {d.email: d.status for d in store.iter_deliveries(database, SLUG)}
    assert statuses["reader39@example.org"] == "skipped"
    database.close()
