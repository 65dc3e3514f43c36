"""Readers: who is on the list, how they joined, and every change of their status."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from sqlite_utils import Database

from ..errors import SubscriberError
from ..vocab import Frequency, StatusFilter, StatusReason, SubscriberSource, SubscriberStatus
from .choices import reads_topics
from .schema import new_public_id, now, pages


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str
    name: str
    status: SubscriberStatus
    source: SubscriberSource
    created_at: str
    status_changed_at: str
    bounces: int = 0
    consent_at: str | None = None
    consent_ip: str | None = None
    consent_user_agent: str | None = None
    consent_form: str | None = None
    confirmation_sent_at: str | None = None
    public_id: str | None = None
    status_reason: str | None = None
    requested_name: str | None = None
    platform: str | None = None
    optin_ip: str | None = None
    left_at: str | None = None
    tags: str | None = None
    frequency: Frequency = "every"
    paused_until: str | None = None
    topics_chosen: int = 0  # 0: every topic; 1: the rows of subscriber_topics


@dataclass(frozen=True)
class Consent:
    """Where a reader agreed to receive mail: kept to show it later (GDPR art. 7)."""

    at: str
    ip: str | None
    user_agent: str | None
    form: str


SUBSCRIBER_COLUMNS = ", ".join(Subscriber.__dataclass_fields__)


def _subscriber(row: tuple[Any, ...] | None) -> Subscriber | None:
    return Subscriber(*row) if row else None


def get_subscriber(db: Database, email: str) -> Subscriber | None:
    row = db.execute(
        f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE email = ?", [email]
    ).fetchone()
    return _subscriber(row)


def get_subscriber_by_public_id(db: Database, public_id: str) -> Subscriber | None:
    row = db.execute(
        f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE public_id = ?", [public_id]
    ).fetchone()
    return _subscriber(row)


def get_subscriber_by_id(db: Database, subscriber_id: int) -> Subscriber | None:
    row = db.execute(
        f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE id = ?", [subscriber_id]
    ).fetchone()
    return _subscriber(row)


def require_subscriber(db: Database, email: str) -> Subscriber:
    subscriber = get_subscriber(db, email)
    if subscriber is None:
        raise SubscriberError(f"{email} is not on the list")
    return subscriber


def add_subscriber(
    db: Database,
    email: str,
    name: str = "",
    *,
    source: SubscriberSource = "cli",
    status: SubscriberStatus = "active",
    consent: Consent | None = None,
) -> Subscriber:
    """Add a reader whose address and name are already normalised; refuse one already there."""
    existing = get_subscriber(db, email)
    if existing is not None:
        raise SubscriberError(f"{existing.email} is already on the list ({existing.status})")
    stamp = now()
    try:
        _insert_subscriber(db, email, name, source, status, consent, stamp)
    except sqlite3.IntegrityError as e:
        if "UNIQUE" not in str(e):
            raise
        # Added by someone else since the check above.
        raise SubscriberError(f"{email} is already on the list") from None
    return require_subscriber(db, email)


def _insert_subscriber(
    db: Database,
    email: str,
    name: str,
    source: SubscriberSource,
    status: SubscriberStatus,
    consent: Consent | None,
    stamp: str,
) -> None:
    db.execute(
        "INSERT INTO subscribers (email, name, status, source, created_at, status_changed_at,"
        " consent_at, consent_ip, consent_user_agent, consent_form, public_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            email,
            name,
            status,
            source,
            stamp,
            stamp,
            consent.at if consent else None,
            consent.ip if consent else None,
            consent.user_agent if consent else None,
            consent.form if consent else None,
            new_public_id(),
        ],
    )


def set_status(
    db: Database,
    subscriber_id: int,
    status: SubscriberStatus,
    reason: StatusReason | None = None,
) -> bool:
    """Change a reader's status and say why; the time and reason are kept only when the status
    really changes. True if it changed (of two requests at once, only one sees True)."""
    cursor = db.execute(
        "UPDATE subscribers SET status = ?, status_changed_at = ?, status_reason = ?"
        " WHERE id = ? AND status != ?",
        [status, now(), reason, subscriber_id, status],
    )
    return cursor.rowcount == 1


def remove_by_author(db: Database, subscriber_id: int) -> None:
    """`subscribers remove`: unsubscribed for cause. Also over the reader's own unsubscribe,
    which the reader could undo: the author's decision is not theirs to undo."""
    stamp = now()
    db.execute(
        "UPDATE subscribers SET status = 'unsubscribed', status_reason = 'author',"
        " status_changed_at = CASE WHEN status = 'unsubscribed' THEN status_changed_at ELSE ?"
        " END WHERE id = ?",
        [stamp, subscriber_id],
    )


AddOutcome = Literal["added", "already active", "resubscribed"]


def add_by_author(
    db: Database, email: str, name: str, *, resubscribe: bool = False
) -> tuple[AddOutcome, Subscriber]:
    """`subscribers add`: a new reader, active at once; one already active, left as they are
    (so the command can be run again); one who left (unsubscribed, bounced, complained, or
    pending a confirmation) only with `resubscribe`, recorded as the author's action with the
    time, the bounce count starting again."""
    existing = get_subscriber(db, email)
    if existing is None:
        return "added", add_subscriber(db, email, name, source="cli")
    if existing.status == "active":
        return "already active", existing
    if not resubscribe:
        raise SubscriberError(
            f"{existing.email} is {existing.status} (since {existing.status_changed_at[:10]}); "
            f"only with their fresh consent: newsletter subscribers add {existing.email} "
            "--resubscribe"
        )
    with db.atomic():
        set_status(db, existing.id, "active", "author")
        db.execute(
            "UPDATE subscribers SET bounces = 0, name = coalesce(nullif(?, ''), name) WHERE id = ?",
            [name, existing.id],
        )
    return "resubscribed", require_subscriber(db, existing.email)


def record_consent(db: Database, subscriber_id: int, consent: Consent) -> None:
    db.execute(
        "UPDATE subscribers SET consent_at = ?, consent_ip = ?, consent_user_agent = ?,"
        " consent_form = ? WHERE id = ?",
        [consent.at, consent.ip, consent.user_agent, consent.form, subscriber_id],
    )


def iter_subscribers(
    db: Database, status: StatusFilter = "all", batch: int = 2000, *, topic: str | None = None
) -> Iterator[Subscriber]:
    """Stream readers in id order, so no list is held whole in memory; with `topic`, only
    its readers (those who read every topic included)."""
    where, params = ("", list[str]()) if status == "all" else ("status = ? AND", [str(status)])
    if topic is not None:
        reads, topic_params = reads_topics([topic], "subscribers")
        where, params = f"{where} {reads} AND", [*params, *topic_params]
    sql = f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE {where} id > ? ORDER BY id LIMIT ?"
    for row in pages(db, sql, params, batch):
        yield Subscriber(*row)


def count_subscribers(db: Database, status: SubscriberStatus = "active") -> int:
    row = db.execute("SELECT count(*) FROM subscribers WHERE status = ?", [status]).fetchone()
    return int(row[0])


def add_pending_subscriber(db: Database, email: str, name: str) -> Subscriber:
    """Add a reader who asked on the web, waiting for confirmation; return whoever is there.

    No consent is recorded yet: asking is not consenting (anyone can type an address), only
    following the emailed link is. Nor is the name: anyone can type that too, so it is kept
    aside (the newest request's) and becomes the reader's name when the address confirms.
    INSERT OR IGNORE rather than add_subscriber: two forms sent at once for one address must
    both end with the one row, and a reader already on the list stays as they are.
    """
    stamp = now()
    with db.atomic():
        db.execute(
            "INSERT OR IGNORE INTO subscribers (email, name, status, source, created_at,"
            " status_changed_at, public_id) VALUES (?, '', 'pending', 'web', ?, ?, ?)",
            [email, stamp, stamp, new_public_id()],
        )
        db.execute(
            "UPDATE subscribers SET requested_name = ? WHERE email = ? AND status != 'active'",
            [name, email],
        )
    return require_subscriber(db, email)


def purge_unconfirmed(db: Database, older_than: str) -> int:
    """Forget web requests nobody confirmed in time: a stranger's address is not ours to keep."""
    cursor = db.execute(
        "DELETE FROM subscribers WHERE status = 'pending' AND source = 'web'"
        " AND status_changed_at < ?",
        [older_than],
    )
    return cursor.rowcount


def claim_confirmation(db: Database, subscriber_id: int, *, last_allowed: str) -> bool:
    """Note a confirmation email as sent now, unless one went out after `last_allowed`.

    One conditional UPDATE, so two requests at once cannot both win the right to send.
    """
    cursor = db.execute(
        "UPDATE subscribers SET confirmation_sent_at = ? WHERE id = ?"
        " AND (confirmation_sent_at IS NULL OR confirmation_sent_at <= ?)",
        [now(), subscriber_id, last_allowed],
    )
    return cursor.rowcount == 1


def activate_subscriber(
    db: Database, subscriber_id: int, consent: Consent, *, confirmed_request: bool = False
) -> bool:
    """Make a reader active on their own confirmed request, keeping the consent that says so.

    The bounce count starts again: the reader has just shown that the address works. With
    `confirmed_request` (the emailed link), the name typed with the request becomes theirs.
    True if this call made them active.
    """
    with db.atomic():
        changed = set_status(db, subscriber_id, "active", "confirmed")
        record_consent(db, subscriber_id, consent)
        db.execute("UPDATE subscribers SET bounces = 0 WHERE id = ?", [subscriber_id])
        if confirmed_request:
            db.execute(
                # A blank name typed on the form keeps the one on file.
                "UPDATE subscribers SET name = coalesce(nullif(requested_name, ''), name),"
                " requested_name = NULL WHERE id = ? AND requested_name IS NOT NULL",
                [subscriber_id],
            )
    return changed


def bounced_since(db: Database, since: str) -> list[Subscriber]:
    rows = db.execute(
        # Bounced by this tool's sends or reports (NULL: before reasons were kept), not the
        # addresses an import brought in as cleaned or undeliverable elsewhere.
        f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE status = 'bounced'"
        " AND (status_reason IS NULL OR status_reason = 'bounce')"
        " AND status_changed_at >= ? ORDER BY id",
        [since],
    ).fetchall()
    return [Subscriber(*row) for row in rows]
