"""Postmark: send each reader's message through its /email API, pull its bounces and spam
complaints from its /bounces API, and check the server token for `doctor`.

Postmark takes a message as JSON fields, not MIME, and builds the MIME itself: the message's
headers (List-Unsubscribe, Message-ID, ...) go in `Headers` as they are, its text and HTML
parts as TextBody and HtmlBody, tracking is off so the bodies are left as they are. What
differs from the SMTP bytes: Postmark writes the MIME structure and the transfer encoding,
signs with its own DKIM key (ours would no longer verify, so it is left out), and its own
Return-Path receives the bounces (no VERP: the reports come back by the API, matched by
Postmark's message id).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from email import message_from_bytes, policy
from typing import Any

import httpx

from ..config import Settings
from ..envelope import Envelope, ServiceReply
from ..errors import ConfigError, DeliveryRefused, RelayError, TransportError
from ..refusals import enhanced_code
from ..returned import Failure, ReturnedMail
from . import (
    Finding,
    RelayReport,
    one_line,
    reader_refused,
    sender_refused,
    throttled,
    unavailable,
)

SERVICE = "Postmark"
# Headers Postmark has fields for or writes itself; the rest are passed as they are.
_OWN_FIELDS = {
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "reply-to",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "dkim-signature",  # Postmark rebuilds the MIME and signs with its own key
    "return-path",
}
# Postmark's API error codes (https://postmarkapp.com/developer/api/overview#error-codes).
_BAD_TOKEN = 10
_ACCOUNT_STOPPED = {
    400: "the From address has no Postmark sender signature",
    401: "the From address's Postmark sender signature is not confirmed",
    405: "Postmark does not let this account send (out of credits?)",
    413: "Postmark does not let this account send",
}
_INACTIVE_RECIPIENT = 406
_PENDING_APPROVAL = 412  # a new account sends only to its own domain until approved
_MAINTENANCE = 100
BOUNCE_PAGE = 500  # the most /bounces returns at once
BOUNCE_WINDOW = 10_000  # count + offset may not pass this: the newest 10,000 are read
# Bounce types (https://postmarkapp.com/developer/api/bounce-api#bounce-types).
_PERMANENT = {"HardBounce", "BadEmailAddress"}
_TEMPORARY = {"SoftBounce", "Transient", "DnsError"}
_SENDER_SIDE = {"Blocked": "5.7.1", "DMARCPolicy": "5.7.1"}


def _client(settings: Settings) -> httpx.Client:
    if not settings.postmark_token:
        raise ConfigError(
            "NEWSLETTER_POSTMARK_TOKEN is not set: set it to the server's API token "
            "(Postmark: Servers → your server → API Tokens)"
        )
    return httpx.Client(
        base_url=settings.postmark_api_url,
        timeout=settings.smtp_timeout,
        headers={
            "Accept": "application/json",
            "X-Postmark-Server-Token": settings.postmark_token,
        },
    )


class PostmarkTransport:
    """POST /email, one HTTP connection kept alive per send connection."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client = _client(settings)

    def send(self, envelope: Envelope) -> str:
        body = postmark_message(envelope, self.settings.postmark_stream)
        try:
            response = self._client.post("/email", json=body)
        except httpx.TimeoutException as e:
            raise DeliveryRefused(f"connection lost: {SERVICE}: timed out", permanent=False) from e
        except httpx.HTTPError as e:
            raise DeliveryRefused(
                f"connection lost: {SERVICE}: {_quoted(self.settings, e)}", permanent=False
            ) from e
        answer = _json(response)
        if response.status_code == 200 and answer.get("ErrorCode", 0) == 0:
            message_id = str(answer["MessageID"])
            return ServiceReply(f"250 {SERVICE} accepted {message_id}", message_id)
        raise _refusal(self.settings, response, answer)

    def close(self) -> None:
        self._client.close()


def postmark_message(envelope: Envelope, stream: str) -> dict[str, Any]:
    """The finished message as the JSON Postmark's /email takes."""
    message = message_from_bytes(envelope.data, policy=policy.default)
    body: dict[str, Any] = {
        "From": str(message["From"]),
        "To": str(message["To"]),
        "Subject": str(message["Subject"] or ""),
        "MessageStream": stream,
        "TrackOpens": False,
        "TrackLinks": "None",
        "Headers": [
            {"Name": name, "Value": str(value)}
            for name, value in message.items()
            if name.lower() not in _OWN_FIELDS
        ],
    }
    if message["Reply-To"]:
        body["Reply-To"] = str(message["Reply-To"])
    attachments = []
    for part in message.walk():
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        if kind == "text/plain" and "TextBody" not in body and not part.get_filename():
            body["TextBody"] = part.get_content()
        elif kind == "text/html" and "HtmlBody" not in body and not part.get_filename():
            body["HtmlBody"] = part.get_content()
        else:
            payload = part.get_payload(decode=True)
            attachment = {
                "Name": part.get_filename() or "attachment",
                "Content": base64.b64encode(
                    payload if isinstance(payload, bytes) else b""
                ).decode(),
                "ContentType": kind,
            }
            if part["Content-ID"]:
                attachment["ContentID"] = str(part["Content-ID"])
            attachments.append(attachment)
    if attachments:
        body["Attachments"] = attachments
    return body


def _quoted(settings: Settings, e: BaseException) -> str:
    """httpx's words for a failure, on one line and without the tokens."""
    return one_line(e, (settings.postmark_token, settings.postmark_account_token))


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _refusal(
    settings: Settings, response: httpx.Response, answer: dict[str, Any]
) -> DeliveryRefused | TransportError:
    """Postmark's answer as what an SMTP server's reply would have meant."""
    status = response.status_code
    code = int(answer.get("ErrorCode", 0) or 0)
    message = one_line(answer.get("Message") or response.reason_phrase, (settings.postmark_token,))
    detail = f"{code or status} {message}"
    if status == 401 or code == _BAD_TOKEN:
        return TransportError(
            f"Postmark refused the server token ({detail}); check NEWSLETTER_POSTMARK_TOKEN"
        )
    if status == 429:
        return throttled(SERVICE, detail)
    if status >= 500 or code == _MAINTENANCE:
        return unavailable(SERVICE, detail)
    if code in _ACCOUNT_STOPPED:
        return TransportError(
            f"{_ACCOUNT_STOPPED[code]} ({detail}); fix it in Postmark's Sender Signatures; no "
            "reader was marked bounced"
        )
    if code == _INACTIVE_RECIPIENT:
        # Postmark will not send to an address that bounced hard or complained: counted
        # against the reader (the pull of its bounces says which it was).
        return reader_refused(SERVICE, "5.2.1", detail)
    if code == _PENDING_APPROVAL:
        return sender_refused(SERVICE, "5.7.1", f"{detail} (the account awaits approval)")
    return sender_refused(SERVICE, "5.6.0", detail)


# --- what comes back -------------------------------------------------------------------------


def reports(settings: Settings, *, dry_run: bool = False) -> Iterator[RelayReport]:
    """Every bounce Postmark holds for the stream, newest first: hard and soft bounces, spam
    complaints (a bounce of type SpamComplaint), unsubscribe requests and the rest. Reading
    changes nothing at Postmark, a dry run or not."""
    with _client(settings) as client:
        offset = 0
        while True:
            try:
                response = client.get(
                    "/bounces",
                    params={
                        "count": BOUNCE_PAGE,
                        "offset": offset,
                        "messagestream": settings.postmark_stream,
                    },
                )
            except httpx.HTTPError as e:
                raise RelayError(f"Postmark cannot be reached: {_quoted(settings, e)}") from e
            answer = _json(response)
            if response.status_code != 200:
                raise RelayError(f"Postmark: {_refusal(settings, response, answer)}")
            bounces = answer.get("Bounces", [])
            for bounce in bounces:
                yield _report(bounce)
            offset += len(bounces)
            if (
                len(bounces) < BOUNCE_PAGE
                or offset >= int(answer.get("TotalCount", 0))
                or offset + BOUNCE_PAGE > BOUNCE_WINDOW
            ):
                return


def _report(bounce: dict[str, Any]) -> RelayReport:
    kind = str(bounce.get("Type", ""))
    email = str(bounce.get("Email", "")) or None
    details = one_line(bounce.get("Details") or bounce.get("Description") or kind)
    detail = f"Postmark {kind}: {details}"
    mail: ReturnedMail
    if kind == "SpamComplaint":
        mail = ReturnedMail("complaint", (), detail=detail, recipient=email)
    elif kind == "Unsubscribe":
        mail = ReturnedMail("unsubscribe", (), detail=detail, recipient=email)
    elif kind in _PERMANENT or kind in _TEMPORARY or kind in _SENDER_SIDE:
        status = _SENDER_SIDE.get(kind) or enhanced_code(details)
        failure = Failure(email, status, kind not in _TEMPORARY, detail)
        mail = ReturnedMail("bounce report", (), failures=(failure,), detail=detail)
    else:  # auto-replies, address changes, challenges: not a failure of ours
        mail = ReturnedMail("other", (), detail=detail, recipient=email)
    return RelayReport(str(bounce.get("ID")), mail, str(bounce.get("MessageID") or "") or None)


# --- doctor ----------------------------------------------------------------------------------


def check_account(settings: Settings) -> list[Finding]:
    """The server token (GET /server) and the message stream sends go to."""
    try:
        with _client(settings) as client:
            server = client.get("/server")
            if server.status_code != 200:
                return [Finding("missing", str(_refusal(settings, server, _json(server))))]
            name = _json(server).get("Name", "?")
            findings = [Finding("ok", f"Postmark server {name!r} takes the token")]
            stream = client.get(f"/message-streams/{settings.postmark_stream}")
    except ConfigError as e:
        return [Finding("missing", str(e))]
    except httpx.HTTPError as e:
        return [Finding("missing", f"Postmark cannot be reached: {_quoted(settings, e)}")]
    answer = _json(stream)
    if stream.status_code != 200:
        findings.append(
            Finding(
                "missing",
                f"the server has no message stream {settings.postmark_stream!r}: create a "
                "Broadcast stream or set NEWSLETTER_POSTMARK_STREAM",
            )
        )
    elif answer.get("MessageStreamType") != "Broadcasts":
        findings.append(
            Finding(
                "warning",
                f"the stream {settings.postmark_stream!r} is {answer.get('MessageStreamType')}; "
                "Postmark wants newsletters on a Broadcasts stream",
            )
        )
    findings.append(_signature_finding(settings))
    return findings


def _signature_finding(settings: Settings) -> Finding:
    """Whether From has a confirmed sender signature (GET /senders takes the account token)."""
    if settings.from_address is None:
        return Finding("missing", "NEWSLETTER_FROM is not set: Postmark needs a From to send as")
    address = settings.from_address.addr_spec
    if not settings.postmark_account_token:
        return Finding(
            "warning",
            f"set NEWSLETTER_POSTMARK_ACCOUNT_TOKEN to check that {address} has a confirmed "
            "sender signature (Postmark refuses a From without one)",
        )
    secrets = (settings.postmark_token, settings.postmark_account_token)
    try:
        response = httpx.get(
            f"{settings.postmark_api_url}/senders",
            params={"count": 500, "offset": 0},
            headers={
                "Accept": "application/json",
                "X-Postmark-Account-Token": settings.postmark_account_token,
            },
            timeout=settings.smtp_timeout,
        )
    except httpx.HTTPError as e:
        return Finding("missing", f"Postmark cannot be reached: {one_line(e, secrets)}")
    if response.status_code != 200:
        return Finding(
            "missing",
            f"Postmark refused the account token ({response.status_code}); check "
            "NEWSLETTER_POSTMARK_ACCOUNT_TOKEN",
        )
    domain = address.rsplit("@", 1)[1].lower()
    for signature in _json(response).get("SenderSignatures", []):
        if str(signature.get("EmailAddress", "")).lower() == address.lower() or (
            str(signature.get("Domain", "")).lower() == domain
        ):
            if signature.get("Confirmed"):
                return Finding("ok", f"Postmark has a confirmed sender signature for {address}")
            return Finding(
                "missing",
                f"the Postmark sender signature for {address} is not confirmed: click the link "
                "Postmark mailed to it",
            )
    return Finding(
        "missing", f"Postmark has no sender signature for {address}: add it in Sender Signatures"
    )
