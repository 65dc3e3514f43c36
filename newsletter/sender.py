"""The send: one post to every reader who still needs it, each delivery logged once.

How exactly-once holds: before the run, every active reader without a delivery of this post
gets a `pending` row. Each connection takes a pending row, sends, and writes the outcome in its
own committed write before it takes the next one. A run killed at any moment leaves at most one
message per connection accepted but unrecorded; the next run sends it again with the same
Message-ID, which mail systems use to drop the copy.

This module runs the send; `parallel` spreads it over connections; `signing` signs ahead of
them for a big signed send; `delivery` sends to one reader and records what happened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from sqlite_utils import Database

from . import db as store
from .addresses import normalise_address
from .config import Settings
from .dkim import signer_from_settings
from .errors import DeliveryRefused, SendError, TransportError
from .keys import reader_tokens
from .mailer import open_transport
from .message import IssueMessages
from .parallel import plan, run_connections, watch_first_deliveries
from .posts import Post
from .render import RenderedIssue, render_issue, template_environment
from .run import INTERRUPTED, ProgressCallback, RateLimiter, Run, SendReport, TransportFactory
from .schedule import audience
from .send_lock import send_lock as hold_send_lock
from .signing import SigningPool, signing_pool
from .tokens import ReaderTokens
from .verp import verp_for


def prepare_issue(settings: Settings, post: Post) -> RenderedIssue:
    return render_issue(post, settings, template_environment(settings.templates_dir))


def send_post(
    settings: Settings,
    post: Post,
    *,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    transport_factory: TransportFactory = open_transport,
    topics: Sequence[str] = (),
) -> SendReport:
    """Send `post` to every reader who gets it and has not had it; return what happened.

    Who gets it: `schedule.audience` (the readers of `topics`, of its `audience:`, else of its
    `topics:`; everyone when it names none), active, not paused and not on the digest.
    """
    settings.sender  # noqa: B018 - fail before anything else when From is missing
    started = time.monotonic()
    report = SendReport(slug=post.slug, title=post.title, dry_run=dry_run)
    readers_of = audience(settings, post, topics)
    issue = prepare_issue(settings, post)
    signer = signer_from_settings(settings)
    db = store.open_db(settings.db_path)
    try:
        tokens = reader_tokens(settings, db)
        messages = IssueMessages(
            issue, settings, signer=signer, verp=verp_for(settings.bounce_address, tokens)
        )
        if dry_run:
            _dry_run(db, post.slug, readers_of, messages, tokens, report, progress)
        else:
            with hold_send_lock(settings.db_path):
                store.mark_interrupted_sends(db)
                store.queue_deliveries(db, post.slug, readers_of)
                report.due = store.count_outstanding(db, post.slug)
                report.already_sent = store.count_delivered(db, post.slug)
                if not report.due and not store.sent_slugs(db, post.slug):
                    # Nobody gets it by itself (every reader is on the digest, or outside its
                    # audience): it went out all the same, so `send --due` is done with it.
                    send_id = store.start_send(db, post.slug, "real")
                    store.finish_send(
                        db, send_id, status="finished", sent=0, failed=0, bounced=0, skipped=0
                    )
                if report.due:
                    send_id = store.start_send(db, post.slug, "real")
                    deliver_queued(
                        Run(
                            settings,
                            post.slug,
                            send_id,
                            messages,
                            tokens,
                            report,
                            progress,
                            transport_factory,
                            stop=threading.Event(),
                            rate=RateLimiter(settings.smtp_rate),
                            topics=readers_of,
                        ),
                        db,
                    )
    finally:
        db.close()
    report.seconds = time.monotonic() - started
    return report


def _dry_run(
    db: Database,
    slug: str,
    readers_of: Sequence[str],
    messages: IssueMessages,
    tokens: ReaderTokens,
    report: SendReport,
    progress: ProgressCallback | None,
) -> None:
    report.already_sent = store.count_delivered(db, slug)
    for subscriber in store.iter_due(db, slug, readers_of):
        public_id = subscriber.public_id or ""
        envelope = messages.for_reader(
            public_id, subscriber.email, subscriber.name, tokens.unsubscribe(public_id, slug)
        )
        report.due += 1
        report.message_bytes += len(envelope.data)
        if progress:
            progress("sent")


def deliver_queued(run: Run, db: Database) -> None:
    """Send what is queued for `run` (a post's, or one set of posts of a digest) over as many
    connections and signing processes as it is worth, and log every outcome."""
    due = run.report.due if run.queued is None else run.queued
    layout = plan(run.settings, due, signed=run.messages.signer is not None)
    with signing_pool(run.messages, run.tokens, layout.signers) as signers:
        _run(run, db, layout.connections, signers)


def _run(run: Run, db: Database, connections: int, signers: SigningPool | None) -> None:
    """Deliver to everyone queued; the send log's run row says how it ended."""
    report = run.report
    try:
        first = run.open_transport()  # fail here, before any process, if unreachable
    except TransportError as e:
        store.finish_send(
            db, run.send_id, status="stopped", sent=0, failed=0, bounced=0, skipped=0, note=str(e)
        )
        raise
    try:
        # The circuit breaker: the first deliveries go one by one, their bounces held, so a
        # server that refuses everyone stops the run before it writes any reader off.
        after_id = watch_first_deliveries(run, db, first)
        if not run.stop.is_set():
            run_connections(run, db, connections, first, after_id=after_id, signers=signers)
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
        tokens = reader_tokens(settings, db)
        messages = IssueMessages(
            issue,
            settings,
            signer=signer_from_settings(settings),
            verp=verp_for(settings.bounce_address, tokens),
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
