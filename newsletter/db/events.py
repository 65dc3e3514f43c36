"""What happens to a reader after a send: bounces, complaints, unsubscribes, reactivations.

`write_off` is the one rule that turns failures into a bounced reader, for a refusal at send
time and for a bounce report alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlite_utils import Database

from ..errors import SubscriberError
from ..vocab import EventSource, MailUnsubscribeReason, ReaderEventKind, SubscriberStatus
from .schema import now
from .sends import record_delivery
from .subscribers import Subscriber, set_status


@dataclass(frozen=True)
class ReaderEvent:
    id: int
    subscriber_id: int | None
    slug: str | None
    kind: ReaderEventKind
    source: EventSource
    status: str | None
    detail: str | None
    created_at: str


READER_EVENT_COLUMNS = ", ".join(ReaderEvent.__dataclass_fields__)


def record_reader_event(
    db: Database,
    subscriber_id: int,
    kind: ReaderEventKind,
    slug: str | None,
    *,
    source: EventSource,
    status: str | None = None,
    detail: str | None = None,
) -> None:
    db.execute(
        "INSERT INTO reader_events (subscriber_id, slug, kind, source, status, detail, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [subscriber_id, slug, kind, source, status, detail, now()],
    )


def write_off(db: Database, subscriber_id: int, *, permanent: bool, bounce_limit: int) -> bool:
    """The one rule that turns a failure into a bounced reader; True if this call did.

    Every failure counts against the address. Only an active reader is written off: at once
    for a permanent failure about the address, else at `bounce_limit` failures. A reader who
    unsubscribed (also while a send was running), was erased or was already bounced stays so,
    so `subscribers reactivate` can never bring back someone who had left.
    """
    with db.atomic():
        db.execute("UPDATE subscribers SET bounces = bounces + 1 WHERE id = ?", [subscriber_id])
        cursor = db.execute(
            "UPDATE subscribers SET status = 'bounced', status_changed_at = ?,"
            " status_reason = 'bounce' WHERE id = ? AND status = 'active' AND (? OR bounces >= ?)",
            [now(), subscriber_id, permanent, bounce_limit],
        )
    return cursor.rowcount == 1


def record_bounce(
    db: Database,
    delivery_id: int,
    subscriber_id: int,
    *,
    attempts: int,
    reply: str,
    message_id: str,
    send_id: int,
    hard: bool,
    bounce_limit: int,
) -> bool:
    """A refusal at send time: the delivery is bounced, and the reader written off by
    `write_off`'s rule; True if the reader is now out."""
    with db.atomic():
        record_delivery(
            db,
            delivery_id,
            status="bounced",
            attempts=attempts,
            reply=reply,
            message_id=message_id,
            send_id=send_id,
        )
        return write_off(db, subscriber_id, permanent=hard, bounce_limit=bounce_limit)


def record_returned_failure(
    db: Database,
    subscriber_id: int,
    slug: str | None,
    kind: ReaderEventKind,
    *,
    status: str | None,
    detail: str,
    bounce_limit: int,
) -> SubscriberStatus | None:
    """A bounce report about one delivery: note it, and write the reader off if it says so.

    `kind` is bounce (out now), soft_bounce (counted) or sender_refusal (noted only). The
    delivery, if there is one, shows the report's words in `log SLUG`. Returns the reader's
    status if this changed it.
    """
    with db.atomic():
        record_reader_event(
            db, subscriber_id, kind, slug, source="report", status=status, detail=detail
        )
        if kind == "sender_refusal":
            return None
        if slug is not None:
            db.execute(
                "UPDATE deliveries SET status = 'bounced', last_reply = ?, updated_at = ?"
                " WHERE slug = ? AND subscriber_id = ? AND test = 0 AND status = 'sent'",
                [
                    f"bounce report: {status or ''} {detail}".replace("  ", " "),
                    now(),
                    slug,
                    subscriber_id,
                ],
            )
        out = write_off(db, subscriber_id, permanent=kind == "bounce", bounce_limit=bounce_limit)
    return "bounced" if out else None


def record_mail_unsubscribe(
    db: Database,
    subscriber_id: int,
    slug: str | None,
    reason: MailUnsubscribeReason,
    detail: str,
) -> SubscriberStatus | None:
    """A complaint (ARF) or an email to the unsubscribe address: the reader leaves at once.

    A complaint also takes a bounced reader off for good (a reactivation must not mail them);
    an email to the unsubscribe address leaves a bounced one as they are, as the link does.
    """
    with db.atomic():
        row = db.execute("SELECT status FROM subscribers WHERE id = ?", [subscriber_id]).fetchone()
        kind: ReaderEventKind = "complaint" if reason == "complaint" else "unsubscribe"
        record_reader_event(db, subscriber_id, kind, slug, source=reason, detail=detail)
        if row is None or row[0] == "unsubscribed" or (row[0] == "bounced" and reason == "email"):
            return None
        set_status(db, subscriber_id, "unsubscribed", reason)
    return "unsubscribed"


def reader_events(
    db: Database, *, slug: str | None = None, subscriber_id: int | None = None
) -> list[ReaderEvent]:
    where, params = (
        ("slug = ?", [slug]) if slug is not None else ("subscriber_id = ?", [subscriber_id])
    )
    rows = db.execute(
        f"SELECT {READER_EVENT_COLUMNS} FROM reader_events WHERE {where} ORDER BY id", params
    ).fetchall()
    return [ReaderEvent(*row) for row in rows]


def reactivate_subscriber(db: Database, subscriber: Subscriber) -> None:
    """The author says a bounced reader's address works: active again, bounce count reset."""
    if subscriber.status != "bounced":
        raise SubscriberError(
            f"{subscriber.email} is {subscriber.status}, not bounced; only bounced readers "
            "are reactivated (an unsubscribed one must subscribe again)"
        )
    with db.atomic():
        set_status(db, subscriber.id, "active", "author")
        db.execute("UPDATE subscribers SET bounces = 0 WHERE id = ?", [subscriber.id])
        record_reader_event(db, subscriber.id, "reactivate", None, source="author")
