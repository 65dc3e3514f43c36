"""Signing processes: what they sign is what the sender sends, and their failures stop a run."""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest

from newsletter import db as store
from newsletter.config import load_settings
from newsletter.dkim import signer_from_settings
from newsletter.keys import reader_tokens
from newsletter.message import IssueMessages
from newsletter.posts import find_post
from newsletter.sender import prepare_issue
from newsletter.signing import Prepared, signing_pool
from newsletter.verp import verp_for

from .conftest import Cli, SmtpSink, as_from_a_terminal, write_env
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
        issue,
        settings,
        signer=signer_from_settings(settings),
        verp=verp_for(settings.bounce_address, tokens),
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


def sign_all(
    messages: IssueMessages,
    tokens: object,
    readers: list[store.Recipient],
    take: Callable[[int], list[store.Recipient]] | None = None,
):
    """Everyone through one signing process, none signed here; and what halted the run."""
    queue = iter(readers)
    halts: list[str] = []
    with signing_pool(messages, tokens, 1) as pool:  # type: ignore[arg-type]
        assert pool is not None
        next_prepared = pool.ahead(
            take or (lambda count: list(itertools.islice(queue, count))),
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


def test_an_unexpected_error_feeding_the_processes_halts_the_run(signed_messages) -> None:
    """Reading the next readers fails (the database is locked, say): the run is stopped with
    one line, not left to finish as if everyone had been sent."""
    messages, tokens, _ = signed_messages
    readers = iter(recipients(200))
    taken = [0]

    def take(count: int) -> list[store.Recipient]:
        if taken[0] >= 64:
            raise sqlite3.OperationalError("database is locked")
        taken[0] += count
        return list(itertools.islice(readers, count))

    prepared, halts = sign_all(messages, tokens, [], take)
    assert halts == ["unexpected error: OperationalError: database is locked"]
    assert len(prepared) <= 64


SIGN_AFTER_CTRL_C = """
import os, signal, sys, time
from pathlib import Path
from newsletter import db as store
from newsletter.config import load_settings
from newsletter.dkim import signer_from_settings
from newsletter.message import IssueMessages
from newsletter.posts import find_post
from newsletter.sender import prepare_issue
from newsletter.signing import SigningPool
from newsletter.keys import reader_tokens

if __name__ == "__main__":
    settings = load_settings(Path(sys.argv[1]), environ={})
    database = store.open_db(settings.db_path)
    tokens = reader_tokens(settings, database)
    issue = prepare_issue(settings, find_post(settings.posts_dir))
    messages = IssueMessages(issue, settings, signer=signer_from_settings(settings))
    pool = SigningPool(messages, tokens, 1)
    try:
        os.killpg(0, signal.SIGINT)  # Ctrl-C while the signing process is still starting
        time.sleep(1)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    pool.pipes[0].send([("ab" * 16, "ann@example.org", "Ann")])
    print("signed" if pool.pipes[0].recv()[0][1].startswith(b"DKIM-Signature") else "?")
    pool.close()
"""


def test_ctrl_c_while_a_signing_process_starts_neither_kills_it_nor_prints_a_traceback(
    signed_messages, project: Path, tmp_path: Path
) -> None:
    """Ctrl-C reaches every process of the terminal's group: the sending process decides
    what it means; a signing process still starting up is not killed mid-import."""
    script = tmp_path / "sign_after_ctrl_c.py"
    script.write_text(SIGN_AFTER_CTRL_C)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    done = subprocess.run(
        [sys.executable, str(script), str(project)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,  # its own process group, as a terminal would make it
        preexec_fn=as_from_a_terminal,
    )
    assert done.stdout.split() == ["interrupted", "signed"], done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
