"""Whose fault a refused delivery is, and the circuit breaker that stops a send the server refuses.

The bounce policy lives here, in one place, for refusals at send time and for bounce reports
(DSNs) read later. A refusal counts against a reader only when it is about the reader's address
(RFC 3463 enhanced status codes 5.1.x, the address; 5.2.x, the mailbox). Refusals that are the
sender's or the server's (5.7.x policy, relay denied, authentication, an unverified sender;
5.5.x protocol; 5.3.x the receiving system; any refusal of MAIL FROM) never write a reader off:
the delivery stays failed with its reason and the next run tries it again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .vocab import RefusalEffect

ENHANCED_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
# The address does not exist: such a reader is out at once (other reader faults are counted).
_UNKNOWN_ADDRESS = {"1", "2", "3", "6", "10"}
_SENDER_CLASSES = {"3", "5", "6", "7"}


@dataclass(frozen=True)
class Verdict:
    """What a refusal means: `bounce` the reader now, `count` one against the reader's limit,
    `sender` (the sender's or server's fault: the reader is untouched), or `retry` (temporary)."""

    effect: RefusalEffect
    status: str | None  # the enhanced status code, e.g. "5.1.1"
    reply: str

    @property
    def against_reader(self) -> bool:
        return self.effect in ("bounce", "count")

    @property
    def permanent(self) -> bool:
        return self.effect != "retry"


def enhanced_code(text: str) -> str | None:
    match = ENHANCED_CODE.search(text)
    return match.group(0) if match else None


def classify_refusal(
    reply: str, *, permanent: bool, stage: str = "RCPT", report: bool = False
) -> Verdict:
    """Decide what one refusal does to its reader.

    `stage` is the SMTP step that failed (MAIL, RCPT, DATA); `report` says the refusal came in a
    bounce report (DSN) rather than from our own server. A report is the receiving side's last
    word after its own retries, so a permanent one about the reader bounces them at once and a
    temporary one is counted; at send time only an unknown address (5.1.x) is out at once and a
    temporary refusal is retried.
    """
    status = enhanced_code(reply)
    if not permanent or (status or "").startswith("4"):
        return Verdict("count" if report else "retry", status, reply)
    if stage not in ("RCPT", "DATA"):
        return Verdict("sender", status, reply)
    if status is None:  # an old server's "550 No such user": the reader's, counted
        return Verdict("bounce" if report else "count", status, reply)
    _, subject, detail = status.split(".")
    if subject in _SENDER_CLASSES:
        return Verdict("sender", status, reply)
    if report or (subject == "1" and detail in _UNKNOWN_ADDRESS):
        return Verdict("bounce", status, reply)
    return Verdict("count", status, reply)


@dataclass
class CircuitBreaker:
    """Watches the first `window` deliveries of a run and holds back their bounces.

    If every one of them is refused permanently, whatever the code, the fault is the server's
    or the setup's, not the readers': the run stops, and the held bounces are dropped (their
    deliveries stay failed and are tried again next run). Otherwise the held bounces are
    written and the rest of the run bounces as it goes.
    """

    window: int = 0
    seen: int = 0
    refused: int = 0
    first_refusal: Verdict | None = None
    held: list[Callable[[], object]] = field(default_factory=list)

    @property
    def deciding(self) -> bool:
        return self.seen < self.window

    def delivered(self) -> None:
        """A message went through: the server works, so the breaker has decided."""
        if self.deciding:
            self.seen += 1
            self.release()
            self.window = self.seen

    def failed(self, verdict: Verdict | None) -> None:
        """A delivery that did not go through; `verdict` None: no refusal (a lost connection)."""
        if not self.deciding:
            return
        self.seen += 1
        if verdict is not None and verdict.permanent:
            self.refused += 1
            self.first_refusal = self.first_refusal or verdict

    def hold(self, write_bounce: Callable[[], object]) -> bool:
        """Keep a bounce until the breaker decides; False (write it now) once it has."""
        if not self.deciding:
            return False
        self.held.append(write_bounce)
        return True

    def release(self) -> None:
        held, self.held = self.held, []
        for write_bounce in held:
            write_bounce()

    @property
    def tripped(self) -> bool:
        return self.seen > 0 and self.refused == self.seen

    def decide(self) -> str | None:
        """After the window (or a stop inside it): the one line to stop the run with, if every
        delivery seen was refused; else None, and the held bounces are written."""
        if not self.tripped:
            self.release()
            self.window = self.seen  # decided
            return None
        self.held = []
        self.window = self.seen
        return trip_message(self.first_refusal, self.seen)


def trip_message(verdict: Verdict | None, count: int) -> str:
    reply = verdict.reply if verdict else "?"
    every = f"every one of the first {count} recipients" if count > 1 else "the only recipient"
    status = verdict.status if verdict else None
    if verdict is not None and verdict.effect == "sender" and status is None:
        cause = "check NEWSLETTER_FROM and that the server lets this login send as it"
    elif status and status.startswith("5.1."):
        cause = (
            "the server does not know these addresses: check that NEWSLETTER_SMTP_HOST relays "
            "to the internet, not only to its own mailboxes"
        )
    else:
        cause = "check NEWSLETTER_SMTP_* and the provider's sandbox or verification"
    return f"the server refuses {every} ({reply}): {cause}; no reader was marked bounced"
