"""What comes back by mail after a send: bounce reports (DSN, RFC 3464), complaints (ARF,
RFC 5965), auto-replies (RFC 3834) and emails to the unsubscribe address, read from bytes.

Pure: no database, no network. Parsing is the standard library's email package, which reads a
multipart/report's message/delivery-status part as one header block per recipient.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses

from .refusals import enhanced_code
from .vocab import ReturnedKind

# Where a message was delivered to: the VERP or mailto address that names the reader.
DELIVERY_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To", "Cc")
_SPACES = re.compile(r"\s+")
_ADDRESS_TYPE = re.compile(r"[A-Za-z0-9-]+")  # rfc822, smtp, x-unix: before the ";"


@dataclass(frozen=True)
class ReturnedMail:
    """One message from the bounce mailbox, as far as it matters here."""

    kind: ReturnedKind
    addresses: tuple[str, ...]  # where it was delivered, and the original's Return-Path
    status: str | None = None  # RFC 3463 code of a report, e.g. 5.1.1
    permanent: bool = False
    detail: str = ""  # the report's own words: its Diagnostic-Code, or what it is
    recipient: str | None = None  # Original-/Final-Recipient, or ARF Original-Rcpt-To
    original_message_id: str | None = None
    subject: str = ""


def read_returned_mail(data: bytes, unsubscribe_address: Callable[[str], bool]) -> ReturnedMail:
    """Classify one message; `unsubscribe_address` tells whether an address is our mailto one."""
    message = message_from_bytes(data, policy=policy.compat32)
    addresses = _delivered_to(message)
    subject = _one_line(message.get("Subject", ""))
    if message.get_content_type() == "multipart/report":
        report_type = str(message.get_param("report-type", "") or "").lower()
        parts = list(_top_parts(message))
        original = _original_headers(parts)
        original_id = _one_line(original.get("Message-ID", "")) if original else ""
        if original is not None:
            addresses += tuple(a for _, a in getaddresses(original.get_all("Return-Path", [])))
        if report_type == "delivery-status":
            return _delivery_status(parts, addresses, original_id or None, subject)
        if report_type == "feedback-report":
            return _feedback_report(parts, addresses, original_id or None, subject)
    if _is_auto_reply(message):
        return ReturnedMail("auto-reply", addresses, detail="an automatic reply", subject=subject)
    if any(unsubscribe_address(a) for a in addresses):
        return ReturnedMail(
            "unsubscribe", addresses, detail=f"email to the unsubscribe address: {subject}"
        )
    return ReturnedMail("other", addresses, subject=subject)


def _delivery_status(
    parts: list[Message], addresses: tuple[str, ...], original_id: str | None, subject: str
) -> ReturnedMail:
    for part in parts:
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            continue
        for block in blocks[1:]:  # the first holds the per-message fields
            if not isinstance(block, Message):
                continue
            action = _one_line(block.get("Action", "")).lower()
            if action not in ("failed", "delayed"):
                continue
            status = enhanced_code(_one_line(block.get("Status", "")))
            diagnostic = _field_text(block.get("Diagnostic-Code", ""))
            recipient = _field_text(
                block.get("Original-Recipient", "") or block.get("Final-Recipient", "")
            )
            permanent = action == "failed" and (status or "5").startswith("5")
            return ReturnedMail(
                "bounce report",
                addresses,
                status=status or enhanced_code(diagnostic),
                permanent=permanent,
                detail=diagnostic or f"{action} {status or ''}".strip(),
                recipient=recipient or None,
                original_message_id=original_id,
                subject=subject,
            )
    return ReturnedMail("other", addresses, subject=subject)  # e.g. a "delivered" notice


def _feedback_report(
    parts: list[Message], addresses: tuple[str, ...], original_id: str | None, subject: str
) -> ReturnedMail:
    for part in parts:
        if part.get_content_type() != "message/feedback-report":
            continue
        payload = part.get_payload()
        first = payload[0] if isinstance(payload, list) and payload else None
        fields = first if isinstance(first, Message) else HeaderParser().parsestr(str(payload))
        feedback_type = _one_line(fields.get("Feedback-Type", "")).lower()
        if feedback_type in ("", "not-spam"):
            break
        agent = _one_line(fields.get("User-Agent", ""))
        return ReturnedMail(
            "complaint",
            addresses,
            detail=f"complaint ({feedback_type}) from {agent or 'a feedback loop'}",
            recipient=_field_text(fields.get("Original-Rcpt-To", "")) or None,
            original_message_id=original_id,
            subject=subject,
        )
    return ReturnedMail("other", addresses, subject=subject)


def _top_parts(message: Message) -> list[Message]:
    payload = message.get_payload()
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _original_headers(parts: list[Message]) -> Message | None:
    """The headers of the message the report is about (message/rfc822 or text/rfc822-headers)."""
    for part in parts:
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        elif kind in ("text/rfc822-headers", "message/rfc822-headers"):
            return HeaderParser().parsestr(str(part.get_payload(decode=False)))
    return None


def _delivered_to(message: Message) -> tuple[str, ...]:
    found: list[str] = []
    for header in DELIVERY_HEADERS:
        found += [a for _, a in getaddresses(message.get_all(header, [])) if a]
    return tuple(found)


def _is_auto_reply(message: Message) -> bool:
    """RFC 3834's `Auto-Submitted: auto-replied`, and the headers older vacation programs use.

    `auto-generated` is not a reply: a mail client may send its mailto unsubscribe that way.
    """
    auto = _one_line(message.get("Auto-Submitted", "no")).lower()
    precedence = _one_line(message.get("Precedence", "")).lower()
    return (
        auto.split(";")[0].strip() == "auto-replied"
        or precedence == "auto_reply"
        or any(message.get(h) for h in ("X-Autoreply", "X-Autorespond", "X-Auto-Reply"))
    )


def _field_text(value: object) -> str:
    """A DSN field without its type: "smtp; 550 5.1.1 ..." -> "550 5.1.1 ...", one line."""
    text = _one_line(value)
    kind, sep, rest = text.partition(";")
    return rest.strip() if sep and _ADDRESS_TYPE.fullmatch(kind.strip()) else text


def _one_line(value: object) -> str:
    return _SPACES.sub(" ", str(value or "")).strip()
