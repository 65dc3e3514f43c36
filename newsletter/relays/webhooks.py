"""The services' webhooks for `newsletter serve`: Postmark's bounce and spam-complaint webhook
(HTTP basic auth) and SNS's HTTP notifications of SES's bounces and complaints (the SNS
signature checked against Amazon's certificate). Anything unsigned or unauthenticated is
refused before it is read; what passes is applied as `bounces --from` applies it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..config import Settings
from ..errors import NewsletterError, RelayError
from . import RelayReport, one_line
from .postmark import _report as postmark_report
from .ses import _notification_reports

# Amazon's SNS hosts: sns.REGION.amazonaws.com (and .com.cn in China).
_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS["UnsubscribeConfirmation"] = _SIGNED_FIELDS["SubscriptionConfirmation"]
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
# A GET from an https address of SNS (checked before): the signing certificate, a
# subscription's confirmation. Tests give their own; `fetch_from_sns` is the real one.
SnsFetcher = Callable[[str], bytes]


class WebhookRefused(NewsletterError):
    """A webhook request that is not signed or authenticated as the service does it."""


def postmark_authorised(settings: Settings, authorization: str | None) -> bool:
    """HTTP basic auth as set in Postmark's webhook URL (https://newsletter:PASSWORD@...)."""
    password = settings.postmark_webhook_password
    if not password or not authorization or not authorization.startswith("Basic "):
        return False
    try:
        given = base64.b64decode(authorization[6:], validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, f"newsletter:{password}".encode())


def postmark_reports(payload: object) -> list[RelayReport]:
    """A Postmark bounce or spam-complaint webhook's body as the report it carries."""
    if not isinstance(payload, dict) or payload.get("RecordType") not in (
        "Bounce",
        "SpamComplaint",
    ):
        return []
    return [postmark_report(payload)]


def sns_reports(
    settings: Settings, body: bytes, fetch: SnsFetcher | None = None
) -> list[RelayReport]:
    """An SNS HTTP(S) notification, checked, as the SES reports in it. A subscription
    confirmation for our topic is confirmed (its SubscribeURL, on an SNS host, visited; a
    failure is a RelayError) and carries none, as does an unsubscribe confirmation."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as e:  # deep nesting fits in the body limit
        raise WebhookRefused("not an SNS message") from e
    if not isinstance(message, dict):
        raise WebhookRefused("not an SNS message")
    fetch = fetch or fetch_from_sns
    verify_sns_signature(message, fetch)
    if not settings.ses_topic_arn or message.get("TopicArn") != settings.ses_topic_arn:
        raise WebhookRefused("the message is from another SNS topic than NEWSLETTER_SES_TOPIC_ARN")
    if message["Type"] == "SubscriptionConfirmation":
        url = str(message.get("SubscribeURL", ""))
        _check_sns_url(url)
        fetch(url)
        return []
    if message["Type"] == "UnsubscribeConfirmation":  # nothing to do: we never unsubscribe
        return []
    return list(_notification_reports(body.decode(), lambda: None))


def verify_sns_signature(message: dict[str, Any], fetch: SnsFetcher) -> None:
    """Amazon's documented check: the certificate from an SNS host over https, and the RSA
    signature over the message's fields in their canonical order."""
    kind = message.get("Type")
    fields = _SIGNED_FIELDS.get(str(kind))
    algorithm = _HASHES.get(str(message.get("SignatureVersion")))
    if fields is None or algorithm is None or "Signature" not in message:
        raise WebhookRefused("not a signed SNS notification")
    url = str(message.get("SigningCertURL", ""))
    _check_sns_url(url)
    signed = "".join(
        f"{name}\n{message[name]}\n" for name in fields if message.get(name) is not None
    )
    try:
        pem = fetch(url)
    except RelayError as e:
        raise WebhookRefused("the SNS signing certificate cannot be fetched") from e
    try:
        certificate = x509.load_pem_x509_certificate(pem)
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookRefused("the SNS certificate has no RSA key")
        key.verify(
            base64.b64decode(str(message["Signature"])),
            signed.encode(),
            padding.PKCS1v15(),
            algorithm(),
        )
    except (InvalidSignature, ValueError, binascii.Error) as e:
        raise WebhookRefused("the SNS signature does not verify") from e


def _check_sns_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https" or not _SNS_HOST.match(parts.hostname or ""):
        raise WebhookRefused(f"{url!r} is not an https address of Amazon SNS")


def fetch_from_sns(url: str) -> bytes:
    """GET an address of SNS (checked to be https on an SNS host before this is called)."""
    try:
        response = httpx.get(url, timeout=10)
        response.raise_for_status()
    except httpx.HTTPError as e:
        raise RelayError(f"Amazon SNS cannot be reached: {one_line(e)}") from e
    return response.content
