"""The blog feeds `pull` reads, and every entry already taken from them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlite_utils import Database

from .schema import now


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
    return int(db.execute("SELECT id FROM feeds WHERE url = ?", [url]).fetchone()[0])


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
