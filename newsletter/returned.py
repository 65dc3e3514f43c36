"""What comes back by mail after a send: bounce reports, complaints (ARF, RFC 5965), auto-replies
(RFC 3834) and emails to the unsubscribe address, read from bytes.

Pure: no database, no network. A delivery-status part (RFC 3464) is read here wherever it sits
in the message, with or without `report-type`, one failure per recipient, because it says more
than any heuristic (the status code, the Diagnostic-Code). Every other shape (Postfix's and
Exim's older texts, qmail, sendmail, Exchange, GroupWise, Yahoo, AOL, hand-written notices) is
left to flufl.bounce, Mailman's detectors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.utils import getaddresses, parseaddr

from flufl.bounce import all_failures

from .refusals import enhanced_code
from .vocab import ReturnedKind

# Where a message was delivered to: the VERP or mailto address that names the reader.
DELIVERY_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To", "Cc")
DETAIL_LIMIT = 300
_SPACES = re.compile(r"\s+")
_ADDRESS_TYPE = re.compile(r"[A-Za-z0-9-]+")  # rfc822, smtp, x-unix: before the ";"
_RECIPIENT_FIELDS = ("Original-Recipient", "Final-Recipient", "X-Actual-Recipient")
# What vacation programs and Outlook put in the subject of their replies.
_AUTO_REPLY_SUBJECT = re.compile(
    r"out of (the )?office|automatic reply|auto(matic)?[- ]?(reply|response)|autoreply|"
    r"vacation|on holiday|away from|abwesenheit|r[ée]ponse automatique|absence",
    re.IGNORECASE,
)
# A notice that the mail is late, not lost: never a write-off.
_TEMPORARY_WORDS = re.compile(
    r"\bdelay(ed)?\b|will (continue to )?(re)?try|still trying|not yet (been )?delivered|"
    r"\bwarning\b|temporar(y|ily)|\bdeferred\b|\b4\.\d{1,3}\.\d{1,3}\b|\bover quota\b.*\bretry",
    re.IGNORECASE,
)
# A warning about mail still queued, in the words of Exim, sendmail and Postfix.
_WARNING = re.compile(
    r"this is a warning|has not yet been delivered|not yet been delivered|"
    r"will (continue to )?(be )?(re)?tr(y|ied)|will keep trying|still being retried",
    re.IGNORECASE,
)
_WARNING_SUBJECT = re.compile(
    r"^(warning\b(?!.*(unknown|not exist|no such|permanent|fatal))|delayed mail|delivery delayed)",
    re.IGNORECASE,
)
_FAILURE_SUBJECT = re.compile(
    r"undeliver|delivery (status notification|failure|has failed|failed|report)|"
    r"mail delivery failed|returned mail|failure notice|could not be delivered|"
    r"non[- ]?delivery|not delivered|nondeliverable|mail system error",
    re.IGNORECASE,
)
_FAILURE_TEXT = re.compile(
    r"could not be delivered|not be delivered|undeliver|failed|failure|permanent error|"
    r"user unknown|unknown user|no such|does not exist|doesn't exist|not found|rejected|"
    r"aborted|unable to deliver|mailbox unavailable|invalid (recipient|address|mailbox)|"
    r"\b5\d\d\b",
    re.IGNORECASE,
)
_QUOTED_ORIGINAL = re.compile(
    r"(header|copy|headers) of (the |your )?(original )?message|original message|"
    r"returned message|message headers? follows?",
    re.IGNORECASE,
)
_ADDRESS = re.compile(r"[A-Za-z0-9._%+=-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_MAIL_SYSTEM = re.compile(
    r"mailer-daemon|postmaster|mail delivery|mdaemon|mail ?administrator", re.IGNORECASE
)


@dataclass(frozen=True)
class Failure:
    """One recipient a report says was not delivered."""

    recipient: str | None  # the address the report names, if it names one
    status: str | None  # RFC 3463 code, e.g. 5.1.1
    permanent: bool
    detail: str  # the report's own words: its Diagnostic-Code or the line about the address


@dataclass(frozen=True)
class ReturnedMail:
    """One message from the bounce mailbox, as far as it matters here."""

    kind: ReturnedKind
    addresses: tuple[str, ...]  # where it was delivered, and the original's Return-Path
    failures: tuple[Failure, ...] = ()
    detail: str = ""  # what it is, in its own words
    recipient: str | None = None  # a complaint's ARF Original-Rcpt-To
    original_message_id: str | None = None
    subject: str = ""
    reads_temporary: bool = False  # words of a delay ("will retry", 4.x.x) in what it says
    from_person: bool = False  # a reply by a person (In-Reply-To, not from a mail system)


def read_returned_mail(data: bytes, unsubscribe_address: Callable[[str], bool]) -> ReturnedMail:
    """Classify one message; `unsubscribe_address` tells whether an address is our mailto one."""
    message = message_from_bytes(data, policy=policy.compat32)
    addresses = _delivered_to(message)
    subject = _decoded(message.get("Subject", ""))
    original = _original_headers(message)
    original_id = _one_line(original.get("Message-ID", "")) or None if original else None
    if original is not None:
        addresses += tuple(a for _, a in getaddresses(original.get_all("Return-Path", [])) if a)
    complaint = _feedback_report(message)
    if complaint is not None:
        kind, detail, recipient = complaint
        return ReturnedMail(
            kind, addresses, detail=detail, recipient=recipient,
            original_message_id=original_id, subject=subject,
        )  # fmt: skip
    text = _own_text(message)
    reports = [p for p in message.walk() if p.get_content_type() == "message/delivery-status"]
    failures, delivered = _delivery_status(reports)
    if not failures and not delivered:
        failures = _detected(message, text) or _returned_original(message, original, subject, text)
    if failures:
        return ReturnedMail(
            "bounce report", addresses, failures, detail=failures[0].detail,
            original_message_id=original_id, subject=subject,
        )  # fmt: skip
    if delivered:
        return ReturnedMail("notice", addresses, detail="a report of a delivery", subject=subject)
    if _is_auto_reply(message, subject):
        return ReturnedMail("auto-reply", addresses, detail="an automatic reply", subject=subject)
    if any(unsubscribe_address(a) for a in addresses):
        return ReturnedMail(
            "unsubscribe", addresses, detail=f"email to the unsubscribe address: {subject}"
        )
    sender = _one_line(message.get("From", ""))
    return ReturnedMail(
        "other",
        addresses,
        detail=_clip(f"{subject}: {text}" if subject else text),
        original_message_id=original_id,
        subject=subject,
        reads_temporary=bool(_TEMPORARY_WORDS.search(f"{subject}\n{text}")),
        from_person=bool(message.get("In-Reply-To") or message.get("References"))
        and not _MAIL_SYSTEM.search(sender),
    )


def _delivery_status(parts: list[Message]) -> tuple[tuple[Failure, ...], bool]:
    """One failure per recipient block that failed or is delayed, in every report part; and
    whether a block said the mail was delivered (relayed, expanded)."""
    failures: list[Failure] = []
    delivered = False
    for part in parts:
        for block in _status_blocks(part)[1:]:  # the first holds the per-message fields
            action = _one_line(block.get("Action", "")).lower()
            if not action.startswith(("fail", "error", "delayed")):
                delivered = delivered or action.startswith(("deliver", "relay", "expand"))
                continue
            diagnostic = _field_text(block.get("Diagnostic-Code", ""))
            status = enhanced_code(_one_line(block.get("Status", ""))) or enhanced_code(diagnostic)
            permanent = not action.startswith("delayed") and not (status or "5").startswith("4")
            failures.append(
                Failure(
                    _block_recipient(block),
                    status,
                    permanent,
                    _clip(diagnostic or f"{action} {status or ''}".strip()),
                )
            )
    return tuple(failures), delivered and not failures


def _status_blocks(part: Message) -> list[Message]:
    """The header blocks of a delivery-status part, also when it came encoded or as text."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    chunks = re.split(r"\r?\n[ \t]*\r?\n", text.strip())
    return [HeaderParser().parsestr(chunk.strip() + "\n") for chunk in chunks if chunk.strip()]


def _block_recipient(block: Message) -> str | None:
    """The rfc822 address of a recipient block: an x400 or unknown type is skipped for the
    next field, and an address in angle brackets or without a type is taken as it is."""
    for field in _RECIPIENT_FIELDS:
        for value in block.get_all(field, []):
            kind, sep, rest = _one_line(value).partition(";")
            address = rest if sep else kind
            if sep and kind.strip().lower() not in ("rfc822", "smtp", ""):
                continue
            found = parseaddr(address.strip())[1]
            if "@" in found:
                return found
    return None


def _detected(message: Message, text: str) -> tuple[Failure, ...]:
    """What flufl.bounce's detectors find, each with the line of the text that names it."""
    try:
        temporary, permanent = all_failures(message)
    except Exception:  # a detector's bug on one odd message must not stop a run
        return ()
    if _WARNING.search(text) or _WARNING_SUBJECT.search(_decoded(message.get("Subject", ""))):
        temporary, permanent = temporary | permanent, frozenset()  # a warning says it is late
    failures: list[Failure] = []
    for raw, is_permanent in [(a, True) for a in sorted(permanent)] + [
        (a, False) for a in sorted(temporary - permanent)
    ]:
        address = raw.decode("ascii", "replace")
        detail = _line_about(text, address) or _clip(text)
        status = enhanced_code(detail)
        failures.append(Failure(address, status, is_permanent and not _late(status), detail))
    return tuple(failures)


def _returned_original(
    message: Message, original: Message | None, subject: str, text: str
) -> tuple[Failure, ...]:
    """A failure notice whose list of addresses is empty or unreadable still returns our
    message, and our message has one To: its reader."""
    sender = _one_line(message.get("From", ""))
    if not (_FAILURE_SUBJECT.search(subject) or _MAIL_SYSTEM.search(sender)):
        return ()
    if not _FAILURE_TEXT.search(f"{subject}\n{text}"):
        return ()
    to = (original.get_all("To", []) if original is not None else []) or _quoted_to(text)
    found = [a for _, a in getaddresses(to) if "@" in a]
    if not found:  # the one address the notice itself names
        found = sorted({a.lower() for a in _ADDRESS.findall(text)} - {_address_of(sender)})
    if len(found) != 1:
        return ()
    temporary = bool(_TEMPORARY_WORDS.search(f"{subject}\n{text}"))
    detail = _clip(f"{subject}: {_notice_words(text)}")
    status = enhanced_code(text)
    return (Failure(found[0], status, not temporary and not _late(status), detail),)


def _address_of(value: str) -> str:
    return parseaddr(value)[1].lower()


def _quoted_to(text: str) -> list[str]:
    """The To: of an original quoted as text after a "header of the original" line."""
    match = _QUOTED_ORIGINAL.search(text)
    if match is None:
        return []
    to = re.search(r"^To:[ \t]*(.+)$", text[match.end() :], re.MULTILINE | re.IGNORECASE)
    return [to.group(1)] if to else []


def _notice_words(text: str) -> str:
    """The lines of a notice that say what went wrong."""
    lines = [line.strip() for line in text.splitlines() if _FAILURE_TEXT.search(line)]
    return " ".join(lines[:3]) or text


def _line_about(text: str, address: str) -> str:
    """The line naming the address, with the next one (where servers put the reason)."""
    lines = [line.strip() for line in text.splitlines()]
    for number, line in enumerate(lines):
        if address.lower() in line.lower():
            after = next((rest for rest in lines[number + 1 : number + 3] if rest), "")
            return _clip(f"{line} {after}")
    return ""


def _feedback_report(message: Message) -> tuple[ReturnedKind, str, str | None] | None:
    for part in message.walk():
        if part.get_content_type() != "message/feedback-report":
            continue
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            fields = payload[0]
        else:
            raw = part.get_payload(decode=True)
            fields = BytesHeaderParser().parsebytes(raw if isinstance(raw, bytes) else b"")
        feedback_type = _one_line(fields.get("Feedback-Type", "")).lower()
        if feedback_type in ("", "not-spam"):
            return "notice", f"a feedback report ({feedback_type or 'no type'})", None
        agent = _one_line(fields.get("User-Agent", ""))
        recipient = parseaddr(_field_text(fields.get("Original-Rcpt-To", "")))[1]
        detail = f"complaint ({feedback_type}) from {agent or 'a feedback loop'}"
        return "complaint", detail, recipient or None
    return None


def _original_headers(message: Message) -> Message | None:
    """The headers of the message a report is about (message/rfc822 or text/rfc822-headers)."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        elif kind in ("text/rfc822-headers", "message/rfc822-headers"):
            raw = part.get_payload(decode=True)
            return BytesHeaderParser().parsebytes(raw if isinstance(raw, bytes) else b"")
    return None


def _own_text(message: Message) -> str:
    """The message's own text parts, not those of an attached original."""
    return "\n".join(_texts(message))


def _texts(part: Message) -> Iterator[str]:
    kind = part.get_content_type()
    if kind == "message/rfc822" or kind.endswith("rfc822-headers"):
        return
    if part.is_multipart():
        for sub in part.get_payload():
            if isinstance(sub, Message):
                yield from _texts(sub)
    elif kind in ("text/plain", "text/html"):
        raw = part.get_payload(decode=True)
        if isinstance(raw, bytes):
            text = raw.decode(part.get_content_charset() or "utf-8", "replace")
            yield re.sub(r"<[^>]{1,500}>", " ", text) if kind == "text/html" else text


def _delivered_to(message: Message) -> tuple[str, ...]:
    found: list[str] = []
    for header in DELIVERY_HEADERS:
        found += [a for _, a in getaddresses(message.get_all(header, [])) if a]
    return tuple(found)


def _is_auto_reply(message: Message, subject: str) -> bool:
    """RFC 3834's `Auto-Submitted: auto-replied`, the headers older vacation programs use, and
    an out-of-office subject. Only asked once no failure was found: Postfix and Exim put
    `Auto-Submitted: auto-replied` on their bounces too.

    `auto-generated` is not a reply: a mail client may send its mailto unsubscribe that way.
    """
    auto = _one_line(message.get("Auto-Submitted", "no")).lower()
    precedence = _one_line(message.get("Precedence", "")).lower()
    return (
        auto.split(";")[0].split("(")[0].strip() == "auto-replied"
        or precedence == "auto_reply"
        or any(
            message.get(h)
            for h in ("X-Autoreply", "X-Autorespond", "X-Auto-Reply", "X-Autoresponse")
        )
        or bool(_AUTO_REPLY_SUBJECT.search(subject))
    )


def _late(status: str | None) -> bool:
    """A 4.x.x code: temporary by its own class, even in a notice that gave up."""
    return (status or "").startswith("4")


def _decoded(value: object) -> str:
    """A header as text, its RFC 2047 encoded words decoded (Outlook's "Réponse automatique")."""
    try:
        return _one_line(make_header(decode_header(str(value or ""))))
    except (LookupError, UnicodeError, ValueError):
        return _one_line(value)


def _field_text(value: object) -> str:
    """A DSN field without its type: "smtp; 550 5.1.1 ..." -> "550 5.1.1 ...", one line."""
    text = _one_line(value)
    kind, sep, rest = text.partition(";")
    return rest.strip() if sep and _ADDRESS_TYPE.fullmatch(kind.strip()) else text


def _clip(text: str) -> str:
    line = _one_line(text)
    return line if len(line) <= DETAIL_LIMIT else line[: DETAIL_LIMIT - 1] + "…"


def _one_line(value: object) -> str:
    return _SPACES.sub(" ", str(value or "")).strip()
