"""`newsletter serve` takes the relay services' webhooks: Postmark's behind HTTP basic auth, and
SNS's HTTP notifications of SES reports with the SNS signature checked; under a real uvicorn on
loopback. The SNS certificate is one made here (Amazon's cannot be fetched offline), handed to
the app in place of the https download from an SNS host."""

from __future__ import annotations

import base64
import datetime
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from newsletter.config import load_settings
from newsletter.errors import RelayError
from newsletter.web import create_app

from .conftest import Cli, wait_for, write_env
from .relay_servers import ReplayServer, Request, aws_credentials_fixture, replay_fixture  # noqa: F401 - fixtures
from .test_relays import SLUG, deliveries, readers, use_postmark, use_ses, with_readers

CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789.pem"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-reports"
PASSWORD = "hook-password-SECRET"


def make_certificate() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(serialization.Encoding.PEM)


KEY, CERTIFICATE = make_certificate()


NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
# SNS's documented order for a subscription's (and an unsubscribe's) confirmation.
CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
SUBSCRIBE_URL = (
    "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn="
    + TOPIC
    + "&Token=2336412f37"
)


def signed(
    message: dict[str, str], key: rsa.RSAPrivateKey = KEY, version: str = "2"
) -> dict[str, str]:
    """An SNS message signed as SNS signs it: SignatureVersion 1 is SHA1 with RSA, 2 SHA256."""
    notification = message["Type"] == "Notification"
    fields = NOTIFICATION_FIELDS if notification else CONFIRMATION_FIELDS
    text = "".join(f"{k}\n{message[k]}\n" for k in fields if k in message)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(text.encode(), padding.PKCS1v15(), algorithm)
    return {
        **message,
        "SignatureVersion": version,
        "Signature": base64.b64encode(signature).decode(),
        "SigningCertURL": CERT_URL,
    }


@pytest.fixture
def serve(project: Path) -> Iterator[Callable[[], tuple[str, list[str]]]]:
    """Start the app under uvicorn; returns its URL and the certificate URLs it fetched."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []
    fetched: list[str] = []

    def certificates(url: str) -> bytes:
        fetched.append(url)
        if url == SUBSCRIBE_URL:  # SNS's answer to a confirmation (or its failure)
            if "fail" in fetched:
                raise RelayError("Amazon SNS cannot be reached: timed out")
            return b"<ConfirmSubscriptionResponse/>"
        assert url == CERT_URL
        return CERTIFICATE

    def start() -> tuple[str, list[str]]:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        app = create_app(load_settings(project, environ={}), sns_fetch=certificates)
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
        thread.start()
        servers.append((server, thread))
        wait_for(lambda: server.started or not thread.is_alive())
        return f"http://127.0.0.1:{listener.getsockname()[1]}", fetched

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=30)


def sent_through_ses(project: Path, cli: Cli, replay: ReplayServer, monkeypatch) -> list[str]:
    """Two readers mailed through SES (the replaying server answers with ids ses-1, ses-2)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", replay.url)
    use_ses(project, SES_TOPIC_ARN=TOPIC)
    addresses = with_readers(project, 2)

    def accept(request: Request):
        return 200, {}, {"MessageId": f"ses-{len(replay.requests)}"}

    replay.answer = accept
    cli("send", SLUG, "--yes")
    return addresses


def bounce_notification(message_id: str, email: str, topic: str = TOPIC) -> dict[str, str]:
    notice = {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "feedbackId": f"fb-{message_id}",
            "bouncedRecipients": [{"emailAddress": email, "status": "5.1.1"}],
        },
        "mail": {"messageId": message_id},
    }
    return {
        "Type": "Notification",
        "MessageId": "sns-1",
        "TopicArn": topic,
        "Message": json.dumps(notice),
        "Timestamp": "2026-12-07T06:00:00.000Z",
    }


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_sns_notification_is_applied_once(
    project: Path,
    cli: Cli,
    replay: ReplayServer,
    aws_credentials: None,
    monkeypatch,
    serve,
    version: str,
) -> None:
    ann, bob = sent_through_ses(project, cli, replay, monkeypatch)
    ids = {email: relay_id for email, (_, _, relay_id) in deliveries(project).items()}
    url, fetched = serve()
    body = signed(bounce_notification(ids[ann], ann), version=version)
    first = httpx.post(f"{url}/webhooks/ses", json=body)
    assert (first.status_code, first.json()) == (200, {"applied": ["bounced"]})
    again = httpx.post(f"{url}/webhooks/ses", json=body)  # SNS may deliver twice
    assert (again.status_code, again.json()) == (200, {"applied": []})
    assert readers(project) == {ann: ("bounced", "bounce"), bob: ("active", None)}
    assert fetched == [CERT_URL, CERT_URL]


@pytest.mark.parametrize(
    "forge",
    [
        "unsigned",
        "tampered",
        "other key",
        "http certificate",
        "certificate elsewhere",
        "lookalike host",
        "version 1 signed as 2",
        "unknown version",
        "other topic",
    ],
)
def test_sns_notifications_not_signed_by_sns_change_nothing(
    project: Path,
    cli: Cli,
    replay: ReplayServer,
    aws_credentials: None,
    monkeypatch,
    serve,
    forge: str,
) -> None:
    ann, _ = sent_through_ses(project, cli, replay, monkeypatch)
    ids = {email: relay_id for email, (_, _, relay_id) in deliveries(project).items()}
    message = bounce_notification(ids[ann], ann)
    if forge == "unsigned":
        body = message
    elif forge == "tampered":
        body = {**signed(message), "Message": message["Message"].replace("5.1.1", "5.1.2")}
    elif forge == "other key":
        body = signed(message, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    elif forge == "http certificate":
        body = {**signed(message), "SigningCertURL": CERT_URL.replace("https", "http")}
    elif forge == "certificate elsewhere":
        body = {**signed(message), "SigningCertURL": "https://sns.evil.example/cert.pem"}
    elif forge == "lookalike host":
        body = {
            **signed(message),
            "SigningCertURL": "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        }
    elif forge == "version 1 signed as 2":
        body = {**signed(message), "SignatureVersion": "1"}
    elif forge == "unknown version":
        body = {**signed(message), "SignatureVersion": "3"}
    else:
        body = signed(bounce_notification(ids[ann], ann, topic=TOPIC + "-other"))
    url, fetched = serve()
    response = httpx.post(f"{url}/webhooks/ses", json=body)
    assert response.status_code == 403
    assert set(readers(project).values()) == {("active", None)}
    if forge in ("unsigned", "http certificate", "certificate elsewhere", "lookalike host"):
        assert fetched == []  # nothing is fetched from anywhere but SNS over https


def confirmation(kind: str = "SubscriptionConfirmation", **fields: str) -> dict[str, str]:
    message = {
        "Type": kind,
        "MessageId": "sns-confirm-1",
        "Token": "2336412f37",
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
        "SubscribeURL": SUBSCRIBE_URL,
        "Timestamp": "2026-12-07T06:00:00.000Z",
    }
    return {**message, **fields}


def test_a_signed_subscription_confirmation_for_our_topic_is_confirmed(
    project: Path, serve
) -> None:
    write_env(project, SES_TOPIC_ARN=TOPIC)
    url, fetched = serve()
    response = httpx.post(f"{url}/webhooks/ses", json=signed(confirmation()))
    assert (response.status_code, response.json()) == (200, {"applied": []})
    assert fetched == [CERT_URL, SUBSCRIBE_URL]  # checked, then SubscribeURL visited
    unsubscribed = httpx.post(
        f"{url}/webhooks/ses", json=signed(confirmation("UnsubscribeConfirmation"))
    )
    assert (unsubscribed.status_code, unsubscribed.json()) == (200, {"applied": []})
    assert fetched.count(SUBSCRIBE_URL) == 1  # an unsubscribe's URL is never visited


@pytest.mark.parametrize("forge", ["unsigned", "other topic", "subscribe elsewhere", "no topic"])
def test_a_subscription_confirmation_not_ours_is_never_visited(
    project: Path, serve, forge: str
) -> None:
    if forge != "no topic":
        write_env(project, SES_TOPIC_ARN=TOPIC)
    message = {
        "unsigned": confirmation(),
        "other topic": signed(confirmation(TopicArn=TOPIC + "-other")),
        "subscribe elsewhere": signed(
            confirmation(SubscribeURL="https://evil.example/?Action=ConfirmSubscription")
        ),
        "no topic": signed(confirmation()),  # NEWSLETTER_SES_TOPIC_ARN unset: no topic is ours
    }[forge]
    url, fetched = serve()
    response = httpx.post(f"{url}/webhooks/ses", json=message)
    assert response.status_code == 403
    assert SUBSCRIBE_URL not in fetched and not any("evil" in u for u in fetched)


def test_a_confirmation_sns_does_not_answer_is_a_502_and_can_come_again(
    project: Path, serve
) -> None:
    write_env(project, SES_TOPIC_ARN=TOPIC)
    url, fetched = serve()
    fetched.append("fail")  # the stand-in for SNS fails the next visit
    response = httpx.post(f"{url}/webhooks/ses", json=signed(confirmation()))
    assert response.status_code == 502
    assert response.json() == {"error": "Amazon SNS cannot be reached: timed out"}


@pytest.mark.parametrize(
    "auth",
    [None, ("newsletter", "wrong"), ("postmark", PASSWORD), ("newsletter", PASSWORD + "x")],
)
def test_the_postmark_webhook_needs_its_password_and_changes_nothing_without(
    project: Path, cli: Cli, replay: ReplayServer, serve, auth
) -> None:
    use_postmark(project, replay)
    write_env(project, POSTMARK_WEBHOOK_PASSWORD=PASSWORD)
    ann, bob = with_readers(project, 2)
    replay.answer = lambda request: (
        200,
        {},
        {"ErrorCode": 0, "MessageID": f"pm-{len(replay.requests)}"},
    )
    cli("send", SLUG, "--yes")
    url, _ = serve()
    complaint = {"RecordType": "SpamComplaint", "ID": 7001, "Type": "SpamComplaint"}
    for email, (_, _, relay_id) in deliveries(project).items():
        body = {**complaint, "MessageID": relay_id, "Email": email}
        response = httpx.post(f"{url}/webhooks/postmark", json=body, auth=auth)
        assert response.status_code == 401
        assert PASSWORD not in response.text
    assert readers(project) == {ann: ("active", None), bob: ("active", None)}


def test_the_postmark_webhook_is_closed_until_its_password_is_set(
    project: Path, cli: Cli, replay: ReplayServer, serve
) -> None:
    use_postmark(project, replay)
    url, _ = serve()
    for auth in (None, ("newsletter", ""), ("newsletter", "None")):
        response = httpx.post(
            f"{url}/webhooks/postmark", json={"RecordType": "SpamComplaint"}, auth=auth
        )
        assert response.status_code == 401


def test_a_postmark_spam_complaint_by_webhook_unsubscribes_the_reader(
    project: Path, cli: Cli, replay: ReplayServer, serve
) -> None:
    use_postmark(project, replay)
    write_env(project, POSTMARK_WEBHOOK_PASSWORD=PASSWORD)
    ann, bob = with_readers(project, 2)
    replay.answer = lambda request: (
        200,
        {},
        {"ErrorCode": 0, "MessageID": f"pm-{len(replay.requests)}"},
    )
    cli("send", SLUG, "--yes")
    ids = {email: relay_id for email, (_, _, relay_id) in deliveries(project).items()}
    url, _ = serve()
    complaint = {
        "RecordType": "SpamComplaint",
        "ID": 7001,
        "Type": "SpamComplaint",
        "MessageID": ids[bob],
        "Email": bob,
    }
    response = httpx.post(f"{url}/webhooks/postmark", json=complaint, auth=("newsletter", PASSWORD))
    assert (response.status_code, response.json()) == (200, {"applied": ["unsubscribed"]})
    assert readers(project) == {ann: ("active", None), bob: ("unsubscribed", "complaint")}


def test_deeply_nested_json_is_refused_not_a_server_error(
    project: Path, cli: Cli, replay: ReplayServer, serve
) -> None:
    """50,000 open brackets fit in the 64 KB body limit and overflow json's recursion."""
    use_postmark(project, replay)
    write_env(project, POSTMARK_WEBHOOK_PASSWORD=PASSWORD)
    ann, bob = with_readers(project, 2)
    url, _ = serve()
    deep = b"[" * 50_000
    headers = {"content-type": "application/json"}
    ses = httpx.post(f"{url}/webhooks/ses", content=deep, headers=headers)
    assert (ses.status_code, ses.json()) == (403, {"error": "not an SNS message"})
    postmark = httpx.post(
        f"{url}/webhooks/postmark", content=deep, headers=headers, auth=("newsletter", PASSWORD)
    )
    assert (postmark.status_code, postmark.json()) == (400, {"error": "not JSON"})
    assert readers(project) == {ann: ("active", None), bob: ("active", None)}
