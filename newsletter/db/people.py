"""A person's data: all that is kept about them (GDPR art. 15), and erasing it (art. 17)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlite_utils import Database

from ..errors import SubscriberError
from .events import ReaderEvent, reader_events
from .schema import now
from .sends import DELIVERY_COLUMNS, Delivery
from .subscribers import Subscriber, get_subscriber


def delete_subscriber(db: Database, email: str) -> str:
    """Erase a person: their row, and their address in the send log (the counts stay).

    Test copies sent to the address lose it too, and so do server replies and run notes that
    quote it ("550 5.1.1 <ann@example.org>: unknown user"). Deliveries still due are marked
    skipped, so the log does not wait for them for ever. Erasing is rare, so the scans of the
    log that this takes are affordable. Returns the address as it was kept.
    """
    subscriber = get_subscriber(db, email)
    address = subscriber.email if subscriber else email
    mailed = db.execute(
        "SELECT 1 FROM deliveries WHERE lower(email) = lower(?) LIMIT 1", [address]
    ).fetchone()
    if subscriber is None and mailed is None:
        raise SubscriberError(f"nothing is kept about {email}: not on the list, never mailed")
    subscriber_id = subscriber.id if subscriber else None
    with db.atomic():
        db.execute(
            "UPDATE deliveries SET status = 'skipped', updated_at = ? WHERE subscriber_id = ?"
            " AND status IN ('pending', 'failed')",
            [now(), subscriber_id],
        )
        for table, column in (
            ("deliveries", "last_reply"),
            ("sends", "note"),
            ("reader_events", "detail"),  # a bounce report quotes the address
        ):
            db.execute(
                f"UPDATE {table} SET {column} = replace({column}, ?, '(erased)')"
                f" WHERE instr({column}, ?) > 0",
                [address, address],
            )
            # Quoted in another case: drop the text rather than keep the address.
            db.execute(
                f"UPDATE {table} SET {column} = '(erased)'"
                f" WHERE instr(lower({column}), lower(?)) > 0",
                [address],
            )
        db.execute(
            "UPDATE deliveries SET email = NULL, subscriber_id = NULL"
            " WHERE subscriber_id = ? OR lower(email) = lower(?)",
            [subscriber_id, address],
        )
        db.execute("DELETE FROM subscribers WHERE id = ?", [subscriber_id])
    # The write-ahead log still holds the pages as they were, address and all: copy the new
    # ones into the database and empty it (as far as no reader is in the middle of it).
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return address


@dataclass(frozen=True)
class PersonalData:
    """Everything kept about one person (GDPR art. 15): their row, consent, deliveries and
    what came back about them (bounce reports, complaints, unsubscribes)."""

    email: str
    subscriber: Subscriber | None
    deliveries: list[Delivery]
    events: list[ReaderEvent] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "subscriber": asdict(self.subscriber) if self.subscriber else None,
            "deliveries": [asdict(delivery) for delivery in self.deliveries],
            "events": [asdict(event) for event in self.events],
        }


def personal_data(db: Database, email: str) -> PersonalData:
    """What the list and the send log hold about `email`, test copies sent to it included."""
    subscriber = get_subscriber(db, email)
    rows = db.execute(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE subscriber_id = ?"
        " OR (subscriber_id IS NULL AND lower(email) = lower(?)) ORDER BY id",
        [subscriber.id if subscriber else None, email],
    ).fetchall()
    if subscriber is None and not rows:
        raise SubscriberError(f"nothing is kept about {email}: not on the list, never mailed")
    return PersonalData(
        email=subscriber.email if subscriber else email,
        subscriber=subscriber,
        deliveries=[Delivery(*row) for row in rows],
        events=reader_events(db, subscriber_id=subscriber.id) if subscriber else [],
    )
