"""Double opt-in, unsubscribe and resubscribe in the core, over a real database and real SMTP."""

import base64
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from itsdangerous import TimestampSigner, URLSafeSerializer, URLSafeTimedSerializer
from sqlite_utils import Database

from newsletter import db as store
from newsletter.config import Settings, load_settings
from newsletter.errors import BadToken, DeliveryRefused, NotOnList, SubscriberError
from newsletter.keys import reader_tokens, secret_keys
from newsletter.subscribe import (
    Visitor,
    confirm_subscription,
    confirmation_interval,
    request_subscription,
    resubscribe,
    unsubscribe,
)
from newsletter.tokens import NOBODY, ReaderTokens

from .conftest import Received, SmtpSink, write_env

ASKED = Visitor(ip="192.0.2.7", user_agent="Mozilla/5.0 (asking)", form="test: the form")
CONFIRMED = Visitor(ip="198.51.100.9", user_agent="Mozilla/5.0 (confirming)", form="test: confirm")


@pytest.fixture
def mail_settings(smtp_project: Path) -> Settings:
    return load_settings(smtp_project, environ={})


@pytest.fixture
def tokens(mail_settings: Settings, db: Database) -> ReaderTokens:
    return reader_tokens(mail_settings, db)


def ask(settings: Settings, db: Database, tokens: ReaderTokens, email: str, name: str = ""):
    return request_subscription(settings, db, tokens, email, name)


def confirm_token(received: Received) -> str:
    text, html = received.message.get_payload()
    match = re.search(r"https://news\.example\.org/confirm/(\S+)", text.get_content())
    assert match, text.get_content()
    assert f'href="{match.group(0)}"' in html.get_content()
    return match.group(1)


def test_a_new_address_is_kept_pending_and_sent_a_link_to_confirm(
    mail_settings: Settings, db: Database, tokens: ReaderTokens, smtp_sink: SmtpSink
) -> None:
    assert ask(mail_settings, db, tokens, " Ann@EXAMPLE.org ", "Ann Åberg") == "sent"

    ann = store.get_subscriber(db, "Ann@example.org")
    assert ann is not None
    # The name typed is kept aside: it becomes the reader's only when the address confirms.
    assert (ann.status, ann.source, ann.name, ann.requested_name) == (
        "pending",
        "web",
        "",
        "Ann Åberg",
    )
    # Asking is not consenting: the consent record waits for the emailed link.
    assert (ann.consent_at, ann.consent_ip, ann.consent_user_agent, ann.consent_form) == (
        None,
        None,
        None,
        None,
    )
    assert ann.confirmation_sent_at
    (received,) = smtp_sink.received
    assert received.rcpt_tos == ["Ann@example.org"]
    assert received.mail_from == "jane@example.org"
    message = received.message
    assert message["From"] == "Jane Author <jane@example.org>"
    assert str(message["To"]) == "Ann@example.org"  # no unconfirmed name in a header
    assert message["Subject"] == "Confirm your subscription to Child Protection Notes"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["MIME-Version"] == "1.0"
    assert re.fullmatch(r"<.+@example\.org>", message["Message-ID"])
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.get_payload()] == ["text/plain", "text/html"]
    assert b"\n" not in received.data.replace(b"\r\n", b"")  # CRLF only, as SMTP wants
    assert tokens.read_confirm(confirm_token(received)) == ann.public_id  # never the sequential id


def test_confirming_makes_the_reader_active_and_keeps_the_consent(
    mail_settings: Settings, db: Database, tokens: ReaderTokens, smtp_sink: SmtpSink
) -> None:
    ask(mail_settings, db, tokens, "ann@example.org")
    token = confirm_token(smtp_sink.received[0])

    ann = confirm_subscription(db, tokens, token, CONFIRMED)
    assert ann.status == "active"
    assert (ann.consent_ip, ann.consent_user_agent, ann.consent_form) == (
        "198.51.100.9",
        "Mozilla/5.0 (confirming)",
        "test: confirm",
    )
    again = confirm_subscription(db, tokens, token, ASKED)
    assert again == ann  # a second press changes nothing, the first consent stays


def test_an_old_confirm_link_cannot_undo_a_later_complaint_or_unsubscribe(
    mail_settings: Settings, db: Database, tokens: ReaderTokens, smtp_sink: SmtpSink
) -> None:
    ask(mail_settings, db, tokens, "ann@example.org")
    token = confirm_token(smtp_sink.received[0])
    confirm_subscription(db, tokens, token, CONFIRMED)
    ann = store.get_subscriber(db, "ann@example.org")
    # Later, a complaint: the link from the confirmation email is still within its week.
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat(timespec="seconds")
    db.execute(
        "UPDATE subscribers SET status = 'unsubscribed', status_reason = 'complaint',"
        " status_changed_at = ? WHERE id = ?",
        [later, ann.id],
    )
    with pytest.raises(SubscriberError, match="older than the last change"):
        confirm_subscription(db, tokens, token, CONFIRMED)
    assert store.get_subscriber(db, "ann@example.org").status == "unsubscribed"


def test_a_blank_name_on_the_form_keeps_the_name_on_file(
    mail_settings: Settings, db: Database, tokens: ReaderTokens, smtp_sink: SmtpSink
) -> None:
    ann = store.add_subscriber(db, "ann@example.org", "Ann Archer")
    store.set_status(db, ann.id, "unsubscribed", "reader")
    ask(mail_settings, db, tokens, "ann@example.org", "")
    confirm_subscription(db, tokens, confirm_token(smtp_sink.received[0]), CONFIRMED)
    assert store.get_subscriber(db, "ann@example.org").name == "Ann Archer"


def test_an_active_reader_is_left_alone_and_gets_no_email(
    mail_settings: Settings, db: Database, tokens: ReaderTokens, smtp_sink: SmtpSink
) -> None:
    before = store.add_subscriber(db, "ann@example.org", "Ann")
    assert ask(mail_settings, db, tokens, "ANN@example.org", "Someone Else") == "already active"
    assert store.get_subscriber(db, "ann@example.org") == before
    assert smtp_sink.received == []


def test_one_address_gets_one_confirmation_per_interval(
    mail_settings: Settings, db: Database, tokens: ReaderTokens, smtp_sink: SmtpSink
) -> None:
    # 5 an hour (the default) is one every 12 minutes.
    assert confirmation_interval(mail_settings) == timedelta(minutes=12)
    assert ask(mail_settings, db, tokens, "ann@example.org") == "sent"
    assert ask(mail_settings, db, tokens, "ann@example.org") == "too soon"
    assert len(smtp_sink.received) == 1

    def sent_minutes_ago(minutes: int) -> None:
        stamp = datetime.now(UTC) - timedelta(minutes=minutes)
        db.execute(
            "UPDATE subscribers SET confirmation_sent_at = ?",
            [stamp.isoformat(timespec="seconds")],
        )

    sent_minutes_ago(11)
    assert ask(mail_settings, db, tokens, "ann@example.org") == "too soon"
    sent_minutes_ago(13)
    assert ask(mail_settings, db, tokens, "ann@example.org") == "sent"
    assert smtp_sink.per_recipient() == {"ann@example.org": 2}


def test_the_interval_follows_the_setting(smtp_project: Path) -> None:
    write_env(smtp_project, SUBSCRIBE_LIMIT_PER_HOUR=2)
    settings = load_settings(smtp_project, environ={})
    assert confirmation_interval(settings) == timedelta(minutes=30)


@pytest.mark.parametrize("status", ["unsubscribed", "bounced"])
def test_a_former_reader_comes_back_only_by_confirming(
    mail_settings: Settings,
    db: Database,
    tokens: ReaderTokens,
    smtp_sink: SmtpSink,
    status: store.SubscriberStatus,
) -> None:
    former = store.add_subscriber(db, "ann@example.org", "Ann", status=status)
    db.execute("UPDATE subscribers SET bounces = 3 WHERE id = ?", [former.id])

    assert ask(mail_settings, db, tokens, "ann@example.org", "Not Ann") == "sent"
    waiting = store.get_subscriber(db, "ann@example.org")
    assert waiting is not None
    assert (waiting.status, waiting.name, waiting.source) == (status, "Ann", "cli")

    back = confirm_subscription(db, tokens, confirm_token(smtp_sink.received[0]), CONFIRMED)
    assert (back.status, back.bounces, back.consent_ip) == ("active", 0, "198.51.100.9")


@pytest.mark.parametrize(
    ("email", "name", "message"),
    [
        (
            "not-an-address",
            "",
            "'not-an-address' is not a valid email address: An email address must have an @-sign.",
        ),
        ("", "", "an empty address is not an email address"),
        (
            "ok@example.org",
            "Eve\r\nBcc: victim@example.org",
            "the name 'Eve\\r\\nBcc: victim@example.org' contains line breaks or control characters",
        ),
    ],
)
def test_bad_input_is_refused_and_nothing_is_kept(
    mail_settings: Settings,
    db: Database,
    tokens: ReaderTokens,
    smtp_sink: SmtpSink,
    email: str,
    name: str,
    message: str,
) -> None:
    with pytest.raises(SubscriberError) as refused:
        ask(mail_settings, db, tokens, email, name)
    assert str(refused.value) == message
    assert store.count_subscribers(db, "pending") == 0
    assert smtp_sink.received == []


def test_a_refused_confirmation_email_is_an_error_and_the_reader_stays_pending(
    mail_settings: Settings, db: Database, tokens: ReaderTokens, smtp_sink: SmtpSink
) -> None:
    smtp_sink.reject["nobody@example.org"] = "550 5.1.1 no such user"
    with pytest.raises(DeliveryRefused) as refused:
        ask(mail_settings, db, tokens, "nobody@example.org")
    assert refused.value.reply == "550 5.1.1 no such user"
    nobody = store.get_subscriber(db, "nobody@example.org")
    assert nobody is not None and nobody.status == "pending"


class EightDaysAgo(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(time.time()) - 8 * 24 * 3600


def _other_payload(token: str) -> str:
    """The same signature over another reader's id: what a forger would try first."""
    rest = token.split(".", 1)[1]
    return base64.urlsafe_b64encode(b"2").decode().rstrip("=") + "." + rest


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(_other_payload, id="another id under the signature"),
        pytest.param(lambda t: "not-a-token", id="garbage"),
        pytest.param(
            lambda t: URLSafeTimedSerializer("another key", salt="newsletter.confirm").dumps(1),
            id="another key",
        ),
        pytest.param("unsubscribe", id="an unsubscribe token"),
        pytest.param("expired", id="eight days old"),
    ],
)
def test_a_forged_or_expired_confirm_link_changes_nothing(
    mail_settings: Settings, db: Database, tokens: ReaderTokens, smtp_sink: SmtpSink, forge
) -> None:
    ask(mail_settings, db, tokens, "ann@example.org")
    store.add_subscriber(db, "bob@example.org", status="pending")
    good = confirm_token(smtp_sink.received[0])
    if forge == "unsubscribe":
        token = tokens.unsubscribe(1)
    elif forge == "expired":
        keys = list(secret_keys(mail_settings, db))
        token = URLSafeTimedSerializer(keys, salt="newsletter.confirm", signer=EightDaysAgo).dumps(
            1
        )
    else:
        token = forge(good)
    before = list(store.iter_subscribers(db))
    with pytest.raises(BadToken) as refused:
        confirm_subscription(db, tokens, token, CONFIRMED)
    assert str(refused.value) == "this confirmation link is not valid or has expired"
    assert list(store.iter_subscribers(db)) == before


def test_unsubscribe_is_immediate_and_harmless_again(db: Database, tokens: ReaderTokens) -> None:
    ann = store.add_subscriber(db, "ann@example.org")
    db.execute("UPDATE subscribers SET status_changed_at = '2020-01-01T00:00:00+00:00'")
    gone = unsubscribe(db, tokens, tokens.unsubscribe(ann.public_id))
    assert gone.status == "unsubscribed"
    assert gone.status_changed_at != "2020-01-01T00:00:00+00:00"
    assert (
        unsubscribe(db, tokens, tokens.unsubscribe(ann.public_id)) == gone
    )  # the time of leaving stays
    assert not store.is_active(db, ann.id)


LINK_ACTS = {
    "unsubscribe": lambda db, tokens, i: unsubscribe(db, tokens, tokens.unsubscribe(i)),
    "resubscribe": lambda db, tokens, i: resubscribe(db, tokens, tokens.unsubscribe(i), ASKED),
    "confirm": lambda db, tokens, i: confirm_subscription(db, tokens, tokens.confirm(i), ASKED),
}


@pytest.mark.parametrize("act", LINK_ACTS.values(), ids=LINK_ACTS.keys())
@pytest.mark.parametrize("who", ["a test copy's link (id 0)", "an erased reader"])
def test_a_link_for_nobody_is_not_on_the_list(
    db: Database, tokens: ReaderTokens, act, who: str
) -> None:
    erased = store.add_subscriber(db, "erased@example.org")
    store.delete_subscriber(db, "erased@example.org")
    store.add_subscriber(db, "ann@example.org")  # a later reader never gets the erased id
    with pytest.raises(NotOnList) as refused:
        act(db, tokens, NOBODY if who.startswith("a test") else erased.public_id)
    assert str(refused.value) == "this link is for an address that is not on the list"
    assert [s.email for s in store.iter_subscribers(db, "active")] == ["ann@example.org"]


def test_a_forged_unsubscribe_link_changes_nothing(db: Database, tokens: ReaderTokens) -> None:
    store.add_subscriber(db, "ann@example.org")
    forged = URLSafeSerializer("another key", salt="newsletter.unsubscribe").dumps(1)
    for token in (forged, tokens.confirm(1), _other_payload(tokens.unsubscribe(3))):
        with pytest.raises(BadToken) as refused:
            unsubscribe(db, tokens, token)
        assert str(refused.value) == "this unsubscribe link is not valid"
    assert store.is_active(db, 1)


def test_links_sent_before_public_ids_keep_working(
    mail_settings: Settings, db: Database, tokens: ReaderTokens
) -> None:
    """Emails already in inboxes carry the sequential id; new ones carry the random public id
    and the post, and never the sequential id (it would tell how big the list is)."""
    store.add_subscriber(db, "first@example.org")
    ann = store.add_subscriber(db, "ann@example.org")
    keys = list(secret_keys(mail_settings, db))
    old_link = URLSafeSerializer(keys, salt="newsletter.unsubscribe").dumps(ann.id)
    assert unsubscribe(db, tokens, old_link).status == "unsubscribed"
    new_link = tokens.unsubscribe(ann.public_id, "a-post")
    payload = URLSafeSerializer(keys, salt="newsletter.unsubscribe").loads(new_link)
    assert payload == [ann.public_id, "a-post"] and ann.id not in payload
    store.set_status(db, ann.id, "active", "author")
    unsubscribe(db, tokens, new_link)
    events = store.reader_events(db, subscriber_id=ann.id)
    assert [(e.kind, e.slug, e.source) for e in events] == [
        ("unsubscribe", None, "web"),  # the old link names no post
        ("unsubscribe", "a-post", "web"),
    ]


def test_resubscribe_undoes_an_unsubscribe_and_nothing_else(
    db: Database, tokens: ReaderTokens
) -> None:
    ann = store.add_subscriber(db, "ann@example.org")
    token = tokens.unsubscribe(ann.public_id)
    unsubscribe(db, tokens, token)
    back = resubscribe(db, tokens, token, CONFIRMED)
    assert (back.status, back.consent_form, back.consent_ip) == (
        "active",
        "test: confirm",
        "198.51.100.9",
    )
    assert resubscribe(db, tokens, token, ASKED) == back  # already active: nothing changes

    for status in ("bounced", "pending"):
        other = store.add_subscriber(db, f"{status}@example.org", status=status)
        with pytest.raises(SubscriberError) as refused:
            resubscribe(db, tokens, tokens.unsubscribe(other.public_id), ASKED)
        assert str(refused.value) == (
            f"this address is {status}, so it cannot be resubscribed from this link; "
            "subscribe again with the form, which confirms the address by email"
        )
        assert store.get_subscriber_by_id(db, other.id) == other


def test_a_bounced_address_cannot_come_back_by_unsubscribing_first(
    db: Database, tokens: ReaderTokens
) -> None:
    """Unsubscribe, then the resubscribe button, must not skip the email confirmation."""
    bounced = store.add_subscriber(db, "gone@example.org", status="bounced")
    token = tokens.unsubscribe(bounced.public_id)
    assert unsubscribe(db, tokens, token) == bounced  # no mail either way; it stays bounced
    with pytest.raises(SubscriberError) as refused:
        resubscribe(db, tokens, token, ASKED)
    assert str(refused.value).startswith("this address is bounced, so it cannot be resubscribed")
    assert store.get_subscriber_by_id(db, bounced.id) == bounced


def test_unconfirmed_requests_are_forgotten_when_their_link_expires(
    mail_settings: Settings, db: Database, tokens: ReaderTokens
) -> None:
    ask(mail_settings, db, tokens, "old@example.org")
    store.add_subscriber(db, "kept@example.org", status="pending", source="cli")
    long_ago = "2020-01-01T00:00:00+00:00"
    db.execute("UPDATE subscribers SET status_changed_at = ?", [long_ago])
    ask(mail_settings, db, tokens, "new@example.org")
    emails = {s.email: s.status for s in store.iter_subscribers(db)}
    assert emails == {"kept@example.org": "pending", "new@example.org": "pending"}
