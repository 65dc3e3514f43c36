"""The weekly digest: who gets it, what it carries, when `send --due` sends it, and that it is
exactly-once per reader like a post, across a kill."""

from __future__ import annotations

import datetime as dt
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from newsletter import db as store
from newsletter.config import load_settings
from newsletter.digest import digest_is_due, latest_digest, send_digest

from .conftest import Cli, SmtpSink, add_readers, write_env
from .test_parallel import wait_until
from .test_reliability import finish_and_check_each_had_it_once

NOW = dt.datetime.now(dt.UTC)
TOPICS = """
[inspections]
title = "Inspections"
description = "What inspections find."

[practice]
title = "Practice"
"""


def write_post(project: Path, slug: str, days_ago: float, topics: str = "") -> None:
    when = (NOW - dt.timedelta(days=days_ago)).strftime("%Y-%m-%d %H:%M +00:00")
    front = f"topics: [{topics}]\n" if topics else ""
    (project / "posts" / f"{slug}.md").write_text(
        f"---\ntitle: The {slug} post\ndate: {when}\n{front}---\n\n"
        f"The opening of {slug}, which the digest quotes.\n\nThe rest of {slug}, which it does not.\n"
    )


def digest_week(project: Path) -> None:
    """The week's posts (the fixture posts are years old), topics, and the digest due an hour
    ago, so this week's digest window holds them all."""
    (project / "topics.toml").write_text(TOPICS)
    write_post(project, "monday", 5, "inspections")
    write_post(project, "wednesday", 3, "practice")
    write_post(project, "friday", 1)  # no topics: in everyone's digest
    due = NOW - dt.timedelta(hours=1)
    days = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    write_env(project, DIGEST_DAY=days[due.weekday()], DIGEST_HOUR=due.hour, TIMEZONE="UTC")


def reader(db, email: str, *, frequency="digest", topics=None, paused_until=None) -> int:
    subscriber = store.add_subscriber(db, email, "")
    store.set_frequency(db, subscriber.id, frequency)
    if topics is not None:
        store.set_topics(db, subscriber.id, topics)
    store.set_pause(db, subscriber.id, paused_until)
    return subscriber.id


def titles(received) -> list[str]:
    """The post titles a digest's plain-text part lists, in order."""
    text = received.message.get_body(("plain",)).get_content()
    return [
        line for line in text.splitlines() if line.startswith("The ") and line.endswith(" post")
    ]


def test_each_reader_gets_what_they_chose_once(smtp_project: Path, smtp_sink: SmtpSink) -> None:
    digest_week(smtp_project)
    settings = load_settings(smtp_project, environ={})
    with store.connect(settings.db_path) as db:
        reader(db, "every@example.org", frequency="every")
        reader(db, "all@example.org")
        reader(db, "inspections@example.org", topics=["inspections"])
        reader(db, "practice@example.org", topics=["practice"])
        reader(db, "paused@example.org", paused_until=(NOW + dt.timedelta(days=9)).isoformat())
        gone = reader(db, "gone@example.org")
        store.set_status(db, gone, "unsubscribed", "reader")

    report = send_digest(settings)

    got = {r.rcpt_tos[0]: r for r in smtp_sink.received}
    assert set(got) == {"all@example.org", "inspections@example.org", "practice@example.org"}
    assert report.sent == 3 and report.failed == 0
    assert titles(got["all@example.org"]) == [
        "The friday post",
        "The wednesday post",
        "The monday post",
    ]
    assert titles(got["inspections@example.org"]) == ["The friday post", "The monday post"]
    assert titles(got["practice@example.org"]) == ["The friday post", "The wednesday post"]
    message = got["all@example.org"].message
    assert message["Subject"] == "Child Protection Notes this week: The friday post and 2 more"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = message.get_body(("html",)).get_content()
    assert re.search(r'href="https://news.example.org/posts/monday"[^>]*>Read on</a>', html)
    assert "The opening of monday" in html and "The rest of monday" not in html
    assert "style=" in html  # premailer inlined the stylesheet

    # Again: nothing new for anyone, nothing sent; a post published since goes to each once.
    assert send_digest(settings).due == 0
    write_post(smtp_project, "saturday", 0.01, "practice")
    smtp_sink.received.clear()
    send_digest(settings, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=7))
    assert {r.rcpt_tos[0]: titles(r) for r in smtp_sink.received} == {
        "all@example.org": ["The saturday post"],
        "practice@example.org": ["The saturday post"],
    }


def test_the_digest_posts_are_published_and_every_post_readers_get_no_digest(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    digest_week(smtp_project)
    settings = load_settings(smtp_project, environ={})
    with store.connect(settings.db_path) as db:
        reader(db, "every@example.org", frequency="every")
        reader(db, "digest@example.org")
    cli("send", "friday", "--yes")
    assert [r.rcpt_tos for r in smtp_sink.received] == [["every@example.org"]]
    send_digest(settings)
    assert [r.rcpt_tos[0] for r in smtp_sink.received[1:]] == ["digest@example.org"]
    with store.connect(settings.db_path) as db:
        assert {"monday", "wednesday", "friday"} <= store.digested_slugs(db)


def test_send_due_sends_the_digest_at_its_hour_and_once(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    digest_week(smtp_project)
    settings = load_settings(smtp_project, environ={})
    with store.connect(settings.db_path) as db:
        reader(db, "digest@example.org")
        # Before its hour, last week's digest (a week late) is not sent by cron either.
        assert digest_is_due(settings, db, NOW - dt.timedelta(hours=2)) is None
        due = digest_is_due(settings, db, NOW)
        assert due is not None and due.slug == latest_digest(settings, NOW).slug

    first = cli("send", "--due", "--yes")
    assert "The weekly digest" in first.output and "Sent 1," in first.output
    assert [r.rcpt_tos for r in smtp_sink.received] == [["digest@example.org"]]
    second = cli("send", "--due", "--yes")
    assert second.output == "" and len(smtp_sink.received) == 1  # once, and quiet for cron


def test_an_unknown_topic_in_a_post_stops_the_digest_naming_both(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    digest_week(smtp_project)
    write_post(smtp_project, "oops", 2, "inspectoins")
    with store.connect(smtp_project / "newsletter.db") as db:
        reader(db, "digest@example.org")
    result = cli("digest", "--yes", ok=False)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: oops.md: unknown topic 'inspectoins'; the topics are: inspections, practice"
    )
    assert smtp_sink.received == []


def test_preview_and_dry_run_send_nothing(smtp_project: Path, smtp_sink: SmtpSink, cli: Cli):
    digest_week(smtp_project)
    with store.connect(smtp_project / "newsletter.db") as db:
        reader(db, "digest@example.org")
    text = cli("preview", "--digest", "--text").output
    assert text.index("The friday post") < text.index("The monday post")
    assert "Read on: https://news.example.org/posts/wednesday" in text
    dry = cli("digest", "--dry-run").output
    assert dry.startswith("Dry run: 1 messages rendered")
    assert smtp_sink.received == []
    with store.connect(smtp_project / "newsletter.db") as db:
        assert store.digest_variants(db, latest_digest(load_settings(smtp_project), NOW).slug) == []


@pytest.mark.slow
def test_a_digest_killed_midway_and_run_again_repeats_nobody(
    smtp_project: Path, smtp_sink: SmtpSink
) -> None:
    digest_week(smtp_project)
    connections = 4
    write_env(smtp_project, SMTP_CONNECTIONS=connections)
    with store.connect(smtp_project / "newsletter.db") as db:
        readers = add_readers(db, 3000)
        db.execute("UPDATE subscribers SET frequency = 'digest'")
        # Two sets of posts: the kill may land in either run of the connections.
        for address in readers[::2]:
            store.set_topics(db, store.require_subscriber(db, address).id, ["practice"])

    def digest_run() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "newsletter", "-C", str(smtp_project), "digest", "--yes"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    first = digest_run()
    wait_until(lambda: len(smtp_sink.received) >= 1800, "the digest did not get going")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert len(smtp_sink.received) < len(readers), "the digest finished before it was killed"

    finish_and_check_each_had_it_once(digest_run(), smtp_sink, readers, connections)
    sets = Counter(tuple(titles(r)) for r in smtp_sink.received)
    assert set(sets) == {
        ("The friday post", "The wednesday post", "The monday post"),
        ("The friday post", "The wednesday post"),
    }
