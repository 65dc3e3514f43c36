"""Which posts are published, for the web archive, the feed and the welcome email.

A post is online once it has gone to at least one reader (test copies do not count; a weekly
digest that carried it counts) or counts as published without a send (`archived_posts`, a
pulled feed's back catalogue), and is not a draft. Broken files are skipped here; `posts` and
`doctor` name them.
"""

from __future__ import annotations

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
    published = (
        {slug for slug, log in logs.items() if log.sent}
        | store.archived_slugs(db)
        | store.digested_slugs(db)  # went out in a weekly digest only
    )
    return [p for p in all_posts(settings).posts if p.slug in published and not p.draft]


def newest_online(settings: Settings, db: Database) -> Post | None:
    try:
        posts = online_posts(settings, db)
    except PostError:  # no posts folder: a welcome email without a latest post
        return None
    return posts[0] if posts else None
