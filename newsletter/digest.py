"""The weekly digest: one email per digest reader with the posts that are new to them.

When: NEWSLETTER_DIGEST_DAY at NEWSLETTER_DIGEST_HOUR in NEWSLETTER_TIMEZONE; `send --due` sends
it once that time has come, `newsletter digest` sends it now. What: every post that is published
(not a draft, its time come, not counted as published without a send) since the reader's last
digest was queued (a first digest: the week before), in their topics, newest first. A reader
with nothing new gets nothing. How: queued once (`db.digests`), then each set of posts is
rendered once and sent by the same machinery, log and rules as a post (`sender.deliver_queued`).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass

from sqlite_utils import Database

from . import db as store
from .archive import all_posts
from .config import Settings
from .dkim import signer_from_settings
from .errors import PostError
from .keys import reader_tokens
from .mailer import open_transport
from .message import IssueMessages
from .posts import Post
from .render import RenderedIssue, render_digest, template_environment
from .run import ProgressCallback, RateLimiter, Run, SendReport, TransportFactory
from .send_lock import send_lock
from .sender import deliver_queued
from .topics import check_topics, load_topics
from .verp import verp_for

WEEK = dt.timedelta(days=7)
MISSED_DIGEST_WINDOW = dt.timedelta(days=3)


@dataclass(frozen=True)
class Digest:
    """This week's digest: its slug in the send log and the moment it was due."""

    slug: str
    due_at: dt.datetime  # aware, UTC
    day: dt.date  # in the author's time zone, as the slug says

    @property
    def window_start(self) -> dt.datetime:
        """Where a reader's first digest starts: the week before it was due."""
        return self.due_at - WEEK


def latest_digest(settings: Settings, now: dt.datetime) -> Digest:
    """The most recent digest time at or before `now`, in the author's time zone."""
    local = now.astimezone(settings.timezone)
    days_back = (local.weekday() - settings.digest_day) % 7
    day = local.date() - dt.timedelta(days=days_back)
    due = dt.datetime.combine(day, dt.time(settings.digest_hour), settings.timezone)
    if due > local:
        day -= WEEK
        due = dt.datetime.combine(day, dt.time(settings.digest_hour), settings.timezone)
    return Digest(f"{store.DIGEST_PREFIX}{day.isoformat()}", due.astimezone(dt.UTC), day)


def digest_is_due(settings: Settings, db: Database, now: dt.datetime) -> Digest | None:
    """This week's digest, if its time has come and it has not gone out (for `send --due`).

    A digest missed by more than MISSED_DIGEST_WINDOW (the machine was off, or the newsletter
    is new) waits for next week instead of going out days late; `newsletter digest` sends it.
    """
    digest = latest_digest(settings, now)
    if now - digest.due_at > MISSED_DIGEST_WINDOW or store.digest_sent(db, digest.slug):
        return None
    return digest


def published_posts(settings: Settings, db: Database, now: dt.datetime) -> list[Post]:
    """The posts a digest may carry, newest first: not drafts, their time come, not counted as
    published without a send (a feed's back catalogue)."""
    archived = store.archived_slugs(db)
    topics = load_topics(settings.directory)
    posts = [post for post in all_posts(settings).due(now) if post.slug not in archived]
    for post in posts:
        check_topics(post.topics, topics, post.path.name)
        check_topics(post.audience, topics, post.path.name)
    return posts


def send_digest(
    settings: Settings,
    *,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    transport_factory: TransportFactory = open_transport,
) -> SendReport:
    """Queue this week's digest for every digest reader with something new, and send it."""
    settings.sender  # noqa: B018 - fail before anything else when From is missing
    started = time.monotonic()
    moment = now or dt.datetime.now(dt.UTC)
    digest = latest_digest(settings, moment)
    report = SendReport(slug=digest.slug, title="the weekly digest", dry_run=dry_run)
    env = template_environment(settings.templates_dir)
    signer = signer_from_settings(settings)
    with store.connect(settings.db_path) as db, send_lock(settings.db_path):
        tokens = reader_tokens(settings, db)
        verp = verp_for(settings.bounce_address, tokens)
        posts = {post.slug: post for post in published_posts(settings, db, moment)}
        if dry_run:
            db.execute("BEGIN")
        try:
            store.mark_interrupted_sends(db)
            _queue(db, digest, list(posts.values()))
            variants = store.digest_variants(db, digest.slug)
            report.due = sum(count for _, count in variants)
            if dry_run:
                for variant, count in variants:
                    issue = render_digest(
                        _posts_of(variant, posts), settings, env, digest.slug, digest.day
                    )
                    messages = IssueMessages(issue, settings, signer=signer, verp=verp)
                    one = messages.for_reader("0" * 16, "reader@example.org", "", "token")
                    report.message_bytes += len(one.data) * count
                return _finished(report, started)
        finally:
            if dry_run:
                db.execute("ROLLBACK")
        send_id = store.start_send(db, digest.slug, "real")
        if not variants:
            store.finish_send(
                db, send_id, status="finished", sent=0, failed=0, bounced=0, skipped=0
            )
        stop = threading.Event()
        rate = RateLimiter(settings.smtp_rate)
        for variant, count in variants:
            if stop.is_set():
                break
            issue = render_digest(_posts_of(variant, posts), settings, env, digest.slug, digest.day)
            messages = IssueMessages(issue, settings, signer=signer, verp=verp)
            run = Run(
                settings,
                digest.slug,
                send_id,
                messages,
                tokens,
                report,
                progress,
                transport_factory,
                stop=stop,
                rate=rate,
                variant=variant,
                queued=count,
            )
            deliver_queued(run, db)
    return _finished(report, started)


def _queue(db: Database, digest: Digest, posts: list[Post]) -> None:
    """Queue the digest from the posts no digest reader can have seen yet."""
    floor = min(
        digest.window_start.isoformat(timespec="seconds"),
        store.oldest_window(db) or digest.window_start.isoformat(timespec="seconds"),
    )
    candidates = [
        # A post's `audience:` holds in the digest too: only its readers see it there.
        store.DigestCandidate(post.slug, _iso(post.published_at), post.audience or post.topics)
        for post in posts
        if _iso(post.published_at) > floor
    ]
    if candidates:
        store.queue_digest(
            db, digest.slug, candidates, digest.window_start.isoformat(timespec="seconds")
        )


def _posts_of(variant: str, posts: dict[str, Post]) -> list[Post]:
    """The posts a variant names, newest first; one deleted since it was queued is left out
    (the others still go)."""
    found = [posts[slug] for slug in variant.split() if slug in posts]
    if not found:
        raise PostError(f"the posts of a queued digest are gone: {variant}")
    return found


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


def _finished(report: SendReport, started: float) -> SendReport:
    report.seconds = time.monotonic() - started
    return report


def preview_digest(settings: Settings, now: dt.datetime | None = None) -> RenderedIssue:
    """This week's digest as a reader of every topic gets it: the posts of the last week, or,
    in a quiet week, the newest three, so the template can always be looked at."""
    moment = now or dt.datetime.now(dt.UTC)
    digest = latest_digest(settings, moment)
    with store.connect(settings.db_path) as db:
        posts = published_posts(settings, db, moment)
    week = [post for post in posts if post.published_at > moment - WEEK] or posts[:3]
    if not week:
        raise PostError(f"there are no published posts in {settings.posts_dir} for a digest")
    env = template_environment(settings.templates_dir)
    return render_digest(week, settings, env, digest.slug, digest.day)
