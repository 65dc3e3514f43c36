"""Relay services reached over their HTTP APIs instead of SMTP: Amazon SES and Postmark.

Each module gives a transport (the `mailer.Transport` interface: a message in, the service's
reply out, or DeliveryRefused / TransportError as SMTP would raise), the pull of its bounces
and complaints for `newsletter bounces --from`, and its account check for `doctor`. A service's
error codes are mapped onto SMTP's replies with enhanced status codes (RFC 3463), so that
`refusals.classify_refusal`, the retries and the circuit breaker treat them as they treat an
SMTP server's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..errors import DeliveryRefused
from ..returned import ReturnedMail

FindingStatus = Literal["ok", "warning", "missing"]


@dataclass(frozen=True)
class Finding:
    """One line of `doctor` about a relay account: how it stands and what to fix."""

    status: FindingStatus
    message: str


@dataclass(frozen=True)
class RelayReport:
    """One bounce or complaint a service reported, for `bounces.process_relay_reports`.

    `report_id` is remembered once applied (a second pull skips it); `message_id` is the
    service's id of the message, which names the delivery: a report without one, or with one
    we did not record for the address it names, changes nothing. Only a suppression list's
    entry (`by_address`) names just an address, and applies to an active reader of it;
    `finish` takes it off the service's queue once applied.
    """

    report_id: str
    mail: ReturnedMail
    message_id: str | None
    finish: Callable[[], None] | None = None
    by_address: bool = False

    def done(self) -> None:
        if self.finish is not None:
            self.finish()


def throttled(service: str, detail: str) -> DeliveryRefused:
    """Too many requests: temporary, retried after the delivery's back-off."""
    return DeliveryRefused(f"454 4.7.0 {service} throttled: {detail}", permanent=False, code=454)


def unavailable(service: str, detail: str) -> DeliveryRefused:
    """The service failed (5xx) or did not answer in time: temporary."""
    return DeliveryRefused(f"451 4.3.0 {service}: {detail}", permanent=False, code=451)


def sender_refused(service: str, status: str, detail: str) -> DeliveryRefused:
    """Refused for the sender's account, not the reader (sandbox, unverified identity, content):
    a 5.6/5.7 code, which never writes the reader off."""
    return DeliveryRefused(
        f"554 {status} {service}: {detail}", permanent=True, code=554, stage="DATA"
    )


def reader_refused(service: str, status: str, detail: str) -> DeliveryRefused:
    """Refused for the reader's address (a 5.1/5.2 code), as an SMTP RCPT refusal."""
    return DeliveryRefused(
        f"550 {status} {service}: {detail}", permanent=True, code=550, stage="RCPT"
    )


def one_line(text: object, secrets: tuple[str | None, ...] = ()) -> str:
    """A service's message on one line, with any credential it might echo taken out."""
    line = " ".join(str(text).split())
    for secret in secrets:
        if secret:
            line = line.replace(secret, "***")
    return line
