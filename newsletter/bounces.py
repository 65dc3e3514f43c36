"""`newsletter bounces`: read the bounce mailbox over IMAP and act on what came back.

A bounce report marks its delivery and reader bounced (or counts a temporary one), a complaint
or an email to the unsubscribe address unsubscribes the reader, and anything else (auto-replies,
mail from people, forged tokens) is left where it is for the author. Each handled message is
moved to NEWSLETTER_IMAP_DONE_FOLDER, so a second run changes nothing.

Finding the reader: the VERP token in the address the report came to (a token we did not sign
changes nothing); else the original message's Message-ID, which names post and reader; else the
report's Original-/Final-Recipient.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from sqlite_utils import Database

from . import db as store
from .config import Settings
from .errors import ConfigError, MailboxError, describe_network_error
from .keys import reader_tokens
from .message import message_id
from .refusals import classify_refusal
from .returned import ReturnedMail, read_returned_mail
from .tokens import post_tag
from .verp import Verp
from .vocab import MailUnsubscribeReason, ReturnAction, ReturnedKind, event_kind_for

FETCH_BATCH = 100
_MESSAGE_ID = re.compile(r"^<(?P<slug>.+)\.(?P<reader>[0-9a-f]+)\.(?P<digest>[0-9a-f]{12})@.+>$")


@dataclass(frozen=True)
class ReturnOutcome:
    """What one message in the mailbox did."""

    uid: int
    kind: ReturnedKind
    action: ReturnAction
    email: str | None
    slug: str | None
    status: str | None
    detail: str
    matched_by: str | None = None  # token, message-id or recipient

    @property
    def handled(self) -> bool:
        return self.action != "left alone"


@dataclass(frozen=True)
class _Match:
    subscriber: store.Subscriber
    slug: str | None
    by: str


def process_bounces(settings: Settings, *, dry_run: bool = False) -> list[ReturnOutcome]:
    """Read every message in NEWSLETTER_IMAP_FOLDER, act on it, move the handled ones away.

    A dry run reads and decides the same, then rolls back and moves nothing.
    """
    if not settings.bounce_address:
        raise ConfigError(
            "NEWSLETTER_BOUNCE_ADDRESS is not set: set it (e.g. bounces@news.example.org) so "
            "that bounces come back to a mailbox `newsletter bounces` reads"
        )
    db = store.open_db(settings.db_path)
    try:
        verp = Verp(settings.bounce_address, reader_tokens(settings, db))
        outcomes: list[ReturnOutcome] = []
        with imap_session(settings) as client:
            client.select_folder(settings.imap_folder)
            uids = sorted(client.search("ALL"))
            if uids and not dry_run and not client.folder_exists(settings.imap_done_folder):
                client.create_folder(settings.imap_done_folder)
            for start in range(0, len(uids), FETCH_BATCH):
                batch = uids[start : start + FETCH_BATCH]
                fetched = client.fetch(batch, ["BODY.PEEK[]"])
                done: list[int] = []
                for uid in batch:
                    data = fetched.get(uid, {}).get(b"BODY[]")
                    if data is None:
                        continue
                    outcome = _process_one(settings, db, verp, uid, bytes(data), dry_run=dry_run)
                    outcomes.append(outcome)
                    if outcome.handled:
                        done.append(uid)
                if done and not dry_run:
                    _move(client, done, settings.imap_done_folder)
        return outcomes
    except (IMAPClientError, OSError, ssl.SSLError) as e:
        raise MailboxError(
            f"the IMAP mailbox {_where(settings)}: {describe_network_error(e)}"
        ) from e
    finally:
        db.close()


def check_login(settings: Settings) -> str:
    """Log in and look at the folder without changing anything (for `doctor --imap`)."""
    try:
        with imap_session(settings) as client:
            info = client.select_folder(settings.imap_folder, readonly=True)
            count = int(info.get(b"EXISTS", 0))
    except (IMAPClientError, OSError, ssl.SSLError) as e:
        raise MailboxError(
            f"the IMAP mailbox {_where(settings)}: {describe_network_error(e)}"
        ) from e
    return (
        f"logged in to {_where(settings)} as {settings.imap_username}; "
        f"{settings.imap_folder} holds {count} message{'s' * (count != 1)}"
    )


@contextmanager
def imap_session(settings: Settings) -> Iterator[IMAPClient]:
    if not settings.imap_host:
        raise ConfigError("NEWSLETTER_IMAP_HOST is not set: the bounce mailbox cannot be read")
    if not settings.imap_username or not settings.imap_password:
        raise ConfigError(
            "NEWSLETTER_IMAP_PASSWORD (and NEWSLETTER_IMAP_USERNAME, default the bounce "
            "address) must be set to read the bounce mailbox"
        )
    context = ssl.create_default_context()
    client = IMAPClient(
        settings.imap_host,
        port=settings.imap_port,
        ssl=settings.imap_security == "ssl",
        ssl_context=context,
        timeout=settings.smtp_timeout,
    )
    try:
        if settings.imap_security == "starttls":
            client.starttls(context)
        try:
            client.login(settings.imap_username, settings.imap_password)
        except LoginError as e:
            raise MailboxError(
                f"the IMAP server {_where(settings)} refused the login for "
                f"{settings.imap_username}: {describe_network_error(e)}"
            ) from e
        yield client
    finally:
        try:
            client.logout()
        except (IMAPClientError, OSError):
            client.shutdown()


def _move(client: IMAPClient, uids: list[int], folder: str) -> None:
    if client.has_capability("MOVE"):
        client.move(uids, folder)
    else:
        client.copy(uids, folder)
        client.delete_messages(uids)
        client.expunge(uids) if client.has_capability("UIDPLUS") else client.expunge()


def _process_one(
    settings: Settings, db: Database, verp: Verp, uid: int, data: bytes, *, dry_run: bool
) -> ReturnOutcome:
    def is_unsubscribe(address: str) -> bool:
        found = verp.read(address)
        return found is not None and found.kind == "unsubscribe"

    mail = read_returned_mail(data, is_unsubscribe)

    def left_alone(detail: str) -> ReturnOutcome:
        return ReturnOutcome(uid, mail.kind, "left alone", None, None, mail.status, detail)

    if mail.kind in ("auto-reply", "other"):
        return left_alone(mail.detail or f"not a report: {mail.subject}")
    match = _find_reader(db, verp, mail)
    if isinstance(match, str):
        return left_alone(match)
    if dry_run:
        db.execute("BEGIN")
    try:
        action = _apply(settings, db, mail, match)
    finally:
        if dry_run:
            db.execute("ROLLBACK")
    return ReturnOutcome(
        uid,
        mail.kind,
        action,
        match.subscriber.email,
        match.slug,
        mail.status,
        mail.detail,
        match.by,
    )


def _apply(settings: Settings, db: Database, mail: ReturnedMail, match: _Match) -> ReturnAction:
    subscriber = match.subscriber
    if mail.kind == "bounce report":
        # The Status field is the report's verdict; the Diagnostic-Code may quote another code.
        verdict = classify_refusal(
            mail.status or mail.detail, permanent=mail.permanent, report=True
        )
        kind = event_kind_for(verdict.effect)
        changed = store.record_returned_failure(
            db,
            subscriber.id,
            match.slug,
            kind,
            status=mail.status,
            detail=mail.detail,
            bounce_limit=settings.bounce_limit,
        )
        if changed == "bounced":
            return "bounced"
        return "counted" if kind == "soft_bounce" and subscriber.status == "active" else "noted"
    reason: MailUnsubscribeReason = "complaint" if mail.kind == "complaint" else "email"
    changed = store.record_mail_unsubscribe(db, subscriber.id, match.slug, reason, mail.detail)
    return "unsubscribed" if changed else "noted"


def _find_reader(db: Database, verp: Verp, mail: ReturnedMail) -> _Match | str:
    """The reader and post a message is about, or why none is named (a string)."""
    wanted = "unsubscribe" if mail.kind == "unsubscribe" else "bounce"
    ours = [found for a in mail.addresses if (found := verp.read(a)) and found.kind == wanted]
    if ours:
        if any(found.reader is None for found in ours):
            return "the address token is not one we signed (forged or mangled): nothing changed"
        token = ours[0].reader
        assert token is not None
        subscriber = store.get_subscriber_by_public_id(db, token.public_id)
        if subscriber is None:
            return "its token names nobody on the list (a test copy, or an erased reader)"
        slug = next((s for s in store.sent_slugs(db) if post_tag(s) == token.post_tag), None)
        return _Match(subscriber, slug, "token")
    if mail.kind == "unsubscribe":
        return "no unsubscribe token"
    by_id = _by_message_id(db, mail.original_message_id)
    if by_id is not None:
        return by_id
    if mail.recipient:
        subscriber = store.get_subscriber(db, mail.recipient)
        last = store.last_sent_delivery(db, subscriber.id) if subscriber else None
        if subscriber is not None and last is not None:
            return _Match(subscriber, last.slug, "recipient")
    return "names no reader we mailed (no token, Message-ID or recipient of ours)"


def _by_message_id(db: Database, original_id: str | None) -> _Match | None:
    """The delivery a Message-ID of ours names: `<slug.reader.digest@domain>`."""
    match = _MESSAGE_ID.match(original_id or "")
    if match is None:
        return None
    slug, reader = match["slug"], match["reader"]
    domain = original_id.rsplit("@", 1)[1].rstrip(">") if original_id else ""
    if message_id(slug, reader, domain) != original_id:
        return None
    subscriber = store.get_subscriber_by_public_id(db, reader)
    if subscriber is None and reader.isdigit():  # sent before public ids
        subscriber = store.get_subscriber_by_id(db, int(reader))
    if subscriber is None:
        return None
    delivery = store.get_delivery(db, slug, subscriber.id)
    if delivery is None or delivery.message_id != original_id:
        return None
    return _Match(subscriber, slug, "message-id")


def _where(settings: Settings) -> str:
    return f"{settings.imap_host}:{settings.imap_port}"
