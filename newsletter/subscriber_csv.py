"""Subscriber lists as CSV, in the shapes people bring them: each platform's export (see
`platforms`), the ZIP a platform hands out, a plain `email[,name]` file, or our own export
(which imports back unchanged).

A file is streamed, a batch of rows at a time, inside one write transaction that commits only
after its last line: so a million rows fit in little memory, and a file that turns out
unreadable half-way (binary junk, a line too long, bad UTF-8) still changes nothing.
"""

from __future__ import annotations

import csv
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sqlite_utils import Database

from . import db as store
from .addresses import clean_name, mend_name, normalise_address, suggest_domain
from .errors import ImportFileError, SubscriberError
from .platforms import PLAIN, Layout, Row, RowError, escape_cell, recognise, split_tags
from .terminal import printable
from .topics import Topic
from .vocab import SUBSCRIBER_SOURCES

EXPORT_COLUMNS = (
    "email",
    "name",
    "status",
    "source",
    "created_at",
    "status_reason",
    "platform",
    "optin_ip",
    "left_at",
    "tags",
    "frequency",
    "paused_until",
    "topics",
)
ALL_TOPICS, NO_TOPICS = "", "(none)"  # the `topics` cell of a reader of every topic, of none
MAX_FIELD = 10_000
MAX_LINE = 1_000_000
BATCH = 2_000
KEPT_DETAILS = 50  # rejected lines and likely typos listed one by one; the rest are counted
# People who asked Substack to delete them are listed under this domain: never import them.
DELETION_DOMAIN = "deletion-request.substack.com"


@dataclass
class ImportReport:
    """What an import did (or, dry, would do), counted by outcome."""

    added: Counter[str] = field(default_factory=Counter)  # by status
    left: int = 0  # active here, left there: now unsubscribed or bounced here
    kept: int = 0  # already on the list, left as they were
    deletion_requests: int = 0
    rejected: int = 0
    rejected_lines: list[tuple[str, str]] = field(default_factory=list)  # (where, why)
    typos: int = 0
    typo_lines: list[tuple[str, str, str]] = field(default_factory=list)  # (where, email, domain)
    skipped_files: list[str] = field(default_factory=list)  # CSVs in a ZIP with no addresses
    platforms: set[str] = field(default_factory=set)
    dry_run: bool = False
    with_topics: int = 0  # readers added with topics from the file (tags matching a topic)
    ignored_tags: Counter[str] = field(default_factory=Counter)  # no topic of that name here

    def reject(self, where: str, why: str) -> None:
        self.rejected += 1
        if len(self.rejected_lines) < KEPT_DETAILS:
            self.rejected_lines.append((where, why))

    def summary(self) -> str:
        """One line: `Added 812 active, 97 unsubscribed, 14 bounced; kept 3 already on the
        list; rejected 2 (lines 17, 230)`."""
        added = ", ".join(
            f"{self.added[status]} {status}" for status in ("active", "unsubscribed", "bounced")
        )
        if self.added["pending"]:
            added += f", {self.added['pending']} pending (mailed once they confirm)"
        parts = [f"{'Would add' if self.dry_run else 'Added'} {added}"]
        if self.left:
            parts.append(
                f"{'would mark' if self.dry_run else 'marked'} {self.left} who left there "
                "as left here"
            )
        parts.append(f"kept {self.kept} already on the list")
        if self.deletion_requests:
            parts.append(f"skipped {self.deletion_requests} Substack deletion requests")
        if self.with_topics:
            parts.append(f"topics from the file for {self.with_topics}")
        if self.ignored_tags:
            shown = ", ".join(
                f"{printable(tag)} ({count})" for tag, count in self.ignored_tags.most_common(5)
            )
            more = ", …" if len(self.ignored_tags) > 5 else ""
            parts.append(f"ignored tags that are no topic here: {shown}{more}")
        rejected = f"rejected {self.rejected}"
        if self.rejected_lines:
            wheres = [where for where, _ in self.rejected_lines[:10]]
            if all(where.startswith("line ") for where in wheres):  # not in a ZIP
                numbers = ", ".join(where.removeprefix("line ") for where in wheres)
                shown = f"{'line' if self.rejected == 1 else 'lines'} {numbers}"
            else:
                shown = ", ".join(wheres)
            more = ", …" if self.rejected > len(wheres) else ""
            rejected += f" ({shown}{more})"
        parts.append(rejected)
        return "; ".join(parts)


def import_file(
    db: Database, path: Path, *, dry_run: bool = False, topics: Sequence[Topic] = ()
) -> ImportReport:
    """Import a CSV, or every CSV in a ZIP, in one transaction (rolled back for a dry run).

    A new reader's tags or labels that name one of `topics` (its name or title, in any case)
    become their topics; other tags are kept as text only. Our own export's `topics`,
    `frequency` and `paused_until` come back as they were."""
    report = ImportReport(dry_run=dry_run)
    known = {
        spelling.lower(): topic.name for topic in topics for spelling in (topic.name, topic.title)
    }
    with ExitStack() as stack:
        sources = _sources(path, stack)
        with store.import_transaction(db, dry_run=dry_run) as last_old_id:
            found_any = False
            for name, stream, in_zip in sources:
                found_any |= _import_stream(db, stream, name, in_zip, last_old_id, report, known)
            if not found_any:
                raise ImportFileError(f"{path.name} holds no CSV with an email column")
    return report


def _sources(path: Path, stack: ExitStack) -> Iterator[tuple[str, IO[bytes], bool]]:
    """The CSV streams in `path`: the file itself, or each CSV inside a ZIP."""
    try:
        raw = stack.enter_context(path.open("rb"))
    except OSError as e:
        raise ImportFileError(f"cannot read {path}: {e.strerror}") from e
    if not zipfile.is_zipfile(raw):
        raw.seek(0)
        yield path.name, raw, False
        return
    try:
        archive = stack.enter_context(zipfile.ZipFile(raw))
        members = sorted(
            info.filename
            for info in archive.infolist()
            if not info.is_dir()
            and info.filename.lower().endswith(".csv")
            and not info.filename.startswith("__MACOSX/")
        )
    except zipfile.BadZipFile as e:
        raise ImportFileError(f"{path.name} is not a ZIP file I can read: {e}") from e
    if not members:
        raise ImportFileError(f"{path.name} holds no CSV files")
    for member in members:
        with archive.open(member) as stream:
            yield f"{path.name}:{member}", stream, True


def _lines(raw: IO[bytes], name: str) -> Iterator[str]:
    """The file's lines as text, checked as they come: no NUL bytes, UTF-8, no endless line."""
    start = raw.read(8192)
    if b"\x00" in start:  # binary files show a NUL early; text never has one
        raise ImportFileError(f"{name} is not a text file (it holds NUL bytes)")
    raw.seek(0)
    offset = 0
    first = True
    while True:
        line = raw.readline(MAX_LINE)
        if not line:
            return
        if b"\x00" in line:
            raise ImportFileError(f"{name} is not a text file (it holds NUL bytes)")
        if len(line) == MAX_LINE and not line.endswith(b"\n"):
            raise ImportFileError(
                f"{name} has a line longer than {MAX_LINE:,} bytes; is this a subscriber list?"
            )
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ImportFileError(
                f"{name} is not UTF-8 text (bad byte at offset {offset + e.start}); "
                "export it as CSV UTF-8"
            ) from e
        if first:
            text = text.removeprefix("\ufeff")
            first = False
        offset += len(line)
        yield text


def _delimiter(first_line: str) -> str:
    """Comma, or what a spreadsheet in a comma-decimal locale writes: semicolon (or tab)."""
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _import_stream(
    db: Database,
    raw: IO[bytes],
    name: str,
    in_zip: bool,
    last_old_id: int,
    report: ImportReport,
    known: dict[str, str],
) -> bool:
    """Import one CSV stream; False for a CSV in a ZIP that holds no addresses (skipped)."""
    lines = _lines(raw, name)
    head: list[str] = []
    for line in lines:
        head.append(line)
        if line.strip():
            break
    if not any(line.strip() for line in head):
        if in_zip:
            report.skipped_files.append(name)
            return False
        raise ImportFileError(f"{name} is empty")

    def all_lines() -> Iterator[str]:
        yield from head
        yield from lines

    reader = csv.reader(all_lines(), delimiter=_delimiter(head[-1]))
    layout: Layout | None = None
    batch: list[tuple[str, store.NewSubscriber]] = []
    where_prefix = f"{name.split(':', 1)[1]} line " if in_zip else "line "
    try:
        for record in reader:
            line_number = reader.line_num
            if record and max(map(len, record)) > MAX_FIELD:
                raise ImportFileError(
                    f"{name}, line {line_number}: a field longer than {MAX_FIELD} characters; "
                    "is this a subscriber list?"
                )
            if not any(value.strip() for value in record):
                continue
            if layout is None:
                layout = recognise(record)
                if layout is not None:
                    if layout.platform:
                        report.platforms.add(layout.platform)
                    continue
                if "@" not in record[0]:
                    if in_zip:  # another file of the export (posts, say)
                        report.skipped_files.append(name)
                        return False
                    labels = [h.strip().lower() for h in record]
                    raise ImportFileError(
                        f"{name} has no email column: name one 'email' or 'Email Address' "
                        f"(found: {', '.join(h for h in labels if h) or 'nothing'})"
                    )
                layout = PLAIN
            where = f"{where_prefix}{line_number}"
            subscriber = _subscriber(layout, record, where, report, known)
            if subscriber is not None:
                batch.append((where, subscriber))
                if len(batch) >= BATCH:
                    _merge(db, batch, last_old_id, report)
                    batch = []
    except csv.Error as e:
        raise ImportFileError(f"{name}, line {reader.line_num}: {e}") from e
    if layout is None:
        if in_zip:
            report.skipped_files.append(name)
            return False
        raise ImportFileError(f"{name} is empty")
    if batch:
        _merge(db, batch, last_old_id, report)
    return True


def _subscriber(
    layout: Layout, record: list[str], where: str, report: ImportReport, known: dict[str, str]
) -> store.NewSubscriber | None:
    try:
        row = layout.row(record)
        email = normalise_address(row.email)
    except (RowError, SubscriberError) as e:
        report.reject(where, str(e))
        return None
    try:
        name = clean_name(row.name)
    except SubscriberError:
        # The address is what matters (above all for someone who left: their row keeps them
        # from being mailed); a name we cannot put in a header is mended, never the row lost.
        name = mend_name(row.name)
    domain = email.rsplit("@", 1)[1].lower()
    if domain == DELETION_DOMAIN:
        report.deletion_requests += 1
        return None
    suggestion = suggest_domain(domain)
    if suggestion is not None:
        report.typos += 1
        if len(report.typo_lines) < KEPT_DETAILS:
            report.typo_lines.append((where, email, suggestion))
    status, reason = row.verdict
    return store.NewSubscriber(
        email=email,
        name=name,
        status=status,
        created_at=row.created_at,
        source=next((known for known in SUBSCRIBER_SOURCES if known == row.source), "import"),
        reason=reason,
        platform=row.platform,
        optin_ip=row.optin_ip,
        left_at=row.left_at,
        tags=row.tags,
        frequency=row.frequency or "every",
        paused_until=row.paused_until,
        topics=_topics(row, known, report),
    )


def _topics(row: Row, known: dict[str, str], report: ImportReport) -> tuple[str, ...] | None:
    """The topics a row gives its reader (None: every topic): our export's `topics` cell, or a
    platform's tags that name a topic here. A tag or topic not here is counted as ignored;
    without topics.toml, tags are only text and nothing is counted."""
    if row.topics is not None:
        cell = row.topics.strip()
        if cell == ALL_TOPICS:
            return None
        if cell == NO_TOPICS:
            return ()
        names = [name.strip() for name in cell.split(",") if name.strip()]
    elif row.tags and known:
        names = split_tags(row.tags)
    else:
        return None
    matched = []
    for name in names:
        topic = known.get(name.lower())
        if topic is None:
            report.ignored_tags[name] += 1
        else:
            matched.append(topic)
    return tuple(dict.fromkeys(matched)) or None


def _merge(
    db: Database,
    batch: list[tuple[str, store.NewSubscriber]],
    last_old_id: int,
    report: ImportReport,
) -> None:
    rows = [subscriber for _, subscriber in batch]
    outcomes = store.merge_imported(db, rows, last_old_id)
    for (where, subscriber), outcome in zip(batch, outcomes, strict=True):
        if outcome == "added":
            report.added[subscriber.status] += 1
            report.with_topics += subscriber.topics is not None
        elif outcome == "left":
            report.left += 1
        elif outcome == "kept":
            report.kept += 1
        else:
            report.reject(where, f"{subscriber.email} appears earlier in the import")


def export_csv(db: Database, out: IO[str]) -> int:
    """Write every reader as CSV; the file imports back to the same list. A cell that a
    spreadsheet would run as a formula is prefixed with a single quote (OWASP); `import`
    takes the quote off again."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for subscriber in store.iter_subscribers(db, "all"):
        picked = store.reader_topics(db, subscriber.id) if subscriber.topics_chosen else None
        topics = ALL_TOPICS if picked is None else ",".join(picked) or NO_TOPICS
        writer.writerow(
            [
                escape_cell(
                    topics if column == "topics" else str(getattr(subscriber, column) or "")
                )
                for column in EXPORT_COLUMNS
            ]
        )
        count += 1
    return count
