"""The project's own exceptions: the CLI and the web app turn these into a clean message."""

from __future__ import annotations

import errno
import socket
import sqlite3


class NewsletterError(Exception):
    """Something the author can fix; the message says what, in one line."""


class ConfigError(NewsletterError):
    """A setting is missing or has a value that cannot be used."""


class DatabaseError(NewsletterError):
    """The database file cannot be opened, read or migrated."""


class PostError(NewsletterError):
    """A post in posts/ cannot be read: bad front matter, encoding or date."""


class TemplateError(NewsletterError):
    """A template has a syntax error or uses a variable that does not exist."""


class SubscriberError(NewsletterError):
    """An address is invalid, already on the list, or not on it."""


class ImportFileError(NewsletterError):
    """A CSV file cannot be imported at all (no email column, not text)."""


class KeyFileError(NewsletterError):
    """A DKIM key cannot be written: the file exists already or the folder is not writable."""


class BadToken(NewsletterError):
    """A signed link was tampered with, expired, or made with another key."""


class TransportError(NewsletterError):
    """The mail server cannot be reached or refused the login: nothing can be sent.

    `temporary` marks a failure to connect that may pass (the server is restarting), as
    opposed to one that will not (a refused login, a TLS setting the server does not offer).
    """

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


class SendError(NewsletterError):
    """A send cannot start or had to stop early (another send runs, too many failures)."""


class DeliveryRefused(NewsletterError):
    """The server did not take one message; `permanent` says whether trying again can help.

    `stage` is the SMTP step that failed; `refusals.classify_refusal` says whose fault it is.
    """

    def __init__(self, reply: str, *, permanent: bool, code: int = 0, stage: str = "") -> None:
        super().__init__(reply)
        self.reply = reply
        self.permanent = permanent
        self.code = code
        self.stage = stage


class NotOnList(SubscriberError):
    """A reader's link names nobody on the list: a test copy's link (id 0) or an erased reader."""


class FeedError(NewsletterError):
    """A blog's feed cannot be fetched or read: down, not a feed, or not well-formed."""


class FeedNotFound(FeedError):
    """The feed address answered 404 or 410: the end of a paged feed, or a wrong address."""


class HeaderError(NewsletterError):
    """A value meant for an email header (a title, a name) holds a control character."""


def environment_failure(error: BaseException) -> str | None:
    """One line for what the disk or file system refused (full, read-only, not allowed), or
    None for anything else, which is a bug and keeps its traceback."""
    if isinstance(error, sqlite3.DatabaseError):
        code = getattr(error, "sqlite_errorname", "")
        advice = next((text for prefix, text in _SQLITE_ADVICE if code.startswith(prefix)), None)
        return f"the database: {error}; {advice}" if advice else None
    if isinstance(error, OSError) and error.errno in _OS_ADVICE:
        where = f" {error.filename}" if error.filename else ""
        return f"cannot write{where}: {error.strerror}; {_OS_ADVICE[error.errno]}"
    return None


_FREE_SPACE = "free some space and run the command again (what was done before is kept)"
_SQLITE_ADVICE = (
    ("SQLITE_FULL", _FREE_SPACE),
    ("SQLITE_READONLY", "the database file and its folder must be writable by this user"),
    ("SQLITE_CANTOPEN", "the database file and its folder must be writable by this user"),
    ("SQLITE_IOERR", "the disk or file system failed; check it and run the command again"),
    ("SQLITE_BUSY", "another program holds the database; try again when it is done"),
    ("SQLITE_CORRUPT", "the file is damaged; restore it from a backup"),
    ("SQLITE_NOTADB", "the file is not a newsletter database; check NEWSLETTER_DB"),
)
_OS_ADVICE = {
    errno.ENOSPC: _FREE_SPACE,
    errno.EDQUOT: _FREE_SPACE,
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "this user may not write there",
    errno.EPERM: "this user may not write there",
}


class MailboxError(NewsletterError):
    """The bounce mailbox cannot be reached over IMAP, or refused the login."""


def describe_network_error(e: BaseException) -> str:
    """A failed connection to a mail server (SMTP, IMAP) in a few words, on one line."""
    if isinstance(e, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = e.args[0] if e.args else str(e)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(str(text).split()) or type(e).__name__


class RelayError(NewsletterError):
    """A relay service's API (SES, Postmark) cannot be reached or refused the credentials."""
