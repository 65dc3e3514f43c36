"""Reading what comes back: which messages are reports, complaints, unsubscribes or replies."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from newsletter.returned import Failure, read_returned_mail

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
    assert read_returned_mail(data, is_unsubscribe).kind == "notice"
    failed = data.replace(b"Action: delivered\r\nStatus: 2.0.0", b"Action: failed\r\nStatus: 5.2.1")
    report = read_returned_mail(failed, is_unsubscribe)
    assert report.kind == "bounce report"
    assert report.failures == (
        Failure("ann@example.org", "5.2.1", True, "failed 5.2.1"),  # no Diagnostic-Code
    )


def nested_report(blocks: str, *, report_type: str = "") -> bytes:
    """A DSN as Exchange and some gateways send it: inside multipart/mixed, maybe untyped."""
    param = f"; report-type={report_type}" if report_type else ""
    return (
        "From: postmaster@mx.example.org\r\nTo: bounces@news.example.org\r\n"
        'Subject: Undeliverable\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="m"\r\n'
        f'\r\n--m\r\nContent-Type: multipart/report{param}; boundary="r"\r\n\r\n'
        "--r\r\nContent-Type: text/plain\r\n\r\nDelivery has failed.\r\n"
        "--r\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.org\r\n\r\n{blocks}\r\n--r--\r\n--m--\r\n"
    ).encode()


def test_a_nested_untyped_report_about_several_readers_names_each() -> None:
    blocks = (
        "Original-Recipient: rfc822;<ann@example.org>\r\n"
        "Final-Recipient: x400; /S=ann/O=example/C=GB/\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <ann@example.org> user unknown\r\n\r\n"
        "Final-Recipient: rfc822; <bob@example.org>\r\nAction: delayed\r\nStatus: 4.2.2\r\n\r\n"
        "Final-Recipient: <cat@example.org>\r\nAction: failed\r\nStatus: 4.4.7\r\n"
    )
    report = read_returned_mail(nested_report(blocks), is_unsubscribe)
    assert report.kind == "bounce report"
    assert [(f.recipient, f.status, f.permanent) for f in report.failures] == [
        ("ann@example.org", "5.1.1", True),
        ("bob@example.org", "4.2.2", False),  # delayed
        ("cat@example.org", "4.4.7", False),  # "failed" with a 4.x.x code is never a write-off
    ]
    assert report.failures[0].detail == "550 5.1.1 <ann@example.org> user unknown"
    typed = read_returned_mail(nested_report(blocks, report_type="delivery-status"), is_unsubscribe)
    assert typed.failures == report.failures


POSTFIX_OLD = b"""From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
To: bounces@news.example.org
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied

This is the Postfix program at host mx.example.org.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<dan@example.org>: host mx.example.org[192.0.2.1] said: 550 5.1.1 <dan@example.org>:
    Recipient address rejected: User unknown in local recipient table
"""


def test_a_bounce_with_auto_submitted_is_still_a_bounce_and_a_vacation_is_not() -> None:
    report = read_returned_mail(POSTFIX_OLD, is_unsubscribe)
    assert report.kind == "bounce report"
    [failure] = report.failures
    assert (failure.recipient, failure.status, failure.permanent) == (
        "dan@example.org",
        "5.1.1",
        True,
    )
    assert "User unknown" in failure.detail
    away = mail("bounces+xyz@news.example.org").replace(
        b"Subject: hello", b"Subject: Automatic reply: back on Monday"
    )
    assert read_returned_mail(away, is_unsubscribe).kind == "auto-reply"


def test_what_an_unread_message_says_of_itself() -> None:
    late = mail("bounces@news.example.org").replace(
        b"Subject: hello", b"Subject: Warning: message delayed, will retry for 4 days"
    )
    assert read_returned_mail(late, is_unsubscribe).reads_temporary
    reply = mail("bounces@news.example.org", In_Reply_To="<post.1.abc@news.example.org>")
    read = read_returned_mail(reply, is_unsubscribe)
    assert (read.kind, read.from_person, read.reads_temporary) == ("other", True, False)
