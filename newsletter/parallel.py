"""The parallel machinery of a send: many connections per process, one process per core.

Waiting on the relay is I/O: each SMTP connection is a thread, and smtplib lets go of Python's
interpreter lock while it waits, so hundreds of connections fit in one process. Signing a
message is CPU work: a signed send with enough readers runs one process per core it may use
(`os.sched_getaffinity`), each with its share of the connections and of the readers (delivery
id modulo the number of processes), so no two connections ever take the same reader.

Exactly-once holds per connection: it takes a reader, sends, writes the outcome in its own
committed write, and only then takes the next. A send killed at any moment leaves at most one
message per connection accepted but unrecorded. `NEWSLETTER_SMTP_RATE` is one budget in shared
memory, drawn on by every connection of every process.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import multiprocessing.sharedctypes
import os
import queue
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlite_utils import Database

from . import db as store
from .config import Settings
from .delivery import Outcome, ProgressCallback, TransportFactory, deliver
from .errors import TransportError
from .mailer import Transport
from .message import IssueMessages
from .refusals import CircuitBreaker
from .tokens import ReaderTokens

# Below these, one more connection or process costs more than it gains: a connection is a
# TCP (and TLS, and login) handshake, a process half a second of start-up and 50 MB.
READERS_PER_CONNECTION = 10
READERS_PER_PROCESS = 2000
REPORT_SECONDS = 0.1
INTERRUPTED = "interrupted; run `newsletter send` again to finish"
_SharedBatch = list[tuple[str, str | None]]


class StopFlag(Protocol):
    def is_set(self) -> bool: ...
    def set(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...


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


@dataclass(frozen=True)
class Layout:
    """How a send spreads: this many processes, this many connections in all."""

    processes: int
    connections: int

    def threads(self, shard: int) -> int:
        """The connections of process `shard`: an even split, the first ones one more."""
        base, extra = divmod(self.connections, self.processes)
        return base + (1 if shard < extra else 0)


def plan(settings: Settings, due: int, *, signed: bool, cores: int | None = None) -> Layout:
    """NEWSLETTER_SMTP_CONNECTIONS, and for a signed send one process per core.

    An unsigned message costs about 20 µs to build; the rest of a delivery (SMTP, the send
    log) is mostly waiting, which threads overlap. Measured, a second process made an unsigned
    send slower (its start-up and 50 MB buy nothing), while an RSA signature costs a quarter of
    a millisecond of CPU, which a second core halves.
    """
    if not settings.uses_smtp:
        return Layout(1, 1)  # one outbox writer
    cores = cores or usable_cores()
    connections = max(1, min(settings.smtp_connections, due // READERS_PER_CONNECTION))
    processes = min(cores, connections, due // READERS_PER_PROCESS) if signed else 1
    return Layout(max(1, processes), connections)


def usable_cores() -> int:
    """The cores this process may run on (`taskset` narrows them), or all where the OS
    cannot say (macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class RateLimiter:
    """At most `rate` sends a second across every connection of every process of a send.

    The next free moment lives in shared memory, so the processes draw on one budget.
    """

    def __init__(self, rate: float | None, slot: multiprocessing.sharedctypes.Synchronized) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.slot = slot

    def wait(self, stop: StopFlag) -> None:
        if not self.interval:
            return
        with self.slot.get_lock():
            now = time.monotonic()
            at = max(self.slot.value, now)
            self.slot.value = at + self.interval
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
    # Held for every use of the process's SQLite connection; shared by all the processes.
    db_lock: Any = field(default_factory=threading.Lock)
    # Decided on the first deliveries, in the parent, before any other connection starts.
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)

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
class Share(Run):
    """A child process's view of the run: outcomes go to the parent, which keeps the tallies.

    They go in small batches (every REPORT_SECONDS at the most), in order, so the parent
    still sees failures in a row as a row.
    """

    outcomes: multiprocessing.queues.Queue[_SharedBatch] | None = None
    pending: _SharedBatch = field(default_factory=list)
    reported_at: float = 0.0

    def count(self, outcome: Outcome, failure: str | None = None) -> None:
        with self.lock:
            self.pending.append((outcome, failure))
            if time.monotonic() - self.reported_at >= REPORT_SECONDS:
                self._flush()

    def halt(self, reason: str) -> None:
        with self.lock:
            self.pending.append(("halt", reason))
            self._flush()
        self.stop.set()

    def finish(self, note: tuple[str, str | None]) -> None:
        with self.lock:
            self.pending.append(note)
            self._flush()

    def _flush(self) -> None:
        assert self.outcomes is not None
        if self.pending:
            self.outcomes.put(self.pending)
            self.pending = []
        self.reported_at = time.monotonic()


@dataclass(frozen=True)
class Job:
    """What a sending process needs to make its own `Share` (pickled to it)."""

    settings: Settings
    slug: str
    title: str
    send_id: int
    messages: IssueMessages
    tokens: ReaderTokens
    transport_factory: TransportFactory


def context() -> Any:
    # spawn: fork is unsafe beside threads (a progress bar's, SQLite's).
    return multiprocessing.get_context("spawn")


def rate_slot() -> multiprocessing.sharedctypes.Synchronized:
    return context().Value("d", 0.0)


def watch_first_deliveries(run: Run, db: Database, transport: Transport) -> int:
    """Deliver the first NEWSLETTER_BREAKER_DELIVERIES one by one, holding their bounces
    (see refusals.CircuitBreaker); if all were refused, the run is halted. Returns the last
    delivery id watched: the rest of the run starts after it."""
    run.breaker = CircuitBreaker(min(run.settings.breaker_deliveries, run.report.due))
    readers = store.iter_outstanding(db, run.slug)
    last_id = 0

    def next_watched() -> store.Recipient | None:
        nonlocal last_id
        if run.stop.is_set() or not run.breaker.deciding:
            return None
        recipient = next(readers, None)
        last_id = recipient.delivery_id if recipient else last_id
        return recipient

    _worker(run, next_watched, transport, db, close=False)
    stop = run.breaker.decide()
    if stop is not None:  # the likelier cause than "N failures in a row", which may have fired
        run.report.failed += run.report.bounced
        run.report.bounced = 0
        run.report.stopped = stop
        run.stop.set()
    return last_id


def run_connections(
    run: Run, db: Database, layout: Layout, first: Transport, *, after_id: int = 0
) -> None:
    """Deliver to everyone queued after `after_id`: here, or in one process per core."""
    if layout.processes == 1:
        readers = store.iter_outstanding(db, run.slug, after_id=after_id)
        _serve(run, db, readers, layout.connections, first, parent=None)
    else:
        first.close()  # it proved the server is there; each process opens its own
        _run_processes(run, layout, after_id)


def _serve(
    run: Run,
    db: Database,
    readers: Iterator[store.Recipient],
    connections: int,
    first: Transport | None,
    parent: int | None,
) -> None:
    """This process's connections: one in this thread, or one thread each."""

    def next_reader() -> store.Recipient | None:
        if run.stop.is_set():
            return None  # what is left stays pending for the next run
        if parent is not None and os.getppid() != parent:
            run.stop.set()  # the parent was killed: stop after the message in hand
            return None
        with run.db_lock:
            return next(readers, None)

    if connections == 1:
        _worker(run, next_reader, first, db)
        return
    _room_for_sockets(connections)
    errors: list[BaseException] = []

    def connection(transport: Transport | None) -> None:
        try:
            _worker(run, next_reader, transport, db)
        except BaseException as e:  # kept for the main thread, which re-raises it
            errors.append(e)

    threads = [
        threading.Thread(
            target=connection, args=(first if i == 0 else None,), name=f"smtp-{i}", daemon=True
        )
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            try:
                thread.join(timeout=0.2)
            except KeyboardInterrupt:  # Ctrl-C: the connections finish the message in hand
                run.halt(INTERRUPTED)
    if errors:
        raise errors[0]


def _room_for_sockets(connections: int) -> None:
    """Each connection is a socket: lift the soft limit on open files (often 1,024) towards
    the hard one, which 1,000 connections would otherwise reach."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 100  # the database, the log, the interpreter's own
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(
            resource.RLIMIT_NOFILE,
            (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard),
        )


def _worker(
    run: Run,
    next_recipient: Callable[[], store.Recipient | None],
    transport: Transport | None,
    db: Database,
    *,
    close: bool = True,
) -> None:
    """One connection's loop: deliver until the readers run out or the run is halted."""
    try:
        while (recipient := next_recipient()) is not None:
            try:
                transport = deliver(run, db, recipient, transport)
            except TransportError as e:  # the login was refused mid-run: no point going on
                run.halt(str(e))
            except Exception as e:  # keep the run's bookkeeping whole; report, do not hide
                run.halt(f"unexpected error: {type(e).__name__}: {e}")
                raise
    finally:
        if transport is not None and close:
            transport.close()


def _run_processes(run: Run, layout: Layout, after_id: int) -> None:
    """One process per core, each with its share of readers and connections.

    The children report each outcome here, where the tallies, the progress bar and the
    decision to stop early live.
    """
    ctx = context()
    outcomes = ctx.Queue()
    stop = ctx.Event()
    # One writer at a time across the processes: SQLite would make a loser sleep a millisecond
    # or more in its busy handler; a shared lock wakes the next writer at once.
    log_lock = ctx.Lock()
    job = Job(
        run.settings,
        run.slug,
        run.report.title,
        run.send_id,
        run.messages,
        run.tokens,
        run.transport_factory,
    )
    children = [
        ctx.Process(
            target=_send_share,
            args=(
                job,
                shard,
                layout,
                after_id,
                outcomes,
                stop,
                run.rate.slot,
                log_lock,
                os.getpid(),
            ),
            name=f"newsletter-send-{shard}",
            daemon=True,
        )
        for shard in range(layout.processes)
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
            except KeyboardInterrupt:  # Ctrl-C: tell the children, then keep counting
                run.halt(INTERRUPTED)
                stop.set()
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
    job: Job,
    shard: int,
    layout: Layout,
    after_id: int,
    outcomes: multiprocessing.queues.Queue[_SharedBatch],
    stop: StopFlag,
    slot: Any,
    log_lock: Any,
    parent: int,
) -> None:
    """A child process: deliver the readers of one share, tell the parent each outcome."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to decide
    db = store.open_db(job.settings.db_path)
    share = Share(
        settings=job.settings,
        slug=job.slug,
        send_id=job.send_id,
        messages=job.messages,
        tokens=job.tokens,
        report=SendReport(slug=job.slug, title=job.title),
        progress=None,
        transport_factory=job.transport_factory,
        stop=stop,
        rate=RateLimiter(job.settings.smtp_rate, slot),
        outcomes=outcomes,
        db_lock=log_lock,
    )
    readers = store.iter_outstanding(
        db, job.slug, shard=shard, shards=layout.processes, after_id=after_id
    )
    try:
        _serve(share, db, readers, layout.threads(shard), None, parent)
    except BaseException as e:
        share.finish(("halt", f"unexpected error: {type(e).__name__}: {e}"))
    finally:
        db.close()
        share.finish(("done", None))
