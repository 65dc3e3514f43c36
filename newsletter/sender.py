"""The send: one post to every reader who still needs it, each delivery logged once.

How exactly-once holds: before the run, every active reader without a delivery of this post
gets a `pending` row. Each worker takes a pending row, sends, and writes the outcome in its own
committed write before it takes the next one. A run killed at any moment leaves at most one
message per connection accepted but unrecorded; the next run sends it again with the same
Message-ID, which mail systems use to drop the copy.
"""

from __future__ import annotations

import fcntl
import functools
import multiprocessing
import multiprocessing.queues
import os
import queue
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
from .refusals import CircuitBreaker, Verdict, classify_refusal
from .render import RenderedIssue, render_issue, template_environment
from .send_lock import send_lock as hold_send_lock
from .tokens import ReaderTokens, reader_tokens
from .verp import verp_for

Outcome = Literal["sent", "failed", "bounced", "skipped"]
ProgressCallback = Callable[[Outcome], None]
TransportFactory = Callable[[Settings], Transport]
MAX_BACKOFF_SECONDS = 60.0
READERS_PER_CONNECTION = 100
REPORT_SECONDS = 0.1


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


def prepare_issue(settings: Settings, post: Post) -> RenderedIssue:
    return render_issue(post, settings, template_environment(settings.templates_dir))


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
        tokens = reader_tokens(settings, db)
        messages = IssueMessages(issue, settings, signer=signer, verp=verp_for(settings, tokens))
        if dry_run:
            _dry_run(db, post.slug, messages, tokens, report, progress)
        else:
            with hold_send_lock(settings.db_path):
                store.mark_interrupted_sends(db)
                store.queue_deliveries(db, post.slug)
                report.due = store.count_outstanding(db, post.slug)
                report.already_sent = store.count_delivered(db, post.slug)
                if report.due:
                    send_id = store.start_send(db, post.slug, "real")
                    run = _Run(
                        settings,
                        post.slug,
                        send_id,
                        messages,
                        tokens,
                        report,
                        progress,
                        transport_factory,
                    )
                    _run(run, db)
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
    for subscriber in store.iter_due(db, slug):
        public_id = subscriber.public_id or ""
        envelope = messages.for_reader(
            public_id, subscriber.email, subscriber.name, tokens.unsubscribe(public_id, slug)
        )
        report.due += 1
        report.message_bytes += len(envelope.data)
        if progress:
            progress("sent")


class _RateLimiter:
    """At most `rate` sends a second from this process (providers such as SES cap the rate;
    a parallel send gives each process its share)."""

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
    stop: threading.Event = field(default_factory=threading.Event)
    rate_share: int = 1  # this many processes share NEWSLETTER_SMTP_RATE
    consecutive_failures: int = 0
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)  # #13
    after_id: int = 0  # #13: the deliveries the breaker watched, up to this id, are done

    def __post_init__(self) -> None:
        rate = self.settings.smtp_rate
        self.rate = _RateLimiter(rate / self.rate_share if rate else None)
        self.lock = threading.Lock()

    def __getstate__(self) -> dict[str, object]:
        # What a child process needs; its own lock, stop and limiter are made there.
        state = dict(self.__dict__)
        for local in ("lock", "stop", "rate", "progress"):
            state.pop(local, None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.progress = None
        self.stop = threading.Event()
        self.__post_init__()

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


@dataclass
class _Share(_Run):
    """A child's view of the run: outcomes go to the parent, which keeps the tallies.

    They go in small batches (every REPORT_SECONDS at the most), in order, so the parent
    still sees failures in a row as a row.
    """

    outcomes: multiprocessing.queues.Queue[list[tuple[str, str | None]]] | None = None
    pending: list[tuple[str, str | None]] = field(default_factory=list)
    reported_at: float = 0.0

    def count(self, outcome: Outcome, failure: str | None = None) -> None:
        self.pending.append((outcome, failure))
        if time.monotonic() - self.reported_at >= REPORT_SECONDS:
            self.flush()

    def halt(self, reason: str) -> None:
        self.pending.append(("halt", reason))
        self.flush()
        self.stop.set()

    def flush(self) -> None:
        assert self.outcomes is not None
        if self.pending:
            self.outcomes.put(self.pending)
            self.pending = []
        self.reported_at = time.monotonic()


def _connections(settings: Settings, due: int) -> int:
    """NEWSLETTER_SMTP_CONNECTIONS, but one per READERS_PER_CONNECTION readers at the most:
    starting a process costs a few tenths of a second, which a short list does not repay."""
    if not settings.uses_smtp:
        return 1
    return max(1, min(settings.smtp_connections, due // READERS_PER_CONNECTION))


def _watch_first_deliveries(
    run: _Run, db: Database, readers: Iterator[store.Recipient], transport: Transport
) -> bool:
    """#13: deliver the first NEWSLETTER_BREAKER_DELIVERIES here, one by one, holding their
    bounces; True if they were all refused and the run stopped (see refusals.CircuitBreaker)."""
    run.breaker = CircuitBreaker(min(run.settings.breaker_deliveries, run.report.due))

    def next_watched() -> store.Recipient | None:
        recipient = next(readers, None) if run.breaker.deciding else None
        run.after_id = recipient.delivery_id if recipient else run.after_id
        return recipient

    _worker(run, next_watched, transport, db)
    stop = run.breaker.decide()
    if stop is not None:
        run.report.failed += run.report.bounced
        run.report.bounced = 0
        run.report.stopped = stop
        run.stop.set()
    return run.stop.is_set()


def _run(run: _Run, db: Database) -> None:
    """Deliver to everyone queued, over one connection here or several in processes."""
    settings, report = run.settings, run.report
    try:
        first = run.transport_factory(settings)  # fail here, before any process, if unreachable
    except TransportError as e:
        store.finish_send(
            db, run.send_id, status="stopped", sent=0, failed=0, bounced=0, skipped=0, note=str(e)
        )
        raise
    connections = _connections(settings, report.due)
    try:
        readers = store.iter_outstanding(db, run.slug)
        if _watch_first_deliveries(run, db, readers, first):  # #13: the circuit breaker
            return
        if connections == 1:  # in this process: nothing to hand over
            _worker(run, lambda: next(readers, None), first, db)
        else:
            first.close()  # it proved the server is there; each process opens its own
            _run_parallel(run, connections)
    except KeyboardInterrupt:  # Ctrl-C: a clean stop, reported like any other
        run.halt("interrupted; run `newsletter send` again to finish")
    except BaseException:
        run.halt("interrupted")
        raise
    finally:
        store.finish_send(
            db,
            run.send_id,
            status="stopped" if report.stopped else "finished",
            sent=report.sent,
            failed=report.failed,
            bounced=report.bounced,
            skipped=report.skipped,
            note=report.stopped,
        )


def _run_parallel(run: _Run, connections: int) -> None:
    """One process per SMTP connection, each sending its own share of the readers.

    Processes rather than threads: building and logging a message is Python work, and threads
    would take turns on one core. The children report each outcome here, where the tallies,
    the progress bar and the decision to stop early live.
    """
    context = multiprocessing.get_context("spawn")  # fork is unsafe beside threads
    outcomes = context.Queue()
    stop = context.Event()
    children = [
        context.Process(
            target=_send_share,
            args=(run, shard, connections, outcomes, stop, os.getpid()),
            name=f"newsletter-send-{shard}",
            daemon=True,
        )
        for shard in range(connections)
    ]
    for child in children:
        child.start()
    done = 0
    try:
        while done < len(children):
            try:
                batch = outcomes.get(timeout=0.5)
            except queue.Empty:
                if not any(child.is_alive() for child in children):
                    run.halt("a sending process ended without a word; see the log")
                    break
                continue
            for kind, detail in batch:
                if kind == "done":
                    done += 1
                elif kind == "halt":
                    run.halt(detail or "stopped")
                else:
                    run.count(kind, detail)  # type: ignore[arg-type]
            if run.stop.is_set():
                stop.set()
    finally:
        stop.set()
        for child in children:
            child.join(timeout=run.settings.smtp_timeout + 5)
            if child.is_alive():
                child.kill()


def _send_share(
    run: _Run,
    shard: int,
    shards: int,
    outcomes: multiprocessing.queues.Queue[list[tuple[str, str | None]]],
    stop: threading.Event,
    parent: int,
) -> None:
    """A child process: deliver the readers of one share, tell the parent each outcome."""
    db = store.open_db(run.settings.db_path)
    share = _Share(
        settings=run.settings,
        slug=run.slug,
        send_id=run.send_id,
        messages=run.messages,
        tokens=run.tokens,
        report=SendReport(slug=run.slug, title=run.report.title),
        progress=None,
        transport_factory=run.transport_factory,
        stop=stop,
        rate_share=shards,
        outcomes=outcomes,
    )
    readers = store.iter_outstanding(
        db, run.slug, shard=shard, shards=shards, after_id=run.after_id
    )

    def next_reader() -> store.Recipient | None:
        if os.getppid() != parent:  # the parent was killed: stop after the message in hand
            stop.set()
            return None
        return next(readers, None)

    try:
        _worker(share, next_reader, None, db)
    except BaseException as e:
        share.pending.append(("halt", f"unexpected error: {type(e).__name__}: {e}"))
    finally:
        db.close()
        share.pending.append(("done", None))
        share.flush()


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
        recipient.public_id,
        recipient.email,
        recipient.name,
        run.tokens.unsubscribe(recipient.public_id, run.slug),
    )
    reply = ""
    verdict: Verdict | None = None
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
            verdict = classify_refusal(e.reply, permanent=e.permanent, stage=e.stage)  # #13
            if verdict.against_reader:
                bounce = functools.partial(
                    store.record_bounce,
                    db,
                    recipient.delivery_id,
                    recipient.subscriber_id,
                    attempts=attempts,
                    reply=e.reply,
                    message_id=envelope.message_id,
                    send_id=run.send_id,
                    hard=verdict.effect == "bounce",
                    bounce_limit=settings.bounce_limit,
                )
                if run.breaker.hold(bounce):  # #13: failed until the breaker has decided
                    record("failed", e.reply, envelope.message_id)
                else:
                    bounce()
                run.breaker.failed(verdict)  # #13
                run.count("bounced")
                return transport
            if verdict.permanent:  # the sender's or the server's fault: no retry helps
                break
            continue
        record("sent", reply, envelope.message_id)
        run.breaker.delivered()  # #13
        run.count("sent")
        return transport
    run.breaker.failed(verdict)  # #13
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
        tokens = reader_tokens(settings, db)
        messages = IssueMessages(
            issue, settings, signer=signer_from_settings(settings), verp=verp_for(settings, tokens)
        )
        subscriber = store.get_subscriber(db, email)
        # Someone not on the list gets a link that leads to "not on the list".
        token = tokens.unsubscribe(subscriber.public_id if subscriber else None, post.slug)
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
