"""Reading the send log: a line per post, a line per delivery, the last run of a post."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from .schema import pages
from .sends import DELIVERY_COLUMNS, Delivery


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
    for row in pages(db, sql, [slug], batch):
        yield Delivery(*row)


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
