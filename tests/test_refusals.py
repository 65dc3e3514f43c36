"""Refusals that are the sender's fault never write readers off; a server that refuses
everyone stops the run (the circuit breaker); the author can bring readers back; `stats`.

Against the fault-injecting SMTP server of conftest (a real aiosmtpd on loopback)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from newsletter import db as store
from newsletter.config import load_settings
from newsletter.keys import reader_tokens
from newsletter.refusals import CircuitBreaker, classify_refusal
from newsletter.subscribe import unsubscribe

from .conftest import Cli, SmtpSink, add_readers

SLUG = "ofsted-joint-inspections"


@pytest.mark.parametrize(
    ("reply", "stage", "report", "effect"),
    [
        ("550 5.1.1 <a@example.org>: Recipient address rejected", "RCPT", False, "bounce"),
        ("552 5.2.2 mailbox full", "RCPT", False, "count"),
        ("552 5.2.2 mailbox full", "RCPT", True, "bounce"),  # the receiver's last word
        ("550 No such user here", "RCPT", False, "count"),  # no enhanced code
        ("554 5.7.1 Relay access denied", "RCPT", False, "sender"),
        ("554 5.7.1 Message refused as spam", "DATA", True, "sender"),
        ("550 5.5.1 bad sequence", "RCPT", False, "sender"),
        ("552 5.3.4 message too big", "DATA", False, "sender"),
        ("553 5.1.8 sender address rejected", "MAIL", False, "sender"),  # any MAIL FROM refusal
        ("451 4.3.0 try again later", "DATA", False, "retry"),
        ("450 4.2.1 mailbox busy", "RCPT", True, "count"),  # a delay report: counted
    ],
)
def test_refusals_are_classified_by_whose_fault_they_are(
    reply: str, stage: str, report: bool, effect: str
) -> None:
    permanent = reply.startswith("5")
    assert classify_refusal(reply, permanent=permanent, stage=stage, report=report).effect == effect


def test_the_breaker_holds_bounces_until_a_delivery_goes_through() -> None:
    written: list[str] = []
    refused = classify_refusal("550 5.1.1 unknown", permanent=True)
    breaker = CircuitBreaker(3)
    assert breaker.hold(lambda: written.append("a"))
    breaker.failed(refused)
    breaker.failed(None)  # a lost connection: no refusal, and no proof the server works
    assert written == [] and breaker.deciding
    breaker.delivered()  # one went through: the server works, the bounce is written
    assert written == ["a"] and not breaker.deciding and breaker.decide() is None
    assert not breaker.hold(lambda: written.append("b"))  # from now on, written at once


@pytest.mark.parametrize(
    ("refusal", "first", "cause"),
    [
        # The sender's refusals are failures: ten in a row (NEWSLETTER_MAX_CONSECUTIVE_FAILURES)
        # stop the run before the breaker's twenty, and the breaker names the cause.
        (
            "554 5.7.1 Relay access denied",
            10,
            "check NEWSLETTER_SMTP_* and the provider's sandbox or verification",
        ),
        (
            "550 5.1.1 User unknown",
            20,
            "the server does not know these addresses: check that NEWSLETTER_SMTP_HOST relays "
            "to the internet, not only to its own mailboxes",
        ),
    ],
)
def test_a_server_that_refuses_everyone_stops_the_run_and_bounces_nobody(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli, refusal: str, first: int, cause: str
) -> None:
    database = store.open_db(smtp_project / "newsletter.db")
    readers = add_readers(database, 50)
    database.close()
    smtp_sink.reject.update({address: refusal for address in readers})
    result = cli("send", SLUG, "--yes", ok=False)
    assert result.exit_code == 1
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert error == (
        f"Error: stopped early: the server refuses every one of the first {first} recipients "
        f"({refusal}): {cause}; no reader was marked bounced"
    )
    assert f"Sent 0, failed {first}, bounced 0" in result.stdout
    database = store.open_db(smtp_project / "newsletter.db")
    try:
        assert store.count_subscribers(database, "active") == 50
        assert store.count_subscribers(database, "bounced") == 0
        log = list(store.iter_deliveries(database, SLUG))
        assert sum(d.status == "failed" for d in log) == first  # tried again next run
        assert sum(d.status == "pending" for d in log) == 50 - first  # never tried
        assert {d.last_reply for d in log if d.status == "failed"} == {refusal}
        assert store.last_send(database, SLUG)["status"] == "stopped"
    finally:
        database.close()

    # The author fixes the relay: the next run sends to everyone.
    smtp_sink.reject.clear()
    cli("send", SLUG, "--yes")
    assert len(smtp_sink.received) == 50


def test_a_short_list_refused_whole_also_stops(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    for address in ("ann@example.org", "bob@example.org"):
        cli("subscribers", "add", address)
        smtp_sink.reject[address] = "550 5.1.1 User unknown"
    result = cli("send", SLUG, "--yes", ok=False)
    assert result.exit_code == 1
    assert "the server refuses every one of the first 2 recipients" in result.stderr
    assert "bounced" not in cli("subscribers", "list", "--status", "all").stdout


def test_sender_refusals_leave_the_reader_and_retry_next_run(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    database = store.open_db(smtp_project / "newsletter.db")
    readers = add_readers(database, 5)
    database.close()
    smtp_sink.reject[readers[1]] = "554 5.7.1 Sender not verified"
    smtp_sink.reject[readers[2]] = "550 5.1.1 User unknown"
    result = cli("send", SLUG, "--yes")
    assert result.stdout.splitlines()[-1].startswith("Sent 3, failed 1, bounced 1")
    listed = {
        r["email"]: r
        for r in map(
            json.loads, cli("subscribers", "list", "--status", "all", "--json").stdout.splitlines()
        )
    }
    assert (listed[readers[1]]["status"], listed[readers[1]]["bounces"]) == ("active", 0)
    assert listed[readers[2]]["status"] == "bounced"
    del smtp_sink.reject[readers[1]]
    retry = cli("send", SLUG, "--yes")
    assert "to 1 of 4 active readers" in retry.stdout


def test_reactivate_brings_bounced_readers_back(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    database = store.open_db(smtp_project / "newsletter.db")
    readers = add_readers(database, 4)
    database.close()
    smtp_sink.reject[readers[0]] = "550 5.1.1 User unknown"
    smtp_sink.reject[readers[3]] = "550 5.1.1 User unknown"
    cli("send", SLUG, "--yes")
    bounced = cli("subscribers", "list", "--status", "bounced").stdout
    assert readers[0] in bounced and readers[3] in bounced

    result = cli("subscribers", "reactivate", readers[0])
    assert result.stdout == f"Reactivated {readers[0]}\n"
    again = cli("subscribers", "reactivate", readers[1], ok=False)
    assert again.exit_code == 1
    assert again.stderr == (
        f"Error: {readers[1]} is active, not bounced; only bounced readers are reactivated "
        "(an unsubscribed one must subscribe again)\n"
    )
    bad = cli("subscribers", "reactivate", "--bounced-since", "last week", ok=False)
    assert bad.stderr == "Error: --bounced-since must be a date like 2026-01-31, not 'last week'\n"
    since = cli("subscribers", "reactivate", "--bounced-since", "2000-01-01")
    assert since.stdout == f"Reactivated {readers[3]}\n"

    database = store.open_db(smtp_project / "newsletter.db")
    try:
        for address in (readers[0], readers[3]):
            reader = store.get_subscriber(database, address)
            assert (reader.status, reader.status_reason, reader.bounces) == (
                "active",
                "author",
                0,
            )
            kinds = [e.kind for e in store.reader_events(database, subscriber_id=reader.id)]
            assert kinds == ["reactivate"]
    finally:
        database.close()
    # What came back about a person is part of what is kept about them (GDPR art. 15).
    person = json.loads(cli("subscribers", "export", "--email", readers[0]).stdout)
    assert [event["kind"] for event in person["events"]] == ["reactivate"]
    smtp_sink.reject.clear()
    cli("send", SLUG, "--yes")  # the two bounced deliveries are not resent: the post is done
    cli("send", "four-not-three", "--yes")
    assert smtp_sink.per_recipient()[readers[0]] == 1


def test_stats_show_the_figures_of_a_send(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    database = store.open_db(smtp_project / "newsletter.db")
    readers = add_readers(database, 6)
    database.close()
    smtp_sink.reject[readers[5]] = "550 5.1.1 User unknown"
    cli("send", SLUG, "--yes")
    settings = load_settings(smtp_project, environ={})
    database = store.open_db(settings.db_path)
    try:
        tokens = reader_tokens(settings, database)
        leaver = store.get_subscriber(database, readers[1])
        unsubscribe(database, tokens, tokens.unsubscribe(leaver.public_id, SLUG))
        complainer = store.get_subscriber(database, readers[2])
        store.record_mail_unsubscribe(database, complainer.id, SLUG, "complaint", "abuse")
    finally:
        database.close()

    stats = json.loads(cli("stats", "--json").stdout)
    assert stats["posts"] == [
        {"slug": SLUG, "sent": 6, "bounced": 1, "complaints": 1, "unsubscribes": 1}
    ]
    [week] = stats["weeks"]
    assert (week["joined"], week["left"], week["bounced"]) == (6, 2, 1)
    text = cli("stats").stdout
    assert f"{SLUG:<40}       6        1           1             1" in text
    assert "The list, week by week" in text
    assert re.search(r"\d{4}-\d\d-\d\d +█+ 6 +█+ 2 +█+ 1", text)


def test_stats_leave_out_people_an_import_brought_in_as_already_gone(
    project: Path, cli: Cli
) -> None:
    listing = project / "list.csv"
    listing.write_text(
        "email,name,status\nann@example.org,Ann,active\nbo@example.org,Bo,unsubscribed\n"
        "cy@example.org,Cy,bounced\n"
    )
    cli("subscribers", "import", str(listing))
    [week] = json.loads(cli("stats", "--json").stdout)["weeks"]
    assert (week["joined"], week["left"], week["bounced"]) == (1, 0, 0)


def test_the_breaker_trips_only_when_every_delivery_it_saw_was_refused() -> None:
    refused = classify_refusal("554 5.7.1 Relay access denied", permanent=True)
    written: list[str] = []
    breaker = CircuitBreaker(2)
    breaker.hold(lambda: written.append("a"))
    breaker.failed(refused)
    breaker.failed(refused)
    assert not breaker.deciding
    assert breaker.decide() == (
        "the server refuses every one of the first 2 recipients (554 5.7.1 Relay access "
        "denied): check NEWSLETTER_SMTP_* and the provider's sandbox or verification; no reader "
        "was marked bounced"
    )
    assert written == []  # dropped: the deliveries stay failed, tried again next run
    temporary = CircuitBreaker(2)
    temporary.failed(refused)
    temporary.failed(classify_refusal("451 4.3.0 later", permanent=False))
    assert temporary.decide() is None
