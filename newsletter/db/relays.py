"""What a relay service (SES, Postmark) reports back, matched to the deliveries it names.

A relay names a message by the id it gave it when it took the message (kept per delivery in
`deliveries.relay_message_id`); `relay_reports` holds the reports already applied, so a second
pull of the same reports changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlite_utils import Database

from ..vocab import RelayService
from .schema import now
from .subscribers import Subscriber

_READER_COLUMNS = ", ".join(f"s.{name}" for name in Subscriber.__dataclass_fields__)


@dataclass(frozen=True)
class RelayDelivery:
    """The reader and post a relay's message id names."""

    subscriber: Subscriber
    slug: str


def delivery_by_relay_id(db: Database, relay_message_id: str) -> RelayDelivery | None:
    row = db.execute(
        f"SELECT d.slug, {_READER_COLUMNS} FROM deliveries d"
        " JOIN subscribers s ON s.id = d.subscriber_id"
        " WHERE d.relay_message_id = ? AND d.test = 0 LIMIT 1",
        [relay_message_id],
    ).fetchone()
    return RelayDelivery(Subscriber(*row[1:]), row[0]) if row else None


def relay_report_applied(db: Database, service: RelayService, report_id: str) -> bool:
    return (
        db.execute(
            "SELECT 1 FROM relay_reports WHERE service = ? AND report_id = ?", [service, report_id]
        ).fetchone()
        is not None
    )


def record_relay_report(db: Database, service: RelayService, report_id: str) -> None:
    """Remember one applied report (in the caller's transaction with what it changed)."""
    db.execute(
        "INSERT OR IGNORE INTO relay_reports (service, report_id, applied_at) VALUES (?, ?, ?)",
        [service, report_id, now()],
    )
