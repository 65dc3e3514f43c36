"""Sending through a relay's API, and what it reports back: Amazon SES against moto on loopback
(SES v2 raw SendEmail, SNS, SQS, as boto3 speaks to AWS), Postmark and the SES calls moto lacks
(GetAccount, ListSuppressedDestinations) against a loopback server replaying the services'
documented requests and answers (tests/relay_servers.py)."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import boto3
import dkim
import pytest
from typer.testing import CliRunner

from newsletter import db as store

from .conftest import Cli, SmtpSink, add_readers, write_env
from .relay_servers import (
    REGION,
    ReplayServer,
    Request,
    aws_credentials_fixture,  # noqa: F401 - the fixtures
    aws_error,
    moto_fixture,  # noqa: F401
    moto_url_fixture,  # noqa: F401
    replay_fixture,  # noqa: F401
    ses_sent_messages,
)
from .test_dkim import use_new_key

SLUG = "ofsted-joint-inspections"
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY"
TOKEN = "pm-server-token-1b2c3d4e-SECRET"


def deliveries(project: Path) -> dict[str, tuple[str, int, str | None]]:
    with store.connect(project / "newsletter.db") as db:
        rows = db.execute(
            "SELECT email, status, attempts, relay_message_id FROM deliveries WHERE test = 0"
        ).fetchall()
    return {email: (status, attempts, relay_id) for email, status, attempts, relay_id in rows}


def readers(project: Path) -> dict[str, tuple[str, str | None]]:
    with store.connect(project / "newsletter.db") as db:
        return {s.email: (s.status, s.status_reason) for s in store.iter_subscribers(db)}


def with_readers(project: Path, count: int) -> list[str]:
    with store.connect(project / "newsletter.db") as db:
        return add_readers(db, count)


def use_ses(project: Path, **extra: object) -> None:
    settings: dict[str, object] = {
        "TRANSPORT": "ses",
        "SES_REGION": REGION,
        "SES_ACCESS_KEY_ID": "AKIDTESTING",
        "SES_SECRET_ACCESS_KEY": SECRET,
        "SMTP_RETRY_DELAY": "0.01",
        "SMTP_MAX_ATTEMPTS": "2",
        "SMTP_TIMEOUT": "2",
    }
    write_env(project, **{**settings, **extra})


def use_postmark(project: Path, replay: ReplayServer, **extra: object) -> None:
    settings: dict[str, object] = {
        "TRANSPORT": "postmark",
        "POSTMARK_TOKEN": TOKEN,
        "POSTMARK_API_URL": replay.url,
        "SMTP_RETRY_DELAY": "0.01",
        "SMTP_MAX_ATTEMPTS": "2",
        "SMTP_TIMEOUT": "2",
    }
    write_env(project, **{**settings, **extra})


def verify_domain() -> None:
    boto3.client("sesv2", region_name=REGION).create_email_identity(EmailIdentity="example.org")


# --- SES, against moto ---------------------------------------------------------------------


def test_ses_takes_each_message_byte_for_byte_signed_and_its_id_is_kept(
    project: Path, cli: Cli, moto: str
) -> None:
    lookup = use_new_key(project, cli)
    use_ses(project, BOUNCE_ADDRESS="bounces@example.org")
    verify_domain()
    addresses = with_readers(project, 3)
    result = cli("send", SLUG, "--yes")
    assert "Amazon SES" in result.output
    sent = ses_sent_messages()
    assert sorted(m.destinations[0] for m in sent) == addresses
    logged = deliveries(project)
    for message in sent:
        data = message.raw_data.encode()
        assert dkim.verify(data, dnsfunc=lookup)  # the signed bytes arrived unchanged
        assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in data
        assert message.source == "jane@example.org"
        status, attempts, relay_id = logged[message.destinations[0]]
        assert (status, attempts, relay_id) == ("sent", 1, message.id)


def test_ses_over_four_connections_mails_each_reader_exactly_once(
    project: Path, cli: Cli, moto: str
) -> None:
    use_ses(project, SMTP_CONNECTIONS=4)
    verify_domain()
    addresses = with_readers(project, 40)
    cli("send", SLUG, "--yes")
    recipients = [m.destinations[0] for m in ses_sent_messages()]
    assert sorted(recipients) == sorted(addresses)  # nobody twice, nobody missed
    ids = {relay_id for _, _, relay_id in deliveries(project).values()}
    assert ids == {m.id for m in ses_sent_messages()}
    again = cli("send", SLUG, "--yes")  # the log says everyone has it
    assert len(ses_sent_messages()) == 40, again.output


def test_ses_refuses_an_unverified_sender_without_writing_anyone_off(
    project: Path, cli: Cli, moto: str
) -> None:
    use_ses(project)
    addresses = with_readers(project, 2)
    result = cli("send", SLUG, "--yes", ok=False)
    assert result.exit_code == 1
    assert "Did not have authority to send from email jane@example.org" in result.output
    assert "no reader was marked bounced" in result.output
    assert {a: d[0] for a, d in deliveries(project).items()} == dict.fromkeys(addresses, "failed")
    assert set(readers(project).values()) == {("active", None)}
    assert ses_sent_messages() == []


def ses_notification(kind: str, message_id: str, **body: object) -> str:
    """An SES notification as SES publishes it to SNS (docs: notification-contents)."""
    key = {"Bounce": "bounce", "Complaint": "complaint"}[kind]
    return json.dumps(
        {
            "notificationType": kind,
            key: body,
            "mail": {"messageId": message_id, "source": "jane@example.org"},
        }
    )


def test_bounces_from_ses_applies_queue_and_suppression_list_once(
    project: Path, cli: Cli, moto: str, replay: ReplayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    sns = boto3.client("sns", region_name=REGION)
    queue = sqs.create_queue(QueueName="ses-reports")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    topic = sns.create_topic(Name="ses-reports")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    use_ses(project, SES_QUEUE_URL=queue, BOUNCE_LIMIT=3)
    verify_domain()
    ann, bob, cat, dan, eve = with_readers(project, 5)
    cli("send", SLUG, "--yes")
    ids = {email: relay_id for email, (_, _, relay_id) in deliveries(project).items()}
    hard = {"status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}
    for message in (
        ses_notification(
            "Bounce",
            ids[ann],
            bounceType="Permanent",
            bounceSubType="General",
            feedbackId="fb-1",
            bouncedRecipients=[{"emailAddress": ann, **hard}],
        ),
        ses_notification(
            "Complaint",
            ids[bob],
            feedbackId="fb-2",
            complaintFeedbackType="abuse",
            complainedRecipients=[{"emailAddress": bob}],
        ),
        ses_notification(
            "Bounce",
            ids[cat],
            bounceType="Transient",
            bounceSubType="MailboxFull",
            feedbackId="fb-3",
            bouncedRecipients=[{"emailAddress": cat, "status": "4.2.2"}],
        ),
        ses_notification(  # a message id that is not ours: left on the queue
            "Bounce",
            "0100-not-ours",
            bounceType="Permanent",
            feedbackId="fb-4",
            bouncedRecipients=[{"emailAddress": eve, **hard}],
        ),
    ):
        sns.publish(TopicArn=topic, Message=message)

    def suppression(request: Request):
        assert request.path.startswith("/v2/email/suppression/addresses")
        assert "Credential=AKIDTESTING/" in request.headers["authorization"]
        summary = {"EmailAddress": dan, "Reason": "BOUNCE", "LastUpdateTime": 1765000000}
        return 200, {}, {"SuppressedDestinationSummaries": [summary]}

    replay.answer = suppression
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", replay.url)  # moto has no suppression list
    dry = cli("bounces", "--from", "ses", "--dry-run")
    assert "Would handle 4 of 5 reports from ses" in dry.output
    assert set(readers(project).values()) == {("active", None)}

    result = cli("bounces", "--from", "ses", "--json")
    actions = {
        (o["email"], o["action"], o["matched_by"])
        for o in map(json.loads, result.stdout.splitlines())
    }
    assert actions == {
        (ann, "bounced", "relay-id"),
        (bob, "unsubscribed", "relay-id"),
        (cat, "noted", "relay-id"),  # a delay is noted, as one that comes by mail
        (eve, "left alone", None),
        (dan, "bounced", "recipient"),
    }
    assert readers(project) == {
        ann: ("bounced", "bounce"),
        bob: ("unsubscribed", "complaint"),
        cat: ("active", None),
        dan: ("bounced", "bounce"),
        eve: ("active", None),
    }
    again = cli("bounces", "--from", "ses")
    assert "Handled 0 of 1 reports from ses; 1 left alone" in again.output  # only not-ours
    with store.connect(project / "newsletter.db") as db:
        assert store.get_subscriber(db, cat).bounces == 0
        assert len(store.reader_events(db, slug=SLUG)) == 4


def test_bounces_from_ses_with_refused_credentials_is_one_line(
    project: Path,
    cli: Cli,
    replay: ReplayServer,
    aws_credentials: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", replay.url)
    use_ses(project, SES_QUEUE_URL=f"{replay.url}/123456789012/ses-reports")
    replay.answer = lambda request: aws_error(
        403, "InvalidClientTokenId", "The security token included in the request is invalid."
    )
    result = cli("bounces", "--from", "ses", ok=False)
    assert result.exit_code == 1
    assert result.output == (
        "Error: Amazon SES refused the credentials (InvalidClientTokenId: The security token "
        "included in the request is invalid.); check NEWSLETTER_SES_ACCESS_KEY_ID, "
        "NEWSLETTER_SES_SECRET_ACCESS_KEY and NEWSLETTER_SES_REGION\n"
    )
    assert SECRET not in result.output


# --- the failure classes, for both services --------------------------------------------------


def _ses_answer(failure: str):
    def answer(request: Request):
        if failure == "timeout":
            return None
        return {
            "throttling": aws_error(
                429, "TooManyRequestsException", "Maximum sending rate exceeded."
            ),
            "credentials": aws_error(
                403, "UnrecognizedClientException", "The security token included is invalid."
            ),
            "suspended": aws_error(400, "AccountSuspendedException", "Account suspended."),
            "sandbox": aws_error(
                400,
                "MessageRejected",
                "Email address is not verified. The following identities failed the check in "
                "region EU-WEST-1: reader0@example.org",
            ),
            "rejected": aws_error(400, "MessageRejected", "Message rejected."),
            "5xx": aws_error(500, "InternalFailure", "Internal failure."),
        }[failure]

    return answer


def _postmark_answer(failure: str):
    def answer(request: Request):
        assert request.headers["x-postmark-server-token"] == TOKEN
        if failure == "timeout":
            return None
        status, code, message = {
            "throttling": (429, 429, "Rate limit exceeded"),
            "credentials": (401, 10, "Bad or missing API token"),
            "suspended": (422, 405, "Not allowed to send"),
            "sandbox": (422, 412, "Account is pending approval"),
            "rejected": (422, 300, "Invalid email request"),
            "5xx": (500, 0, "Internal server error"),
        }[failure]
        return status, {}, {"ErrorCode": code, "Message": message}

    return answer


# What each failure ends as, as for SMTP: a temporary one is retried (2 attempts) and left
# failed; a refused account stops the send at the first reader; a refusal of the sender's
# account fails every reader without writing anyone off and trips the circuit breaker.
OUTCOMES = {
    "throttling": ("failed", 2, "3 deliveries in a row failed"),
    "5xx": ("failed", 2, "3 deliveries in a row failed"),
    "timeout": ("failed", 2, "3 deliveries in a row failed"),
    "credentials": ("stop", 1, "refused the"),
    "suspended": ("stop", 1, "no reader was marked bounced"),
    "sandbox": ("failed", 1, "the server refuses every one of the first 3 recipients"),
    "rejected": ("failed", 1, "the server refuses every one of the first 3 recipients"),
}


@pytest.mark.parametrize("service", ["ses", "postmark"])
@pytest.mark.parametrize("failure", list(OUTCOMES))
def test_each_failure_ends_as_it_would_for_smtp(
    project: Path,
    cli: Cli,
    replay: ReplayServer,
    aws_credentials: None,
    monkeypatch: pytest.MonkeyPatch,
    service: str,
    failure: str,
) -> None:
    timeout = {"SMTP_TIMEOUT": "0.3"} if failure == "timeout" else {}
    if service == "ses":
        monkeypatch.setenv("AWS_ENDPOINT_URL", replay.url)
        use_ses(project, BREAKER_DELIVERIES=3, MAX_CONSECUTIVE_FAILURES=3, **timeout)
        replay.answer = _ses_answer(failure)
    else:
        use_postmark(project, replay, BREAKER_DELIVERIES=3, MAX_CONSECUTIVE_FAILURES=3, **timeout)
        replay.answer = _postmark_answer(failure)
    addresses = with_readers(project, 5)
    result = cli("send", SLUG, "--yes", ok=False)
    assert result.exit_code == 1
    outcome, attempts, words = OUTCOMES[failure]
    assert words in result.output
    logged = deliveries(project)
    if outcome == "stop":  # the first reader failed, nobody else was tried
        assert logged[addresses[0]][:2] == ("failed", 1)
        assert {logged[a][0] for a in addresses[1:]} == {"pending"}
        last = result.output.strip().splitlines()[-1]
        assert last.startswith("Error: stopped early: ") and words in last
    else:
        tried = [a for a in addresses if logged[a][0] != "pending"]
        assert tried and {logged[a][:2] for a in tried} == {("failed", attempts)}
    assert set(readers(project).values()) == {("active", None)}
    assert SECRET not in result.output and TOKEN not in result.output


# --- Postmark, against its documented requests and answers -----------------------------------


def test_postmark_gets_the_message_as_its_fields_and_its_id_is_kept(
    project: Path, cli: Cli, replay: ReplayServer
) -> None:
    use_new_key(project, cli)
    use_postmark(project, replay, BOUNCE_ADDRESS="bounces@example.org")
    addresses = with_readers(project, 2)

    def accept(request: Request):
        assert (request.method, request.path) == ("POST", "/email")
        assert request.headers["x-postmark-server-token"] == TOKEN
        number = len(replay.requests)
        return 200, {}, {"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{number}"}

    replay.answer = accept
    cli("send", SLUG, "--yes")
    bodies = [r.json() for r in replay.requests]
    assert sorted(b["To"] for b in bodies) == [f"Reader {i} <{a}>" for i, a in enumerate(addresses)]
    for body in bodies:
        headers = {h["Name"]: h["Value"] for h in body["Headers"]}
        assert body["From"] == "Jane Author <jane@example.org>"
        assert body["MessageStream"] == "broadcast"
        assert (body["TrackOpens"], body["TrackLinks"]) == (False, "None")
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert headers["Message-ID"].endswith("@example.org>")
        assert "DKIM-Signature" not in headers  # Postmark rebuilds the MIME and signs it
        assert "Ofsted" in body["TextBody"] and "<html" in body["HtmlBody"]
    ids = {relay_id for _, _, relay_id in deliveries(project).values()}
    assert ids == {"pm-1", "pm-2"}


def test_bounces_from_postmark_applies_each_bounce_once(
    project: Path, cli: Cli, replay: ReplayServer
) -> None:
    use_postmark(project, replay)
    ann, bob, cat, dan, eve = with_readers(project, 5)
    replay.answer = lambda request: (
        200,
        {},
        {"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{len(replay.requests)}"},
    )
    cli("send", SLUG, "--yes")
    ids = {email: relay_id for email, (_, _, relay_id) in deliveries(project).items()}

    def bounce(number: int, kind: str, email: str, details: str = "") -> dict[str, object]:
        return {
            "ID": 4000 + number,
            "Type": kind,
            "MessageID": ids[email],
            "Email": email,
            "Details": details,
            "MessageStream": "broadcast",
        }

    held = [
        bounce(1, "HardBounce", ann, "smtp;550 5.1.1 The email account does not exist"),
        bounce(2, "SpamComplaint", bob),
        bounce(3, "SoftBounce", cat, "smtp;452 4.2.2 mailbox full"),
        bounce(4, "Unsubscribe", dan),
        bounce(5, "AutoResponder", eve),
    ]

    def bounces(request: Request):
        assert request.headers["x-postmark-server-token"] == TOKEN
        assert request.path.startswith("/bounces?count=500&offset=0&messagestream=broadcast")
        return 200, {}, {"TotalCount": len(held), "Bounces": held}

    replay.answer = bounces
    result = cli("bounces", "--from", "postmark")
    assert "Handled 4 of 5 reports from postmark; 1 left alone" in result.output
    assert readers(project) == {
        ann: ("bounced", "bounce"),
        bob: ("unsubscribed", "complaint"),
        cat: ("active", None),
        dan: ("unsubscribed", "email"),
        eve: ("active", None),
    }
    again = cli("bounces", "--from", "postmark")  # Postmark still holds them all
    assert "Handled 0 of 0 reports from postmark" in again.output
    with store.connect(project / "newsletter.db") as db:
        assert len(store.reader_events(db, slug=SLUG)) == 4
        assert store.get_subscriber(db, cat).bounces == 0  # a delay is noted, never counted


def test_bounces_from_postmark_with_a_bad_token_is_one_line(
    project: Path, cli: Cli, replay: ReplayServer
) -> None:
    use_postmark(project, replay)
    replay.answer = lambda request: (401, {}, {"ErrorCode": 10, "Message": "Bad token"})
    result = cli("bounces", "--from", "postmark", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith("Error: Postmark: Postmark refused the server token")
    assert len(result.output.splitlines()) == 1 and TOKEN not in result.output


# --- doctor ---------------------------------------------------------------------------------


def test_doctor_reads_the_ses_account_and_says_what_to_fix(
    project: Path,
    cli: Cli,
    replay: ReplayServer,
    aws_credentials: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", replay.url)
    use_ses(project)

    def account(request: Request):
        if request.path == "/v2/email/account":
            quota = {"Max24HourSend": 200.0, "MaxSendRate": 1.0, "SentLast24Hours": 3.0}
            return (
                200,
                {},
                {
                    "SendQuota": quota,
                    "SendingEnabled": True,
                    "ProductionAccessEnabled": False,
                    "EnforcementStatus": "HEALTHY",
                },
            )
        if request.path == "/v2/email/identities/jane%40example.org":
            return aws_error(404, "NotFoundException", "not found")
        if request.path == "/v2/email/identities/example.org":
            return 200, {}, {"VerifiedForSendingStatus": True, "IdentityType": "DOMAIN"}
        return aws_error(404, "NotFoundException", request.path)

    replay.answer = account
    result = cli("doctor", "--smtp", ok=False)
    lines = [line for line in result.output.splitlines() if "SES" in line]
    assert any("sandbox" in line and "200 a day, 1 a second" in line for line in lines), lines
    assert any("NEWSLETTER_SMTP_RATE=1" in line for line in lines), lines
    assert any("identity example.org verified" in line for line in lines), lines
    assert any("NEWSLETTER_SES_QUEUE_URL is not set" in line for line in lines), lines
    assert SECRET not in result.output

    replay.answer = lambda request: aws_error(403, "UnrecognizedClientException", "invalid token")
    refused = cli("doctor", "--smtp", ok=False)
    assert refused.exit_code == 1
    assert "Amazon SES refused the credentials (UnrecognizedClientException" in refused.output


def test_doctor_checks_the_postmark_token_stream_and_sender_signature(
    project: Path, cli: Cli, replay: ReplayServer
) -> None:
    use_postmark(project, replay, POSTMARK_ACCOUNT_TOKEN="pm-account-SECRET")

    def answer(request: Request):
        if request.path == "/server":
            return 200, {}, {"ID": 1, "Name": "Child Protection Notes"}
        if request.path == "/message-streams/broadcast":
            return 200, {}, {"ID": "broadcast", "MessageStreamType": "Broadcasts"}
        if request.path.startswith("/senders"):
            assert request.headers["x-postmark-account-token"] == "pm-account-SECRET"
            signature = {
                "EmailAddress": "jane@example.org",
                "Domain": "example.org",
                "Confirmed": False,
            }
            return 200, {}, {"TotalCount": 1, "SenderSignatures": [signature]}
        return 404, {}, {"ErrorCode": 0, "Message": "no"}

    replay.answer = answer
    result = cli("doctor", "--smtp", ok=False)
    assert "Postmark server 'Child Protection Notes' takes the token" in result.output
    assert "sender signature for jane@example.org is not confirmed" in result.output
    assert "pm-account-SECRET" not in result.output and TOKEN not in result.output


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, "outbox"),
        ({"SMTP_HOST": "smtp.example.org"}, "smtp"),
        ({"TRANSPORT": "SES", "SMTP_HOST": "smtp.example.org"}, "ses"),
        ({"TRANSPORT": "postmark"}, "postmark"),
    ],
)
def test_the_transport_setting_and_its_default(
    project: Path, values: dict[str, str], expected: str
) -> None:
    from newsletter.config import load_settings

    environ = {f"NEWSLETTER_{k}": v for k, v in values.items()}
    settings = load_settings(project, environ=environ)
    assert settings.transport == expected
    assert settings.uses_smtp == (expected == "smtp")


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"TRANSPORT": "mailgun"}, "NEWSLETTER_TRANSPORT must be one of smtp, ses, postmark"),
        ({"TRANSPORT": "smtp"}, "NEWSLETTER_TRANSPORT=smtp needs NEWSLETTER_SMTP_HOST"),
        ({"POSTMARK_API_URL": "ftp://x"}, "NEWSLETTER_POSTMARK_API_URL must be an http(s) URL"),
    ],
)
def test_a_bad_transport_setting_is_one_line(
    project: Path, cli: Cli, values: dict[str, str], error: str
) -> None:
    write_env(project, **values)
    result = cli("send", SLUG, "--yes", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {error}") and len(result.output.splitlines()) == 1


def test_postmark_without_a_token_says_which_setting(project: Path, cli: Cli) -> None:
    write_env(project, TRANSPORT="postmark")
    with_readers(project, 1)
    result = cli("send", SLUG, "--yes", ok=False)
    assert result.exit_code == 1
    assert "Error: NEWSLETTER_POSTMARK_TOKEN is not set" in result.output


def test_credentials_stay_out_of_the_settings_repr(project: Path) -> None:
    from newsletter.config import load_settings

    write_env(project, SES_SECRET_ACCESS_KEY=SECRET, POSTMARK_TOKEN=TOKEN)
    text = repr(load_settings(project, environ={}))
    assert SECRET not in text and TOKEN not in text


def test_the_ses_daily_quota_stops_the_send_and_keeps_the_rest_pending(
    project: Path,
    cli: Cli,
    replay: ReplayServer,
    aws_credentials: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", replay.url)
    use_ses(project)
    first, *rest = with_readers(project, 3)
    replay.answer = lambda request: aws_error(
        429, "TooManyRequestsException", "Daily message quota exceeded."
    )
    result = cli("send", SLUG, "--yes", ok=False)
    assert result.exit_code == 1
    assert "the daily sending quota is used up" in result.output.splitlines()[-1]
    logged = deliveries(project)
    assert logged[first][:2] == ("failed", 1) and {logged[a][0] for a in rest} == {"pending"}
    assert len(replay.requests) == 1  # no retry wasted on a quota that lasts the day


# --- the same message as SMTP's, the rate cap -----------------------------------------------


def _unstamped(data: bytes) -> bytes:
    """A message without what differs from one send to the next: its Date, its MIME boundary
    (random per send) and so its DKIM signature, which is checked apart."""
    data = re.sub(rb"^DKIM-Signature:.*?\r\n(?![ \t])", b"", data, flags=re.S)
    data = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", data)
    boundary = re.search(rb'boundary="([^"]+)"', data)
    assert boundary is not None
    return data.replace(boundary.group(1), b"-")


def test_ses_carries_exactly_the_bytes_smtp_sends_and_the_verp_address(
    project: Path,
    smtp_sink: SmtpSink,
    replay: ReplayServer,
    aws_credentials: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One newsletter copied before its first send, sent once by SMTP and once by SES: each
    reader's bytes are the same but for the Date, the MIME boundary and so the signature (each
    verifies); the envelope sender SMTP gives (the VERP address) is SES's feedback-forwarding
    address (SES v2 takes no Return-Path: its MAIL FROM is its own)."""
    lookup = use_new_key(project, Cli(project, CliRunner()))
    write_env(project, BOUNCE_ADDRESS="bounces@example.org", SECRET_KEY="s" * 43)
    addresses = with_readers(project, 3)
    twin = project.parent / "twin"
    shutil.copytree(project, twin)
    write_env(
        project,
        SMTP_HOST=smtp_sink.host,
        SMTP_PORT=smtp_sink.port,
        SMTP_SECURITY="none",
        SMTP_TIMEOUT="10",
    )
    Cli(project, CliRunner())("send", SLUG, "--yes")
    by_smtp = {m.rcpt_tos[0]: m for m in smtp_sink.received}

    monkeypatch.setenv("AWS_ENDPOINT_URL", replay.url)
    use_ses(twin, BOUNCE_ADDRESS="bounces@example.org")
    replay.answer = lambda request: (200, {}, {"MessageId": f"ses-{len(replay.requests)}"})
    Cli(twin, CliRunner())("send", SLUG, "--yes")
    requests = [r.json() for r in replay.requests]
    assert sorted(r["Destination"]["ToAddresses"][0] for r in requests) == addresses
    for request in requests:
        recipient = request["Destination"]["ToAddresses"][0]
        data = base64.b64decode(request["Content"]["Raw"]["Data"])
        smtp = by_smtp[recipient]
        assert dkim.verify(data, dnsfunc=lookup) and dkim.verify(smtp.data, dnsfunc=lookup)
        assert _unstamped(data) == _unstamped(smtp.data)
        assert data.count(b"\r\n") == smtp.data.count(b"\r\n")  # nothing re-folded
        assert request["FeedbackForwardingEmailAddress"] == smtp.mail_from
        assert smtp.mail_from.startswith("bounces+") and smtp.mail_from.endswith("@example.org")
        assert request["FromEmailAddress"] == "jane@example.org"


@pytest.mark.parametrize("service", ["ses", "postmark"])
def test_the_rate_cap_holds_through_a_relay(
    project: Path,
    cli: Cli,
    replay: ReplayServer,
    aws_credentials: None,
    monkeypatch: pytest.MonkeyPatch,
    service: str,
) -> None:
    rate = 20
    cap = {"SMTP_RATE": rate, "SMTP_CONNECTIONS": 2}
    if service == "ses":
        monkeypatch.setenv("AWS_ENDPOINT_URL", replay.url)
        use_ses(project, **cap)
        replay.answer = lambda request: (200, {}, {"MessageId": f"ses-{len(replay.requests)}"})
    else:
        use_postmark(project, replay, **cap)
        replay.answer = lambda request: (
            200,
            {},
            {"ErrorCode": 0, "MessageID": f"pm-{len(replay.requests)}"},
        )
    with_readers(project, 8)
    cli("send", SLUG, "--yes")
    times = sorted(r.at for r in replay.requests)
    assert len(times) == 8
    assert times[-1] - times[0] >= 7 / rate * 0.9  # 8 at 20 a second, over two connections


def test_postmark_refusing_an_inactive_recipient_counts_against_that_reader(
    project: Path, cli: Cli, replay: ReplayServer
) -> None:
    """Postmark's 406 (it will not send where an address bounced or complained) is an SMTP
    550 5.2.1 at RCPT: counted against the reader, not retried; the others are sent."""
    use_postmark(project, replay)
    ann, bob, cat = with_readers(project, 3)

    def answer(request: Request):
        if bob in request.json()["To"]:
            return 422, {}, {"ErrorCode": 406, "Message": "You tried to send to inactive."}
        return 200, {}, {"ErrorCode": 0, "MessageID": f"pm-{len(replay.requests)}"}

    replay.answer = answer
    cli("send", SLUG, "--yes")
    logged = deliveries(project)
    assert {a: logged[a][:2] for a in (ann, cat)} == {ann: ("sent", 1), cat: ("sent", 1)}
    assert logged[bob][1] == 1 and logged[bob][0] != "sent"
    with store.connect(project / "newsletter.db") as db:
        assert store.get_subscriber(db, bob).bounces == 1
        assert store.get_subscriber(db, ann).bounces == 0


# --- bad credentials against moto's own signature and permission checks ---------------------


@pytest.mark.parametrize("refusal", ["unknown key", "wrong secret", "no permission"])
def test_ses_refusing_the_credentials_stops_the_send_against_moto(
    project: Path, cli: Cli, moto: str, refusal: str
) -> None:
    import requests

    iam = boto3.client("iam", region_name=REGION)
    verify_domain()
    iam.create_user(UserName="newsletter")
    key = iam.create_access_key(UserName="newsletter")["AccessKey"]
    allowed = "sqs:*" if refusal == "no permission" else "ses:SendEmail"
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": allowed, "Resource": "*"}]}  # fmt: skip
    iam.put_user_policy(UserName="newsletter", PolicyName="send", PolicyDocument=json.dumps(policy))
    key_id = "AKIAUNKNOWN0000000000" if refusal == "unknown key" else key["AccessKeyId"]
    secret = SECRET if refusal == "wrong secret" else key["SecretAccessKey"]
    use_ses(project, SES_ACCESS_KEY_ID=key_id, SES_SECRET_ACCESS_KEY=secret)
    first, *rest = with_readers(project, 4)
    requests.post(f"{moto}/moto-api/reset-auth", data=b"0", timeout=10)
    try:
        result = cli("send", SLUG, "--yes", ok=False)
    finally:
        requests.post(f"{moto}/moto-api/reset-auth", data=b"inf", timeout=10)
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    expected = {
        "unknown key": "Amazon SES refused the credentials (InvalidClientTokenId: ",
        "wrong secret": "Amazon SES refused the credentials (SignatureDoesNotMatch: ",
        "no permission": "Amazon SES: the key is not allowed this (AccessDenied",
    }[refusal]
    assert last.startswith("Error: stopped early: ") and expected in last, last
    logged = deliveries(project)
    assert logged[first][:2] == ("failed", 1) and {logged[a][0] for a in rest} == {"pending"}
    assert set(readers(project).values()) == {("active", None)}
    assert ses_sent_messages() == []
    assert SECRET not in result.output and key["SecretAccessKey"] not in result.output
    assert "<?xml" not in result.output  # the code and message, not the XML they came in


# --- reports that name no delivery of ours change nothing ------------------------------------


def test_ses_reports_naming_no_delivery_of_ours_change_nothing(
    project: Path, cli: Cli, moto: str, replay: ReplayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    sns = boto3.client("sns", region_name=REGION)
    queue = sqs.create_queue(QueueName="ses-reports")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    topic = sns.create_topic(Name="ses-reports")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    use_ses(project, SES_QUEUE_URL=queue)
    verify_domain()
    ann, bob = with_readers(project, 2)
    cli("send", SLUG, "--yes")
    ids = {email: relay_id for email, (_, _, relay_id) in deliveries(project).items()}
    hard = {"status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}

    def bounce(message_id: str | None, email: str, feedback: str) -> str:
        notice = json.loads(
            ses_notification(
                "Bounce",
                message_id or "",
                bounceType="Permanent",
                feedbackId=feedback,
                bouncedRecipients=[{"emailAddress": email, **hard}],
            )
        )
        if message_id is None:
            del notice["mail"]["messageId"]
        return json.dumps(notice)

    for message in (
        bounce(ids[bob], ann, "fb-forged"),  # bob's message, ann's address: forged or mangled
        bounce("0100-unknown", ann, "fb-unknown"),
        bounce(None, bob, "fb-no-id"),  # names an address only: not enough
        ses_notification(  # a complaint about ann on bob's message
            "Complaint",
            ids[bob],
            feedbackId="fb-complaint",
            complaintFeedbackType="abuse",
            complainedRecipients=[{"emailAddress": ann}],
        ),
    ):
        sns.publish(TopicArn=topic, Message=message)
    replay.answer = lambda request: (200, {}, {"SuppressedDestinationSummaries": []})
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", replay.url)  # moto has no suppression list
    result = cli("bounces", "--from", "ses", "--json")
    outcomes = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["action"] for o in outcomes] == ["left alone"] * 4
    assert all("names no delivery of ours" in o["detail"] for o in outcomes)
    assert readers(project) == {ann: ("active", None), bob: ("active", None)}
    with store.connect(project / "newsletter.db") as db:
        assert store.reader_events(db, slug=SLUG) == []
        assert store.get_subscriber(db, ann).bounces == 0


def test_postmark_bounces_naming_no_delivery_of_ours_change_nothing(
    project: Path, cli: Cli, replay: ReplayServer
) -> None:
    use_postmark(project, replay)
    ann, bob = with_readers(project, 2)
    replay.answer = lambda request: (
        200,
        {},
        {"ErrorCode": 0, "MessageID": f"pm-{len(replay.requests)}"},
    )
    cli("send", SLUG, "--yes")
    ids = {email: relay_id for email, (_, _, relay_id) in deliveries(project).items()}
    details = "smtp;550 5.1.1 The email account does not exist"
    held = [
        {"ID": 1, "Type": "HardBounce", "MessageID": ids[bob], "Email": ann, "Details": details},
        {"ID": 2, "Type": "HardBounce", "MessageID": "pm-unknown", "Email": ann},
        {"ID": 3, "Type": "HardBounce", "MessageID": "", "Email": bob, "Details": details},
        {"ID": 4, "Type": "SpamComplaint", "MessageID": ids[ann], "Email": bob},
    ]
    replay.answer = lambda request: (200, {}, {"TotalCount": len(held), "Bounces": held})
    result = cli("bounces", "--from", "postmark")
    assert "Handled 0 of 4 reports from postmark; 4 left alone" in result.output
    assert readers(project) == {ann: ("active", None), bob: ("active", None)}
    with store.connect(project / "newsletter.db") as db:
        assert store.reader_events(db, slug=SLUG) == []


# --- doctor, and where the credentials live ---------------------------------------------------


def _ses_account(daily: float, sent: float, rate: float = 14.0):
    def account(request: Request):
        if request.path == "/v2/email/account":
            quota = {"Max24HourSend": daily, "MaxSendRate": rate, "SentLast24Hours": sent}
            return (
                200,
                {},
                {"SendQuota": quota, "SendingEnabled": True, "ProductionAccessEnabled": True},
            )
        if request.path.startswith("/v2/email/identities/"):
            return 200, {}, {"VerifiedForSendingStatus": True, "IdentityType": "DOMAIN"}
        if request.path == "/":  # SQS GetQueueAttributes (JSON protocol)
            return aws_error(400, "AWS.SimpleQueueService.NonExistentQueue", "no such queue")
        return aws_error(404, "NotFoundException", request.path)

    return account


def test_doctor_says_when_the_ses_quota_left_today_is_below_the_list(
    project: Path,
    cli: Cli,
    replay: ReplayServer,
    aws_credentials: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", replay.url)
    use_ses(project, SMTP_RATE=14, SES_QUEUE_URL=f"{replay.url}/123456789012/gone")
    with_readers(project, 5)
    replay.answer = _ses_account(daily=50_000, sent=49_997)
    result = cli("doctor", "--smtp", ok=False)
    lines = [line for line in result.output.splitlines() if " SES " in f" {line} "]
    assert any("production, 49997 of 50000 sent in 24 hours" in line for line in lines), lines
    assert any(
        "5 active readers, but only 3 of SES's 50000 messages a day are left" in line
        for line in lines
    ), lines
    # the queue's own line, the account's lines still there
    assert any(
        "the SES report queue NEWSLETTER_SES_QUEUE_URL cannot be read "
        "(AWS.SimpleQueueService.NonExistentQueue: no such queue)" in line
        for line in lines
    ), lines
    assert not any("NEWSLETTER_SMTP_RATE=" in line for line in lines)  # the rate is set
    replay.answer = _ses_account(daily=50_000, sent=10)
    roomy = cli("doctor", "--smtp", ok=False)
    assert "active readers, but only" not in roomy.output


def test_doctor_says_postmark_keeps_the_bounces(
    project: Path, cli: Cli, replay: ReplayServer
) -> None:
    use_postmark(project, replay)
    result = cli("doctor", ok=False)
    bounces = next(line for line in result.output.splitlines() if "Bounces" in line)
    assert "`newsletter bounces --from postmark` reads them" in bounces
    assert "nothing reads them" not in result.output


def test_a_world_readable_env_holding_relay_credentials_is_flagged_never_shown(
    project: Path, cli: Cli, replay: ReplayServer
) -> None:
    env = project / ".env"
    for write in (
        lambda: use_postmark(project, replay, POSTMARK_ACCOUNT_TOKEN="pm-account-SECRET"),
        lambda: use_ses(project),
    ):
        write()
        env.chmod(0o644)
        result = cli("doctor", ok=False)
        permissions = next(line for line in result.output.splitlines() if "Permissions" in line)
        assert f"other users can read {env}: run `chmod 600 {env}`" in permissions
        assert SECRET not in result.output and TOKEN not in result.output
        assert "pm-account-SECRET" not in result.output
        env.chmod(0o600)
        assert "other users can read" not in cli("doctor", ok=False).output


def test_no_credential_is_in_the_settings_repr(project: Path) -> None:
    from newsletter.config import load_settings

    secrets = {
        "SES_ACCESS_KEY_ID": "AKIDREPRTEST0000",
        "SES_SECRET_ACCESS_KEY": SECRET,
        "POSTMARK_TOKEN": TOKEN,
        "POSTMARK_ACCOUNT_TOKEN": "pm-account-SECRET",
        "POSTMARK_WEBHOOK_PASSWORD": "hook-SECRET",
    }
    write_env(project, TRANSPORT="ses", **secrets)
    settings = load_settings(project, environ={})
    assert settings.ses_secret_access_key == SECRET  # read, and yet
    text = repr(settings) + str(settings)
    assert not any(value in text for value in secrets.values())


def test_a_dry_run_leaves_the_ses_queue_as_it_was(
    project: Path, cli: Cli, moto: str, replay: ReplayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="ses-reports")["QueueUrl"]
    use_ses(project, SES_QUEUE_URL=queue)
    verify_domain()
    (ann,) = with_readers(project, 1)
    cli("send", SLUG, "--yes")
    ((_, _, relay_id),) = deliveries(project).values()
    delivered = {"notificationType": "Delivery", "mail": {"messageId": relay_id}}
    bounced = ses_notification(
        "Bounce",
        relay_id,
        bounceType="Permanent",
        feedbackId="fb-1",
        bouncedRecipients=[{"emailAddress": ann, "status": "5.1.1"}],
    )
    for body in (json.dumps(delivered), bounced):  # raw delivery: SES's JSON itself
        sqs.send_message(QueueUrl=queue, MessageBody=body)
    replay.answer = lambda request: (200, {}, {"SuppressedDestinationSummaries": []})
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", replay.url)

    def waiting() -> int:
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])

    dry = cli("bounces", "--from", "ses", "--dry-run")
    assert "Would handle 1 of 1 reports from ses" in dry.output
    assert waiting() == 2 and readers(project) == {ann: ("active", None)}
    cli("bounces", "--from", "ses")
    assert waiting() == 0 and readers(project) == {ann: ("bounced", "bounce")}
