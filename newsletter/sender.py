"""The send: one post to every reader who still needs it, each delivery logged once.

How exactly-once holds: before the run, every active reader without a delivery of this post
gets a `pending` row. Each connection takes a pending row, sends, and writes the outcome in its
own committed write before it takes the next one. A run killed at any moment leaves at most one
message per connection accepted but unrecorded; the next run sends it again with the same
Message-ID, which mail systems use to drop the copy.

This module runs the send; `parallel` spreads it over connections and processes; `delivery`
sends to one reader and records what happened.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database

from . import db as store
from .addresses import normalise_address
from .config import Settings
from .delivery import ProgressCallback, TransportFactory
from .dkim import signer_from_settings
from .errors import DeliveryRefused, SendError, TransportError
from .mailer import open_transport
from .message import IssueMessages
from .parallel import INTERRUPTED, RateLimiter, Run, SendReport, plan, rate_slot, run_connections
from .posts import Post
from .render import RenderedIssue, render_issue, template_environment
from .tokens import ReaderTokens


def secret_keys(settings: Settings, db: Database) -> tuple[str, ...]:
    """The configured keys, or the one kept in the database so old links keep working."""
    return settings.secret_keys or (store.stored_secret_key(db),)


def reader_tokens(settings: Settings, db: Database) -> ReaderTokens:
    return ReaderTokens(secret_keys(settings, db))


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
                    send_id = store.start_send(db, post.slug, "real")
                    run = Run(
                        settings,
                        post.slug,
                        send_id,
                        messages,
                        tokens,
                        report,
                        progress,
                        transport_factory,
                        stop=threading.Event(),
                        rate=RateLimiter(settings.smtp_rate, rate_slot()),
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
        envelope = messages.for_reader(
            subscriber.id, subscriber.email, subscriber.name, tokens.unsubscribe(subscriber.id)
        )
        report.due += 1
        report.message_bytes += len(envelope.data)
        if progress:
            progress("sent")


def _run(run: Run, db: Database) -> None:
    """Deliver to everyone queued; the send log's run row says how it ended."""
    settings, report = run.settings, run.report
    try:
        first = run.transport_factory(settings)  # fail here, before any process, if unreachable
    except TransportError as e:
        store.finish_send(
            db, run.send_id, status="stopped", sent=0, failed=0, bounced=0, skipped=0, note=str(e)
        )
        raise
    try:
        layout = plan(settings, report.due, signed=run.messages.signer is not None)
        run_connections(run, db, layout, first)
    except KeyboardInterrupt:  # Ctrl-C: a clean stop, reported like any other
        run.halt(INTERRUPTED)
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
