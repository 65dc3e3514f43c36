"""What each reader chose: how often (every post or a weekly digest), a pause, their topics.

`mailed_each_post` is the one rule for who gets a post's own email; the digest asks
`reads_digest` instead, so nobody gets a post both ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlite_utils import Database

from ..vocab import Frequency
from .schema import now


def reads_topics(topics: Sequence[str], alias: str = "s") -> tuple[str, list[str]]:
    """SQL (on the subscribers row `alias`) for "reads at least one of `topics`": a reader who
    never picked reads every topic; no topics at all means every reader."""
    if not topics:
        return "1", []
    marks = ", ".join("?" * len(topics))
    return (
        f"({alias}.topics_chosen = 0 OR EXISTS (SELECT 1 FROM subscriber_topics t"
        f" WHERE t.subscriber_id = {alias}.id AND t.topic IN ({marks})))",
        list(topics),
    )


def not_paused(alias: str = "s") -> tuple[str, list[str]]:
    return f"({alias}.paused_until IS NULL OR {alias}.paused_until <= ?)", [now()]


def mailed_each_post(topics: Sequence[str], alias: str = "s") -> tuple[str, list[str]]:
    """Who gets a post's own email: active, not paused, mailed every post (not the digest),
    reading one of the post's topics."""
    reads, reads_params = reads_topics(topics, alias)
    paused, paused_params = not_paused(alias)
    return (
        f"{alias}.status = 'active' AND {alias}.frequency = 'every' AND {paused} AND {reads}",
        [*paused_params, *reads_params],
    )


def reads_digest(alias: str = "s") -> tuple[str, list[str]]:
    """Who gets the weekly digest: active, not paused, on the digest."""
    paused, params = not_paused(alias)
    return f"{alias}.status = 'active' AND {alias}.frequency = 'digest' AND {paused}", params


def set_frequency(db: Database, subscriber_id: int, frequency: Frequency) -> None:
    db.execute("UPDATE subscribers SET frequency = ? WHERE id = ?", [frequency, subscriber_id])


def set_pause(db: Database, subscriber_id: int, until: str | None) -> None:
    """Pause a reader until `until` (an ISO time, UTC), or end the pause with None."""
    db.execute("UPDATE subscribers SET paused_until = ? WHERE id = ?", [until, subscriber_id])


def set_topics(db: Database, subscriber_id: int, topics: Sequence[str] | None) -> None:
    """The topics a reader reads; None: every topic, new ones included."""
    with db.atomic():
        db.execute("DELETE FROM subscriber_topics WHERE subscriber_id = ?", [subscriber_id])
        db.conn.executemany(
            "INSERT INTO subscriber_topics (subscriber_id, topic) VALUES (?, ?)",
            [(subscriber_id, topic) for topic in dict.fromkeys(topics or ())],
        )
        db.execute(
            "UPDATE subscribers SET topics_chosen = ? WHERE id = ?",
            [int(topics is not None), subscriber_id],
        )


def reader_topics(db: Database, subscriber_id: int) -> tuple[str, ...] | None:
    """The topics a reader picked, in name order; None when they read every topic."""
    row = db.execute("SELECT topics_chosen FROM subscribers WHERE id = ?", [subscriber_id])
    chosen = row.fetchone()
    if chosen is None or not chosen[0]:
        return None
    rows = db.execute(
        "SELECT topic FROM subscriber_topics WHERE subscriber_id = ? ORDER BY topic",
        [subscriber_id],
    ).fetchall()
    return tuple(r[0] for r in rows)


def why_not_mailed(
    db: Database, subscriber_id: int, *, digest: bool, topics: Sequence[str] = ()
) -> str | None:
    """Why a reader queued for a run no longer gets it, asked just before their message goes
    (None: they still do). The run's own rule: a digest run asks `reads_digest`, a post's run
    `mailed_each_post` of its audience, so a reader who paused, switched between the digest and
    every post, or left the post's topics since it was queued is skipped."""
    rule, params = reads_digest() if digest else mailed_each_post(topics)
    row = db.execute(
        f"SELECT s.status, {rule} FROM subscribers s WHERE s.id = ?", [*params, subscriber_id]
    ).fetchone()
    if row is None or row[0] != "active":
        return "no longer subscribed"
    if not row[1]:
        return "paused, or chose the digest, every post or other topics since it was queued"
    return None


@dataclass(frozen=True)
class ChoiceCounts:
    """How the active readers chose, for `stats` and `topics`."""

    every: int  # every post (paused ones included)
    digest: int  # the weekly digest (paused ones included)
    paused: int  # paused now, either way
    all_topics: int  # never picked topics: they read every one
    per_topic: dict[str, int]  # readers of each topic (those reading every topic included)


def choice_counts(db: Database, topics: Sequence[str]) -> ChoiceCounts:
    """The active readers by frequency, pause and topic (each of `topics`)."""
    paused, paused_params = not_paused()
    every, digest, paused_now, all_topics = db.execute(
        "SELECT coalesce(sum(s.frequency = 'every'), 0), coalesce(sum(s.frequency = 'digest'), 0),"
        f" coalesce(sum(NOT {paused}), 0), coalesce(sum(s.topics_chosen = 0), 0)"
        " FROM subscribers s WHERE s.status = 'active'",
        paused_params,
    ).fetchone()
    per_topic = {}
    for topic in topics:
        reads, params = reads_topics([topic])
        (count,) = db.execute(
            f"SELECT count(*) FROM subscribers s WHERE s.status = 'active' AND {reads}", params
        ).fetchone()
        per_topic[topic] = int(count)
    return ChoiceCounts(int(every), int(digest), int(paused_now), int(all_topics), per_topic)
