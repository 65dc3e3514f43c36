"""The store: schema, migrations on open, and the queries the rest of the tool relies on."""

import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from newsletter import db as store
from newsletter.errors import SubscriberError

from .conftest import add_readers


def test_open_migrates_once_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    first = store.open_db(path)
    assert first.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"subscribers", "deliveries", "sends", "meta"} <= set(first.table_names())
    first.close()
    again = store.open_db(path)
    applied = [row[0] for row in again.execute("SELECT name FROM _sqlite_migrations")]
    assert applied[0] == "m001_initial"
    assert applied == [m.name for m in store.migrations._migrations]  # each once, in order
    again.close()


def test_public_ids_are_random_and_backfilled(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = store.open_db(path)
    old.close()
    # A database made before public ids: roll back to m001 and add a reader the old way.
    raw = sqlite3.connect(path)
    raw.execute("DROP INDEX subscribers_public_id")
    raw.execute("DROP TABLE archived_posts")
    raw.execute("ALTER TABLE subscribers DROP COLUMN public_id")
    raw.execute("ALTER TABLE subscribers DROP COLUMN status_reason")
    # Only m002 is undone: later migrations (other columns) stay applied.
    raw.execute("DELETE FROM _sqlite_migrations WHERE name = 'm002_public_ids_reasons_archive'")
    raw.execute(
        "INSERT INTO subscribers (email, status, source, created_at, status_changed_at)"
        " VALUES ('old@example.org', 'active', 'cli', 'x', 'x')"
    )
    raw.commit()
    raw.close()
    db = store.open_db(path)
    add_readers(db, 3)
    ids = [s.public_id for s in store.iter_subscribers(db)]
    assert len(ids) == 4 and len(set(ids)) == 4
    assert all(i and len(i) == 16 and int(i, 16) >= 0 for i in ids)
    old_reader = store.get_subscriber(db, "old@example.org")
    assert store.get_subscriber_by_public_id(db, old_reader.public_id) == old_reader
    db.close()


def test_secret_key_is_made_once(db: Database) -> None:
    assert store.read_stored_secret_key(db) is None
    key = store.stored_secret_key(db)
    assert len(key) >= 32 and store.stored_secret_key(db) == key


def test_streams_in_pages_without_missing_or_repeating(db: Database) -> None:
    add_readers(db, 45)
    store.set_status(db, store.get_subscriber(db, "reader7@example.org").id, "unsubscribed")
    emails = [s.email for s in store.iter_subscribers(db, "active", batch=10)]
    assert len(emails) == 44 == len(set(emails)) and "reader7@example.org" not in emails
    assert len(list(store.iter_subscribers(db, "all", batch=45))) == 45


def test_the_due_readers_stream_in_pages_from_where_a_run_left_off(db: Database) -> None:
    add_readers(db, 101)
    store.queue_deliveries(db, "post")
    every = [r.delivery_id for r in store.iter_outstanding(db, "post", batch=7)]
    assert len(every) == 101 == len(set(every)) and every == sorted(every)
    after = [r.delivery_id for r in store.iter_outstanding(db, "post", batch=7, after_id=every[19])]
    assert after == every[20:]
    assert store.count_due(db, "post") == 101 == len(list(store.iter_due(db, "post")))


def test_erasure_skips_what_was_due_and_keeps_counts(db: Database) -> None:
    add_readers(db, 3)
    store.queue_deliveries(db, "post")
    assert store.count_outstanding(db, "post") == 3
    assert store.delete_subscriber(db, "reader1@example.org") == "reader1@example.org"
    assert store.count_outstanding(db, "post") == 2
    log = store.post_logs(db)["post"]
    assert (log.pending, log.skipped) == (2, 1)
    assert all(d.email != "reader1@example.org" for d in store.iter_deliveries(db, "post"))


def test_erasure_of_someone_who_only_had_a_test_copy(db: Database) -> None:
    send_id = store.start_send(db, "post", "test")
    store.record_test_delivery(
        db,
        "post",
        "Editor@example.org",
        status="sent",
        reply="250 ok",
        message_id="<m@x>",
        send_id=send_id,
    )
    assert store.delete_subscriber(db, "editor@example.org") == "editor@example.org"
    assert [d.email for d in store.iter_deliveries(db, "post")] == [None]
    with pytest.raises(SubscriberError, match=r"nothing is kept about nobody@example\.org"):
        store.delete_subscriber(db, "nobody@example.org")


def test_add_refuses_a_duplicate_in_any_case(db: Database) -> None:
    store.add_subscriber(db, "Ann@example.org")
    with pytest.raises(
        SubscriberError, match=r"Ann@example\.org is already on the list \(active\)"
    ):
        store.add_subscriber(db, "ann@EXAMPLE.org")


def test_the_schema_refuses_unknown_statuses(db: Database) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store.add_subscriber(db, "x@example.org", status="maybe")  # type: ignore[arg-type]


def test_erasure_reaches_the_reports_about_a_reader(db: Database) -> None:
    """A bounce report quotes the address; erasing the reader erases it there too."""
    ann = store.add_subscriber(db, "ann@example.org")
    store.record_returned_failure(
        db,
        ann.id,
        "a-post",
        "bounce",
        status="5.1.1",
        detail="550 5.1.1 <ann@example.org>: Recipient address rejected",
        bounce_limit=3,
    )
    assert store.get_subscriber(db, "ann@example.org").status == "bounced"
    store.delete_subscriber(db, "ann@example.org")
    [event] = db.execute("SELECT subscriber_id, kind, detail FROM reader_events").fetchall()
    assert event[0] is None and event[1] == "bounce"
    assert "ann@example.org" not in event[2]
