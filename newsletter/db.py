"""The subscriber list and the send log in SQLite: the schema, its migrations and every query.

`serve` and `send` share one file, so it runs in WAL mode with a busy timeout. Every write
outside `db.atomic()` commits on its own: a delivery marked sent is on disk before the next one
is marked (synchronous=NORMAL in WAL mode survives a killed process; see README for power loss).
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from .errors import DatabaseError, SubscriberError

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


def new_public_id() -> str:
    """A reader's id in links and tokens: random, so it says nothing about the list."""
    return secrets.token_hex(8)


def open_db(path: Path) -> Database:
    """Open (creating if needed) and migrate the database; a bad file is a DatabaseError."""
    if path.exists() and not path.is_file():
        raise DatabaseError(f"{path} is not a file")
    try:
        conn = sqlite3.connect(
            str(path), timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        db = Database(conn)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        migrations.apply(db)
    except sqlite3.DatabaseError as e:
        raise DatabaseError(f"cannot open the database {path}: {e}") from e
    return db


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
) -> None:
    """Change a reader's status and say why; the time and reason are kept only when the status
    really changes."""
    db.execute(
        "UPDATE subscribers SET status = ?, status_changed_at = ?, status_reason = ?"
        " WHERE id = ? AND status != ?",
        [status, now(), reason, subscriber_id, status],
    )


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
    """One valid row of an import, ready to insert."""

    email: str
    name: str
    status: SubscriberStatus = "active"
    created_at: str | None = None
    source: str = "import"


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
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("ROLLBACK" if dry_run else "COMMIT")
    return added


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
    db: Database,
    slug: str,
    *,
    shard: int = 0,
    shards: int = 1,
    batch: int = 500,
    after_id: int = 0,
) -> Iterator[Recipient]:
    """Stream the readers who still need this post, in id order, a batch at a time.

    With `shards`, only the deliveries whose id leaves remainder `shard`: each connection of a
    parallel send owns its share, so no two ever take the same reader. Readers who left since
    the run began come too: the sender checks each one just before sending and marks them
    skipped, so the log accounts for everyone.
    """
    sql = (
        "SELECT d.id, d.subscriber_id, s.email, s.name, d.attempts, s.public_id FROM deliveries d"
        " JOIN subscribers s ON s.id = d.subscriber_id"
        " WHERE d.slug = ? AND d.test = 0 AND d.status IN ('pending', 'failed')"
        " AND d.id % ? = ? AND d.id > ? ORDER BY d.id LIMIT ?"
    )
    for row in _pages(db, sql, [slug, shards, shard], batch, after_id):
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
    """Write one delivery's outcome; committed by itself the moment it is known."""
    stamp = now()
    db.execute(
        "UPDATE deliveries SET status = ?, attempts = ?, last_reply = ?, message_id = ?,"
        " send_id = ?, updated_at = ?, sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END"
        " WHERE id = ?",
        [status, attempts, reply, message_id, send_id, stamp, status, stamp, delivery_id],
    )


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
    """Everything kept about one person (GDPR art. 15): their row, consent and deliveries."""

    email: str
    subscriber: Subscriber | None
    deliveries: list[Delivery]

    def as_dict(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "subscriber": asdict(self.subscriber) if self.subscriber else None,
            "deliveries": [asdict(delivery) for delivery in self.deliveries],
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
    following the emailed link is. INSERT OR IGNORE rather than add_subscriber: two forms sent
    at once for one address must both end with the one row, and a reader already on the list
    stays as they are.
    """
    stamp = now()
    db.execute(
        "INSERT OR IGNORE INTO subscribers (email, name, status, source, created_at,"
        " status_changed_at, public_id) VALUES (?, ?, 'pending', 'web', ?, ?, ?)",
        [email, name, stamp, stamp, new_public_id()],
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


def activate_subscriber(db: Database, subscriber_id: int, consent: Consent) -> None:
    """Make a reader active on their own confirmed request, keeping the consent that says so.

    The bounce count starts again: the reader has just shown that the address works.
    """
    with db.atomic():
        set_status(db, subscriber_id, "active", "confirmed")
        record_consent(db, subscriber_id, consent)
        db.execute("UPDATE subscribers SET bounces = 0 WHERE id = ?", [subscriber_id])


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
        f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE status = 'bounced'"
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
    it last changed (a reader who left and came back counts as joined only)."""
    monday = "date({0}, '-' || ((strftime('%w', {0}) + 6) % 7) || ' days')"
    rows = db.execute(
        f"SELECT week, sum(joined), sum(left), sum(bounced) FROM ("
        f" SELECT {monday.format('created_at')} AS week, 1 AS joined, 0 AS left, 0 AS bounced"
        "  FROM subscribers WHERE status != 'pending'"
        f" UNION ALL SELECT {monday.format('status_changed_at')}, 0,"
        "  status = 'unsubscribed', status = 'bounced' FROM subscribers"
        "  WHERE status IN ('unsubscribed', 'bounced')"
        ") GROUP BY week ORDER BY week"
    ).fetchall()
    return [WeekStats(*row) for row in rows]
