"""One delivery: a reader's message sent with retries, and its outcome written to the send log.

Outcomes: `sent` (the server took it), `bounced` (refused for the reader: `refusals` decides),
`failed` (every try failed, or the sender was refused: the next run tries again) and `skipped`
(unsubscribed, paused or chose otherwise since the run began). Each outcome is one committed
write, made the moment it is known and before the connection takes its next reader.
"""

from __future__ import annotations

import functools

from sqlite_utils import Database

from . import db as store
from .envelope import service_id
from .errors import DeliveryRefused, TransportError
from .mailer import Transport
from .refusals import Verdict, classify_refusal
from .run import Run
from .signing import Prepared
from .vocab import DeliveryStatus

MAX_BACKOFF_SECONDS = 60.0


def deliver(
    run: Run, db: Database, prepared: Prepared, transport: Transport | None
) -> Transport | None:
    """One reader: send with retries, then record the outcome. Returns the live transport.

    `db` is the send's one SQLite connection, shared by its connections' threads: every use
    is under `run.db_lock`. `prepared` carries the reader's token and, when a signing process
    made it ahead, the message's DKIM signature.
    """
    settings = run.settings
    recipient = prepared.recipient

    def record(status: DeliveryStatus, reply: str, message_id: str | None) -> None:
        with run.db_lock:
            store.record_delivery(
                db,
                recipient.delivery_id,
                status=status,
                attempts=attempts,
                reply=reply,
                message_id=message_id,
                send_id=run.send_id,
                relay_message_id=service_id(reply),
            )

    attempts = recipient.attempts
    with run.db_lock:  # left, paused or chose otherwise since the run began
        why_not = store.why_not_mailed(
            db, recipient.subscriber_id, digest=run.is_digest, topics=run.topics
        )
    if why_not is not None:
        record("skipped", why_not, None)
        run.count("skipped")
        return transport
    envelope = run.messages.for_reader(
        recipient.public_id,
        recipient.email,
        recipient.name,
        prepared.token,
        signature=prepared.signature,
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
                transport = run.open_transport()
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
            verdict = classify_refusal(e.reply, permanent=e.permanent, stage=e.stage)
            if verdict.against_reader:
                bounce = functools.partial(
                    _record_bounce,
                    run,
                    db,
                    recipient,
                    attempts=attempts,
                    reply=e.reply,
                    message_id=envelope.message_id,
                    hard=verdict.effect == "bounce",
                )
                if run.breaker.hold(bounce):  # failed until the circuit breaker has decided
                    record("failed", e.reply, envelope.message_id)
                else:
                    bounce()
                run.breaker.failed(verdict)
                run.count("bounced")
                return transport
            if verdict.permanent:  # the sender's or the server's fault: no retry helps
                break
            continue
        record("sent", reply, envelope.message_id)
        run.breaker.delivered()
        run.count("sent")
        return transport
    run.breaker.failed(verdict)
    record("failed", reply, envelope.message_id)
    run.count("failed", f"{recipient.email}: {reply}")
    return transport


def _record_bounce(
    run: Run,
    db: Database,
    recipient: store.Recipient,
    *,
    attempts: int,
    reply: str,
    message_id: str,
    hard: bool,
) -> None:
    with run.db_lock:
        store.record_bounce(
            db,
            recipient.delivery_id,
            recipient.subscriber_id,
            attempts=attempts,
            reply=reply,
            message_id=message_id,
            send_id=run.send_id,
            hard=hard,
            bounce_limit=run.settings.bounce_limit,
        )
