"""The send: one post to every reader who still needs it, each delivery logged once.

How exactly-once holds: before the run, every active reader without a delivery of this post
gets a `pending` row. Each worker takes a pending row, sends, and writes the outcome in its own
committed write before it takes the next one. A run killed at any moment leaves at most one
message per connection accepted but unrecorded; the next run sends it again with the same
Message-ID, which mail systems use to drop the copy.
"""

from __future__ import annotations

import fcntl
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sqlite_utils import Database

from . import db as store
from .addresses import normalise_address
from .config import Settings
from .dkim import signer_from_settings
from .errors import DeliveryRefused, SendError, TransportError
from .mailer import Transport, open_transport
from .message import IssueMessages
from .posts import Post
from .render import RenderedIssue, render_issue, template_environment
from .tokens import ReaderTokens

Outcome = Literal["sent", "failed", "bounced", "skipped"]
ProgressCallback = Callable[[Outcome], None]
TransportFactory = Callable[[Settings], Transport]
MAX_BACKOFF_SECONDS = 60.0
# Enhanced status codes (RFC 3463) for a bad address: the reader cannot be reached at all.
_HARD_BOUNCE = re.compile(r"\b5\.1\.(1|2|3|10)\b")


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


def secret_keys(settings: Settings, db: Database) -> tuple[str, ...]:
    """The configured keys, or the one kept in the database so old links keep working."""
    return settings.secret_keys or (store.stored_secret_key(db),)


def reader_tokens(settings: Settings, db: Database) -> ReaderTokens:
    return ReaderTokens(secret_keys(settings, db))


def prepare_issue(settings: Settings, post: Post) -> RenderedIssue:
    return render_issue(post, settings, template_environment(settings.templates_dir))


def count_due(db: Database, slug: str) -> int:
    """How many active readers still need this post (read only: nothing is queued)."""
    return db.execute(
        "SELECT count(*) FROM subscribers s WHERE s.status = 'active' AND NOT EXISTS"
        " (SELECT 1 FROM deliveries d WHERE d.slug = ? AND d.subscriber_id = s.id"
        " AND d.status IN ('sent', 'bounced'))",
        [slug],
    ).fetchone()[0]


@contextmanager
def send_lock(db_path: Path) -> Iterator[None]:
    """One real send per database at a time; the OS drops the lock if the process dies."""
    lock_path = db_path.with_name(db_path.name + "-send.lock")
    handle = open(lock_path, "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SendError(
                "another `newsletter send` is running on this database; wait for it to finish"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


def send_post(
    settings: Settings,
    post: Post,
    *,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    transport_factory: TransportFactory = open_transport,
) -> SendReport:
    """Send `post` to every active reader who has not had it; return what happened."""
    settings.sender  # noqa: B018 - fail before anything else when From is missing
    started = time.monotonic()
    report = SendReport(slug=post.slug, title=post.title, dry_run=dry_run)
    issue = prepare_issue(settings, post)
    signer = signer_from_settings(settings)
    db = store.open_db(settings.db_path)
    try:
        messages = IssueMessages(issue, settings, signer=signer)
        tokens = reader_tokens(settings, db)
        if dry_run:
            _dry_run(db, post.slug, messages, tokens, report, progress)
        else:
            with send_lock(settings.db_path):
                store.mark_interrupted_sends(db)
                store.queue_deliveries(db, post.slug)
                report.due = store.count_outstanding(db, post.slug)
                report.already_sent = store.count_delivered(db, post.slug)
                if report.due:
                    _run(
                        settings,
                        db,
                        post.slug,
                        messages,
                        tokens,
                        report,
                        progress,
                        transport_factory,
                    )
    finally:
        db.close()
    report.seconds = time.monotonic() - started
    return report


def _dry_run(
    db: Database,
    slug: str,
    messages: IssueMessages,
    tokens: ReaderTokens,
    report: SendReport,
    progress: ProgressCallback | None,
) -> None:
    report.already_sent = store.count_delivered(db, slug)
    for subscriber in store.iter_subscribers(db, "active"):
        if _already_done(db, slug, subscriber.id):
            continue
        envelope = messages.for_reader(
            subscriber.id, subscriber.email, subscriber.name, tokens.unsubscribe(subscriber.id)
        )
        report.due += 1
        report.message_bytes += len(envelope.data)
        if progress:
            progress("sent")


def _already_done(db: Database, slug: str, subscriber_id: int) -> bool:
    return (
        db.execute(
            "SELECT 1 FROM deliveries WHERE slug = ? AND subscriber_id = ?"
            " AND status IN ('sent', 'bounced')",
            [slug, subscriber_id],
        ).fetchone()
        is not None
    )


class _RateLimiter:
    """At most `rate` sends a second across all connections (for providers that cap it)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = time.monotonic()
        self.lock = threading.Lock()

    def wait(self, stop: threading.Event) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            at = max(self.next_at, now)
            self.next_at = at + self.interval
        if at > now:
            stop.wait(at - now)


@dataclass
class _Run:
    """What the connections of one send share: the message maker, the log, the tallies."""

    settings: Settings
    slug: str
    send_id: int
    messages: IssueMessages
    tokens: ReaderTokens
    report: SendReport
    progress: ProgressCallback | None
    transport_factory: TransportFactory
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    consecutive_failures: int = 0

    def __post_init__(self) -> None:
        self.rate = _RateLimiter(self.settings.smtp_rate)

    def count(self, outcome: Outcome, failure: str | None = None) -> None:
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

    def halt(self, reason: str) -> None:
        if self.report.stopped is None:
            self.report.stopped = reason
        self.stop.set()


def _run(
    settings: Settings,
    db: Database,
    slug: str,
    messages: IssueMessages,
    tokens: ReaderTokens,
    report: SendReport,
    progress: ProgressCallback | None,
    transport_factory: TransportFactory,
) -> None:
    send_id = store.start_send(db, slug, "real")
    run = _Run(settings, slug, send_id, messages, tokens, report, progress, transport_factory)
    try:
        first = transport_factory(settings)  # fail here, before any thread, if unreachable
    except TransportError as e:
        store.finish_send(
            db, send_id, status="stopped", sent=0, failed=0, bounced=0, skipped=0, note=str(e)
        )
        raise
    connections = min(settings.smtp_connections if settings.uses_smtp else 1, report.due)
    try:
        if connections == 1:  # no threads: nothing to hand over, no lock to pass around
            readers = store.iter_outstanding(db, slug)
            _worker(run, lambda: next(readers, None), first, db)
        else:
            _run_parallel(run, db, connections, first)
    except BaseException:
        run.halt("interrupted")
        raise
    finally:
        store.finish_send(
            db,
            send_id,
            status="stopped" if report.stopped else "finished",
            sent=report.sent,
            failed=report.failed,
            bounced=report.bounced,
            skipped=report.skipped,
            note=report.stopped,
        )


def _run_parallel(run: _Run, db: Database, connections: int, first: Transport) -> None:
    """One thread per SMTP connection, fed by this one from the stream of pending readers."""
    work: queue.Queue[store.Recipient | None] = queue.Queue(maxsize=connections * 8)

    def worker(transport: Transport | None) -> None:
        worker_db = store.open_db(run.settings.db_path)
        try:
            _worker(run, work.get, transport, worker_db)
        finally:
            worker_db.close()

    threads = [
        threading.Thread(target=worker, args=(first if i == 0 else None,), daemon=True)
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()
    try:
        for recipient in store.iter_outstanding(db, run.slug):
            while not run.stop.is_set():
                try:
                    work.put(recipient, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if run.stop.is_set():
                break
    finally:
        for _ in threads:
            while any(t.is_alive() for t in threads):
                try:
                    work.put(None, timeout=0.2)
                    break
                except queue.Full:
                    continue
        for thread in threads:
            thread.join()


def _worker(
    run: _Run,
    next_recipient: Callable[[], store.Recipient | None],
    transport: Transport | None,
    db: Database,
) -> None:
    """One connection's loop: deliver until the readers run out or the run is halted."""
    try:
        while (recipient := next_recipient()) is not None:
            if run.stop.is_set():
                continue  # drain: what is left stays pending for the next run
            try:
                transport = _deliver(run, db, recipient, transport)
            except TransportError as e:  # the login was refused mid-run: no point going on
                run.halt(str(e))
            except Exception as e:  # keep the run's bookkeeping whole; report, do not hide
                run.halt(f"unexpected error: {type(e).__name__}: {e}")
                raise
    finally:
        if transport is not None:
            transport.close()


def _deliver(
    run: _Run, db: Database, recipient: store.Recipient, transport: Transport | None
) -> Transport | None:
    """One reader: send with retries, then record the outcome. Returns the live transport."""
    settings = run.settings

    def record(status: store.DeliveryStatus, reply: str, message_id: str | None) -> None:
        store.record_delivery(
            db,
            recipient.delivery_id,
            status=status,
            attempts=attempts,
            reply=reply,
            message_id=message_id,
            send_id=run.send_id,
        )

    attempts = recipient.attempts
    if not store.is_active(db, recipient.subscriber_id):  # unsubscribed since the run began
        record("skipped", "no longer subscribed", None)
        run.count("skipped")
        return transport
    envelope = run.messages.for_reader(
        recipient.subscriber_id,
        recipient.email,
        recipient.name,
        run.tokens.unsubscribe(recipient.subscriber_id),
    )
    reply = ""
    for attempt in range(1, settings.smtp_max_attempts + 1):
        if attempt > 1:
            delay = min(settings.smtp_retry_delay * 2 ** (attempt - 2), MAX_BACKOFF_SECONDS)
            if run.stop.wait(delay):
                break
        run.rate.wait(run.stop)
        attempts += 1
        try:
            if transport is None:
                transport = run.transport_factory(settings)
            reply = transport.send(envelope)
        except TransportError as e:
            if not e.temporary:
                record("failed", str(e), envelope.message_id)
                run.count("failed", f"{recipient.email}: {e}")
                raise
            transport, reply = None, str(e)
            continue
        except DeliveryRefused as e:
            reply = e.reply
            if e.bounced:
                store.record_bounce(
                    db,
                    recipient.delivery_id,
                    recipient.subscriber_id,
                    attempts=attempts,
                    reply=e.reply,
                    message_id=envelope.message_id,
                    send_id=run.send_id,
                    hard=bool(_HARD_BOUNCE.search(e.reply)),
                    bounce_limit=settings.bounce_limit,
                )
                run.count("bounced")
                return transport
            if e.permanent:  # refused at MAIL FROM: the sender, not the reader; no retry helps
                break
            continue
        record("sent", reply, envelope.message_id)
        run.count("sent")
        return transport
    record("failed", reply, envelope.message_id)
    run.count("failed", f"{recipient.email}: {reply}")
    return transport


def send_test(
    settings: Settings,
    post: Post,
    to: str,
    *,
    transport_factory: TransportFactory = open_transport,
) -> str:
    """Send one copy of `post` to `to`, on the list or not; logged as a test, not a delivery."""
    email = normalise_address(to)
    issue = prepare_issue(settings, post)
    db = store.open_db(settings.db_path)
    try:
        messages = IssueMessages(issue, settings, signer=signer_from_settings(settings))
        tokens = reader_tokens(settings, db)
        subscriber = store.get_subscriber(db, email)
        # Someone not on the list gets a link that leads to "not on the list" (id 0).
        token = tokens.unsubscribe(subscriber.id if subscriber else 0)
        envelope = messages.for_test(email, subscriber.name if subscriber else "", token)
        send_id = store.start_send(db, post.slug, "test")
        transport = transport_factory(settings)
        try:
            reply = transport.send(envelope)
        except DeliveryRefused as e:
            store.record_test_delivery(
                db,
                post.slug,
                email,
                status="failed",
                reply=e.reply,
                message_id=envelope.message_id,
                send_id=send_id,
            )
            store.finish_send(
                db, send_id, status="finished", sent=0, failed=1, bounced=0, skipped=0, note=e.reply
            )
            raise SendError(
                f"the server did not take the test message for {email}: {e.reply}"
            ) from e
        finally:
            transport.close()
        store.record_test_delivery(
            db,
            post.slug,
            email,
            status="sent",
            reply=reply,
            message_id=envelope.message_id,
            send_id=send_id,
        )
        store.finish_send(db, send_id, status="finished", sent=1, failed=0, bounced=0, skipped=0)
        return reply
    finally:
        db.close()
