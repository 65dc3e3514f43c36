"""Where returned mail is read from: the bounce mailbox over IMAP, or saved mail (an .eml file,
an mbox, a Maildir) for a host without IMAP or a downloaded bounce folder.

Each source is an iterable of (id, bytes) with `done(ids)` for the messages that were handled:
IMAP moves them to NEWSLETTER_IMAP_DONE_FOLDER, saved mail is never changed. The relay
services' reports (SES, Postmark: vocab.RELAY_SERVICES) are not mail: newsletter/relays pulls
them and `bounces.process_relay_reports` applies them.
"""

from __future__ import annotations

import mailbox
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from .config import Settings
from .errors import ConfigError, MailboxError, NewsletterError, describe_network_error
from .vocab import RELAY_SERVICES

FETCH_BATCH = 100


class ReturnedSource(Protocol):
    """Messages to read, and a way to put the handled ones aside."""

    def __iter__(self) -> Iterator[tuple[str, bytes]]: ...

    def done(self, ids: list[str]) -> None: ...


@contextmanager
def open_source(
    settings: Settings, origin: str | None, *, dry_run: bool
) -> Iterator[ReturnedSource]:
    """The IMAP bounce mailbox (origin None) or the saved mail at the path `origin`."""
    if origin is None:
        with imap_session(settings) as client:
            yield ImapSource(client, settings, dry_run=dry_run)
        return
    if origin.lower() in RELAY_SERVICES:  # `--from` words for the relays' APIs, not paths
        raise NewsletterError(
            f"{origin} is a relay service, not saved mail: bounces.process_relay_reports reads it"
        )
    yield FileSource(Path(origin))


class ImapSource:
    """NEWSLETTER_IMAP_FOLDER, fetched in batches; handled messages moved to the done folder."""

    def __init__(self, client: IMAPClient, settings: Settings, *, dry_run: bool) -> None:
        self.client, self.settings, self.dry_run = client, settings, dry_run

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        self.client.select_folder(self.settings.imap_folder)
        uids = sorted(self.client.search("ALL"))
        for start in range(0, len(uids), FETCH_BATCH):
            batch = uids[start : start + FETCH_BATCH]
            fetched = self.client.fetch(batch, ["BODY.PEEK[]"])
            for uid in batch:
                data = fetched.get(uid, {}).get(b"BODY[]")
                if data is not None:
                    yield str(uid), bytes(data)

    def done(self, ids: list[str]) -> None:
        if not ids or self.dry_run:
            return
        folder = self.settings.imap_done_folder
        if not self.client.folder_exists(folder):
            self.client.create_folder(folder)
        uids = [int(i) for i in ids]
        if self.client.has_capability("MOVE"):
            self.client.move(uids, folder)
        else:
            self.client.copy(uids, folder)
            self.client.delete_messages(uids)
            if self.client.has_capability("UIDPLUS"):
                self.client.expunge(uids)
            else:
                self.client.expunge()


class FileSource:
    """Saved mail, read only: a Maildir (a folder with cur/ and new/), an mbox (a file that
    starts with a "From " line) or one message (.eml)."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise NewsletterError(f"{path}: no such file or folder")
        if path.is_dir() and not ((path / "cur").is_dir() or (path / "new").is_dir()):
            raise NewsletterError(f"{path}: a folder that is not a Maildir (no cur/ or new/)")
        self.path = path

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        try:
            if self.path.is_dir():
                folder = mailbox.Maildir(self.path, factory=None, create=False)
                for key in sorted(folder.iterkeys()):
                    yield key, folder.get_bytes(key)
                return
            with self.path.open("rb") as file:
                mbox = file.read(5) == b"From "
            if not mbox:
                yield self.path.name, self.path.read_bytes()
                return
            box = mailbox.mbox(self.path, factory=None, create=False)
            for number, key in enumerate(box.iterkeys(), 1):
                yield f"{self.path.name}:{number}", box.get_bytes(key)
        except OSError as e:
            raise NewsletterError(f"{self.path}: cannot be read ({e.strerror or e})") from e

    def done(self, ids: list[str]) -> None:
        """Saved mail stays as it is: a second run reads it again, and changes nothing more."""


def check_login(settings: Settings) -> str:
    """Log in and look at the folder without changing anything (for `doctor --imap`)."""
    try:
        with imap_session(settings) as client:
            info = client.select_folder(settings.imap_folder, readonly=True)
            count = int(info.get(b"EXISTS", 0))
    except (IMAPClientError, OSError, ssl.SSLError) as e:
        raise MailboxError(
            f"the IMAP mailbox {where(settings)}: {describe_network_error(e)}"
        ) from e
    return (
        f"logged in to {where(settings)} as {settings.imap_username}; "
        f"{settings.imap_folder} holds {count} message{'s' * (count != 1)}"
    )


@contextmanager
def imap_session(settings: Settings) -> Iterator[IMAPClient]:
    if not settings.imap_host:
        raise ConfigError("NEWSLETTER_IMAP_HOST is not set: the bounce mailbox cannot be read")
    if not settings.imap_username or not settings.imap_password:
        raise ConfigError(
            "NEWSLETTER_IMAP_PASSWORD (and NEWSLETTER_IMAP_USERNAME, default the bounce "
            "address) must be set to read the bounce mailbox"
        )
    context = ssl.create_default_context()
    try:
        client = IMAPClient(
            settings.imap_host,
            port=settings.imap_port,
            ssl=settings.imap_security == "ssl",
            ssl_context=context,
            timeout=settings.smtp_timeout,
        )
    except (IMAPClientError, OSError, ssl.SSLError) as e:
        raise MailboxError(
            f"the IMAP mailbox {where(settings)}: {describe_network_error(e)}"
        ) from e
    try:
        try:
            if settings.imap_security == "starttls":
                client.starttls(context)
            client.login(settings.imap_username, settings.imap_password)
        except LoginError as e:
            raise MailboxError(
                f"the IMAP server {where(settings)} refused the login for "
                f"{settings.imap_username}: {describe_network_error(e)}"
            ) from e
        except (IMAPClientError, OSError, ssl.SSLError) as e:
            raise MailboxError(
                f"the IMAP mailbox {where(settings)}: {describe_network_error(e)}"
            ) from e
        try:
            yield client
        except (IMAPClientError, OSError, ssl.SSLError) as e:
            raise MailboxError(
                f"the IMAP mailbox {where(settings)}: {describe_network_error(e)}"
            ) from e
    finally:
        try:
            client.logout()
        except (IMAPClientError, OSError):
            client.shutdown()


def where(settings: Settings) -> str:
    return f"{settings.imap_host}:{settings.imap_port}"
