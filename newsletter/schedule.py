"""Which posts a send takes: `send`, `send SLUG`, `send --due` and `pull --send` decide here.

A post goes to the list only when it is not a draft, its time has come (or the author sends it
early on purpose), it was not published without a send (a feed's back catalogue), and every
image it shows exists. The CLI asks and prints; the rules are these functions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlite_utils import Database

from . import db as store
from .archive import all_posts
from .config import Settings
from .errors import NewsletterError, PostError
from .posts import Post, PostSet, check_images, find_post
from .topics import audience_of, load_topics

# A feed's new post whose send did not finish (the mail server was down) is sent by a later
# `pull --send` for this long.
RETRY_SENDS_FOR = dt.timedelta(days=3)


@dataclass(frozen=True)
class Selection:
    """The posts a command will send, in order, and why any others are held back."""

    posts: list[Post] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # one line each, naming the post


def post_for_send(
    settings: Settings, db: Database, slug: str | None, *, early: bool, test: bool, now: dt.datetime
) -> Post | None:
    """The post `send [SLUG]` means, refused when it must not go to the list or shows a missing
    image; None when every post that is due was published without a send."""
    found = all_posts(settings)
    archived = store.archived_slugs(db)
    if slug is None:
        if found.broken:  # it may be the newest: never send an older one in its place
            raise PostError(
                f"{found.broken[0].error}; `send` without a slug means the newest post, which"
                " this file may be: fix it, or name the post to send"
            )
        due = found.due(now)
        if due and all(p.slug in archived for p in due):
            return None
        post = newest_due(found, archived, now)
    else:
        post = found.find(slug)
        if not test:  # a test copy of a draft or scheduled post is how an author looks first
            check_sendable(post, archived, now, early=early)
    check_images(post)
    return post


def due_posts(settings: Settings, db: Database, now: dt.datetime) -> Selection:
    """What `send --due` mails, oldest first; a post with a missing image holds back that post
    only."""
    chosen = Selection()
    for post in due_unsent(settings, db, now):
        try:
            check_images(post)
        except NewsletterError as e:
            chosen.refused.append(str(e))
            continue
        chosen.posts.append(post)
    return chosen


def pulled_posts(settings: Settings, db: Database, now: dt.datetime) -> Selection:
    """What `pull --send` mails, oldest first: the feed's new posts of the last days whose send
    never finished, still to someone. The author may have made one a draft, dated it later or
    deleted it since the pull: as for `send`, those wait, each with its reason."""
    chosen = Selection()
    archived = store.archived_slugs(db)
    for slug in posts_to_send(db, now):
        try:
            post = find_post(settings.posts_dir, slug, settings.timezone)
            check_sendable(post, archived, now, early=False)
            check_images(post)
        except NewsletterError as e:
            chosen.refused.append(str(e))
            continue
        if store.count_due(db, post.slug, audience(settings, post)):
            chosen.posts.append(post)
    return chosen


def newest_due(posts: PostSet, archived: set[str], now: dt.datetime) -> Post:
    """What `send` mails without a slug: the newest post that is not a draft, whose time has
    come, and that was not published without a send."""
    for post in posts.due(now):
        if post.slug not in archived:
            return post
    waiting = [p for p in posts.posts if not p.draft and p.slug not in archived]
    if waiting:
        first = min(waiting, key=lambda p: p.published_at)
        raise PostError(
            f"no post is due yet; the next, {first.slug!r}, is scheduled for "
            f"{first.published_at:%Y-%m-%d %H:%M} UTC (name it with --now to send it early)"
        )
    raise PostError(f"there are no posts to send in {posts.folder} (drafts are never sent)")


def check_sendable(post: Post, archived: set[str], now: dt.datetime, *, early: bool) -> None:
    """Refuse what `send SLUG` must not mail to the list: drafts, scheduled posts (unless
    sent early on purpose) and posts published without a send."""
    if post.draft:
        raise PostError(
            f"{post.slug!r} is a draft: remove `draft: true` to send it "
            "(`preview` and `send --to` work on drafts)"
        )
    if post.slug in archived:
        raise PostError(f"{post.slug!r} counts as published without a send; it is not mailed")
    if post.published_at > now and not early:
        raise PostError(
            f"{post.slug!r} is scheduled for {post.published_at:%Y-%m-%d %H:%M} UTC; "
            "`send --due` mails it then, or add --now to send it early"
        )


def due_unsent(settings: Settings, db: Database, now: dt.datetime) -> list[Post]:
    """What `send --due` mails, oldest first: posts whose time has come that were never sent,
    and sends cut short (readers still pending). Failed deliveries wait for `send SLUG`."""
    logs = store.post_logs(db)
    archived = store.archived_slugs(db)
    ran = set(store.sent_slugs(db))  # a run that reached nobody by itself (all on the digest)
    due = []
    for post in reversed(all_posts(settings).due(now)):
        if post.slug in archived:
            continue
        log = logs.get(post.slug)
        started = post.slug in ran or (
            log is not None and (log.sent + log.failed + log.bounced + log.skipped) > 0
        )
        if not started or (log is not None and log.pending > 0):
            due.append(post)
    return due


def audience(settings: Settings, post: Post, chosen: Sequence[str] = ()) -> tuple[str, ...]:
    """The topics whose readers get `post`'s email (none: every reader); an unknown topic, in
    the post or in `chosen` (`send --topic`), is a PostError naming it."""
    return audience_of(post, load_topics(settings.directory), chosen)


def posts_to_send(db: Database, now: dt.datetime | None = None) -> list[str]:
    """Slugs `pull --send` should send: new feed posts of the last days not yet fully sent."""
    since = (now or dt.datetime.now(dt.UTC)) - RETRY_SENDS_FOR
    return store.unfinished_feed_posts(db, since.isoformat(timespec="seconds"))
