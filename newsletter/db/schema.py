"""The schema, its migrations, and how the database is opened: the one place a table is defined.

`serve` and `send` share one file, so it runs in WAL mode with a busy timeout. Every write
outside `db.atomic()` commits on its own: a delivery marked sent is on disk before the next one
is marked (synchronous=NORMAL in WAL mode survives a killed process; see README for power loss).
Migrations are named mNNN_what_it_does, applied on every open, and never edited once merged.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from ..errors import DatabaseError
from ..files import create_private_file

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


@migrations()
def m009_reader_choices(db: Database) -> None:
    """What a reader chose (#23): every post or a weekly digest, a pause until a date, and the
    topics they read. `topics_chosen = 0` reads every topic, new ones included (the default);
    once a reader picks, their topics are the rows of `subscriber_topics`. A digest is a send
    like a post's: its deliveries (slug `digest-YYYY-MM-DD`) keep it exactly-once per reader,
    and `digest_posts` says which posts each reader's digest carried."""
    columns = db["subscribers"].columns_dict
    for name, definition in (
        ("frequency", "TEXT NOT NULL DEFAULT 'every' CHECK (frequency IN ('every', 'digest'))"),
        ("paused_until", "TEXT"),
        ("topics_chosen", "INTEGER NOT NULL DEFAULT 0"),
    ):
        if name not in columns:
            db.execute(f"ALTER TABLE subscribers ADD COLUMN {name} {definition}")
    for statement in (
        """CREATE TABLE IF NOT EXISTS subscriber_topics (
            subscriber_id INTEGER NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
            topic TEXT NOT NULL,
            PRIMARY KEY (subscriber_id, topic)
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS subscriber_topics_topic"
        " ON subscriber_topics (topic, subscriber_id)",
        """CREATE TABLE IF NOT EXISTS digest_posts (
            delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
            post_slug TEXT NOT NULL,
            PRIMARY KEY (delivery_id, post_slug)
        ) WITHOUT ROWID""",
    ):
        db.execute(statement)


@migrations()
def m011_relay_message_ids(db: Database) -> None:
    """Sending through a relay's API (#22): the id the service gave each delivery, which its
    bounce and complaint reports name, and the reports already applied (Postmark keeps its
    bounces, SNS may deliver a notification twice), so a second pull changes nothing."""
    if "relay_message_id" not in db["deliveries"].columns_dict:
        db.execute("ALTER TABLE deliveries ADD COLUMN relay_message_id TEXT")
    for statement in (
        "CREATE INDEX IF NOT EXISTS deliveries_relay_message_id ON deliveries"
        " (relay_message_id) WHERE relay_message_id IS NOT NULL",
        """CREATE TABLE IF NOT EXISTS relay_reports (
            service TEXT NOT NULL CHECK (service IN ('ses', 'postmark')),
            report_id TEXT NOT NULL,
            applied_at TEXT NOT NULL,
            PRIMARY KEY (service, report_id)
        ) WITHOUT ROWID""",
    ):
        db.execute(statement)


@migrations()
def m014_digest_variants(db: Database) -> None:
    """Which set of posts a digest delivery carries (`variant`: their slugs, newest first):
    readers with the same set share one rendering, sent as one run of the connections."""
    if "variant" not in db["deliveries"].columns_dict:
        db.execute("ALTER TABLE deliveries ADD COLUMN variant TEXT")


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


def stored_secret_key(db: Database) -> str:
    """The key made on first use and kept in the database, so links keep working."""
    db.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('secret_key', ?)",
        [secrets.token_urlsafe(32)],
    )
    return str(db.execute("SELECT value FROM meta WHERE key = 'secret_key'").fetchone()[0])


def read_stored_secret_key(db: Database) -> str | None:
    """The key kept in the database, if one was made; unlike stored_secret_key, never makes one."""
    row = db.execute("SELECT value FROM meta WHERE key = 'secret_key'").fetchone()
    return row[0] if row else None


def pages(
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


@contextmanager
def immediate(db: Database) -> Iterator[None]:
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


@contextmanager
def connect(path: Path) -> Iterator[Database]:
    """The one way to use the database: opened and migrated, and closed however the block ends."""
    db = open_db(path)
    try:
        yield db
    finally:
        db.close()
