"""The weekly digest in the send log: who gets which posts, queued once per reader and digest.

A digest is a send like a post's: its deliveries (slug `digest_YYYY-MM-DD`, which no post can
have: a post's slug has no underscore) make it exactly-once per reader, and `digest_posts`
says which posts each reader's digest carries. Both are written when the digest is queued,
before anything is sent, so a run cut short resumes with the same posts for everyone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlite_utils import Database

from .choices import reads_digest, reads_topics
from .schema import now

DIGEST_PREFIX = "digest_"
_IS_DIGEST = r"slug LIKE 'digest\_%' ESCAPE '\'"


@dataclass(frozen=True)
class DigestCandidate:
    """A post that may go into this week's digests."""

    slug: str
    published_at: str  # ISO, UTC
    topics: tuple[str, ...]  # none: in everyone's digest


def is_digest(slug: str) -> bool:
    return slug.startswith(DIGEST_PREFIX)


def oldest_window(db: Database) -> str | None:
    """Where the earliest digest reader's window starts (a week before their last digest was
    queued): no post before it can go into anyone's digest."""
    where, params = reads_digest()
    row = db.execute(
        "SELECT strftime('%Y-%m-%dT%H:%M:%S+00:00', min(last), '-7 days') FROM"
        " (SELECT (SELECT max(d.created_at) FROM deliveries d WHERE d.subscriber_id = s.id"
        f" AND d.test = 0 AND d.status IN ('sent', 'bounced') AND d.{_IS_DIGEST}) AS last"
        f" FROM subscribers s WHERE {where})",
        params,
    ).fetchone()
    return row[0] if row else None


def queue_digest(
    db: Database, slug: str, posts: Sequence[DigestCandidate], window_start: str
) -> int:
    """Give every digest reader with something new a pending delivery of digest `slug`, and
    the posts it carries: each of `posts` (newest first) in one of their topics that no digest
    of theirs carried yet and that is at most a week older than their last digest was (a first
    digest: published after `window_start`). A post dated before the last digest but written
    after it went (a bare date is midnight) still comes, once. A reader with nothing new gets
    no row, so nothing is sent to them; one who already has a row keeps it (a rerun sends
    what was queued). Returns how many readers were queued now."""
    stamp = now()
    reader_rule, rule_params = reads_digest()
    marks = ", ".join("?" * len(posts))
    with db.atomic():
        for table in ("digest_queue", "digest_last", "digest_carried"):
            db.execute(f"DROP TABLE IF EXISTS temp.{table}")
        db.execute(
            "CREATE TEMP TABLE digest_queue (subscriber_id INTEGER, rank INTEGER, post_slug TEXT)"
        )
        # Where each reader's window starts: a week before their last digest was queued.
        db.execute(
            "CREATE TEMP TABLE digest_last AS SELECT subscriber_id,"
            " strftime('%Y-%m-%dT%H:%M:%S+00:00', max(created_at), '-7 days') AS since"
            f" FROM deliveries WHERE test = 0 AND status IN ('sent', 'bounced') AND {_IS_DIGEST}"
            " GROUP BY subscriber_id"
        )
        db.execute("CREATE UNIQUE INDEX temp.digest_last_reader ON digest_last (subscriber_id)")
        db.execute(
            "CREATE TEMP TABLE digest_carried (subscriber_id INTEGER, post_slug TEXT,"
            " PRIMARY KEY (subscriber_id, post_slug)) WITHOUT ROWID"
        )
        db.execute(
            "INSERT OR IGNORE INTO digest_carried SELECT d.subscriber_id, p.post_slug"
            " FROM digest_posts p JOIN deliveries d ON d.id = p.delivery_id"
            f" WHERE d.test = 0 AND d.status IN ('sent', 'bounced') AND p.post_slug IN ({marks})",
            [post.slug for post in posts],
        )
        for rank, post in enumerate(posts):
            in_topics, topic_params = reads_topics(post.topics)
            db.execute(
                "INSERT INTO digest_queue SELECT s.id, ?, ? FROM subscribers s"
                " LEFT JOIN digest_last l ON l.subscriber_id = s.id"
                f" WHERE {reader_rule} AND {in_topics} AND coalesce(l.since, ?) < ?"
                " AND NOT EXISTS (SELECT 1 FROM digest_carried c WHERE c.subscriber_id = s.id"
                " AND c.post_slug = ?)"
                " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.slug = ?"
                " AND d.subscriber_id = s.id)",
                [
                    rank,
                    post.slug,
                    *rule_params,
                    *topic_params,
                    window_start,
                    post.published_at,
                    post.slug,
                    slug,
                ],
            )
        cursor = db.execute(
            "INSERT OR IGNORE INTO deliveries (slug, subscriber_id, email, status, created_at,"
            " updated_at, variant) SELECT ?, q.subscriber_id, s.email, 'pending', ?, ?,"
            " group_concat(q.post_slug, ' ') FROM (SELECT * FROM digest_queue"
            " ORDER BY subscriber_id, rank) q JOIN subscribers s ON s.id = q.subscriber_id"
            " GROUP BY q.subscriber_id",
            [slug, stamp, stamp],
        )
        queued = cursor.rowcount
        db.execute(
            "INSERT OR IGNORE INTO digest_posts (delivery_id, post_slug)"
            " SELECT d.id, q.post_slug FROM digest_queue q JOIN deliveries d"
            " ON d.slug = ? AND d.subscriber_id = q.subscriber_id",
            [slug],
        )
        for table in ("digest_queue", "digest_last", "digest_carried"):
            db.execute(f"DROP TABLE temp.{table}")
    return queued


def digest_variants(db: Database, slug: str) -> list[tuple[str, int]]:
    """The sets of posts the outstanding deliveries of a digest carry, with how many readers
    each; the most common first."""
    rows = db.execute(
        "SELECT variant, count(*) FROM deliveries WHERE slug = ? AND test = 0"
        " AND status IN ('pending', 'failed') AND variant IS NOT NULL"
        " GROUP BY variant ORDER BY count(*) DESC, variant",
        [slug],
    ).fetchall()
    return [(str(variant), int(count)) for variant, count in rows]


def digest_sent(db: Database, slug: str) -> bool:
    """Whether a run of this digest finished (it went to everyone it was queued for)."""
    row = db.execute(
        "SELECT 1 FROM sends WHERE slug = ? AND kind = 'real' AND status = 'finished'"
        " AND NOT EXISTS (SELECT 1 FROM deliveries WHERE slug = ? AND test = 0"
        " AND status = 'pending') LIMIT 1",
        [slug, slug],
    ).fetchone()
    return row is not None


def digested_slugs(db: Database) -> set[str]:
    """Posts that went out in someone's digest: they are published, like a post sent."""
    rows = db.execute(
        "SELECT DISTINCT p.post_slug FROM digest_posts p JOIN deliveries d"
        " ON d.id = p.delivery_id WHERE d.status IN ('sent', 'bounced') AND d.test = 0"
    ).fetchall()
    return {row[0] for row in rows}
