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


def signed(message: dict[str, str], key: rsa.RSAPrivateKey = KEY) -> dict[str, str]:
    """An SNS message signed as SNS signs it (SignatureVersion 2: SHA256 with RSA)."""
    fields = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
    text = "".join(f"{k}\n{message[k]}\n" for k in fields if k in message)
    signature = key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    return {
        **message,
        "SignatureVersion": "2",
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
        assert url == CERT_URL
        return CERTIFICATE

    def start() -> tuple[str, list[str]]:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        app = create_app(load_settings(project, environ={}), sns_certificates=certificates)
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


def test_a_signed_sns_notification_is_applied_once(
    project: Path, cli: Cli, replay: ReplayServer, aws_credentials: None, monkeypatch, serve
) -> None:
    ann, bob = sent_through_ses(project, cli, replay, monkeypatch)
    ids = {email: relay_id for email, (_, _, relay_id) in deliveries(project).items()}
    url, fetched = serve()
    body = signed(bounce_notification(ids[ann], ann))
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
    else:
        body = signed(bounce_notification(ids[ann], ann, topic=TOPIC + "-other"))
    url, fetched = serve()
    response = httpx.post(f"{url}/webhooks/ses", json=body)
    assert response.status_code == 403
    assert set(readers(project).values()) == {("active", None)}
    if forge in ("unsigned", "http certificate", "certificate elsewhere"):
        assert fetched == []  # nothing is fetched from anywhere but SNS over https


@pytest.mark.parametrize("auth", [None, ("newsletter", "wrong"), ("postmark", PASSWORD)])
def test_the_postmark_webhook_needs_its_password(
    project: Path, cli: Cli, replay: ReplayServer, serve, auth
) -> None:
    use_postmark(project, replay)
    write_env(project, POSTMARK_WEBHOOK_PASSWORD=PASSWORD)
    url, _ = serve()
    response = httpx.post(
        f"{url}/webhooks/postmark", json={"RecordType": "SpamComplaint"}, auth=auth
    )
    assert response.status_code == 401
    assert PASSWORD not in response.text


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
