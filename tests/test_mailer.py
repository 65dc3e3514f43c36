"""Transports: SMTP (pipelined or step by step) and the Maildir outbox."""

import mailbox
from pathlib import Path

import pytest

from newsletter.config import load_settings
from newsletter.errors import DeliveryRefused, TransportError
from newsletter.mailer import MaildirTransport, SMTPTransport
from newsletter.message import Envelope

from .conftest import SmtpSink, free_port

MESSAGE = (
    b"From: jane@example.org\r\nTo: ann@example.org\r\nSubject: dots\r\n\r\n"
    b"first line\r\n.a line that starts with a dot\r\n..two dots\r\n.\r\nlast\r\n"
)


def envelope(to: str = "ann@example.org") -> Envelope:
    return Envelope("jane@example.org", to, "<x@example.org>", MESSAGE)


def transport(sink: SmtpSink, tmp_path: Path, **extra: str) -> SMTPTransport:
    env = {
        "NEWSLETTER_SMTP_HOST": sink.host,
        "NEWSLETTER_SMTP_PORT": str(sink.port),
        "NEWSLETTER_SMTP_SECURITY": "none",
        **{f"NEWSLETTER_{k}": v for k, v in extra.items()},
    }
    return SMTPTransport(load_settings(tmp_path, environ=env))


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "step-by-step"])
def test_smtp_delivers_byte_exact_with_dot_stuffing(
    smtp_sink: SmtpSink, tmp_path: Path, pipelining: bool
) -> None:
    smtp_sink.pipelining = pipelining
    smtp = transport(smtp_sink, tmp_path)
    smtp.connect()
    assert smtp._pipelining is pipelining
    reply = smtp.send(envelope())
    smtp.send(envelope("bob@example.org"))
    smtp.close()
    assert reply.startswith("250 2.0.0 OK queued as ")
    assert [r.data for r in smtp_sink.received] == [MESSAGE, MESSAGE]
    assert smtp_sink.connections == 1  # one connection carries many messages


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "step-by-step"])
def test_smtp_refusals_carry_stage_and_reply(
    smtp_sink: SmtpSink, tmp_path: Path, pipelining: bool
) -> None:
    smtp_sink.pipelining = pipelining
    smtp_sink.reject["gone@example.org"] = "550 5.1.1 no such user"
    smtp_sink.reject_data["spam@example.org"] = "554 5.7.1 rejected as spam"
    smtp_sink.tempfail_every = 4
    smtp = transport(smtp_sink, tmp_path)
    with pytest.raises(DeliveryRefused) as rcpt:
        smtp.send(envelope("gone@example.org"))
    assert (rcpt.value.reply, rcpt.value.stage, rcpt.value.permanent) == (
        "550 5.1.1 no such user",
        "RCPT",
        True,
    )
    with pytest.raises(DeliveryRefused) as data:
        smtp.send(envelope("spam@example.org"))
    assert (data.value.stage, data.value.permanent) == ("DATA", True)
    smtp.send(envelope())  # the connection is still usable after a refusal
    smtp.send(envelope())
    with pytest.raises(DeliveryRefused) as temporary:
        smtp.send(envelope())  # the 4th DATA: 451
    assert (temporary.value.reply, temporary.value.permanent) == (
        "451 4.3.0 try again later",
        False,
    )
    assert len(smtp_sink.received) == 2


def test_dropped_connection_is_temporary_and_reconnects(
    smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    smtp_sink.drop_every = 1
    smtp = transport(smtp_sink, tmp_path)
    with pytest.raises(DeliveryRefused, match="connection lost") as lost:
        smtp.send(envelope())
    assert lost.value.permanent is False
    smtp_sink.drop_every = 0
    smtp.send(envelope())
    assert smtp_sink.connections == 2 and len(smtp_sink.received) == 1


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "step-by-step"])
def test_a_server_that_stops_answering_times_out(
    smtp_sink: SmtpSink, tmp_path: Path, pipelining: bool
) -> None:
    """A server silent after the message text: after NEWSLETTER_SMTP_TIMEOUT the delivery is a
    lost connection that says it timed out (temporary: tried again), and the next message
    goes over a new connection."""
    smtp_sink.pipelining = pipelining
    smtp_sink.stall_every, smtp_sink.stall_seconds = 1, 5.0
    smtp = transport(smtp_sink, tmp_path, SMTP_TIMEOUT="0.3")
    with pytest.raises(DeliveryRefused, match="timed out") as lost:
        smtp.send(envelope())
    assert lost.value.permanent is False and "connection lost" in lost.value.reply
    smtp_sink.stall_every = 0
    smtp.send(envelope())
    assert smtp_sink.connections == 2 and len(smtp_sink.received) == 1


def test_reconnects_after_the_messages_per_connection_cap(
    smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    smtp = transport(smtp_sink, tmp_path, SMTP_MESSAGES_PER_CONNECTION="2")
    for _ in range(5):
        smtp.send(envelope())
    assert smtp_sink.connections == 3 and len(smtp_sink.received) == 5


def test_starttls_not_offered_is_a_clear_error(smtp_sink: SmtpSink, tmp_path: Path) -> None:
    smtp = transport(smtp_sink, tmp_path, SMTP_SECURITY="starttls")
    with pytest.raises(
        TransportError, match="does not offer STARTTLS; set NEWSLETTER_SMTP_SECURITY=ssl or none"
    ):
        smtp.connect()


def test_refused_connection(tmp_path: Path) -> None:
    port = free_port()
    smtp = SMTPTransport(
        load_settings(
            tmp_path,
            environ={
                "NEWSLETTER_SMTP_HOST": "127.0.0.1",
                "NEWSLETTER_SMTP_PORT": str(port),
                "NEWSLETTER_SMTP_SECURITY": "none",
            },
        )
    )
    with pytest.raises(TransportError) as error:
        smtp.connect()
    assert (
        str(error.value)
        == f"cannot connect to the SMTP server 127.0.0.1:{port}: connection refused"
    )
    assert error.value.temporary


def test_maildir_outbox_keeps_each_message(tmp_path: Path) -> None:
    outbox = MaildirTransport(tmp_path / "outbox")
    reply = outbox.send(envelope())
    assert reply.startswith("saved to outbox/new/")
    (stored,) = list(mailbox.Maildir(tmp_path / "outbox", create=False))
    assert stored.as_bytes() == MESSAGE.replace(b"\r\n", b"\n")
