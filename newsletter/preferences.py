"""The reader's preferences page: what they read (topics), how often, a pause; no login.

Every email's "Manage your subscription" link is /preferences/TOKEN under the very token of
its unsubscribe link (same salt, same keys, same rotation). One token, not a second purpose,
because in this codebase the unsubscribe token already is the reader's whole say over their
subscription: it unsubscribes, and its page's Resubscribe button brings them back. A second
token would draw no line an attacker could not step over (the page must offer "Unsubscribe
from everything", so a preferences token would have to mint an unsubscribe one, and both sit
side by side in every email, forwarded or not), while it would put one more secret per email
to leak, one more signature per reader in a 100,000-reader send, and a second list of
salts to rotate. Confirm and CSRF tokens keep their own salts, so neither opens this page.
The page shows the address masked, as the unsubscribe page does: links get forwarded.

Here the form's fields are checked and applied; `web` parses the request and calls. Anything
wrong (an unknown topic, a frequency or pause not offered, a tampered token, a reader who has
left since the page was opened) raises and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlite_utils import Database

from . import db as store
from .config import WEEKDAYS, Settings
from .db.choices import reader_topics, set_frequency, set_pause, set_topics
from .errors import NotOnList, SubscriberError
from .subscribe import reader_from_unsubscribe_link
from .tokens import ReaderTokens
from .topics import Topic, load_topics
from .vocab import FREQUENCIES, PAUSE_CHOICES, Frequency, PauseChoice

PAUSE_DAYS: dict[PauseChoice, int] = {"2-weeks": 14, "1-month": 30, "3-months": 91}
PAUSE_LABELS: dict[PauseChoice, str] = {
    "keep": "Keep my pause",
    "none": "No pause",
    "2-weeks": "Pause for 2 weeks",
    "1-month": "Pause for 1 month",
    "3-months": "Pause for 3 months",
}
_GONE = (
    "this address is no longer subscribed, so there are no choices to change; subscribe again "
    "with the form on the home page"
)


@dataclass(frozen=True)
class Choices:
    """One reader's choices and the newsletter's topics, as the page shows them."""

    reader: store.Subscriber
    newsletter_topics: tuple[Topic, ...]
    topics: tuple[str, ...] | None  # None: every topic, new ones included
    frequency: Frequency
    paused_until: str | None  # an ISO time, UTC; None or past: not paused

    def reads(self, topic: str) -> bool:
        return self.topics is None or topic in self.topics

    def paused(self, now: datetime | None = None) -> bool:
        moment = (now or datetime.now(UTC)).isoformat(timespec="seconds")
        return self.paused_until is not None and self.paused_until > moment


@dataclass(frozen=True)
class Requested:
    """The form as sent. `topics` is None when the page had no topics section."""

    topics: tuple[str, ...] | None
    frequency: str
    pause: str


def reader_choices(settings: Settings, db: Database, tokens: ReaderTokens, token: str) -> Choices:
    """The reader a link names and what they chose; changes nothing (scanners open links)."""
    return _choices(settings, db, reader_from_unsubscribe_link(db, tokens, token))


def save_choices(
    settings: Settings,
    db: Database,
    tokens: ReaderTokens,
    token: str,
    requested: Requested,
    now: datetime | None = None,
) -> Choices:
    """Check every field, then apply them all in one transaction; the new choices.

    Ticking every topic stores None (every topic, those the author adds later too)."""
    try:
        reader = reader_from_unsubscribe_link(db, tokens, token)
    except NotOnList as e:  # erased since the page was opened: a refusal, not a notice
        raise SubscriberError(_GONE) from e
    if reader.status != "active":
        raise SubscriberError(_GONE)
    newsletter_topics = load_topics(settings.directory)
    frequency = _frequency(requested.frequency)
    pause = _pause(requested.pause)
    topics = _topics(requested.topics, newsletter_topics, reader_topics(db, reader.id))
    with db.atomic():
        set_topics(db, reader.id, topics)
        set_frequency(db, reader.id, frequency)
        if pause == "none":
            set_pause(db, reader.id, None)
        elif pause != "keep":
            until = (now or datetime.now(UTC)) + timedelta(days=PAUSE_DAYS[pause])
            set_pause(db, reader.id, until.astimezone(UTC).isoformat(timespec="seconds"))
    return _choices(settings, db, reader)


def digest_time(settings: Settings) -> str:
    """When the digest goes out, as the page says it: "Sundays at 08:00 (Europe/London)"."""
    day = WEEKDAYS[settings.digest_day].capitalize()
    return f"{day}s at {settings.digest_hour:02d}:00 ({settings.timezone})"


def describe(settings: Settings, choices: Choices, now: datetime | None = None) -> list[str]:
    """What the reader now gets, in sentences for the confirmation page."""
    if choices.frequency == "digest":
        how = f"One email a week, a digest of the posts, on {digest_time(settings)}."
    else:
        how = "Each post in its own email, as it is published."
    lines = [how]
    if choices.newsletter_topics:
        if choices.topics is None:
            lines.append("Posts on every topic, including topics added later.")
        else:
            titles = [t.title for t in choices.newsletter_topics if t.name in choices.topics]
            lines.append(f"Posts on {', '.join(titles)}, and posts for every reader.")
    if choices.paused(now) and choices.paused_until is not None:
        lines.append(f"Nothing until {pause_day(settings, choices.paused_until)}; then as above.")
    return lines


def pause_day(settings: Settings, paused_until: str) -> str:
    """The day a pause ends, in the author's zone: "20 December 2026". A pause the author set
    to 9999-12-31 is past year 9999 east of UTC, so that one is given as UTC's day."""
    until = datetime.fromisoformat(paused_until)
    try:
        until = until.astimezone(settings.timezone)
    except OverflowError:
        until = until.astimezone(UTC)
    return until.strftime("%-d %B %Y")


def _choices(settings: Settings, db: Database, reader: store.Subscriber) -> Choices:
    fresh = store.get_subscriber_by_id(db, reader.id) or reader
    return Choices(
        reader=fresh,
        newsletter_topics=load_topics(settings.directory),
        topics=reader_topics(db, fresh.id),
        frequency=fresh.frequency,
        paused_until=fresh.paused_until,
    )


def _frequency(value: str) -> Frequency:
    for frequency in FREQUENCIES:
        if value == frequency:
            return frequency
    raise SubscriberError("choose how often: every post or the weekly digest")


def _pause(value: str) -> PauseChoice:
    for choice in PAUSE_CHOICES:
        if value == choice:
            return choice
    raise SubscriberError("choose a pause from the list")


def _topics(
    ticked: Sequence[str] | None, known: Sequence[Topic], before: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    """None for every topic; `before` when the page showed no topics."""
    if not known:
        return None
    if ticked is None:
        return before
    names = [topic.name for topic in known]
    for name in ticked:
        if name not in names:
            raise SubscriberError(f"there is no topic {name[:40]!r} to choose")
    if not ticked:
        raise SubscriberError(
            "tick at least one topic; to get nothing for a while, choose a pause, or unsubscribe"
        )
    if set(ticked) == set(names):
        return None
    return tuple(name for name in names if name in ticked)
