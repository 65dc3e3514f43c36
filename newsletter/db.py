"""The subscriber list and the send log in SQLite: the schema, its migrations and every query.

`serve` and `send` share one file, so it runs in WAL mode with a busy timeout. Every write
outside `db.atomic()` commits on its own: a delivery marked sent is on disk before the next one
is marked (synchronous=NORMAL in WAL mode survives a killed process; see README for power loss).
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from .errors import DatabaseError, SubscriberError
from .files import create_private_file

SubscriberStatus = Literal["active", "unsubscribed", "bounced", "pending"]
SUBSCRIBER_STATUSES: tuple[SubscriberStatus, ...] = ("active", "unsubscribed", "bounced", "pending")
DeliveryStatus = Literal["pending", "sent", "failed", "bounced", "skipped"]
# Why a reader's status last changed; a reason decides who may undo it (an author's removal is
# not undone by the reader's resubscribe button; a complaint never by an import).
StatusReason = Literal[
    "reader",  # the reader's own unsubscribe link or button
    "author",  # `subscribers remove`, `subscribers add --resubscribe`, `reactivate`
    "complaint",  # a spam complaint (ARF report, or a platform's export says so)
    "email",  # an email to the unsubscribe address
    "import",  # an imported file said so
    "bounce",  # permanent delivery failures
    "confirmed",  # the reader confirmed by the emailed link
]
BUSY_TIMEOUT_SECONDS = 30.0

migrations = Migrations("newsletter")


@migrations()
def m001_initial(db: Database) -> None:
    for statement in (
        """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
        # AUTOINCREMENT: an id is never reused, so an erased reader's old link cannot
        # unsubscribe whoever joins next.
        """CREATE TABLE subscribers (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            email TEXT NOT NULL UNIQUE COLLATE NOCASE,
            name TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL
                CHECK (status IN ('active', 'unsubscribed', 'bounced', 'pending')),
            source TEXT NOT NULL CHECK (source IN ('cli', 'import', 'web')),
            created_at TEXT NOT NULL,
            status_changed_at TEXT NOT NULL,
            bounces INTEGER NOT NULL DEFAULT 0,
            consent_at TEXT,
            consent_ip TEXT,
            consent_user_agent TEXT,
            consent_form TEXT,
            confirmation_sent_at TEXT
        )""",
        "CREATE INDEX subscribers_status ON subscribers (status, id)",
        """CREATE TABLE sends (
            id INTEGER PRIMARY KEY,
            slug TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('real', 'test')),
            status TEXT NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'finished', 'stopped', 'interrupted')),
            started_at TEXT NOT NULL,
            finished_at TEXT,
            sent INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            bounced INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            note TEXT
        )""",
        """CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            slug TEXT NOT NULL,
            subscriber_id INTEGER REFERENCES subscribers (id) ON DELETE SET NULL,
            email TEXT,
            test INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'sent', 'failed', 'bounced', 'skipped')),
            attempts INTEGER NOT NULL DEFAULT 0,
            last_reply TEXT,
            message_id TEXT,
            send_id INTEGER REFERENCES sends (id),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            sent_at TEXT,
            UNIQUE (slug, subscriber_id)
        )""",
        # The queue of work: a delivery leaves this partial index the moment it is sent,
        # which keeps the per-delivery write small.
        "CREATE INDEX deliveries_due ON deliveries (slug, id)"
        " WHERE status IN ('pending', 'failed')",
        # `log SLUG` pages through a post's deliveries in id order; a send never changes these.
        "CREATE INDEX deliveries_slug ON deliveries (slug, id)",
        "CREATE INDEX deliveries_subscriber ON deliveries (subscriber_id)",
    ):
        db.execute(statement)


@migrations()
def m002_public_ids_reasons_archive(db: Database) -> None:
    """Readers get a random public id for their links (a sequential id would tell how big the
    list is), statuses get a reason, and posts can be published without being mailed."""
    for statement in (
        "ALTER TABLE subscribers ADD COLUMN public_id TEXT",
        "ALTER TABLE subscribers ADD COLUMN status_reason TEXT",
        "UPDATE subscribers SET public_id = lower(hex(randomblob(8))) WHERE public_id IS NULL",
        "CREATE UNIQUE INDEX subscribers_public_id ON subscribers (public_id)",
        # Posts that count as published without a send (a feed's back catalogue): `send` and
        # `send --due` never mail them; the web archive shows them.
        """CREATE TABLE archived_posts (
            slug TEXT PRIMARY KEY,
            archived_at TEXT NOT NULL,
            reason TEXT NOT NULL
        )""",
    ):
        db.execute(statement)


@migrations()
def m003_import_details(db: Database) -> None:
    """What an imported file knows about a reader: where they came from, from which IP they
    opted in, when they left there, and their tags or labels (kept as text for later)."""
    for statement in (
        "ALTER TABLE subscribers ADD COLUMN platform TEXT",
        "ALTER TABLE subscribers ADD COLUMN optin_ip TEXT",
        "ALTER TABLE subscribers ADD COLUMN left_at TEXT",
        "ALTER TABLE subscribers ADD COLUMN tags TEXT",
    ):
        db.execute(statement)


@migrations()
def m005_feeds(db: Database) -> None:
    """The blog feeds `pull` reads: what each answered last (for conditional requests) and
    every entry already taken, so an entry becomes a post once, however often it is edited.

    IF NOT EXISTS: tests/test_db.py re-applies every migration after m001 to an old file.
    """
    for statement in (
        """CREATE TABLE IF NOT EXISTS feeds (
            id INTEGER PRIMARY KEY,
            url TEXT NOT NULL UNIQUE,
            etag TEXT,
            last_modified TEXT,
            first_pulled_at TEXT NOT NULL,
            last_checked_at TEXT NOT NULL
        )""",
        # Keyed by the entry's id/guid (else its link) across all feeds: the same blog read
        # through a second address (http and https, a custom domain) brings no duplicates.
        """CREATE TABLE IF NOT EXISTS feed_entries (
            entry_key TEXT PRIMARY KEY,
            feed_id INTEGER NOT NULL REFERENCES feeds (id),
            slug TEXT NOT NULL,
            link TEXT,
            back_catalogue INTEGER NOT NULL,
            taken_at TEXT NOT NULL
        )""",
    ):
        db.execute(statement)


@migrations()
def m006_bounces(db: Database) -> None:
    """What came back after a send (bounce reports, complaints, unsubscribes by link or email)
    and the author's reactivations: one row each, with the report's own words."""
    for statement in (
        """CREATE TABLE reader_events (
            id INTEGER PRIMARY KEY,
            subscriber_id INTEGER REFERENCES subscribers (id) ON DELETE SET NULL,
            slug TEXT,
            kind TEXT NOT NULL CHECK (kind IN ('bounce', 'soft_bounce', 'sender_refusal',
                'complaint', 'unsubscribe', 'reactivate')),
            source TEXT NOT NULL,
            status TEXT,
            detail TEXT,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX reader_events_subscriber ON reader_events (subscriber_id, id)",
        "CREATE INDEX reader_events_slug ON reader_events (slug, kind)",
    ):
        db.execute(statement)


@migrations()
def m008_hardening(db: Database) -> None:
    """The name typed with the newest web request: it becomes the reader's name only when
    the address confirms, so a stranger's text never sticks; and an index for the purge."""
    if "requested_name" not in db["subscribers"].columns_dict:
        db.execute("ALTER TABLE subscribers ADD COLUMN requested_name TEXT")
    # Every subscribe request forgets the expired pending ones: an index range, not a scan
    # of every pending row, however many a flood of requests has left.
    db.execute(
        "CREATE INDEX IF NOT EXISTS subscribers_status_since"
        " ON subscribers (status, status_changed_at)"
    )


def new_public_id() -> str:
    """A reader's id in links and tokens: random, so it says nothing about the list."""
    return secrets.token_hex(8)


def open_db(path: Path) -> Database:
    """Open (creating if needed) and migrate the database; a bad file is a DatabaseError."""
    if path.exists() and not path.is_file():
        raise DatabaseError(f"{path} is not a file")
    try:
        create_private_file(path)  # owner-only before any data, and so are its -wal and -shm
    except OSError as e:
        raise DatabaseError(f"cannot create the database {path}: {e.strerror}") from e
    try:
        conn = sqlite3.connect(
            str(path), timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        db = Database(conn)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        # Erased rows are overwritten, not left in free pages (Debian builds it on; others not).
        db.execute("PRAGMA secure_delete = ON")
        migrations.apply(db)
    except sqlite3.DatabaseError as e:
        raise DatabaseError(f"cannot open the database {path}: {e}{_not_writable(path)}") from e
    return db


def _not_writable(path: Path) -> str:
    """Why SQLite may have failed: WAL mode writes beside the database (-wal, -shm) too."""
    if os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK)):
        return ""
    return "; the database file and its folder must be writable by this user"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- the secret key -------------------------------------------------------------------------


def stored_secret_key(db: Database) -> str:
    """The key made on first use and kept in the database, so links keep working."""
    db.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('secret_key', ?)",
        [secrets.token_urlsafe(32)],
    )
    return db.execute("SELECT value FROM meta WHERE key = 'secret_key'").fetchone()[0]


def read_stored_secret_key(db: Database) -> str | None:
    """The key kept in the database, if one was made; unlike stored_secret_key, never makes one."""
    row = db.execute("SELECT value FROM meta WHERE key = 'secret_key'").fetchone()
    return row[0] if row else None


# --- subscribers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str
    name: str
    status: SubscriberStatus
    source: str
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
    source: str = "cli",
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
    source: str,
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


def delete_subscriber(db: Database, email: str) -> str:
    """Erase a person: their row, and their address in the send log (the counts stay).

    Test copies sent to the address lose it too, and so do server replies and run notes that
    quote it ("550 5.1.1 <ann@example.org>: unknown user"). Deliveries still due are marked
    skipped, so the log does not wait for them for ever. Erasing is rare, so the scans of the
    log that this takes are affordable. Returns the address as it was kept.
    """
    subscriber = get_subscriber(db, email)
    address = subscriber.email if subscriber else email
    mailed = db.execute(
        "SELECT 1 FROM deliveries WHERE lower(email) = lower(?) LIMIT 1", [address]
    ).fetchone()
    if subscriber is None and mailed is None:
        raise SubscriberError(f"nothing is kept about {email}: not on the list, never mailed")
    subscriber_id = subscriber.id if subscriber else None
    with db.atomic():
        db.execute(
            "UPDATE deliveries SET status = 'skipped', updated_at = ? WHERE subscriber_id = ?"
            " AND status IN ('pending', 'failed')",
            [now(), subscriber_id],
        )
        for table, column in (
            ("deliveries", "last_reply"),
            ("sends", "note"),
            ("reader_events", "detail"),  # a bounce report quotes the address
        ):
            db.execute(
                f"UPDATE {table} SET {column} = replace({column}, ?, '(erased)')"
                f" WHERE instr({column}, ?) > 0",
                [address, address],
            )
            # Quoted in another case: drop the text rather than keep the address.
            db.execute(
                f"UPDATE {table} SET {column} = '(erased)'"
                f" WHERE instr(lower({column}), lower(?)) > 0",
                [address],
            )
        db.execute(
            "UPDATE deliveries SET email = NULL, subscriber_id = NULL"
            " WHERE subscriber_id = ? OR lower(email) = lower(?)",
            [subscriber_id, address],
        )
        db.execute("DELETE FROM subscribers WHERE id = ?", [subscriber_id])
    # The write-ahead log still holds the pages as they were, address and all: copy the new
    # ones into the database and empty it (as far as no reader is in the middle of it).
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return address


def _pages(
    db: Database, sql: str, params: list[Any], batch: int, after_id: int = 0
) -> Iterator[tuple[Any, ...]]:
    """Rows of `sql` page by page on the id in their first column (keyset pagination): a long
    list streams in flat memory, and each page is an index range, never an OFFSET scan.

    `sql` ends with `id > ? ORDER BY id LIMIT ?` for the last id seen and the page size.
    """
    last_id = after_id
    while True:
        rows = db.execute(sql, [*params, last_id, batch]).fetchall()
        yield from rows
        if len(rows) < batch:
            return
        last_id = rows[-1][0]


def iter_subscribers(db: Database, status: str = "all", batch: int = 2000) -> Iterator[Subscriber]:
    """Stream readers in id order, so no list is held whole in memory."""
    where, params = ("", []) if status == "all" else ("status = ? AND", [status])
    sql = f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE {where} id > ? ORDER BY id LIMIT ?"
    for row in _pages(db, sql, params, batch):
        yield Subscriber(*row)


def iter_due(db: Database, slug: str, batch: int = 2000) -> Iterator[Subscriber]:
    """Active readers who have not had this post (read only: nothing is queued)."""
    sql = (
        f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers s WHERE s.status = 'active'"
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.slug = ? AND d.subscriber_id = s.id"
        " AND d.status IN ('sent', 'bounced')) AND s.id > ? ORDER BY s.id LIMIT ?"
    )
    for row in _pages(db, sql, [slug], batch):
        yield Subscriber(*row)


def count_due(db: Database, slug: str) -> int:
    """How many readers `iter_due` would give."""
    return db.execute(
        "SELECT count(*) FROM subscribers s WHERE s.status = 'active' AND NOT EXISTS"
        " (SELECT 1 FROM deliveries d WHERE d.slug = ? AND d.subscriber_id = s.id"
        " AND d.status IN ('sent', 'bounced'))",
        [slug],
    ).fetchone()[0]


def count_subscribers(db: Database, status: str = "active") -> int:
    return db.execute("SELECT count(*) FROM subscribers WHERE status = ?", [status]).fetchone()[0]


@dataclass(frozen=True)
class NewSubscriber:
    """One valid row of an import, ready to insert, with what the file knew about the reader."""

    email: str
    name: str
    status: SubscriberStatus = "active"
    created_at: str | None = None
    source: str = "import"
    reason: StatusReason | None = None
    platform: str | None = None
    optin_ip: str | None = None
    left_at: str | None = None
    tags: str | None = None


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
SUPPRESSED: tuple[SubscriberStatus, ...] = ("unsubscribed", "bounced")
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
                    r.left_at if r.status in SUPPRESSED and r.left_at else stamp,
                    r.reason,
                    new_public_id(),
                    r.platform,
                    r.optin_ip,
                    r.left_at,
                    r.tags,
                )
            )
        elif r.status in SUPPRESSED and here[1] in ("active", "pending"):
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
        " status_reason, public_id, platform, optin_ip, left_at, tags)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        inserts,
    )
    db.conn.executemany(
        "UPDATE subscribers SET status = ?, status_changed_at = ?, status_reason = ?,"
        " left_at = coalesce(left_at, ?) WHERE email = ?",
        leaving,
    )
    return outcomes


# --- the send log ---------------------------------------------------------------------------


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


def start_send(db: Database, slug: str, kind: str) -> int:
    cursor = db.execute(
        "INSERT INTO sends (slug, kind, started_at) VALUES (?, ?, ?)", [slug, kind, now()]
    )
    return int(cursor.lastrowid or 0)


def finish_send(
    db: Database,
    send_id: int,
    *,
    status: str,
    sent: int,
    failed: int,
    bounced: int,
    skipped: int,
    note: str | None = None,
) -> None:
    """Close a run. A note quotes readers ("last: ann@example.org: 451 ..."): in the same
    transaction, the address of anyone erased during the run is taken out of it."""
    with _immediate(db):
        if note is not None:
            note = _note_without_erased(db, send_id, note)
        db.execute(
            "UPDATE sends SET status = ?, finished_at = ?, sent = ?, failed = ?, bounced = ?,"
            " skipped = ?, note = ? WHERE id = ?",
            [status, now(), sent, failed, bounced, skipped, note, send_id],
        )


@contextmanager
def _immediate(db: Database) -> Iterator[None]:
    """A write transaction taken before the first read (inside a caller's, a savepoint): a
    check and the write it decides are then one, with no writer in between."""
    if db.conn.in_transaction:
        with db.atomic():
            yield
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.conn.in_transaction:  # a full disk may have rolled it back already
            db.execute("ROLLBACK")
        raise


def mark_interrupted_sends(db: Database) -> int:
    """Runs still 'running' when no send holds the lock were killed; say so in the log."""
    cursor = db.execute(
        "UPDATE sends SET status = 'interrupted' WHERE status = 'running'",
    )
    return cursor.rowcount


def queue_deliveries(db: Database, slug: str) -> None:
    """Give every active reader who has no delivery of this post a pending one.

    Readers who left since an earlier run are marked skipped, so the log shows why they got
    nothing; one who comes back is picked up again.
    """
    stamp = now()
    with db.atomic():
        db.execute(
            "INSERT OR IGNORE INTO deliveries (slug, subscriber_id, email, status, created_at,"
            " updated_at) SELECT ?, id, email, 'pending', ?, ? FROM subscribers"
            " WHERE status = 'active'",
            [slug, stamp, stamp],
        )
        db.execute(
            "UPDATE deliveries SET status = 'skipped', updated_at = ? WHERE slug = ?"
            " AND test = 0 AND status IN ('pending', 'failed') AND subscriber_id IN"
            " (SELECT id FROM subscribers WHERE status != 'active')",
            [stamp, slug],
        )
        db.execute(
            "UPDATE deliveries SET status = 'pending', updated_at = ? WHERE slug = ?"
            " AND test = 0 AND status = 'skipped' AND subscriber_id IN"
            " (SELECT id FROM subscribers WHERE status = 'active')",
            [stamp, slug],
        )


def count_outstanding(db: Database, slug: str) -> int:
    return db.execute(
        "SELECT count(*) FROM deliveries WHERE slug = ? AND test = 0"
        " AND status IN ('pending', 'failed')",
        [slug],
    ).fetchone()[0]


def count_delivered(db: Database, slug: str) -> int:
    return db.execute(
        "SELECT count(*) FROM deliveries WHERE slug = ? AND test = 0 AND status = 'sent'", [slug]
    ).fetchone()[0]


def iter_outstanding(
    db: Database, slug: str, *, batch: int = 500, after_id: int = 0
) -> Iterator[Recipient]:
    """Stream the readers who still need this post, in id order, a batch at a time.

    Readers who left since the run began come too: the sender checks each one just before
    sending and marks them skipped, so the log accounts for everyone.
    """
    sql = (
        "SELECT d.id, d.subscriber_id, s.email, s.name, d.attempts, s.public_id FROM deliveries d"
        " JOIN subscribers s ON s.id = d.subscriber_id"
        " WHERE d.slug = ? AND d.test = 0 AND d.status IN ('pending', 'failed')"
        " AND d.id > ? ORDER BY d.id LIMIT ?"
    )
    for row in _pages(db, sql, [slug], batch, after_id):
        yield Recipient(*row)


def is_active(db: Database, subscriber_id: int) -> bool:
    row = db.execute("SELECT status FROM subscribers WHERE id = ?", [subscriber_id]).fetchone()
    return bool(row) and row[0] == "active"


def record_delivery(
    db: Database,
    delivery_id: int,
    *,
    status: DeliveryStatus,
    attempts: int,
    reply: str | None,
    message_id: str | None,
    send_id: int,
) -> None:
    """Write one delivery's outcome; committed by itself the moment it is known.

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
        " sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END"
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
    """Mark a delivery bounced and count it against the reader; True if the reader is now out."""
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
        db.execute("UPDATE subscribers SET bounces = bounces + 1 WHERE id = ?", [subscriber_id])
        bounces = db.execute(
            "SELECT bounces FROM subscribers WHERE id = ?", [subscriber_id]
        ).fetchone()
        out = hard or (bounces is not None and bounces[0] >= bounce_limit)
        if out:
            set_status(db, subscriber_id, "bounced", "bounce")
    return out


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


@dataclass(frozen=True)
class PostLog:
    """What the send log says of one post."""

    slug: str
    sent: int
    failed: int
    bounced: int
    pending: int
    skipped: int
    tests: int
    first_sent_at: str | None
    last_sent_at: str | None


def post_logs(db: Database) -> dict[str, PostLog]:
    rows = db.execute(
        "SELECT slug,"
        " sum(test = 0 AND status = 'sent'), sum(test = 0 AND status = 'failed'),"
        " sum(test = 0 AND status = 'bounced'), sum(test = 0 AND status = 'pending'),"
        " sum(test = 0 AND status = 'skipped'), sum(test = 1),"
        " min(CASE WHEN test = 0 THEN sent_at END), max(CASE WHEN test = 0 THEN sent_at END)"
        " FROM deliveries GROUP BY slug"
    ).fetchall()
    return {row[0]: PostLog(*row) for row in rows}


def iter_deliveries(db: Database, slug: str, batch: int = 2000) -> Iterator[Delivery]:
    sql = f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE slug = ? AND id > ? ORDER BY id LIMIT ?"
    for row in _pages(db, sql, [slug], batch):
        yield Delivery(*row)


@dataclass(frozen=True)
class PersonalData:
    """Everything kept about one person (GDPR art. 15): their row, consent, deliveries and
    what came back about them (bounce reports, complaints, unsubscribes)."""

    email: str
    subscriber: Subscriber | None
    deliveries: list[Delivery]
    events: list[ReaderEvent] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "subscriber": asdict(self.subscriber) if self.subscriber else None,
            "deliveries": [asdict(delivery) for delivery in self.deliveries],
            "events": [asdict(event) for event in self.events],
        }


def personal_data(db: Database, email: str) -> PersonalData:
    """What the list and the send log hold about `email`, test copies sent to it included."""
    subscriber = get_subscriber(db, email)
    rows = db.execute(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE subscriber_id = ?"
        " OR (subscriber_id IS NULL AND lower(email) = lower(?)) ORDER BY id",
        [subscriber.id if subscriber else None, email],
    ).fetchall()
    if subscriber is None and not rows:
        raise SubscriberError(f"nothing is kept about {email}: not on the list, never mailed")
    return PersonalData(
        email=subscriber.email if subscriber else email,
        subscriber=subscriber,
        deliveries=[Delivery(*row) for row in rows],
        events=reader_events(db, subscriber_id=subscriber.id) if subscriber else [],
    )


def last_send(db: Database, slug: str) -> dict[str, Any] | None:
    row = db.execute(
        "SELECT id, kind, status, started_at, finished_at, sent, failed, bounced, skipped, note"
        " FROM sends WHERE slug = ? ORDER BY id DESC LIMIT 1",
        [slug],
    ).fetchone()
    if row is None:
        return None
    keys = (
        "id",
        "kind",
        "status",
        "started_at",
        "finished_at",
        "sent",
        "failed",
        "bounced",
        "skipped",
        "note",
    )
    return dict(zip(keys, row, strict=True))


# --- posts published without a send ---------------------------------------------------------


def archive_post(db: Database, slug: str, reason: str) -> bool:
    """Count a post as published without mailing it; False if it was already."""
    cursor = db.execute(
        "INSERT OR IGNORE INTO archived_posts (slug, archived_at, reason) VALUES (?, ?, ?)",
        [slug, now(), reason],
    )
    return cursor.rowcount == 1


def archived_slugs(db: Database) -> set[str]:
    return {row[0] for row in db.execute("SELECT slug FROM archived_posts").fetchall()}


# --- double opt-in (the web form) -----------------------------------------------------------


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


# --- blog feeds (`pull`) --------------------------------------------------------------------


@dataclass(frozen=True)
class FeedState:
    """What `pull` remembers of one feed address."""

    id: int
    url: str
    etag: str | None
    last_modified: str | None
    first_pulled_at: str
    last_checked_at: str


def get_feed(db: Database, url: str) -> FeedState | None:
    row = db.execute(
        "SELECT id, url, etag, last_modified, first_pulled_at, last_checked_at"
        " FROM feeds WHERE url = ?",
        [url],
    ).fetchone()
    return FeedState(*row) if row else None


def save_feed_check(db: Database, url: str, etag: str | None, last_modified: str | None) -> int:
    """Note a successful fetch of a feed (creating its row on the first); return its id."""
    stamp = now()
    db.execute(
        "INSERT INTO feeds (url, etag, last_modified, first_pulled_at, last_checked_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (url) DO UPDATE SET etag = excluded.etag,"
        " last_modified = excluded.last_modified, last_checked_at = excluded.last_checked_at",
        [url, etag, last_modified, stamp, stamp],
    )
    return db.execute("SELECT id FROM feeds WHERE url = ?", [url]).fetchone()[0]


def touch_feed(db: Database, url: str) -> None:
    """Note a check that found nothing new (a 304), keeping the validators."""
    db.execute("UPDATE feeds SET last_checked_at = ? WHERE url = ?", [now(), url])


def taken_entry_keys(db: Database, keys: Iterable[str]) -> set[str]:
    """Which of these entry keys have already become posts."""
    wanted = list(dict.fromkeys(keys))
    taken: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        rows = db.execute(
            f"SELECT entry_key FROM feed_entries WHERE entry_key IN ({marks})", chunk
        ).fetchall()
        taken.update(row[0] for row in rows)
    return taken


def record_feed_entry(
    db: Database, feed_id: int, entry_key: str, slug: str, link: str | None, back_catalogue: bool
) -> None:
    db.execute(
        "INSERT INTO feed_entries (entry_key, feed_id, slug, link, back_catalogue, taken_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [entry_key, feed_id, slug, link, int(back_catalogue), now()],
    )


def unfinished_feed_posts(db: Database, taken_since: str) -> list[str]:
    """New posts taken from a feed since `taken_since` whose send never finished, oldest first.

    `pull --send` sends these, not only what the pull just took: when the mail server was down
    at the last poll, the next one still sends the post (the send log keeps it to once each).
    """
    rows = db.execute(
        "SELECT slug FROM feed_entries WHERE back_catalogue = 0 AND taken_at >= ? AND NOT EXISTS"
        " (SELECT 1 FROM sends WHERE sends.slug = feed_entries.slug AND kind = 'real'"
        " AND status = 'finished') ORDER BY taken_at, rowid",
        [taken_since],
    ).fetchall()
    return [row[0] for row in rows]


def used_slugs(db: Database) -> set[str]:
    """Slugs the database knows, even of posts whose file is gone: a new post under one of
    them would count as already sent."""
    rows = db.execute(
        "SELECT DISTINCT slug FROM deliveries UNION SELECT slug FROM archived_posts"
        " UNION SELECT slug FROM feed_entries"
    ).fetchall()
    return {row[0] for row in rows}


# --- what comes back after a send (#13) -----------------------------------------------------

ReaderEventKind = Literal[
    "bounce",  # a permanent failure about the reader: out at once
    "soft_bounce",  # counted against NEWSLETTER_BOUNCE_LIMIT
    "sender_refusal",  # a report of a refusal that is the sender's fault: the reader stays
    "complaint",  # an ARF spam complaint: unsubscribed
    "unsubscribe",  # by the link (web) or by email
    "reactivate",  # the author brought a bounced reader back
]


@dataclass(frozen=True)
class ReaderEvent:
    id: int
    subscriber_id: int | None
    slug: str | None
    kind: str
    source: str
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
    source: str,
    status: str | None = None,
    detail: str | None = None,
) -> None:
    db.execute(
        "INSERT INTO reader_events (subscriber_id, slug, kind, source, status, detail, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [subscriber_id, slug, kind, source, status, detail, now()],
    )


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
        db.execute("UPDATE subscribers SET bounces = bounces + 1 WHERE id = ?", [subscriber_id])
        row = db.execute(
            "SELECT status, bounces FROM subscribers WHERE id = ?", [subscriber_id]
        ).fetchone()
        if row is None or row[0] != "active":
            return None
        if kind == "bounce" or row[1] >= bounce_limit:
            set_status(db, subscriber_id, "bounced", "bounce")
            return "bounced"
    return None


def record_mail_unsubscribe(
    db: Database,
    subscriber_id: int,
    slug: str | None,
    reason: Literal["complaint", "email"],
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


def sent_slugs(db: Database) -> list[str]:
    """Every post a real send went out for (a token's post tag is one of these); from the
    small table of runs, not the log of every delivery."""
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


@dataclass(frozen=True)
class PostStats:
    """What one post's email did: deliveries, and what came back from it."""

    slug: str
    sent: int
    bounced: int
    complaints: int
    unsubscribes: int


def post_stats(db: Database) -> list[PostStats]:
    """Per post, in the order first sent. `sent` counts messages the server took, bounced
    ones included; bounces, complaints and unsubscribes are those that named the post."""
    rows = db.execute(
        "SELECT d.slug, sum(d.status IN ('sent', 'bounced')), sum(d.status = 'bounced'),"
        " (SELECT count(*) FROM reader_events e WHERE e.slug = d.slug AND e.kind = 'complaint'),"
        " (SELECT count(*) FROM reader_events e WHERE e.slug = d.slug"
        "  AND e.kind = 'unsubscribe')"
        " FROM deliveries d WHERE d.test = 0 GROUP BY d.slug ORDER BY min(d.id)"
    ).fetchall()
    return [PostStats(*row) for row in rows]


@dataclass(frozen=True)
class WeekStats:
    """How the list changed in one week (Monday first): readers who joined, left, bounced."""

    week: str
    joined: int
    left: int
    bounced: int


def weekly_stats(db: Database) -> list[WeekStats]:
    """Joined by when each reader was added; left and bounced by their current status and when
    it last changed (a reader who left and came back counts as joined only). People an import
    brought in as already gone (suppressed, never on this list) count in neither."""
    monday = "date({0}, '-' || ((strftime('%w', {0}) + 6) % 7) || ' days')"
    imported_gone = "(status_reason = 'import' AND status IN ('unsubscribed', 'bounced'))"
    rows = db.execute(
        f"SELECT week, sum(joined), sum(left), sum(bounced) FROM ("
        f" SELECT {monday.format('created_at')} AS week, 1 AS joined, 0 AS left, 0 AS bounced"
        f"  FROM subscribers WHERE status != 'pending' AND NOT {imported_gone}"
        f" UNION ALL SELECT {monday.format('status_changed_at')}, 0,"
        "  status = 'unsubscribed', status = 'bounced' FROM subscribers"
        f"  WHERE status IN ('unsubscribed', 'bounced') AND NOT {imported_gone}"
        ") GROUP BY week ORDER BY week"
    ).fetchall()
    return [WeekStats(*row) for row in rows]
