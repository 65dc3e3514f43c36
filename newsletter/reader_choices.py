"""The author changes one reader's choices (`subscribers set`): how often, which topics, a pause.

Every change is checked before anything is written (an unknown topic, a pause in the past, two
ways of saying the same thing), then written in one transaction, so bad input changes nothing.
The rules of who gets what stay in `db.choices`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlite_utils import Database

from . import db as store
from .config import Settings
from .errors import SubscriberError
from .topics import check_topics, load_topics
from .vocab import Frequency


@dataclass(frozen=True)
class ChoiceChange:
    """What `subscribers set` was asked to change; None leaves a choice as it is."""

    frequency: Frequency | None = None
    topics: tuple[str, ...] | None = None  # these topics only
    all_topics: bool = False  # every topic, new ones included
    pause_until: dt.date | None = None  # paused until this day starts, in the author's zone
    pause_weeks: int | None = None
    resume: bool = False

    @property
    def empty(self) -> bool:
        return self == ChoiceChange()


def split_topic_list(value: str) -> tuple[str, ...]:
    """`a,b` (or `a, b`) as topic names; the names are checked against topics.toml later."""
    return tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))


def parse_day(value: str, option: str) -> dt.date:
    """A day as `YYYY-MM-DD`, for an option of the command line."""
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise SubscriberError(f"{option} {value!r} is not a date (YYYY-MM-DD)") from None


def pause_end(settings: Settings, change: ChoiceChange, now: dt.datetime) -> str | None:
    """When the asked-for pause ends, as the store keeps it (ISO, UTC); None for no pause."""
    if change.pause_weeks is not None:
        if change.pause_weeks < 1:
            raise SubscriberError("--pause-weeks must be 1 or more")
        try:
            end = now + dt.timedelta(weeks=change.pause_weeks)
        except OverflowError:  # past year 9999
            raise SubscriberError(f"--pause-weeks {change.pause_weeks} is too far away") from None
    elif change.pause_until is not None:
        end = dt.datetime.combine(change.pause_until, dt.time(0), settings.timezone)
        if end <= now:
            raise SubscriberError(
                f"--pause-until {change.pause_until.isoformat()} is not in the future"
            )
    else:
        return None
    return end.astimezone(dt.UTC).isoformat(timespec="seconds")


def change_choices(
    settings: Settings,
    db: Database,
    email: str,
    change: ChoiceChange,
    now: dt.datetime | None = None,
) -> store.Subscriber:
    """Apply `change` to the reader at `email` and return them as they are now."""
    moment = now or dt.datetime.now(dt.UTC)
    if change.empty:
        raise SubscriberError(
            "nothing to change: give --frequency, --topics, --all-topics, --pause-until, "
            "--pause-weeks or --resume"
        )
    if change.topics is not None and change.all_topics:
        raise SubscriberError("give --topics or --all-topics, not both")
    pauses = (change.pause_until is not None, change.pause_weeks is not None, change.resume)
    if sum(pauses) > 1:
        raise SubscriberError("give one of --pause-until, --pause-weeks and --resume")
    if change.topics is not None:
        if not change.topics:
            raise SubscriberError("--topics needs at least one topic (or use --all-topics)")
        check_topics(change.topics, load_topics(settings.directory), "--topics")
    until = pause_end(settings, change, moment)
    subscriber = store.require_subscriber(db, email)
    with db.atomic():
        if change.frequency is not None:
            store.set_frequency(db, subscriber.id, change.frequency)
        if change.topics is not None or change.all_topics:
            store.set_topics(db, subscriber.id, change.topics)
        if until is not None or change.resume:
            store.set_pause(db, subscriber.id, until)
    changed = store.get_subscriber_by_id(db, subscriber.id)
    assert changed is not None  # the row was there a moment ago, in this connection
    return changed


def describe_choices(
    subscriber: store.Subscriber, topics: Sequence[str] | None, now: dt.datetime | None = None
) -> str:
    """A reader's choices in a few words: `digest, paused until 2026-12-20, topics a,b`."""
    moment = (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")
    parts = ["every post" if subscriber.frequency == "every" else "weekly digest"]
    if subscriber.paused_until and subscriber.paused_until > moment:
        parts.append(f"paused until {subscriber.paused_until[:10]}")
    if topics is None:
        parts.append("every topic")
    else:
        parts.append(f"topics {','.join(topics)}" if topics else "no topics")
    return ", ".join(parts)
