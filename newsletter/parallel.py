"""The parallel machinery of a send: many connections in one process, signing in others.

Waiting on the relay is I/O: each SMTP connection is a thread, and smtplib lets go of Python's
interpreter lock while it waits, so hundreds of connections fit in one process. Signing a
message is CPU work: a big signed send hands its DKIM signatures to a process on each other
core it may use (`signing.SigningPool`), ahead of the connections, while this process sends
and keeps the send log, exactly as an unsigned send does.

Exactly-once holds per connection: it takes a reader, sends, writes the outcome in its own
committed write, and only then takes the next. A send killed at any moment leaves at most one
message per connection accepted but unrecorded. `NEWSLETTER_SMTP_RATE` is one budget drawn on
by every connection.
"""

from __future__ import annotations

import itertools
import os
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlite_utils import Database

from . import db as store
from .config import Settings
from .delivery import deliver
from .errors import TransportError
from .mailer import Transport
from .refusals import CircuitBreaker
from .run import INTERRUPTED, Run
from .signing import Prepared, SigningPool

# Below these, one more connection or process costs more than it gains: a connection is a
# TCP (and TLS, and login) handshake, a process half a second of start-up and 50 MB.
READERS_PER_CONNECTION = 10
READERS_PER_SIGNER = 2000
# How long a stopped run's connections may take to finish the message in hand.
STOP_GRACE_SECONDS = 5.0
ABORT_GRACE_SECONDS = 2.0  # and then, once their sockets are shut, to write down the outcome


@dataclass(frozen=True)
class Layout:
    """How a send spreads: this many connections, and this many signing processes (none:
    each connection signs its own messages)."""

    connections: int
    signers: int = 0


def plan(settings: Settings, due: int, *, signed: bool, cores: int | None = None) -> Layout:
    """NEWSLETTER_SMTP_CONNECTIONS, and for a big signed send a signing process on each
    core but the one this process sends from.

    An unsigned message costs about 20 µs to build; the rest of a delivery (SMTP, the send
    log) is mostly waiting, which threads overlap. An RSA signature costs a quarter of a
    millisecond of CPU under the interpreter lock: signing processes move it to the other
    cores. Measured on two cores, one signing process beside the sender sent 0.86-0.92 × the
    unsigned rate and two only 0.74-0.77 (they took the sender's core). On one core, or for a
    few readers, their start-up (half a second, 50 MB each) buys nothing.
    """
    if settings.uses_outbox:
        return Layout(1)  # one outbox writer
    cores = cores or usable_cores()
    connections = max(1, min(settings.smtp_connections, due // READERS_PER_CONNECTION))
    signers = min(cores - 1, due // READERS_PER_SIGNER) if signed else 0
    return Layout(connections, signers)


def usable_cores() -> int:
    """The cores this process may run on (`taskset` narrows them), or all where the OS
    cannot say (macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def watch_first_deliveries(run: Run, db: Database, transport: Transport) -> int:
    """Deliver the first NEWSLETTER_BREAKER_DELIVERIES one by one, holding their bounces
    (see refusals.CircuitBreaker); if all were refused, the run is halted. Returns the last
    delivery id watched: the rest of the run starts after it."""
    queued = run.report.due if run.queued is None else run.queued
    run.breaker = CircuitBreaker(min(run.settings.breaker_deliveries, queued))
    readers = store.iter_outstanding(db, run.slug, variant=run.variant)
    last_id = 0

    def next_watched() -> Prepared | None:
        nonlocal last_id
        if run.stop.is_set() or not run.breaker.deciding:
            return None
        recipient = next(readers, None)
        if recipient is None:
            return None
        last_id = recipient.delivery_id
        return run.prepare(recipient)

    _worker(run, next_watched, transport, db, close=False)
    stop = run.breaker.decide()
    if stop is not None:  # the likelier cause than "N failures in a row", which may have fired
        run.report.failed += run.report.bounced
        run.report.bounced = 0
        run.report.stopped = stop
        run.stop.set()
    return last_id


def run_connections(
    run: Run,
    db: Database,
    connections: int,
    first: Transport,
    *,
    after_id: int = 0,
    signers: SigningPool | None = None,
) -> None:
    """Deliver to everyone queued after `after_id`: one connection in this thread, or one
    thread each; with `signers`, the messages come signed from them."""
    readers = store.iter_outstanding(db, run.slug, after_id=after_id, variant=run.variant)

    def take(count: int) -> list[store.Recipient]:
        with run.db_lock:
            return list(itertools.islice(readers, count))

    def prepare_here() -> Prepared | None:
        recipient = take(1)
        return run.prepare(recipient[0]) if recipient else None

    if signers is not None:
        next_prepared = signers.ahead(take, prepare_here, run.stop.is_set, run.halt)
    else:
        next_prepared = prepare_here

    def next_reader() -> Prepared | None:
        if run.stop.is_set():
            return None  # what is left stays pending for the next run
        return next_prepared()

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
    _join_or_abort(run, threads)
    if errors:
        raise errors[0]


def _join_or_abort(run: Run, threads: list[threading.Thread]) -> None:
    """Wait for the connections; once the run is stopped, give them STOP_GRACE_SECONDS to
    finish the message in hand, then shut their sockets, so a server that does not answer
    holds a stop for seconds, not NEWSLETTER_SMTP_TIMEOUT (30 s, per read). A thread still
    busy ABORT_GRACE_SECONDS later (still greeting, which no socket of the run's reaches yet)
    is left to end with the process: it holds at most one message accepted but unrecorded,
    as a killed send would."""
    stopped_at: float | None = None
    aborted = False
    while any(thread.is_alive() for thread in threads):
        try:
            next(t for t in threads if t.is_alive()).join(timeout=0.1)
        except KeyboardInterrupt:  # Ctrl-C: the connections finish the message in hand
            run.halt(INTERRUPTED)
        except StopIteration:
            break
        if not run.stop.is_set():
            continue
        now = time.monotonic()
        if stopped_at is None:
            stopped_at = now
        elif not aborted and now - stopped_at > STOP_GRACE_SECONDS:
            run.abort_transports()
            aborted = True
        elif aborted and now - stopped_at > STOP_GRACE_SECONDS + ABORT_GRACE_SECONDS:
            return


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
    next_recipient: Callable[[], Prepared | None],
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
