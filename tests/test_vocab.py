"""The words of newsletter/vocab.py are the ones the schema allows: neither can drift alone."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from newsletter import db as store
from newsletter import vocab


def _allowed(db_path: Path, table: str, column: str) -> set[str]:
    """The values a CHECK (column IN (...)) constraint of `table` allows."""
    with store.connect(db_path) as db:
        (sql,) = db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", [table]
        ).fetchone()
    found = re.search(rf"CHECK \({column} IN \(([^)]*)\)\)", sql, re.S)
    assert found is not None, f"no CHECK on {table}.{column}"
    return set(re.findall(r"'([^']*)'", found[1]))


@pytest.mark.parametrize(
    ("table", "column", "words"),
    [
        ("subscribers", "status", vocab.SUBSCRIBER_STATUSES),
        ("subscribers", "source", vocab.SUBSCRIBER_SOURCES),
        ("subscribers", "frequency", vocab.FREQUENCIES),
        ("deliveries", "status", vocab.DELIVERY_STATUSES),
        ("sends", "kind", vocab.SEND_KINDS),
        ("sends", "status", vocab.SEND_STATUSES),
        ("reader_events", "kind", vocab.READER_EVENT_KINDS),
    ],
)
def test_the_schema_allows_exactly_the_vocabulary(tmp_path, table, column, words):
    assert _allowed(tmp_path / "n.db", table, column) == set(words)


def test_subsets_are_made_of_their_vocabulary():
    assert set(vocab.DELIVERY_OUTCOMES) == set(vocab.DELIVERY_STATUSES) - {"pending"}
    assert set(vocab.LEFT_STATUSES) <= set(vocab.SUBSCRIBER_STATUSES)
    assert set(vocab.RETURNED_REASONS) <= set(vocab.STATUS_REASONS)
    assert (*vocab.SUBSCRIBER_STATUSES, "all") == vocab.STATUS_FILTERS


def test_every_refusal_effect_is_kept_as_a_reader_event():
    kinds = {vocab.event_kind_for(effect) for effect in get_args(vocab.RefusalEffect)}
    assert kinds == {"bounce", "soft_bounce", "sender_refusal"}
