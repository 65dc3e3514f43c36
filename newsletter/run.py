"""What one run of a send shares: its settings, message maker, tallies, stop flag and rate.

`sender` makes a Run, `parallel` spreads it over connections, `delivery` sends one reader's
message under it; each of them reads this module and none of them the others' internals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from . import db as store
from .config import Settings
from .mailer import Transport
from .message import IssueMessages
from .refusals import CircuitBreaker
from .signing import Prepared
from .tokens import ReaderTokens
from .vocab import DeliveryOutcome

ProgressCallback = Callable[[DeliveryOutcome], None]
TransportFactory = Callable[[Settings], Transport]
INTERRUPTED = "interrupted; run `newsletter send` again to finish"


class StopFlag(Protocol):
    def is_set(self) -> bool: ...
    def set(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...


@runtime_checkable
class Abortable(Protocol):
    """A transport whose blocked read another thread can end (SMTP: its socket shut)."""

    def abort(self) -> None: ...


@dataclass
class SendReport:
    """What a run did, for the closing summary line."""

    slug: str
    title: str
    due: int = 0
    sent: int = 0
    failed: int = 0
    bounced: int = 0
    skipped: int = 0
    already_sent: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    stopped: str | None = None
    message_bytes: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def nothing_to_do(self) -> bool:
        return self.due == 0


class RateLimiter:
    """At most `rate` sends a second across every connection of a send."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next_free = 0.0
        self.lock = threading.Lock()

    def wait(self, stop: StopFlag) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            at = max(self.next_free, now)
            self.next_free = at + self.interval
        if at > now:
            stop.wait(at - now)


@dataclass
class Run:
    """What the connections of one process share: the message maker, the log, the tallies."""

    settings: Settings
    slug: str
    send_id: int
    messages: IssueMessages
    tokens: ReaderTokens
    report: SendReport
    progress: ProgressCallback | None
    transport_factory: TransportFactory
    stop: StopFlag
    rate: RateLimiter
    consecutive_failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Held for every use of the process's one SQLite connection.
    db_lock: threading.Lock = field(default_factory=threading.Lock)
    # A digest sends each set of posts (a variant) as a run of its own: this run's readers
    # are the deliveries of `slug` that carry `variant`, `queued` of them.
    variant: str | None = None
    queued: int | None = None
    # A post's audience (`schedule.audience`; none: every reader), asked again per delivery.
    topics: tuple[str, ...] = ()
    # Decided on the first deliveries, in the parent, before any other connection starts.
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    # Every transport opened for this run, for `abort_transports`.
    transports: list[Transport] = field(default_factory=list)

    @property
    def is_digest(self) -> bool:
        """A digest's run: its readers are asked `reads_digest` again, not a post's rule."""
        return store.is_digest(self.slug)

    def count(self, outcome: DeliveryOutcome, failure: str | None = None) -> None:
        with self.lock:
            setattr(self.report, outcome, getattr(self.report, outcome) + 1)
            if outcome == "failed":
                self.consecutive_failures += 1
                if failure and len(self.report.failures) < 20:
                    self.report.failures.append(failure)
                limit = self.settings.max_consecutive_failures
                if self.consecutive_failures >= limit and not self.stop.is_set():
                    self.halt(
                        f"{limit} deliveries in a row failed (last: {failure}); "
                        "the rest stay pending for the next run"
                    )
            elif outcome in ("sent", "bounced"):
                self.consecutive_failures = 0
            if self.progress:
                self.progress(outcome)

    def prepare(self, recipient: store.Recipient) -> Prepared:
        """A reader to send to here: the token made now, the message signed when sent."""
        return Prepared(recipient, self.tokens.unsubscribe(recipient.public_id, self.slug))

    def open_transport(self) -> Transport:
        """A new connection for one of the run's threads, kept where a stop can reach it."""
        transport = self.transport_factory(self.settings)
        with self.lock:
            self.transports.append(transport)
        return transport

    def abort_transports(self) -> None:
        """End every connection's wait on the server now: for a stop whose grace ran out."""
        with self.lock:
            transports = list(self.transports)
        for transport in transports:
            if isinstance(transport, Abortable):
                transport.abort()

    def halt(self, reason: str) -> None:
        if self.report.stopped is None:
            self.report.stopped = reason
        self.stop.set()
