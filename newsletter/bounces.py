"""`newsletter bounces`: read what came back (the IMAP bounce mailbox, or saved mail) and act.

A bounce report marks its delivery and reader bounced (a temporary one is only noted), a
complaint or an email to the unsubscribe address unsubscribes the reader, and anything else
(auto-replies, mail from people, forged tokens) is left where it is for the author. Each handled
IMAP message is moved to NEWSLETTER_IMAP_DONE_FOLDER, so a second run changes nothing.

Finding the reader: the VERP token in the address the message came to. A token we signed names
the reader whatever the message says (Mailman's rule): a message there that no detector reads
is still that reader's bounce, unless it is an automatic reply, a person's reply, or reads as a
delay. A plus address with a token we did not sign changes nothing and falls back to nothing.
Without a token: the original message's Message-ID, which names post and reader; else each
recipient the report names, if we mailed them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlite_utils import Database

from . import db as store
from .config import Settings
from .errors import ConfigError
from .keys import reader_tokens
from .message import message_id
from .refusals import classify_refusal, enhanced_code
from .relays import RelayReport
from .returned import Failure, ReturnedMail, read_returned_mail
from .returned_sources import check_login, open_source
from .tokens import post_tag
from .verp import Verp
from .vocab import MailUnsubscribeReason, RelayService, ReturnAction, event_kind_for

__all__ = ["apply_relay_reports", "check_login", "process_bounces", "process_relay_reports"]

_MESSAGE_ID = re.compile(r"^<(?P<slug>.+)\.(?P<reader>[0-9a-f]+)\.(?P<digest>[0-9a-f]{12})@.+>$")


@dataclass(frozen=True)
class ReaderOutcome:
    """What a message did to one reader it named."""

    email: str
    slug: str | None
    action: ReturnAction
    status: str | None
    permanent: bool | None  # None: not a failure (a complaint, an unsubscribe)
    detail: str
    matched_by: str  # token, message-id, recipient or relay-id


@dataclass(frozen=True)
class ReturnOutcome:
    """What one message did: to each reader it named, or why it was left alone."""

    id: str  # the IMAP UID, or the file (and place in it) the message was read from
    kind: str
    action: ReturnAction  # the first reader's, or "left alone"
    email: str | None  # the first reader's
    slug: str | None
    status: str | None
    detail: str
    matched_by: str | None = None
    readers: list[ReaderOutcome] = field(default_factory=list)

    @property
    def handled(self) -> bool:
        return self.action != "left alone"


@dataclass(frozen=True)
class _Match:
    subscriber: store.Subscriber
    slug: str | None
    by: str
    failure: Failure | None = None


def process_bounces(
    settings: Settings, *, dry_run: bool = False, origin: str | None = None
) -> list[ReturnOutcome]:
    """Read every message of the source, act on it, put the handled ones aside.

    `origin` None reads NEWSLETTER_IMAP_FOLDER; else the path of an .eml file, an mbox or a
    Maildir, which is never changed. A dry run reads and decides the same, then rolls back and
    moves nothing.
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
        with open_source(settings, origin, dry_run=dry_run) as source:
            handled: list[str] = []
            for key, data in source:
                outcome = process_message(settings, db, verp, key, data, dry_run=dry_run)
                outcomes.append(outcome)
                if outcome.handled:
                    handled.append(key)
                if len(handled) >= 100:
                    source.done(handled)
                    handled = []
            source.done(handled)
        return outcomes
    finally:
        db.close()


def process_relay_reports(
    settings: Settings, service: RelayService, *, dry_run: bool = False
) -> list[ReturnOutcome]:
    """`bounces --from ses|postmark`: the service's bounces and complaints, applied with the
    same rules and log as reports that come by mail; a report once applied is remembered (and
    taken off SES's queue), so a second run changes nothing. A dry run changes nothing."""
    if service == "ses":
        from .relays.ses import reports
    else:
        from .relays.postmark import reports
    pulled = reports(settings, dry_run=dry_run)
    return apply_relay_reports(settings, service, pulled, dry_run=dry_run)


def apply_relay_reports(
    settings: Settings,
    service: RelayService,
    reports: Iterable[RelayReport],
    *,
    dry_run: bool = False,
) -> list[ReturnOutcome]:
    """Apply reports a service pulled or pushed (a webhook), each in its own transaction."""
    outcomes: list[ReturnOutcome] = []
    with store.connect(settings.db_path) as db:
        for report in reports:
            outcome = _apply_relay_report(settings, db, service, report, dry_run=dry_run)
            if outcome is not None:
                outcomes.append(outcome)
    return outcomes


def _apply_relay_report(
    settings: Settings, db: Database, service: RelayService, report: RelayReport, *, dry_run: bool
) -> ReturnOutcome | None:
    """One report; None for one applied before, or a suppressed address not active here."""
    mail = report.mail
    failure = mail.failures[0] if mail.failures else None
    if store.relay_report_applied(db, service, report.report_id):
        if not dry_run:
            report.done()
        return None
    match = _relay_match(db, report, failure)
    if match is None and report.by_address:
        return None  # the suppression list names someone not (or no longer) an active reader
    if match is None or mail.kind not in ("bounce report", "complaint", "unsubscribe"):
        if match is not None and not dry_run:
            store.record_relay_report(db, service, report.report_id)
        why = "names no delivery of ours" if match is None else "not a bounce or complaint"
        email = match.subscriber.email if match else _relay_recipient(mail)
        status = failure.status if failure else None
        return ReturnOutcome(
            report.report_id, mail.kind, "left alone", email, None, status, f"{mail.detail}: {why}"
        )
    db.execute("BEGIN")
    try:
        reader = _apply(settings, db, mail, match)
        store.record_relay_report(db, service, report.report_id)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("ROLLBACK" if dry_run else "COMMIT")
    if not dry_run:
        report.done()
    return ReturnOutcome(
        report.report_id, mail.kind, reader.action, reader.email, reader.slug, reader.status,
        reader.detail, reader.matched_by, [reader],
    )  # fmt: skip


def _relay_recipient(mail: ReturnedMail) -> str | None:
    return mail.recipient or next((f.recipient for f in mail.failures if f.recipient), None)


def _relay_match(db: Database, report: RelayReport, failure: Failure | None) -> _Match | None:
    """The delivery a relay's message id names (its address must be the report's), or for a
    suppression-list entry, that address's active reader and the last post they were sent."""
    recipient = (_relay_recipient(report.mail) or "").lower()
    if not report.by_address:
        if not report.message_id:  # nothing names a delivery: not acted on by address alone
            return None
        found = store.delivery_by_relay_id(db, report.message_id)
        if found is None or (recipient and found.subscriber.email.lower() != recipient):
            return None
        return _Match(found.subscriber, found.slug, "relay-id", failure)
    subscriber = store.get_subscriber(db, recipient) if recipient else None
    if subscriber is None or subscriber.status != "active":
        return None
    last = store.last_sent_delivery(db, subscriber.id)
    return _Match(subscriber, last.slug if last else None, "recipient", failure)


def process_message(
    settings: Settings, db: Database, verp: Verp, key: str, data: bytes, *, dry_run: bool
) -> ReturnOutcome:
    """Read one message and act on every reader it names (a dry run rolls back)."""

    def is_unsubscribe(address: str) -> bool:
        found = verp.read(address)
        return found is not None and found.kind == "unsubscribe"

    mail = read_returned_mail(data, is_unsubscribe)

    def left_alone(detail: str) -> ReturnOutcome:
        status = mail.failures[0].status if mail.failures else None
        return ReturnOutcome(key, mail.kind, "left alone", None, None, status, detail)

    if mail.kind in ("auto-reply", "notice"):
        return left_alone(mail.detail)
    matches = _find_readers(db, verp, mail)
    if isinstance(matches, str):
        return left_alone(matches)
    if dry_run:
        db.execute("BEGIN")
    try:
        readers = [_apply(settings, db, mail, match) for match in matches]
    finally:
        if dry_run:
            db.execute("ROLLBACK")
    first = readers[0]
    kind = "bounce report" if matches[0].failure is not None else mail.kind
    return ReturnOutcome(
        key, kind, first.action, first.email, first.slug, first.status, first.detail,
        first.matched_by, readers,
    )  # fmt: skip


def _apply(settings: Settings, db: Database, mail: ReturnedMail, match: _Match) -> ReaderOutcome:
    subscriber, failure = match.subscriber, match.failure

    def outcome(action: ReturnAction) -> ReaderOutcome:
        return ReaderOutcome(
            subscriber.email,
            match.slug,
            action,
            failure.status if failure else None,
            failure.permanent if failure else None,
            failure.detail if failure else mail.detail,
            match.by,
        )

    if failure is None:
        reason: MailUnsubscribeReason = "complaint" if mail.kind == "complaint" else "email"
        changed = store.record_mail_unsubscribe(db, subscriber.id, match.slug, reason, mail.detail)
        return outcome("unsubscribed" if changed else "noted")
    if not failure.permanent:  # a delay: noted in the reader's events, never a write-off
        store.record_reader_event(
            db, subscriber.id, "soft_bounce", match.slug, source="report",
            status=failure.status, detail=failure.detail,
        )  # fmt: skip
        return outcome("noted")
    # The Status field is the report's verdict; the Diagnostic-Code may quote another code.
    verdict = classify_refusal(failure.status or failure.detail, permanent=True, report=True)
    kind = event_kind_for(verdict.effect)
    changed = store.record_returned_failure(
        db,
        subscriber.id,
        match.slug,
        kind,
        status=failure.status,
        detail=failure.detail,
        bounce_limit=settings.bounce_limit,
    )
    if changed == "bounced":
        return outcome("bounced")
    return outcome(
        "counted" if kind == "soft_bounce" and subscriber.status == "active" else "noted"
    )


def _find_readers(db: Database, verp: Verp, mail: ReturnedMail) -> list[_Match] | str:
    """The readers and post a message is about, or why none is named (a string)."""
    ours = [found for a in mail.addresses if (found := verp.read(a)) is not None]
    if any(found.reader is None for found in ours):
        return "the address token is not one we signed (forged or mangled): nothing changed"
    wanted = "unsubscribe" if mail.kind == "unsubscribe" else "bounce"
    token = next((found.reader for found in ours if found.kind == wanted), None)
    if token is not None:
        subscriber = store.get_subscriber_by_public_id(db, token.public_id)
        if subscriber is None:
            return "its token names nobody on the list (a test copy, or an erased reader)"
        slug = next((s for s in store.sent_slugs(db) if post_tag(s) == token.post_tag), None)
        if mail.kind in ("bounce report", "other"):
            failure = _failure_at_token(mail, subscriber.email)
            if isinstance(failure, str):
                return failure
            return [_Match(subscriber, slug, "token", failure)]
        return [_Match(subscriber, slug, "token")]
    if mail.kind == "unsubscribe":
        return "no unsubscribe token"
    if mail.kind == "other":
        return f"not a report: {mail.subject or mail.detail}"
    by_id = _by_message_id(db, mail.original_message_id)
    if mail.kind == "complaint":
        if by_id is not None:
            return [by_id]
        named = _mailed(db, mail.recipient)
        return [_Match(named[0], named[1], "recipient")] if named else _NOBODY
    matches: list[_Match] = []
    for failure in mail.failures:
        reader = _mailed(db, failure.recipient)
        if reader is None or any(m.subscriber.id == reader[0].id for m in matches):
            continue
        if by_id is not None and by_id.subscriber.id == reader[0].id:
            matches.append(_Match(by_id.subscriber, by_id.slug, "message-id", failure))
        else:
            matches.append(_Match(reader[0], reader[1], "recipient", failure))
    if not matches and by_id is not None:
        matches.append(_Match(by_id.subscriber, by_id.slug, "message-id", mail.failures[0]))
    return matches or _NOBODY


_NOBODY = "names no reader we mailed (no token, Message-ID or recipient of ours)"


def _failure_at_token(mail: ReturnedMail, email: str) -> Failure | str:
    """At a VERP address the token names the reader: the failure about them, or the first; a
    message no detector read is their bounce unless it is a person's reply or a delay."""
    if mail.failures:
        about = [f for f in mail.failures if (f.recipient or "").lower() == email.lower()]
        return (about or [f for f in mail.failures if f.permanent] or list(mail.failures))[0]
    if mail.from_person:
        return f"a person's reply, not a report: {mail.subject}"
    detail = mail.detail or "a message to the reader's return address"
    status = enhanced_code(detail)
    late = mail.reads_temporary or (status or "").startswith("4")
    return Failure(None, status, not late, detail)


def _mailed(db: Database, address: str | None) -> tuple[store.Subscriber, str] | None:
    """The reader at an address a report names, and the last post they were sent."""
    subscriber = store.get_subscriber(db, address.lower()) if address else None
    last = store.last_sent_delivery(db, subscriber.id) if subscriber else None
    return (subscriber, last.slug) if subscriber is not None and last is not None else None


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
