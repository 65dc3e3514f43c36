"""Imports: a whole file merged into the list in one transaction, leaving winning over joining."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from sqlite_utils import Database

from ..vocab import (
    LEFT_STATUSES,
    Frequency,
    StatusReason,
    SubscriberSource,
    SubscriberStatus,
)
from .schema import new_public_id, now


@dataclass(frozen=True)
class NewSubscriber:
    """One valid row of an import, ready to insert, with what the file knew about the reader."""

    email: str
    name: str
    status: SubscriberStatus = "active"
    created_at: str | None = None
    source: SubscriberSource = "import"
    reason: StatusReason | None = None
    platform: str | None = None
    optin_ip: str | None = None
    left_at: str | None = None
    tags: str | None = None
    frequency: Frequency = "every"
    paused_until: str | None = None
    topics: tuple[str, ...] | None = None  # None: every topic (the default)


def insert_new_subscribers(db: Database, rows: Iterable[NewSubscriber], *, dry_run: bool) -> int:
    """Insert the rows whose address is not on the list yet; return how many were added.

    An address already there, whatever its status, is left as it is: an import never brings back
    a reader who unsubscribed or bounced. A dry run does the same work and rolls it back, so its
    figures are the real ones.
    """
    stamp = now()
    db.execute("BEGIN IMMEDIATE")
    try:
        before = db.conn.total_changes
        db.conn.executemany(
            "INSERT OR IGNORE INTO subscribers (email, name, status, source, created_at,"
            " status_changed_at, public_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                (r.email, r.name, r.status, r.source, r.created_at or stamp, stamp, new_public_id())
                for r in rows
            ),
        )
        added = db.conn.total_changes - before
        db.execute("ROLLBACK" if dry_run else "COMMIT")
    except BaseException:
        # A full disk makes SQLite roll back by itself: a second ROLLBACK would hide the cause.
        if db.conn.in_transaction:
            db.execute("ROLLBACK")
        raise
    return added


# What became of one imported row: a new reader, one already here left as they were, one who
# is active here but left there (leaving wins: now unsubscribed or bounced here), or an address
# that came earlier in the same import.
ImportOutcome = Literal["added", "kept", "left", "repeated"]


_IN_CHUNK = 500


IMPORT_CACHE_KIB = 32 * 1024


@contextmanager
def import_transaction(db: Database, *, dry_run: bool) -> Iterator[int]:
    """One write transaction around a whole import, streamed in batches: it commits only when
    the file has been read to its end, so a file that turns out unreadable half-way (or a dry
    run) changes nothing. Yields the last id given before the import: higher ids are its own."""
    (cache_size,) = db.execute("PRAGMA cache_size").fetchone()
    # The indexes of a big list grow at random places (email, public id): a cache that holds
    # them keeps a million-row import from spilling pages to disk again and again.
    db.execute(f"PRAGMA cache_size = {-IMPORT_CACHE_KIB}")
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'subscribers'").fetchone()
        yield int(row[0]) if row else 0
    except BaseException:
        db.execute("ROLLBACK")
        raise
    finally:
        db.execute(f"PRAGMA cache_size = {int(cache_size)}")
    db.execute("ROLLBACK" if dry_run else "COMMIT")


def merge_imported(
    db: Database, rows: list[NewSubscriber], last_old_id: int
) -> list[ImportOutcome]:
    """Merge one batch of imported rows into the list, inside `import_transaction`.

    A new address is added with the status the file gives. One already here keeps its status,
    except that an active or pending reader the file says has left becomes unsubscribed (or
    bounced) here: leaving wins, and joining never revives someone who left.
    """
    found: dict[str, tuple[int, str]] = {}
    for start in range(0, len(rows), _IN_CHUNK):
        chunk = [r.email for r in rows[start : start + _IN_CHUNK]]
        marks = ", ".join("?" * len(chunk))
        for subscriber_id, email, status in db.execute(
            f"SELECT id, email, status FROM subscribers WHERE email IN ({marks})", chunk
        ):
            found[email.lower()] = (subscriber_id, status)
    stamp = now()
    outcomes: list[ImportOutcome] = []
    inserts: list[tuple[Any, ...]] = []
    leaving: list[tuple[Any, ...]] = []
    chosen: list[tuple[str, str]] = []  # (topic, email) of the readers added who chose topics
    for r in rows:
        key = r.email.lower()
        here = found.get(key)
        if here is None:
            found[key] = (last_old_id + 1, r.status)  # later in this import: a repeat
            outcomes.append("added")
            inserts.append(
                (
                    r.email,
                    r.name,
                    r.status,
                    r.source,
                    r.created_at or stamp,
                    r.left_at if r.status in LEFT_STATUSES and r.left_at else stamp,
                    r.reason,
                    new_public_id(),
                    r.platform,
                    r.optin_ip,
                    r.left_at,
                    r.tags,
                    r.frequency,
                    r.paused_until,
                    int(r.topics is not None),
                )
            )
            chosen.extend((topic, r.email) for topic in dict.fromkeys(r.topics or ()))
        elif r.status in LEFT_STATUSES and here[1] in ("active", "pending"):
            # Also when the address came earlier in this import (an export of several
            # audiences): if it says anywhere that they left, they left.
            found[key] = (here[0], r.status)
            outcomes.append("left")
            leaving.append((r.status, stamp, r.reason or "import", r.left_at or stamp, r.email))
        elif here[0] > last_old_id:
            outcomes.append("repeated")
        else:
            outcomes.append("kept")
    db.conn.executemany(
        "INSERT INTO subscribers (email, name, status, source, created_at, status_changed_at,"
        " status_reason, public_id, platform, optin_ip, left_at, tags, frequency, paused_until,"
        " topics_chosen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        inserts,
    )
    db.conn.executemany(
        "INSERT OR IGNORE INTO subscriber_topics (subscriber_id, topic)"
        " SELECT id, ? FROM subscribers WHERE email = ?",
        chosen,
    )
    db.conn.executemany(
        "UPDATE subscribers SET status = ?, status_changed_at = ?, status_reason = ?,"
        " left_at = coalesce(left_at, ?) WHERE email = ?",
        leaving,
    )
    return outcomes
