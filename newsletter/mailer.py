"""Where an email is sent: SMTP, a relay's HTTP API (newsletter/relays), or the Maildir outbox
when nothing is configured.

A transport sends one finished message and returns the server's reply, or raises
DeliveryRefused (this message) or TransportError (the connection). Retries, bounces and the
send log are the sender's business, not the transport's.
"""

from __future__ import annotations

import contextlib
import mailbox
import smtplib
import socket
import ssl
from pathlib import Path
from typing import NoReturn, Protocol

from .config import Settings
from .envelope import Envelope
from .errors import DeliveryRefused, TransportError, describe_network_error
from .files import make_private, make_private_dir


class Transport(Protocol):
    def send(self, envelope: Envelope) -> str:
        """Hand over one message; return the server's reply."""
        ...

    def close(self) -> None: ...


def open_transport(settings: Settings) -> Transport:
    """Where NEWSLETTER_TRANSPORT says (SMTP, SES, Postmark), else the Maildir outbox; an SMTP
    connection is opened at once. The relays' libraries load only when used."""
    transport: Transport
    if settings.transport == "smtp":
        smtp = SMTPTransport(settings)
        smtp.connect()
        transport = smtp
    elif settings.transport == "ses":
        from .relays.ses import SESTransport

        transport = SESTransport(settings)
    elif settings.transport == "postmark":
        from .relays.postmark import PostmarkTransport

        transport = PostmarkTransport(settings)
    else:
        transport = MaildirTransport(settings.outbox)
    return transport


class MaildirTransport:
    """The embedded default: each message becomes a file any mail program can open."""

    def __init__(self, path: Path) -> None:
        try:
            self.maildir = mailbox.Maildir(path, create=True)
            make_private_dir(path)  # it holds readers' addresses; made by hand, it may be open
        except OSError as e:
            raise TransportError(f"cannot create the outbox {path}: {e.strerror}") from e
        self.path = path

    def send(self, envelope: Envelope) -> str:
        # Maildir files use the local line end; SMTP's CRLF is for the wire.
        try:
            key = self.maildir.add(envelope.data.replace(b"\r\n", b"\n"))
            make_private(self.path / "new" / key)
        except OSError as e:
            raise TransportError(f"cannot write to the outbox {self.path}: {e.strerror}") from e
        return f"saved to {self.path.name}/new/{key}"

    def close(self) -> None:
        pass


class SMTPTransport:
    """One SMTP connection that carries many messages, reopened after a drop or a cap."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = settings.smtp_host or "localhost"
        self.port = settings.smtp_port
        self._conn: smtplib.SMTP | None = None
        self._sent_on_connection = 0
        self._pipelining = False
        self._connecting: smtplib.SMTP | None = None  # for abort(), while it greets
        self._aborted = False

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self) -> None:
        """Open and log in; a refusal is a TransportError that says which step failed."""
        self.close()
        settings = self.settings
        timeout = settings.smtp_timeout
        try:
            if settings.smtp_security == "ssl":
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    timeout=timeout, context=ssl.create_default_context()
                )
            else:
                conn = smtplib.SMTP(timeout=timeout)
            self._connecting = conn
            if self._aborted:
                raise OSError("the send was stopped")
            code, greeting = conn.connect(self.host, self.port)
            if code != 220:
                conn.close()
                raise smtplib.SMTPConnectError(code, greeting)
            if settings.smtp_security == "starttls":
                conn.ehlo()
                if not conn.has_extn("starttls"):
                    conn.close()
                    raise TransportError(
                        f"the SMTP server {self.where} does not offer STARTTLS; set "
                        "NEWSLETTER_SMTP_SECURITY=ssl or none"
                    )
                conn.starttls(context=ssl.create_default_context())
                conn.ehlo()
            else:
                conn.ehlo_or_helo_if_needed()
        except TransportError:
            raise
        except smtplib.SMTPConnectError as e:
            raise TransportError(
                f"the SMTP server {self.where} refused the connection: {_reply(e)}",
                temporary=True,
            ) from e
        except (OSError, smtplib.SMTPException) as e:
            raise TransportError(
                f"cannot connect to the SMTP server {self.where}: {_describe(e)}", temporary=True
            ) from e
        if settings.smtp_username:
            try:
                conn.login(settings.smtp_username, settings.smtp_password or "")
            except smtplib.SMTPAuthenticationError as e:
                conn.close()
                raise TransportError(
                    f"the SMTP server {self.where} refused the login for "
                    f"{settings.smtp_username}: {_reply(e)}"
                ) from e
            except smtplib.SMTPNotSupportedError as e:
                conn.close()
                raise TransportError(
                    f"the SMTP server {self.where} does not accept logins "
                    "(no AUTH offered; is NEWSLETTER_SMTP_SECURITY right?)"
                ) from e
            except (OSError, smtplib.SMTPException) as e:
                conn.close()
                raise TransportError(
                    f"login to the SMTP server {self.where} failed: {_describe(e)}",
                    temporary=True,
                ) from e
        self._conn, self._connecting = conn, None
        self._sent_on_connection = 0
        self._pipelining = conn.has_extn("pipelining")

    def send(self, envelope: Envelope) -> str:
        if (
            self._conn is None
            or self._sent_on_connection >= self.settings.smtp_messages_per_connection
        ):
            self.connect()
        conn = self._conn
        assert conn is not None
        try:
            if self._pipelining:
                code, reply = self._send_pipelined(conn, envelope)
            else:
                code, reply = self._send_in_steps(conn, envelope)
        except (smtplib.SMTPServerDisconnected, OSError) as e:
            self._drop()
            raise DeliveryRefused(f"connection lost: {_describe(e)}", permanent=False) from e
        except DeliveryRefused:
            raise  # refused cleanly: the connection is back between messages
        except BaseException:
            # Interrupted mid-message (Ctrl-C): the server may be reading message text, where
            # close()'s QUIT would be taken as more of it and wait out NEWSLETTER_SMTP_TIMEOUT
            # for an answer. Drop the connection; the server discards what it half had.
            self._drop()
            raise
        self._sent_on_connection += 1
        return f"{code} {_text(reply)}"

    def _send_pipelined(self, conn: smtplib.SMTP, envelope: Envelope) -> tuple[int, bytes]:
        """MAIL, RCPT and DATA in one write (RFC 2920): one wait instead of three per message.

        smtplib has no PIPELINING, so the commands are written here and its reply parser
        reads the answers; addresses were validated on the way in and need no quoting.
        """
        conn.send(f"MAIL FROM:<{envelope.sender}>\r\nRCPT TO:<{envelope.recipient}>\r\nDATA\r\n")
        mail, rcpt, data = conn.getreply(), conn.getreply(), conn.getreply()
        failed = next(
            (
                (code, reply, stage)
                for (code, reply), stage, ok in (
                    (mail, "MAIL", (250,)),
                    (rcpt, "RCPT", (250, 251)),
                    (data, "DATA", (354,)),
                )
                if code not in ok
            ),
            None,
        )
        if failed is not None:
            if data[0] == 354:  # a server that took DATA anyway: end the empty message
                conn.send(b".\r\n")
                conn.getreply()
            self._refused(*failed)
        # The message is CRLF throughout (email.policy.SMTP); only dot-stuffing is left, and
        # most messages have no line that starts with a dot (the search copies nothing).
        message = envelope.data
        if b"\r\n." in message:
            message = message.replace(b"\r\n.", b"\r\n..")
        conn.send(message + b".\r\n")
        code, reply = conn.getreply()
        if code != 250:
            self._refused(code, reply, "DATA")
        return code, reply

    def _send_in_steps(self, conn: smtplib.SMTP, envelope: Envelope) -> tuple[int, bytes]:
        try:
            code, reply = conn.mail(envelope.sender)
            if code != 250:
                self._refused(code, reply, "MAIL")
            code, reply = conn.rcpt(envelope.recipient)
            if code not in (250, 251):
                self._refused(code, reply, "RCPT")
            code, reply = conn.data(envelope.data)
            if code != 250:
                self._refused(code, reply, "DATA")
        except smtplib.SMTPDataError as e:  # the DATA command itself was refused
            self._refused(e.smtp_code, e.smtp_error, "DATA")
        return code, reply

    def _refused(self, code: int, reply: bytes | str, stage: str) -> NoReturn:
        text = f"{code} {_text(reply)}"
        if code == 421:  # the server is closing the connection
            self._drop()
        else:
            try:
                assert self._conn is not None
                self._conn.rset()
            except (smtplib.SMTPException, OSError):
                self._drop()
        raise DeliveryRefused(text, permanent=500 <= code < 600, code=code, stage=stage)

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
        self._conn = None

    def abort(self) -> None:
        """Shut the socket from another thread: a read blocked on it returns at once, and
        the send in hand fails as a lost connection (the next run sends it again)."""
        self._aborted = True
        conn = self._conn or self._connecting
        sock = getattr(conn, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._conn.quit()
            self._drop()

    def check(self) -> str:
        """Connect and log in without sending anything (for `doctor --smtp`)."""
        self.connect()
        self.close()
        return f"connected to {self.where}" + (
            f" and logged in as {self.settings.smtp_username}"
            if self.settings.smtp_username
            else ""
        )


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())


def _reply(e: smtplib.SMTPResponseException) -> str:
    return f"{e.smtp_code} {_text(e.smtp_error)}"


def _describe(e: BaseException) -> str:
    if isinstance(e, smtplib.SMTPResponseException):
        return _reply(e)
    return describe_network_error(e)
