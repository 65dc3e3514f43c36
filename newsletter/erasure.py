"""The right to erasure: a person's row, their address in the send log, and their mail in the
outbox. What SQLite freed is overwritten (secure_delete, set in `db.open_db`) and the old page
copies in the write-ahead log are checkpointed away by `db.delete_subscriber`.
"""

from __future__ import annotations

import mailbox
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from pathlib import Path

from sqlite_utils import Database

from . import db as store
from .config import Settings
from .errors import NewsletterError


@dataclass(frozen=True)
class Erasure:
    """What an erasure took away, for the closing line."""

    address: str
    outbox_messages: int


def erase_person(settings: Settings, db: Database, email: str) -> Erasure:
    """Erase `email` from the list, the send log and the outbox."""
    address = store.delete_subscriber(db, email)
    return Erasure(address, remove_from_outbox(settings.outbox, address))


def remove_from_outbox(outbox: Path, address: str) -> int:
    """Delete the messages in the Maildir outbox addressed to `address`; how many went."""
    if not (outbox / "new").is_dir():
        return 0
    wanted = address.lower()
    parser = BytesHeaderParser()
    maildir = mailbox.Maildir(outbox, create=False)
    removed = 0
    try:
        for key in list(maildir.iterkeys()):
            try:
                with maildir.get_file(key) as message:
                    headers = parser.parse(message)  # type: ignore[arg-type]
            except (KeyError, FileNotFoundError):  # taken away meanwhile
                continue
            recipients = getaddresses(headers.get_all("To", []))
            if any(addr.lower() == wanted for _, addr in recipients):
                maildir.discard(key)
                removed += 1
    except OSError as e:
        raise NewsletterError(
            f"erased from the database, but the outbox {outbox} could not be cleaned: "
            f"{e.strerror}; remove the messages to {address} by hand"
        ) from e
    return removed
