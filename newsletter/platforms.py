"""Where a subscriber list comes from, told by its columns, and what each row says of a reader.

Each platform's export names its columns its own way and says in its own words who left:
Mailchimp hands out one CSV per status (the unsubscribed one has UNSUB_TIME, the cleaned one
CLEAN_TIME), Substack marks `email_disabled`, Ghost `subscribed_to_emails=false`, and so on.
A `Layout` is found once per file from its header; it turns each row into a `Row` with one of
our statuses, or a reason to reject it. Nothing here touches the database.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from .vocab import FREQUENCIES, STATUS_REASONS, Frequency, StatusReason, SubscriberStatus

# Statuses as (our status, reason); the reason "complaint" keeps a spam complaint apart.
Verdict = tuple[SubscriberStatus, StatusReason | None]
# Reads a row's status cells (through the row's cell getter) into a Verdict.
VerdictOf = Callable[[Callable[[int | None], str]], Verdict]
ACTIVE: Verdict = ("active", None)
LEFT: Verdict = ("unsubscribed", "import")
BOUNCED: Verdict = ("bounced", "import")
COMPLAINED: Verdict = ("unsubscribed", "complaint")
PENDING: Verdict = ("pending", "import")  # never mailed until they confirm

OWN_STATUSES: dict[str, Verdict] = {
    "active": ACTIVE,
    "unsubscribed": LEFT,
    "bounced": BOUNCED,
    "pending": PENDING,
}
BUTTONDOWN_TYPES: dict[str, Verdict] = {
    "regular": ACTIVE,
    "premium": ACTIVE,
    "gifted": ACTIVE,
    "trialed": ACTIVE,
    "churning": ACTIVE,
    "past_due": ACTIVE,
    "unpaid": ACTIVE,
    "unsubscribed": LEFT,
    "removed": LEFT,
    "undeliverable": BOUNCED,
    "complained": COMPLAINED,
    "spammy": COMPLAINED,
    "unactivated": PENDING,
}
LISTMONK_STATUSES: dict[str, Verdict] = {
    "enabled": ACTIVE,
    "disabled": LEFT,
    "blocklisted": COMPLAINED,
}
BEEHIIV_STATUSES: dict[str, Verdict] = {
    "active": ACTIVE,
    "inactive": LEFT,
    "pending": PENDING,
}
KIT_STATES: dict[str, Verdict] = {
    "active": ACTIVE,
    "inactive": LEFT,
    "cancelled": LEFT,
    "canceled": LEFT,
    "bounced": BOUNCED,
    "complained": COMPLAINED,
}
MAILERLITE_STATUSES: dict[str, Verdict] = {
    "active": ACTIVE,
    "unsubscribed": LEFT,
    "unconfirmed": PENDING,
    "bounced": BOUNCED,
    "junk": COMPLAINED,
}
TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1"})

GENERIC_EMAIL_HEADERS = (
    "email",
    "email address",
    "e-mail",
    "e-mail address",
    "email_address",
    "mail",
)
NAME_HEADERS = ("name", "full name", "full_name", "display name")
FIRST_NAME_HEADERS = ("first name", "first_name", "firstname", "fname", "given name")
LAST_NAME_HEADERS = ("last name", "last_name", "lastname", "lname", "surname", "family name")
# A cell a spreadsheet would run as a formula starts with one of these (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Row:
    """What one row says: the raw address and name, a status, and what else the file knew."""

    email: str
    name: str
    verdict: Verdict
    created_at: str | None
    left_at: str | None
    optin_ip: str | None
    tags: str | None
    platform: str | None = None
    source: str | None = None
    # This tool's own export says what each reader chose; None: the file has no such column.
    frequency: Frequency | None = None
    paused_until: str | None = None
    topics: str | None = None  # as exported: "" every topic, "(none)" none, else "a,b"


class RowError(ValueError):
    """A row that cannot be imported; the message says why, for the author."""


def unescape_cell(value: str) -> str:
    """A cell as it was before an export neutralised it: `'=SUM(A1)` is `=SUM(A1)` again."""
    if len(value) > 1 and value[0] == "'" and value[1] in FORMULA_STARTS:
        return value[1:]
    return value


def escape_cell(value: str) -> str:
    """A cell a spreadsheet shows as text, never runs: OWASP's rule, a leading single quote."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


@lru_cache(maxsize=4096)
def parse_when(raw: str) -> str:
    """A platform's date as ISO 8601 in UTC, to the second; naive times are taken as UTC.

    Mailchimp `2015-02-12 10:54:27`, beehiiv `2023-03-24 10:23:10 UTC`, Ghost
    `2015-03-16T14:40:47.000Z`, Buttondown `2024-03-13 00:03:09.183465+00:00`, listmonk (Go)
    `2024-01-02 15:04:05.999 +0000 UTC`, and plain dates.
    """
    text = raw.strip()
    parts = text.split(" ")
    if len(parts) >= 3 and parts[-1].isalpha():  # a zone name after the time or its offset
        parts = parts[:-1]
        if len(parts) == 2:
            parts.append("+00:00")
    if len(parts) == 3 and parts[2][:1] in "+-":  # Go's "time +0000"
        parts = [parts[0], parts[1] + parts[2]]
    try:
        when = datetime.fromisoformat(" ".join(parts))
    except ValueError:
        raise RowError(f"{raw!r} is not a date") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return when.astimezone(UTC).isoformat(timespec="seconds")
    except OverflowError:  # 9999-12-31T23:59:59-12:00 is past year 9999 in UTC
        raise RowError(f"{raw!r} is not a date that can be kept") from None


@dataclass(frozen=True)
class Layout:
    """How to read one file's rows: which platform wrote it and where each column is."""

    platform: str | None
    email: int
    name: int | None = None
    first: int | None = None
    last: int | None = None
    joined: tuple[int, ...] = ()
    left: tuple[int, ...] = ()
    optin_ip: tuple[int, ...] = ()
    tags: int | None = None
    source: int | None = None
    platform_column: int | None = None  # this tool's export says where each reader came from
    frequency: int | None = None  # and what each reader chose
    paused_until: int | None = None
    topics: int | None = None
    verdict: VerdictOf = lambda _cell: ACTIVE

    def row(self, record: Sequence[str]) -> Row:
        """The row's meaning; RowError when a value cannot be understood."""

        size = len(record)

        def cell(index: int | None) -> str:
            if index is None or index >= size:
                return ""
            value = record[index].strip()
            return unescape_cell(value) if value[:1] == "'" else value

        def first_of(indices: tuple[int, ...], what: str) -> str | None:
            for index in indices:
                value = cell(index)
                if value:
                    try:
                        return parse_when(value)
                    except RowError as e:
                        raise RowError(f"{what} {e}") from None
            return None

        if self.name is not None:
            name = cell(self.name)
        else:
            name = " ".join(p for p in (cell(self.first), cell(self.last)) if p)
        ip = next((cell(i) for i in self.optin_ip if cell(i)), None)
        return Row(
            email=cell(self.email),
            name=name,
            verdict=self.verdict(cell),
            created_at=first_of(self.joined, "the joining date"),
            left_at=first_of(self.left, "the leaving date"),
            optin_ip=ip,
            tags=cell(self.tags) or None,
            platform=cell(self.platform_column) or None
            if self.platform_column is not None
            else self.platform,
            source=cell(self.source).lower() or None,
            frequency=self._frequency(cell(self.frequency)),
            paused_until=first_of(
                () if self.paused_until is None else (self.paused_until,), "the pause's end"
            ),
            topics=None if self.topics is None else cell(self.topics),
        )

    def _frequency(self, value: str) -> Frequency | None:
        if self.frequency is None or not value:
            return None
        found = next((known for known in FREQUENCIES if known == value.lower()), None)
        if found is None:
            raise RowError(f"unknown frequency {value!r} (every or digest)")
        return found


def _by_status(index: int | None, table: dict[str, Verdict], what: str) -> VerdictOf:
    def verdict(cell: Callable[[int | None], str]) -> Verdict:
        value = cell(index).lower()
        if value not in table:
            raise RowError(f"unknown {what} {value!r}")
        return table[value]

    return verdict


def _truthy(cell: Callable[[int | None], str], index: int | None) -> bool:
    return cell(index).lower() in TRUE_WORDS


def recognise(header: Sequence[str]) -> Layout | None:
    """The layout of a file from its header row; None when no column holds email addresses."""
    labels = [h.strip().strip('"').lower() for h in header]
    have = set(labels)

    def col(*names: str) -> int | None:
        for name in names:
            if name in have:
                return labels.index(name)
        return None

    def cols(*names: str) -> tuple[int, ...]:
        return tuple(labels.index(n) for n in names if n in have)

    email = col(*GENERIC_EMAIL_HEADERS)
    names = {"first": col(*FIRST_NAME_HEADERS), "last": col(*LAST_NAME_HEADERS)}
    full_name = col(*NAME_HEADERS)

    if email is not None and {"status", "source"} <= have:  # this tool's own export
        return Layout(
            "",
            email,
            name=full_name,
            joined=cols("created_at"),
            left=cols("left_at"),
            optin_ip=cols("optin_ip"),
            tags=col("tags"),
            source=col("source"),
            platform_column=col("platform"),
            frequency=col("frequency"),
            paused_until=col("paused_until"),
            topics=col("topics"),
            verdict=_own_verdict(col("status"), col("status_reason")),
        )
    if "email address" in have and have & {"optin_time", "member_rating", "leid", "euid"}:
        unsub, clean, reason = col("unsub_time"), col("clean_time"), col("unsub_reason")

        def mailchimp(cell: Callable[[int | None], str]) -> Verdict:
            if clean is not None:
                return BOUNCED
            if unsub is not None:
                why = cell(reason).lower()
                return COMPLAINED if "abuse" in why or "spam" in why else LEFT
            return ACTIVE

        return Layout(
            "mailchimp",
            labels.index("email address"),
            **names,
            joined=cols("optin_time", "confirm_time"),
            left=cols("unsub_time", "clean_time"),
            optin_ip=cols("optin_ip", "confirm_ip"),
            tags=col("tags"),
            verdict=mailchimp,
        )
    if email is not None and have & {"email_disabled", "active_subscription"}:
        disabled = col("email_disabled")
        return Layout(
            "substack",
            email,
            name=full_name,
            joined=cols("created_at", "subscription_date"),
            verdict=lambda cell: LEFT if _truthy(cell, disabled) else ACTIVE,
        )
    if "subscriber_type" in have and email is not None:
        return Layout(
            "buttondown",
            email,
            name=full_name,
            joined=cols("creation_date", "subscription_date", "created_date"),
            left=cols("unsubscription_date"),
            tags=col("tags"),
            verdict=_by_status(col("subscriber_type"), BUTTONDOWN_TYPES, "subscriber_type"),
        )
    if "subscribed_to_emails" in have and email is not None:
        subscribed, deleted = col("subscribed_to_emails"), col("deleted_at")

        def ghost(cell: Callable[[int | None], str]) -> Verdict:
            return ACTIVE if _truthy(cell, subscribed) and not cell(deleted) else LEFT

        return Layout(
            "ghost",
            email,
            name=full_name,
            joined=cols("created_at"),
            left=cols("deleted_at"),
            tags=col("labels"),
            verdict=ghost,
        )
    if "attributes" in have and email is not None:
        attributes = col("attributes")
        status = col("status")
        by_status = _by_status(status, LISTMONK_STATUSES, "status")

        def listmonk(cell: Callable[[int | None], str]) -> Verdict:
            raw = cell(attributes)
            if raw:
                try:
                    json.loads(raw)
                except ValueError:
                    raise RowError(f"attributes {raw[:40]!r} is not JSON") from None
            return by_status(cell) if status is not None else ACTIVE

        return Layout(
            "listmonk",
            email,
            name=full_name,
            joined=cols("created_at"),
            verdict=listmonk,
        )
    if (
        email is not None
        and "status" in have
        and have
        & {
            "subscription_tier",
            "unsubscribed_at",
            "referring_site",
            "utm_source",
        }
    ):
        return Layout(
            "beehiiv",
            email,
            name=full_name,
            first=None if full_name is not None else names["first"],
            last=None if full_name is not None else names["last"],
            joined=cols("created_at"),
            left=cols("unsubscribed_at"),
            verdict=_by_status(col("status"), BEEHIIV_STATUSES, "status"),
        )
    if "state" in have and email is not None:
        return Layout(
            "kit",
            email,
            name=full_name,
            first=None if full_name is not None else names["first"],
            last=None if full_name is not None else names["last"],
            joined=cols("created_at"),
            left=cols("canceled_at", "cancelled_at"),
            tags=col("tags"),
            verdict=_by_status(col("state"), KIT_STATES, "state"),
        )
    if "subscriber" in have and email is None:
        status = col("status")
        return Layout(
            "mailerlite",
            labels.index("subscriber"),
            # MailerLite's "Name" is the first name, beside a "Last name".
            first=full_name if full_name is not None else names["first"],
            last=names["last"],
            joined=cols("subscribed", "subscribed_at", "date subscribed", "created_at"),
            left=cols("unsubscribed", "unsubscribed_at", "date unsubscribed"),
            optin_ip=cols("ip_address", "signup_ip", "opted_in_ip"),
            tags=col("groups"),
            verdict=_by_status(status, MAILERLITE_STATUSES, "status")
            if status is not None
            else (lambda _cell: ACTIVE),
        )
    if email is None:
        return None
    status = col("status")
    return Layout(
        None,
        email,
        name=full_name,
        first=None if full_name is not None else names["first"],
        last=None if full_name is not None else names["last"],
        joined=cols("created_at"),
        verdict=_by_status(status, OWN_STATUSES, "status")
        if status is not None
        else (lambda _cell: ACTIVE),
    )


def _own_verdict(status: int | None, reason: int | None) -> VerdictOf:
    """Our own export carries each reader's status and the reason for it, so it imports back
    unchanged; without a reason column, a status from elsewhere is the file's say-so."""
    by_status = _by_status(status, OWN_STATUSES, "status")

    def verdict(cell: Callable[[int | None], str]) -> Verdict:
        ours, default_reason = by_status(cell)
        if reason is None:
            return ours, default_reason
        given = cell(reason)
        return ours, next((known for known in STATUS_REASONS if known == given), None)

    return verdict


def split_tags(raw: str) -> list[str]:
    """A platform's tags or labels cell as its tags: Buttondown's JSON list `["a", "b"]`,
    Mailchimp's quoted `"a","b"`, or Ghost's, Kit's and MailerLite's `a, b`."""
    text = raw.strip()
    if text.startswith("["):
        try:
            found = json.loads(text)
        except ValueError:
            found = None
        if isinstance(found, list):
            return [str(tag).strip() for tag in found if str(tag).strip()]
    cells = next(csv.reader([text], skipinitialspace=True), [])
    return [tag.strip().strip('"').strip() for tag in cells if tag.strip().strip('"').strip()]


# The first row is data, not a header: a plain `email[,name]` file.
PLAIN = Layout(None, 0, name=1)
