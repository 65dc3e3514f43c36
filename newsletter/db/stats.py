"""The figures of `newsletter stats`: per post, and the list week by week."""

from __future__ import annotations

from dataclasses import dataclass

from sqlite_utils import Database


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
