"""The keys that sign readers' links: the configured ones, else the one kept in the database."""

from __future__ import annotations

from sqlite_utils import Database

from . import db as store
from .config import Settings
from .tokens import ReaderTokens


def secret_keys(settings: Settings, db: Database) -> tuple[str, ...]:
    """NEWSLETTER_SECRET_KEY's keys, or the one made on first use, so old links keep working."""
    return settings.secret_keys or (store.stored_secret_key(db),)


def reader_tokens(settings: Settings, db: Database) -> ReaderTokens:
    return ReaderTokens(secret_keys(settings, db))
