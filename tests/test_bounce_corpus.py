"""The bounce corpus (tests/fixtures/bounces, see build.py there): every message, end to end
through `newsletter bounces --from FILE --dry-run --json`, against a list whose readers were
sent a post through the real send path. Each message is read twice: as it came (to the plain
bounce address, the reader named only by the report) and at its reader's VERP address."""

from __future__ import annotations

import hashlib
import json
import mailbox
from pathlib import Path

import pytest

from newsletter import db as store
from newsletter.config import load_settings
from newsletter.keys import reader_tokens
from newsletter.verp import Verp

from .conftest import REPO, Cli, write_env

SLUG = "ofsted-joint-inspections"
CORPUS = REPO / "tests" / "fixtures" / "bounces"
INDEX: dict[str, dict] = json.loads((CORPUS / "index.json").read_text())
ACTION = {"bounce": "bounced", "delay": "noted", "sender": "noted", "complaint": "unsubscribed"}
BOUNCE_ADDRESS = "bounces@news.example.org"


def readers_in_corpus() -> list[str]:
    return sorted({r for entry in INDEX.values() for r in entry["readers"]})


@pytest.fixture
def mailed(smtp_project: Path, cli: Cli) -> dict[str, str]:
    """Every reader the corpus names, sent the post; their VERP return addresses."""
    write_env(smtp_project, BOUNCE_ADDRESS=BOUNCE_ADDRESS)
    settings = load_settings(smtp_project, environ={})
    database = store.open_db(settings.db_path)
    try:
        store.insert_new_subscribers(
            database,
            (store.NewSubscriber(email=a, name="") for a in readers_in_corpus()),
            dry_run=False,
        )
    finally:
        database.close()
    cli("send", SLUG, "--yes")
    database = store.open_db(settings.db_path)
    try:
        verp = Verp(BOUNCE_ADDRESS, reader_tokens(settings, database))
        return {
            s.email: verp.return_path(s.public_id, SLUG) for s in store.iter_subscribers(database)
        }
    finally:
        database.close()


def statuses(cli: Cli) -> dict[str, str]:
    listed = cli("subscribers", "list", "--status", "all", "--json").stdout.splitlines()
    return {r["email"]: r["status"] for r in map(json.loads, listed)}


def expected(entry: dict, *, at_verp: bool) -> dict[str, str]:
    """The action for each reader the message should act on."""
    if entry["expect"] not in ACTION or (not at_verp and entry.get("found") == "left alone"):
        return {}
    each = entry.get("each", {})
    readers = entry["readers"][:1] if at_verp else entry["readers"]
    return {r: ACTION[each.get(r, entry["expect"])] for r in readers}


def read(cli: Cli, path: Path) -> dict:
    [outcome] = [json.loads(line) for line in cli("bounces", "--from", str(path), "--dry-run",
                                                  "--json").stdout.splitlines()]  # fmt: skip
    return outcome


def test_every_message_of_the_corpus_as_found_and_at_a_verp_address(
    mailed: dict[str, str], cli: Cli, tmp_path: Path
) -> None:
    assert len(INDEX) > 100
    wrong: list[tuple[str, str, object, object]] = []
    for name, entry in sorted(INDEX.items()):
        source = CORPUS / name
        before = hashlib.sha256(source.read_bytes()).hexdigest()
        found = read(cli, source)
        got = {r["email"]: r["action"] for r in found["readers"]}
        if got != expected(entry, at_verp=False):
            wrong.append((name, "found", got, expected(entry, at_verp=False)))
        if any(r["matched_by"] == "token" for r in found["readers"]):
            wrong.append((name, "found", "matched by a token", None))
        assert hashlib.sha256(source.read_bytes()).hexdigest() == before

        verp = tmp_path / name
        to = mailed[entry["readers"][0]].encode()
        verp.write_bytes(b"Delivered-To: " + to + b"\r\n" + source.read_bytes())
        at = read(cli, verp)
        got = {r["email"]: (r["action"], r["matched_by"]) for r in at["readers"]}
        want = {r: (a, "token") for r, a in expected(entry, at_verp=True).items()}
        if got != want:
            wrong.append((name, "verp", got, want))
        for outcome in (found, at):
            for reader in outcome["readers"]:
                if entry["expect"] == "delay" or entry.get("each", {}).get(reader["email"]) == (
                    "delay"
                ):
                    assert reader["permanent"] is False, (name, reader)
    assert wrong == []
    # Dry runs all: nobody's status changed.
    assert set(statuses(cli).values()) == {"active"}
    assert len(statuses(cli)) == len(readers_in_corpus())


def test_saved_mail_is_read_from_an_mbox_and_a_maildir_and_left_as_it_is(
    mailed: dict[str, str], cli: Cli, tmp_path: Path
) -> None:
    names = ["001-postfix.eml", "019-exim.eml", "078-vacation.eml", "011-postfix-delay.eml"]
    assert [INDEX[n]["expect"] for n in names] == ["bounce", "bounce", "auto-reply", "delay"]
    mbox_path, maildir_path = tmp_path / "bounces.mbox", tmp_path / "Maildir"
    mbox, maildir = mailbox.mbox(mbox_path), mailbox.Maildir(maildir_path)
    for name in names:
        data = (CORPUS / name).read_bytes()
        mbox.add(data)
        maildir.add(data)
    mbox.close()

    def tree(path: Path) -> dict[str, bytes]:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        return {str(p): p.read_bytes() for p in files}

    saved = {**tree(mbox_path), **tree(maildir_path)}
    dry = cli("bounces", "--from", str(maildir_path), "--dry-run").stdout
    assert dry.splitlines()[-1] == "Would handle 3 of 4 messages; 1 left unhandled"
    outcomes = [
        json.loads(line)
        for line in cli("bounces", "--from", str(mbox_path), "--json").stdout.splitlines()
    ]
    assert [(o["id"], o["action"]) for o in outcomes] == [
        ("bounces.mbox:1", "bounced"),
        ("bounces.mbox:2", "bounced"),
        ("bounces.mbox:3", "left alone"),
        ("bounces.mbox:4", "noted"),
    ]
    first, second, _, late = (INDEX[n]["readers"][0] for n in names)
    listed = statuses(cli)
    assert (listed[first], listed[second], listed[late]) == ("bounced", "bounced", "active")
    assert {**tree(mbox_path), **tree(maildir_path)} == saved  # nothing moved or changed
    # Read again: the same messages, nothing more changes.
    again = [
        json.loads(line)
        for line in cli("bounces", "--from", str(mbox_path), "--json").stdout.splitlines()
    ]
    assert [o["readers"][0]["action"] if o["readers"] else o["action"] for o in again] == [
        "noted",
        "noted",
        "left alone",
        "noted",
    ]


def test_a_source_that_cannot_be_read_is_one_line(
    mailed: dict[str, str], cli: Cli, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.mbox"
    result = cli("bounces", "--from", str(missing), ok=False)
    assert (result.exit_code, result.stderr) == (1, f"Error: {missing}: no such file or folder\n")
    result = cli("bounces", "--from", str(tmp_path), ok=False)
    assert result.stderr == f"Error: {tmp_path}: a folder that is not a Maildir (no cur/ or new/)\n"
    result = cli("bounces", "--from", "ses", ok=False)  # the relay's API (tests/test_relays.py)
    assert result.stderr.startswith("Error: NEWSLETTER_SES_QUEUE_URL is not set")
