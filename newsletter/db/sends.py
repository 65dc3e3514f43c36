"""The send log: runs, and one delivery row per post and reader, which makes a send exactly-once.

Every write outside `db.atomic()` commits on its own: a delivery marked sent is on disk before
the connection takes its next reader.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlite_utils import Database

from ..vocab import DeliveryStatus, SendKind, SendStatus
from .choices import mailed_each_post
from .schema import immediate, now, pages
from .subscribers import SUBSCRIBER_COLUMNS, Subscriber, get_subscriber


@dataclass(frozen=True)
class Delivery:
    """One post to one reader: the row that makes a send exactly-once."""

    id: int
    slug: str
    subscriber_id: int | None
    email: str | None
    test: bool
    status: DeliveryStatus
    attempts: int
    last_reply: str | None
    message_id: str | None
    send_id: int | None
    created_at: str
    updated_at: str
    sent_at: str | None
    variant: str | None = None  # a digest's posts (their slugs, newest first)


DELIVERY_COLUMNS = ", ".join(Delivery.__dataclass_fields__)


@dataclass(frozen=True)
class Recipient:
    """A reader who still needs the post, as the sender streams them."""

    delivery_id: int
    subscriber_id: int
    email: str
    name: str
    attempts: int
    public_id: str = ""  # names the reader in tokens and the Message-ID


def start_send(db: Database, slug: str, kind: SendKind) -> int:
    cursor = db.execute(
        "INSERT INTO sends (slug, kind, started_at) VALUES (?, ?, ?)", [slug, kind, now()]
    )
    return int(cursor.lastrowid or 0)


def finish_send(
    db: Database,
    send_id: int,
    *,
    status: SendStatus,
    sent: int,
    failed: int,
    bounced: int,
    skipped: int,
    note: str | None = None,
) -> None:
    """Close a run. A note quotes readers ("last: ann@example.org: 451 ..."): in the same
    transaction, the address of anyone erased during the run is taken out of it."""
    with immediate(db):
        if note is not None:
            note = _note_without_erased(db, send_id, note)
        db.execute(
            "UPDATE sends SET status = ?, finished_at = ?, sent = ?, failed = ?, bounced = ?,"
            " skipped = ?, note = ? WHERE id = ?",
            [status, now(), sent, failed, bounced, skipped, note, send_id],
        )


def mark_interrupted_sends(db: Database) -> int:
    """Runs still 'running' when no send holds the lock were killed; say so in the log."""
    cursor = db.execute(
        "UPDATE sends SET status = 'interrupted' WHERE status = 'running'",
    )
    return cursor.rowcount


def queue_deliveries(db: Database, slug: str, topics: Sequence[str] = ()) -> None:
    """Give every reader who gets this post's email (`choices.mailed_each_post`: active, not
    paused, not on the digest, reading one of `topics`) and has no delivery of it a pending one.

    Readers who left (or paused, or moved to the digest) since an earlier run are marked
    skipped, so the log shows why they got nothing; one who comes back is picked up again.
    """
    stamp = now()
    mailed, params = mailed_each_post(topics)
    with db.atomic():
        db.execute(
            "INSERT OR IGNORE INTO deliveries (slug, subscriber_id, email, status, created_at,"
            f" updated_at) SELECT ?, s.id, s.email, 'pending', ?, ? FROM subscribers s"
            f" WHERE {mailed}",
            [slug, stamp, stamp, *params],
        )
        db.execute(
            "UPDATE deliveries SET status = 'skipped', updated_at = ? WHERE slug = ?"
            " AND test = 0 AND status IN ('pending', 'failed') AND subscriber_id IN"
            f" (SELECT s.id FROM subscribers s WHERE NOT ({mailed}))",
            [stamp, slug, *params],
        )
        db.execute(
            "UPDATE deliveries SET status = 'pending', updated_at = ? WHERE slug = ?"
            " AND test = 0 AND status = 'skipped' AND subscriber_id IN"
            f" (SELECT s.id FROM subscribers s WHERE {mailed})",
            [stamp, slug, *params],
        )


def count_outstanding(db: Database, slug: str, variant: str | None = None) -> int:
    row = db.execute(
        "SELECT count(*) FROM deliveries WHERE slug = ? AND variant IS ? AND test = 0"
        " AND status IN ('pending', 'failed')",
        [slug, variant],
    ).fetchone()
    return int(row[0])


def count_delivered(db: Database, slug: str) -> int:
    row = db.execute(
        "SELECT count(*) FROM deliveries WHERE slug = ? AND test = 0 AND status = 'sent'", [slug]
    ).fetchone()
    return int(row[0])


def iter_outstanding(
    db: Database, slug: str, *, batch: int = 500, after_id: int = 0, variant: str | None = None
) -> Iterator[Recipient]:
    """Stream the readers who still need this post (of a digest: those whose digest carries
    `variant`), in id order, a batch at a time.

    Readers who left since the run began come too: the sender checks each one just before
    sending and marks them skipped, so the log accounts for everyone.
    """
    sql = (
        "SELECT d.id, d.subscriber_id, s.email, s.name, d.attempts, s.public_id FROM deliveries d"
        " JOIN subscribers s ON s.id = d.subscriber_id"
        " WHERE d.slug = ? AND d.variant IS ? AND d.test = 0 AND d.status IN ('pending', 'failed')"
        " AND d.id > ? ORDER BY d.id LIMIT ?"
    )
    for row in pages(db, sql, [slug, variant], batch, after_id):
        yield Recipient(*row)


def is_active(db: Database, subscriber_id: int) -> bool:
    row = db.execute("SELECT status FROM subscribers WHERE id = ?", [subscriber_id]).fetchone()
    return bool(row) and row[0] == "active"


def iter_due(
    db: Database, slug: str, topics: Sequence[str] = (), batch: int = 2000
) -> Iterator[Subscriber]:
    """Readers who get this post's email and have not had it (read only: nothing is queued)."""
    mailed, params = mailed_each_post(topics)
    sql = (
        f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers s WHERE {mailed}"
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.slug = ? AND d.subscriber_id = s.id"
        " AND d.status IN ('sent', 'bounced')) AND s.id > ? ORDER BY s.id LIMIT ?"
    )
    for row in pages(db, sql, [*params, slug], batch):
        yield Subscriber(*row)


def count_due(db: Database, slug: str, topics: Sequence[str] = ()) -> int:
    """How many readers `iter_due` would give."""
    mailed, params = mailed_each_post(topics)
    return int(
        db.execute(
            f"SELECT count(*) FROM subscribers s WHERE {mailed} AND NOT EXISTS"
            " (SELECT 1 FROM deliveries d WHERE d.slug = ? AND d.subscriber_id = s.id"
            " AND d.status IN ('sent', 'bounced'))",
            [*params, slug],
        ).fetchone()[0]
    )


def record_delivery(
    db: Database,
    delivery_id: int,
    *,
    status: DeliveryStatus,
    attempts: int,
    reply: str | None,
    message_id: str | None,
    send_id: int,
    relay_message_id: str | None = None,
) -> None:
    """Write one delivery's outcome; committed by itself the moment it is known.

    `relay_message_id` is the id a relay service (SES, Postmark) gave the message: its bounce
    and complaint reports name the delivery by it.

    The reader may have been erased while their message was in flight: then the row has lost
    its address, and one statement keeps it so (the reply is stored without any address, and
    a delivery still due stays skipped), whatever the sender had in hand.
    """
    stamp = now()
    erased_reply = without_addresses(reply) if reply is not None else None
    db.execute(
        "UPDATE deliveries SET"
        " status = CASE WHEN email IS NULL AND test = 0 AND ? IN ('pending', 'failed')"
        " THEN 'skipped' ELSE ? END,"
        " attempts = ?, last_reply = CASE WHEN email IS NULL THEN ? ELSE ? END,"
        " message_id = ?, send_id = ?, updated_at = ?,"
        " sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END,"
        " relay_message_id = coalesce(?, relay_message_id)"
        " WHERE id = ?",
        [
            status,
            status,
            attempts,
            erased_reply,
            reply,
            message_id,
            send_id,
            stamp,
            status,
            stamp,
            relay_message_id,
            delivery_id,
        ],
    )


# Good enough to find an address quoted in a server's reply or a run's note.
_ADDRESS = re.compile(r"[^\s<>()\[\],;:\"'`]+@[^\s<>()\[\],;:\"'`]+")


ERASED = "(erased)"


def without_addresses(text: str) -> str:
    return _ADDRESS.sub(ERASED, text)


def _note_without_erased(db: Database, send_id: int, note: str) -> str:
    """The note, with each address in it that is no longer on the list taken out, when
    someone mailed in this run was erased during it (else the note may name the sender or
    the SMTP login, which are not on the list and must stay)."""
    addresses = set(_ADDRESS.findall(note))
    erased_during_run = (
        addresses
        and db.execute(
            "SELECT 1 FROM deliveries WHERE send_id = ? AND email IS NULL AND test = 0 LIMIT 1",
            [send_id],
        ).fetchone()
    )
    if not erased_during_run:
        return note
    for address in addresses:
        if get_subscriber(db, address.rstrip(".")) is None:
            note = note.replace(address, ERASED)
    return note


def record_test_delivery(
    db: Database,
    slug: str,
    email: str,
    *,
    status: DeliveryStatus,
    reply: str,
    message_id: str,
    send_id: int,
) -> None:
    stamp = now()
    db.execute(
        "INSERT INTO deliveries (slug, subscriber_id, email, test, status, attempts, last_reply,"
        " message_id, send_id, created_at, updated_at, sent_at)"
        " VALUES (?, NULL, ?, 1, ?, 1, ?, ?, ?, ?, ?, ?)",
        [
            slug,
            email,
            status,
            reply,
            message_id,
            send_id,
            stamp,
            stamp,
            stamp if status == "sent" else None,
        ],
    )


def sent_slugs(db: Database, slug: str | None = None) -> list[str]:
    """Every post a real send went out for (a token's post tag is one of these); from the
    small table of runs, not the log of every delivery. With `slug`: that one, if it did."""
    if slug is not None:
        rows = db.execute("SELECT slug FROM sends WHERE kind = 'real' AND slug = ? LIMIT 1", [slug])
        return [r[0] for r in rows]
    return [r[0] for r in db.execute("SELECT DISTINCT slug FROM sends WHERE kind = 'real'")]


def get_delivery(db: Database, slug: str, subscriber_id: int) -> Delivery | None:
    row = db.execute(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE slug = ? AND subscriber_id = ?"
        " AND test = 0",
        [slug, subscriber_id],
    ).fetchone()
    return Delivery(*row) if row else None


def last_sent_delivery(db: Database, subscriber_id: int) -> Delivery | None:
    row = db.execute(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE subscriber_id = ? AND test = 0"
        " AND status IN ('sent', 'bounced') ORDER BY sent_at DESC, id DESC LIMIT 1",
        [subscriber_id],
    ).fetchone()
    return Delivery(*row) if row else None


def archive_post(db: Database, slug: str, reason: str) -> bool:
    """Count a post as published without mailing it; False if it was already."""
    cursor = db.execute(
        "INSERT OR IGNORE INTO archived_posts (slug, archived_at, reason) VALUES (?, ?, ?)",
        [slug, now(), reason],
    )
    return cursor.rowcount == 1


def archived_slugs(db: Database) -> set[str]:
    return {row[0] for row in db.execute("SELECT slug FROM archived_posts").fetchall()}
