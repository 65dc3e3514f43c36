"""Subscriber lists as CSV, in the shapes people have them: Mailchimp, Substack, Buttondown,
a plain `email[,name]` file, or our own export (which imports back unchanged).

The whole file is read and checked before anything is written, so a file that cannot be read
(binary junk, a line too long, no email column) changes nothing.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

from sqlite_utils import Database

from . import db as store
from .addresses import clean_name, normalise_address
from .errors import ImportFileError, SubscriberError

EXPORT_COLUMNS = ("email", "name", "status", "source", "created_at")
EMAIL_HEADERS = ("email", "email address", "e-mail", "e-mail address", "email_address", "mail")
NAME_HEADERS = ("name", "full name", "full_name", "display name")
FIRST_NAME_HEADERS = ("first name", "first_name", "firstname", "fname", "given name")
LAST_NAME_HEADERS = ("last name", "last_name", "lastname", "lname", "surname", "family name")
STATUS_HEADERS = ("status",)
CREATED_HEADERS = ("created_at",)
# Statuses an import may carry over; "pending" is imported as active only through our export.
IMPORTABLE_STATUSES = {"active", "unsubscribed", "bounced", "pending"}
MAX_FIELD = 10_000


@dataclass
class ImportReport:
    added: int = 0
    skipped: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    dry_run: bool = False


@dataclass(frozen=True)
class _Columns:
    email: int
    name: int | None = None
    first: int | None = None
    last: int | None = None
    status: int | None = None
    created: int | None = None
    source: int | None = None


def read_csv(path: Path) -> tuple[list[store.NewSubscriber], list[tuple[int, str]]]:
    """The valid rows and the rejected ones (line number, reason) of a subscriber CSV."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ImportFileError(f"cannot read {path}: {e.strerror}") from e
    if b"\x00" in raw:
        raise ImportFileError(f"{path.name} is not a text file (it holds NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ImportFileError(
            f"{path.name} is not UTF-8 text (bad byte at offset {e.start}); export it as CSV UTF-8"
        ) from e
    return parse_csv(text, path.name)


def parse_csv(
    text: str, name: str = "the file"
) -> tuple[list[store.NewSubscriber], list[tuple[int, str]]]:
    if not text.strip():
        raise ImportFileError(f"{name} is empty")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    rows: list[store.NewSubscriber] = []
    rejected: list[tuple[int, str]] = []
    columns: _Columns | None = None
    seen: set[str] = set()
    try:
        for record in reader:
            line = reader.line_num
            if any(len(value) > MAX_FIELD for value in record):
                raise ImportFileError(
                    f"{name}, line {line}: a field longer than {MAX_FIELD} characters; "
                    "is this a subscriber list?"
                )
            if not any(value.strip() for value in record):
                continue
            if columns is None:
                columns = _columns(record, name)
                if columns.email != -1:  # a header row
                    continue
                columns = _Columns(email=0, name=1)
            row, reason = _row(record, columns)
            if row is None:
                rejected.append((line, reason))
            elif row.email.lower() in seen:
                rejected.append((line, f"{row.email} appears earlier in the file"))
            else:
                seen.add(row.email.lower())
                rows.append(row)
    except csv.Error as e:
        raise ImportFileError(f"{name}, line {reader.line_num}: {e}") from e
    return rows, rejected


def _delimiter(text: str) -> str:
    """Comma, or what a spreadsheet in a comma-decimal locale writes: semicolon (or tab)."""
    first_line = text.lstrip().split("\n", 1)[0]
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _columns(header: list[str], name: str) -> _Columns:
    """Find the columns in a header row; email=-1 means the first row is data, not a header."""
    labels = [h.strip().strip('"').lower() for h in header]

    def find(names: Iterable[str]) -> int | None:
        for candidate in names:
            if candidate in labels:
                return labels.index(candidate)
        return None

    email = find(EMAIL_HEADERS)
    if email is None:
        if "@" in header[0]:
            return _Columns(email=-1)
        raise ImportFileError(
            f"{name} has no email column: name one 'email' or 'Email Address' "
            f"(found: {', '.join(h for h in labels if h) or 'nothing'})"
        )
    return _Columns(
        email=email,
        name=find(NAME_HEADERS),
        first=find(FIRST_NAME_HEADERS),
        last=find(LAST_NAME_HEADERS),
        status=find(STATUS_HEADERS),
        created=find(CREATED_HEADERS),
        source=find(("source",)),
    )


def _cell(record: list[str], index: int | None) -> str:
    if index is None or index >= len(record):
        return ""
    return record[index].strip()


def _row(record: list[str], columns: _Columns) -> tuple[store.NewSubscriber | None, str]:
    try:
        email = normalise_address(_cell(record, columns.email))
        if columns.name is not None:
            name = _cell(record, columns.name)
        else:
            name = " ".join(
                p for p in (_cell(record, columns.first), _cell(record, columns.last)) if p
            )
        name = clean_name(name)
    except SubscriberError as e:
        return None, str(e)
    status = _cell(record, columns.status).lower() or "active"
    if status not in IMPORTABLE_STATUSES:
        return None, f"unknown status {status!r}"
    created = _cell(record, columns.created) or None
    if created is not None:
        try:
            datetime.fromisoformat(created)
        except ValueError:
            return None, f"created_at {created!r} is not an ISO date"
    source = _cell(record, columns.source).lower()
    return store.NewSubscriber(
        email=email,
        name=name,
        status=status,  # type: ignore[arg-type]
        created_at=created,
        source=source if source in ("cli", "import", "web") else "import",
    ), ""


def import_csv(db: Database, path: Path, *, dry_run: bool = False) -> ImportReport:
    """Add the valid rows of a CSV; addresses already on the list are left as they are."""
    rows, rejected = read_csv(path)
    added = store.insert_new_subscribers(db, rows, dry_run=dry_run)
    return ImportReport(added=added, skipped=len(rows) - added, rejected=rejected, dry_run=dry_run)


def export_csv(db: Database, out: TextIO) -> int:
    """Write every reader as CSV; the file imports back to the same list."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for subscriber in store.iter_subscribers(db, "all"):
        writer.writerow([getattr(subscriber, column) for column in EXPORT_COLUMNS])
        count += 1
    return count
