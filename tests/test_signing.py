"""Signing processes: what they sign is what the sender sends, and their failures stop a run."""

from __future__ import annotations

import itertools
from pathlib import Path

import dkim
import pytest

from newsletter import db as store
from newsletter.config import load_settings
from newsletter.dkim import signer_from_settings
from newsletter.message import IssueMessages
from newsletter.posts import find_post
from newsletter.sender import prepare_issue
from newsletter.signing import Prepared, signing_pool
from newsletter.tokens import reader_tokens
from newsletter.verp import verp_for

from .conftest import Cli, SmtpSink, write_env
from .test_dkim import use_new_key

NAMES = ["Ann Lee", "Zoë Ångström", "Ann  Lee", "O'Brien, Pat", "", "李小龍", "x" * 100]


@pytest.fixture
def signed_messages(project: Path, cli: Cli) -> tuple[IssueMessages, object, dkim.DNSFunc]:
    lookup = use_new_key(project, cli)
    write_env(project, BOUNCE_ADDRESS="bounces@example.org")
    settings = load_settings(project, environ={})
    database = store.open_db(settings.db_path)
    try:
        tokens = reader_tokens(settings, database)
    finally:
        database.close()
    issue = prepare_issue(settings, find_post(settings.posts_dir))
    messages = IssueMessages(
        issue, settings, signer=signer_from_settings(settings), verp=verp_for(settings, tokens)
    )
    return messages, tokens, lookup


def recipients(count: int) -> list[store.Recipient]:
    return [
        store.Recipient(
            delivery_id=i,
            subscriber_id=i,
            email=f"reader{i}@example.org",
            name=NAMES[i % len(NAMES)],
            attempts=0,
            public_id=f"{i:032x}",
        )
        for i in range(1, count + 1)
    ]


def sign_all(messages: IssueMessages, tokens: object, readers: list[store.Recipient]):
    """Everyone through one signing process, none signed here; and what halted the run."""
    queue = iter(readers)
    halts: list[str] = []
    with signing_pool(messages, tokens, 1) as pool:  # type: ignore[arg-type]
        assert pool is not None
        next_prepared = pool.ahead(
            lambda count: list(itertools.islice(queue, count)),
            lambda: None,  # never sign here: every signature comes from the process
            lambda: bool(halts),
            halts.append,
        )
        prepared: list[Prepared] = list(iter(next_prepared, None))
    return prepared, halts


def test_a_signing_process_signs_the_message_the_sender_builds(signed_messages) -> None:
    """Its token is the reader's, and its signature, put on the message the sending process
    builds from the same reader, verifies with dkimpy: the two builds are the same bytes,
    names that need encoding or canonicalising included."""
    messages, tokens, lookup = signed_messages
    readers = recipients(100)
    prepared, halts = sign_all(messages, tokens, readers)
    assert not halts
    assert sorted(p.recipient.delivery_id for p in prepared) == [r.delivery_id for r in readers]
    slug = messages.issue.slug
    for item in prepared:
        reader = item.recipient
        assert item.token == tokens.unsubscribe(reader.public_id, slug)
        assert item.signature and item.signature.startswith(b"DKIM-Signature: ")
        envelope = messages.for_reader(
            reader.public_id, reader.email, reader.name, item.token, signature=item.signature
        )
        assert envelope.data.startswith(item.signature)
        assert dkim.verify(envelope.data, dnsfunc=lookup), reader.name


def test_a_signature_made_for_another_reader_fails(signed_messages) -> None:
    """The check above could fail: a signature on the wrong reader's message does not verify."""
    messages, tokens, lookup = signed_messages
    (first, second), _ = sign_all(messages, tokens, recipients(2))
    other = second.recipient
    envelope = messages.for_reader(
        other.public_id, other.email, other.name, second.token, signature=first.signature
    )
    assert not dkim.verify(envelope.data, dnsfunc=lookup)


def test_an_error_in_a_signing_process_halts_the_run_with_one_line(signed_messages) -> None:
    messages, tokens, _ = signed_messages
    broken = recipients(40)
    broken[35] = store.Recipient(36, 36, "reader36@example.org", None, 0, "ab" * 16)  # type: ignore[arg-type]
    _, halts = sign_all(messages, tokens, broken)
    assert len(halts) == 1 and halts[0].startswith("signing failed: "), halts
    assert "\n" not in halts[0]


def test_a_send_whose_signing_process_cannot_start_signs_in_its_connections(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No room for another process (the OS refuses the fork): the send goes on, signed by
    its connections, and every message verifies."""
    from newsletter import parallel
    from newsletter.sender import send_post
    from newsletter.signing import SigningPool

    from .conftest import add_readers

    def refuse(*args: object) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(SigningPool, "_start", refuse)
    monkeypatch.setattr(parallel, "READERS_PER_SIGNER", 10)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    lookup = use_new_key(smtp_project, cli)
    settings = load_settings(smtp_project, environ={})
    database = store.open_db(settings.db_path)
    try:
        readers = add_readers(database, 40)
    finally:
        database.close()
    assert parallel.plan(settings, 40, signed=True).signers == 1
    report = send_post(settings, find_post(settings.posts_dir))
    assert report.sent == 40 and report.stopped is None
    assert sorted(smtp_sink.per_recipient()) == sorted(readers)
    assert all(dkim.verify(r.data, dnsfunc=lookup) for r in smtp_sink.received)
