"""The reader's preferences page, served by a real uvicorn on loopback and driven with httpx;
every test reads the SQLite file afterwards to see what changed (or did not)."""

import datetime as dt
import re

import httpx
import pytest
from sqlite_utils import Database

from newsletter import db as store
from newsletter.db.choices import reader_topics, set_frequency, set_pause, set_topics
from newsletter.keys import reader_tokens
from newsletter.posts import read_posts
from newsletter.render import render_digest, render_welcome, template_environment
from newsletter.tokens import ReaderTokens

from .conftest import Cli, LiveServer, SmtpSink

TOPICS = """
[inspections]
title = "Inspections"
description = "Ofsted and joint inspections, and what they find."

[practice]
title = "Practice"

[research]
title = "Research"
"""
ANN = "ann.archer@example.org"
MASKED = "a*********@example.org"


@pytest.fixture
def server(live_server: LiveServer) -> LiveServer:
    (live_server.settings.directory / "topics.toml").write_text(TOPICS)
    return live_server


@pytest.fixture
def tokens(server: LiveServer, db: Database) -> ReaderTokens:
    return reader_tokens(server.settings, db)


@pytest.fixture
def ann(server: LiveServer, db: Database) -> store.Subscriber:
    return store.add_subscriber(db, ANN, "Ann Archer")


def client(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=10)


def open_page(browser: httpx.Client, token: str) -> str:
    """GET the page as a browser does: its CSRF token (the nonce is now in a cookie)."""
    page = browser.get(f"/preferences/{token}")
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def choices(db: Database, reader: store.Subscriber) -> tuple:
    row = store.get_subscriber_by_id(db, reader.id)
    assert row is not None
    return row.status, row.frequency, row.paused_until, reader_topics(db, reader.id)


def form(csrf: str, **fields: object) -> dict[str, object]:
    return {"csrf": csrf, "topics_shown": "1", "frequency": "every", "pause": "none", **fields}


# --- the page -------------------------------------------------------------------------------


def test_the_page_shows_every_topic_ticked_and_a_get_changes_nothing(
    server: LiveServer, db: Database, tokens: ReaderTokens, ann: store.Subscriber
) -> None:
    token = tokens.unsubscribe(ann.public_id, "a-post")
    before = choices(db, ann)
    with client(server) as browser:
        pages = [browser.get(f"/preferences/{token}") for _ in range(2)]
    for page in pages:
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        assert MASKED in page.text and "ann.archer" not in page.text
        for name in ("inspections", "practice", "research"):
            assert f'name="topic" value="{name}" checked' in page.text
        assert "Ofsted and joint inspections" in page.text
        assert 'value="every" checked' in page.text
        assert "A weekly digest, on Sundays at 08:00 (UTC)" in page.text
        assert f'<form method="post" action="/unsubscribe/{token}">' in page.text
        assert "Unsubscribe from everything" in page.text
    assert choices(db, ann) == before


def test_without_topics_the_page_has_no_topics_section(
    live_server: LiveServer, db: Database
) -> None:
    reader = store.add_subscriber(db, ANN)
    token = reader_tokens(live_server.settings, db).unsubscribe(reader.public_id)
    with client(live_server) as browser:
        page = browser.get(f"/preferences/{token}")
        assert page.status_code == 200
        assert "<legend>Topics</legend>" not in page.text and 'name="topic"' not in page.text
        csrf = open_page(browser, token)
        saved = browser.post(
            f"/preferences/{token}", data={"csrf": csrf, "frequency": "digest", "pause": "none"}
        )
    assert saved.status_code == 200, saved.text
    assert choices(db, reader) == ("active", "digest", None, None)


# --- saving ---------------------------------------------------------------------------------


def test_unticking_a_topic_stores_the_others_and_says_so(
    server: LiveServer, db: Database, tokens: ReaderTokens, ann: store.Subscriber
) -> None:
    token = tokens.unsubscribe(ann.public_id)
    with client(server) as browser:
        csrf = open_page(browser, token)
        saved = browser.post(
            f"/preferences/{token}", data=form(csrf, topic=["research", "inspections"])
        )
        assert saved.status_code == 200, saved.text
        assert "Your choices are saved" in saved.text
        assert "Posts on Inspections, Research, and posts for every reader." in saved.text
        assert choices(db, ann) == ("active", "every", None, ("inspections", "research"))
        again = browser.get(f"/preferences/{token}").text
    assert 'value="practice">' in again and 'value="research" checked' in again


def test_ticking_every_topic_again_stores_every_topic(
    server: LiveServer, db: Database, tokens: ReaderTokens, ann: store.Subscriber
) -> None:
    set_topics(db, ann.id, ["practice"])
    token = tokens.unsubscribe(ann.public_id)
    with client(server) as browser:
        csrf = open_page(browser, token)
        saved = browser.post(
            f"/preferences/{token}",
            data=form(csrf, topic=["inspections", "practice", "research"]),
        )
    assert saved.status_code == 200
    assert "Posts on every topic, including topics added later." in saved.text
    assert reader_topics(db, ann.id) is None  # new topics included
    row = db.execute("SELECT topics_chosen FROM subscribers WHERE id = ?", [ann.id]).fetchone()
    assert row[0] == 0


def test_choosing_the_digest_and_a_pause(
    server: LiveServer, db: Database, tokens: ReaderTokens, ann: store.Subscriber
) -> None:
    token = tokens.unsubscribe(ann.public_id)
    with client(server) as browser:
        csrf = open_page(browser, token)
        before = dt.datetime.now(dt.UTC)
        saved = browser.post(
            f"/preferences/{token}",
            data=form(
                csrf,
                topic=["inspections", "practice", "research"],
                frequency="digest",
                pause="1-month",
            ),
        )
        assert saved.status_code == 200
        assert "One email a week, a digest of the posts, on Sundays at 08:00" in saved.text
        status, frequency, paused_until, topics = choices(db, ann)
        assert (status, frequency, topics) == ("active", "digest", None)
        assert paused_until is not None
        until = dt.datetime.fromisoformat(paused_until)
        assert (
            dt.timedelta(days=30)
            <= until - before.replace(microsecond=0)
            <= dt.timedelta(days=30, seconds=60)
        )
        assert f"Nothing until {until.strftime('%-d %B %Y')}" in saved.text

        # The page now offers to keep the pause, and keeping it (the default) keeps it.
        page = browser.get(f"/preferences/{token}").text
        assert '<option value="keep" selected>Keep my pause (until' in page
        csrf = open_page(browser, token)
        kept = browser.post(
            f"/preferences/{token}", data=form(csrf, topic="research", pause="keep")
        )
        assert kept.status_code == 200
        assert choices(db, ann) == ("active", "every", paused_until, ("research",))

        csrf = open_page(browser, token)
        ended = browser.post(f"/preferences/{token}", data=form(csrf, topic="research"))
    assert ended.status_code == 200
    assert choices(db, ann) == ("active", "every", None, ("research",))


# --- refusals: nothing changes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"topic": ["practice", "no-such-topic"]}, "there is no topic &#39;no-such-topic&#39;"),
        ({"topic": "practice", "frequency": "hourly"}, "choose how often"),
        ({"topic": "practice", "pause": "forever"}, "choose a pause from the list"),
        ({}, "tick at least one topic"),
    ],
    ids=["unknown topic", "bad frequency", "bad pause", "no topic"],
)
def test_a_bad_field_changes_nothing_and_says_why(
    server: LiveServer,
    db: Database,
    tokens: ReaderTokens,
    ann: store.Subscriber,
    fields: dict,
    says: str,
) -> None:
    set_frequency(db, ann.id, "digest")
    set_topics(db, ann.id, ["inspections", "research"])
    before = choices(db, ann)
    token = tokens.unsubscribe(ann.public_id)
    with client(server) as browser:
        csrf = open_page(browser, token)
        answer = browser.post(f"/preferences/{token}", data=form(csrf, **fields))
    assert answer.status_code == 400
    assert says in answer.text and 'role="alert"' in answer.text
    assert 'name="topic" value="inspections" checked' in answer.text  # the form, as it was
    assert choices(db, ann) == before


def test_a_tampered_token_changes_nothing(
    server: LiveServer, db: Database, tokens: ReaderTokens, ann: store.Subscriber
) -> None:
    token = tokens.unsubscribe(ann.public_id)
    before = choices(db, ann)
    middle = len(token) // 2 + 4
    tampered = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    other_kind = tokens.confirm(ann.public_id)
    with client(server) as browser:
        csrf = open_page(browser, token)
        for bad in (tampered, other_kind, "not-a-token"):
            assert browser.get(f"/preferences/{bad}").status_code == 400
            answer = browser.post(
                f"/preferences/{bad}", data=form(csrf, topic="practice", frequency="digest")
            )
            assert answer.status_code == 400
            assert "This link does not work" in answer.text
    assert choices(db, ann) == before


def test_a_form_replayed_after_unsubscribing_changes_nothing(
    server: LiveServer, db: Database, tokens: ReaderTokens, ann: store.Subscriber
) -> None:
    token = tokens.unsubscribe(ann.public_id, "a-post")
    with client(server) as browser:
        csrf = open_page(browser, token)
        left = browser.post(f"/unsubscribe/{token}")  # the page's "Unsubscribe from everything"
        assert left.status_code == 200 and "You are unsubscribed" in left.text
        before = choices(db, ann)
        assert before[0] == "unsubscribed"
        replay = browser.post(
            f"/preferences/{token}", data=form(csrf, topic="practice", frequency="digest")
        )
        assert replay.status_code == 400
        assert "no longer subscribed" in replay.text
        assert choices(db, ann) == before
        page = browser.get(f"/preferences/{token}")
    assert "You are unsubscribed" in page.text and 'name="topic"' not in page.text


def test_a_form_replayed_after_erasure_changes_nothing(
    server: LiveServer, db: Database, tokens: ReaderTokens, ann: store.Subscriber, cli: Cli
) -> None:
    token = tokens.unsubscribe(ann.public_id)
    with client(server) as browser:
        csrf = open_page(browser, token)
        cli("subscribers", "delete", ANN)
        assert store.get_subscriber(db, ANN) is None
        replay = browser.post(f"/preferences/{token}", data=form(csrf, topic="practice"))
    assert replay.status_code == 400
    assert "no longer subscribed" in replay.text
    assert store.get_subscriber(db, ANN) is None
    assert db.execute("SELECT count(*) FROM subscriber_topics").fetchone()[0] == 0


@pytest.mark.parametrize("csrf", ["", "forged", "another visitor's"])
def test_a_missing_or_foreign_csrf_token_changes_nothing(
    server: LiveServer, db: Database, tokens: ReaderTokens, ann: store.Subscriber, csrf: str
) -> None:
    token = tokens.unsubscribe(ann.public_id)
    before = choices(db, ann)
    if csrf == "another visitor's":
        with client(server) as other:
            csrf = open_page(other, token)
    with client(server) as browser:
        open_page(browser, token)  # this visitor's cookie, but not the form's token
        answer = browser.post(
            f"/preferences/{token}", data=form(csrf, topic="practice", frequency="digest")
        )
    assert answer.status_code == 403
    assert "the form has expired" in answer.text
    assert choices(db, ann) == before


def test_too_many_saves_from_one_client_are_refused(
    server: LiveServer, db: Database, tokens: ReaderTokens, ann: store.Subscriber
) -> None:
    token = tokens.unsubscribe(ann.public_id)
    with client(server) as browser:
        csrf = open_page(browser, token)
        answers = [
            browser.post(f"/preferences/{token}", data=form(csrf, topic="practice"))
            for _ in range(31)
        ]
        assert [a.status_code for a in answers[:30]] == [200] * 30
        assert answers[30].status_code == 429
        set_pause(db, ann.id, None)
        refused = browser.post(
            f"/preferences/{token}", data=form(csrf, topic="research", frequency="digest")
        )
    assert refused.status_code == 429
    assert choices(db, ann) == ("active", "every", None, ("practice",))


# --- the link in every email ----------------------------------------------------------------


def test_a_sent_email_carries_the_manage_link_to_that_readers_page(
    server: LiveServer, db: Database, cli: Cli, smtp_sink: SmtpSink
) -> None:
    cli("subscribers", "add", ANN, "--name", "Ann Archer")
    cli("subscribers", "add", "bob@example.org")
    cli("send", "--yes")
    assert len(smtp_sink.received) == 2
    (received,) = [r for r in smtp_sink.received if r.rcpt_tos == [ANN]]
    html = received.message.get_body(("html",)).get_content()
    text = received.message.get_body(("plain",)).get_content()
    found = re.search(
        r'href="(http://127\.0\.0\.1:\d+/preferences/([^"]+))"[^>]*>Manage your subs', html
    )
    assert found, html
    link, token = found.groups()
    assert f"Manage your subscription (topics, how often, a pause): {link}" in text
    # The one-click headers are as they were: the unsubscribe link alone.
    assert received.message["List-Unsubscribe"] == f"<{server.url}/unsubscribe/{token}>"
    assert received.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    page = httpx.get(link, timeout=10)
    assert page.status_code == 200
    assert MASKED in page.text and f'action="/preferences/{token}"' in page.text


def test_the_digest_and_welcome_emails_carry_the_manage_link(server: LiveServer) -> None:
    settings = server.settings
    env = template_environment(settings.templates_dir)
    posts = read_posts(settings.posts_dir, settings.timezone).posts
    digest = render_digest(posts[:2], settings, env, "digest-2026-12-06", dt.date(2026, 12, 6))
    welcome = render_welcome(settings, env, posts[0])
    assert welcome is not None
    for issue in (digest, welcome):
        html = issue.html_for("Ann", ANN, "TOKEN1")
        text = issue.text_for("Ann", ANN, "TOKEN1")
        link = f'href="{settings.base_url}/preferences/TOKEN1"[^>]*>Manage your subscription'
        assert re.search(link, html), html
        assert f"a pause): {settings.base_url}/preferences/TOKEN1" in text


def test_a_pause_to_the_end_of_9999_shows_east_of_utc(start_server, db: Database) -> None:
    """An imported pause may end at 9999-12-31T23:00Z; in Auckland that is past year 9999,
    which must not take the reader's page down (the day is then given as UTC's)."""
    server = start_server(TIMEZONE="Pacific/Auckland")
    (server.settings.directory / "topics.toml").write_text(TOPICS)
    ann = store.add_subscriber(db, ANN, "Ann Archer")
    set_pause(db, ann.id, "9999-12-31T23:00:00+00:00")
    token = reader_tokens(server.settings, db).unsubscribe(ann.public_id)
    with client(server) as browser:
        page = browser.get(f"/preferences/{token}")
        assert page.status_code == 200, page.text
        assert "Keep my pause (until 31 December 9999)" in page.text
        csrf = open_page(browser, token)
        saved = browser.post(
            f"/preferences/{token}", data=form(csrf, topic="practice", pause="keep")
        )
    assert saved.status_code == 200, saved.text
    assert "Nothing until 31 December 9999" in saved.text
    assert choices(db, ann) == ("active", "every", "9999-12-31T23:00:00+00:00", ("practice",))
