"""Where an email is built: a rendered issue addressed to one reader, as the bytes to send.

The MIME skeleton (headers common to all readers, boundary, part headers) is serialised once
with the standard library's email package and `email.policy.SMTP` (CRLF line ends). Per reader
only the personal headers are written and the two bodies quoted-printable encoded
(binascii, in C), which keeps a send at the mail server's pace.
"""

from __future__ import annotations

import binascii
import hashlib
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime, formataddr

from .config import Settings
from .dkim import DkimSigner
from .envelope import Envelope
from .headers import check_header, mend_header
from .render import Personalised, RenderedIssue, unsubscribe_url
from .verp import Verp

_TEXT_SLOT = b"XNLTEXTBODYX"
_HTML_SLOT = b"XNLHTMLBODYX"


def list_id(settings: Settings) -> str:
    """RFC 2919 List-Id: the newsletter's name and a dotted id on the From domain."""
    sender = settings.sender
    label = "".join(c if c.isalnum() else "-" for c in settings.title.lower()).strip("-")
    label = "-".join(part for part in label.split("-") if part) or "newsletter"
    name = settings.title.replace('"', "'")
    return f'"{name}" <{label}.{sender.domain}>'


def message_id(slug: str, reader_id: str | int, domain: str) -> str:
    """The same for the same post and reader every time, so a resent copy can be dropped and a
    bounce report that lost its VERP address still names its delivery. `reader_id` is the
    reader's random public id (the sequential id would tell how big the list is)."""
    digest = hashlib.sha256(f"{slug}\0{reader_id}".encode()).hexdigest()[:12]
    return f"<{slug}.{reader_id}.{digest}@{domain}>"


class IssueMessages:
    """Addresses one rendered issue to readers."""

    def __init__(
        self,
        issue: RenderedIssue,
        settings: Settings,
        *,
        signer: DkimSigner | None = None,
        date: datetime | None = None,
        verp: Verp | None = None,
    ) -> None:
        self.issue = issue
        self.verp = verp  # with NEWSLETTER_BOUNCE_ADDRESS: per-reader Return-Path and mailto
        self.settings = settings
        self.sender = settings.sender
        self.signer = signer
        check_header(f"the title of the post {issue.slug!r}", issue.subject)
        check_newsletter_headers(settings)
        self._text = EncodedBody(issue.text)
        self._html = EncodedBody(issue.html)
        self._head, self._body_before_text, self._body_between, self._body_after = _skeleton(
            issue.subject, settings, date or datetime.now(UTC)
        )
        if signer is not None:
            # The signer sees the header block and the body in pieces, and canonicalises
            # once the pieces every reader shares.
            split = self._body_before_text.index(b"\r\n\r\n") + 2
            self._mime_headers = self._body_before_text[:split]
            self._body_start = self._body_before_text[split + 2 :]
            signer.remember_headers(self._head)
            signer.remember_headers(self._mime_headers)
            for piece in (self._body_start, self._body_between, self._body_after):
                signer.remember(piece)
            for encoded in (self._text, self._html):
                for chunk in encoded.chunks:
                    if isinstance(chunk, bytes):
                        signer.remember(chunk)

    def for_reader(
        self,
        reader_id: str | int,
        email: str,
        name: str,
        token: str,
        *,
        signature: bytes | None = None,
    ) -> Envelope:
        """One reader's message; `reader_id` is their public id (it names them in the VERP
        Return-Path and the mailto unsubscribe address). A `signature` made ahead by
        `signature_for_reader` (in a signing process) is used instead of signing here."""
        msg_id, public_id = self._ids(reader_id)
        return self._build(email, name, token, msg_id, public_id, signature)

    def signature_for_reader(
        self, reader_id: str | int, email: str, name: str, token: str
    ) -> bytes:
        """The DKIM-Signature header `for_reader` would put on this reader's message: the
        same message bytes come out of the same arguments, so it can be made elsewhere."""
        personal, text, html = self._personal(email, name, token, *self._ids(reader_id))
        return self._sign(personal, text, html)

    def _ids(self, reader_id: str | int) -> tuple[str, str | None]:
        """The reader's Message-ID, and their public id where VERP addresses need it."""
        public_id = str(reader_id) if self.verp else None
        return message_id(self.issue.slug, reader_id, self.sender.domain), public_id

    def for_test(self, email: str, name: str, token: str) -> Envelope:
        test_id = f"<{self.issue.slug}.test.{secrets.token_hex(8)}@{self.sender.domain}>"
        return self._build(email, name, token, test_id, None)

    def _build(
        self,
        email: str,
        name: str,
        token: str,
        msg_id: str,
        public_id: str | None,
        signature: bytes | None = None,
    ) -> Envelope:
        personal, text, html = self._personal(email, name, token, msg_id, public_id)
        sender = self.sender.addr_spec
        if self.verp is not None:  # a test copy (no public id) names nobody: the plain address
            slug = self.issue.slug
            sender = self.verp.return_path(public_id, slug) if public_id else self.verp.plain
        data = b"".join(
            (
                self._head,
                personal,
                self._body_before_text,
                *text,
                self._body_between,
                *html,
                self._body_after,
            )
        )
        if self.signer is not None:
            data = (signature or self._sign(personal, text, html)) + data
        return Envelope(sender, email, msg_id, data)

    def _personal(
        self, email: str, name: str, token: str, msg_id: str, public_id: str | None
    ) -> tuple[bytes, list[bytes], list[bytes]]:
        """The personal header fields and the two encoded bodies."""
        # Checked where they enter; this guards headers against rows written by other means.
        name, email = mend_header(name), mend_header(email, "")
        unsubscribe = f"<{unsubscribe_url(self.settings, token)}>"
        if self.verp is not None:
            address = self.verp.unsubscribe_address(public_id, self.issue.slug)
            unsubscribe += f", <mailto:{address}>"
        personal = (
            f"To: {formataddr((name, email), charset='utf-8')}\r\n"
            f"Message-ID: {msg_id}\r\n"
            f"List-Unsubscribe: {unsubscribe}\r\n"
        ).encode("ascii")
        text = self._text.pieces(self.issue.text_values(name, email, token))
        html = self._html.pieces(self.issue.html_values(name, email, token))
        return personal, text, html

    def _sign(self, personal: bytes, text: list[bytes], html: list[bytes]) -> bytes:
        assert self.signer is not None
        return self.signer.signature(
            (self._head, personal, self._mime_headers),
            (self._body_start, *text, self._body_between, *html, self._body_after),
        )


class EncodedBody:
    """A part's body, quoted-printable encoded once; per reader only its personal lines.

    Quoted-printable works line by line, so the lines without a placeholder encode the same
    for every reader. Those are encoded here; `encode` fills in and encodes the few others.
    """

    def __init__(self, body: Personalised) -> None:
        chunks: list[bytes | Personalised] = []
        static: list[str] = []
        for line in body.template.splitlines(keepends=True):
            personal = Personalised.parse(line)
            if personal.is_personal:
                if static:
                    chunks.append(_quoted_printable("".join(static)))
                    static = []
                chunks.append(personal)
            else:
                static.append(line)
        if static:
            chunks.append(_quoted_printable("".join(static)))
        self.chunks = tuple(chunks)

    def encode(self, values: Mapping[str, str]) -> bytes:
        return b"".join(self.pieces(values))

    def pieces(self, values: Mapping[str, str]) -> list[bytes]:
        """The encoded body in its chunks (each whole lines): the shared ones as they are."""
        return [
            chunk if isinstance(chunk, bytes) else _quoted_printable(chunk.fill(values))
            for chunk in self.chunks
        ]


def _quoted_printable(text: str) -> bytes:
    # Ending in CRLF makes binascii use CRLF for its soft line breaks too.
    crlf = text.replace("\r\n", "\n").rstrip("\n").replace("\n", "\r\n") + "\r\n"
    return binascii.b2a_qp(crlf.encode("utf-8"), istext=True)


def _skeleton(
    subject: str, settings: Settings, date: datetime
) -> tuple[bytes, bytes, bytes, bytes]:
    """Serialise the parts common to every reader; split at the per-reader slots."""
    sender: Address = settings.sender
    # policy.SMTP folds a 76-character ASCII subject onto a continuation line, which some
    # clients show with a leading space; an ASCII header fits on one line up to 998. A
    # non-ASCII one keeps the 78 limit, so its encoded words stay within RFC 2047's 75.
    headers_ascii = all(v.isascii() for v in (subject, settings.title, str(sender)))
    mime_policy = policy.SMTP.clone(max_line_length=998) if headers_ascii else policy.SMTP
    message = EmailMessage(policy=mime_policy)
    message["From"] = sender
    message["Subject"] = subject
    message["Date"] = format_datetime(date)
    message["List-Id"] = list_id(settings)
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["MIME-Version"] = "1.0"
    message.make_alternative()
    for subtype, slot in (("plain", _TEXT_SLOT), ("html", _HTML_SLOT)):
        part = MIMEPart(policy=policy.SMTP)
        part.set_content(slot.decode() + "\n", subtype=subtype, cte="quoted-printable")
        message.attach(part)  # type: ignore[arg-type]  # typeshed wants the parent's class
    data = message.as_bytes()
    head_end = data.index(b"\r\n\r\n") + 2
    head, body = data[:head_end], data[head_end:]
    # The personal headers go after the common ones and before the MIME headers.
    mime_at = head.index(b"MIME-Version:")
    common, mime_headers = head[:mime_at], head[mime_at:]
    before_text, rest = body.split(_TEXT_SLOT + b"\r\n", 1)
    between, after = rest.split(_HTML_SLOT + b"\r\n", 1)
    return common, mime_headers + before_text, between, after


def check_newsletter_headers(settings: Settings) -> None:
    """The settings that go into the headers of every email the newsletter sends."""
    check_header("NEWSLETTER_TITLE", settings.title)
    if settings.from_address is not None:
        check_header("the name in NEWSLETTER_FROM", settings.from_address.display_name)
