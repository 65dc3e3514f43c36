"""Reading what comes back: which messages are reports, complaints, unsubscribes or replies."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from newsletter.returned import read_returned_mail

UNSUBSCRIBE = "bounces+unsubscribe-abc@news.example.org"


def is_unsubscribe(address: str) -> bool:
    return address == UNSUBSCRIBE


def mail(to: str, **headers: str) -> bytes:
    message = EmailMessage()
    message["From"] = "reader@example.org"
    message["To"] = to
    message["Subject"] = "hello"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("text")
    return message.as_bytes()


@pytest.mark.parametrize(
    ("to", "headers", "kind"),
    [
        (UNSUBSCRIBE, {}, "unsubscribe"),
        # A mail client's generated unsubscribe is not a reply (RFC 3834 auto-generated).
        (UNSUBSCRIBE, {"Auto_Submitted": "auto-generated"}, "unsubscribe"),
        (UNSUBSCRIBE, {"Auto_Submitted": "auto-replied"}, "auto-reply"),
        ("bounces+xyz@news.example.org", {"Auto_Submitted": "auto-replied"}, "auto-reply"),
        ("bounces+xyz@news.example.org", {"X_Autoreply": "yes"}, "auto-reply"),  # old vacation
        ("bounces+xyz@news.example.org", {"Precedence": "auto_reply"}, "auto-reply"),
        ("bounces@news.example.org", {}, "other"),  # a person writing to the bounce address
    ],
)
def test_what_a_message_is(to: str, headers: dict[str, str], kind: str) -> None:
    assert read_returned_mail(mail(to, **headers), is_unsubscribe).kind == kind


def test_a_report_of_a_delivery_is_not_a_bounce() -> None:
    data = (
        b"From: MAILER-DAEMON@mx.example.org\r\nTo: bounces+x@news.example.org\r\n"
        b"Subject: delivered\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nDelivered.\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.org\r\n\r\n"
        b"Final-Recipient: rfc822; ann@example.org\r\nAction: delivered\r\nStatus: 2.0.0\r\n"
        b"\r\n--b--\r\n"
    )
    assert read_returned_mail(data, is_unsubscribe).kind == "other"
    failed = data.replace(b"Action: delivered\r\nStatus: 2.0.0", b"Action: failed\r\nStatus: 5.2.1")
    report = read_returned_mail(failed, is_unsubscribe)
    assert (report.kind, report.status, report.permanent, report.recipient) == (
        "bounce report",
        "5.2.1",
        True,
        "ann@example.org",
    )
    assert report.detail == "failed 5.2.1"  # no Diagnostic-Code: the action and status
