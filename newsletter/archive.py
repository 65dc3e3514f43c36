"""Which posts are published, for the web archive, the feed, the welcome email and `send --due`.

A post is online once it has gone to at least one reader (test copies do not count) or counts
as published without a send (`archived_posts`, a pulled feed's back catalogue), and is not a
draft. Broken files are skipped here; `posts` and `doctor` name them.
"""

from __future__ import annotations

import datetime as dt

from sqlite_utils import Database

from . import db as store
from .config import Settings
from .errors import PostError
from .posts import Post, PostSet, read_posts


def all_posts(settings: Settings) -> PostSet:
    return read_posts(settings.posts_dir, settings.timezone)


def online_posts(settings: Settings, db: Database) -> list[Post]:
    """The posts readers can read on the web and in the feed, newest first."""
    logs = store.post_logs(db)
    published = {slug for slug, log in logs.items() if log.sent} | store.archived_slugs(db)
    return [p for p in all_posts(settings).posts if p.slug in published and not p.draft]


def newest_online(settings: Settings, db: Database) -> Post | None:
    try:
        posts = online_posts(settings, db)
    except PostError:  # no posts folder: a welcome email without a latest post
        return None
    return posts[0] if posts else None


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
    due = []
    for post in reversed(all_posts(settings).due(now)):
        if post.slug in archived:
            continue
        log = logs.get(post.slug)
        started = log is not None and (log.sent + log.failed + log.bounced + log.skipped) > 0
        if not started or (log is not None and log.pending > 0):
            due.append(post)
    return due
