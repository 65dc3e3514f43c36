"""Joining and leaving the list on a reader's own request: double opt-in, unsubscribe, resubscribe.

No web framework here: the web app passes in who asked (`Visitor`), and these functions check the
signed link, change the database and send the confirmation email, raising the project's errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime, make_msgid
from typing import Literal

from sqlite_utils import Database

from . import db as store
from .addresses import clean_name, normalise_address
from .config import Settings
from .dkim import signer_from_settings
from .envelope import Envelope
from .errors import NotOnList, SubscriberError
from .mailer import Transport, open_transport
from .message import IssueMessages, check_newsletter_headers
from .render import render_template, render_welcome, template_environment
from .tokens import CONFIRM_MAX_AGE_SECONDS, ReaderKey, ReaderTokens
from .verp import verp_for

SubscribeOutcome = Literal["sent", "already active", "too soon", "removed by the author"]
# The unsubscribes a reader may undo from their own link: the ones they made themselves. The
# author's removal (for cause) is not theirs to undo; nor one whose reason is unknown.
READER_UNDOABLE_REASONS = frozenset({"reader", "email"})
TransportFactory = Callable[[Settings], Transport]
MAX_USER_AGENT_LENGTH = 400


@dataclass(frozen=True)
class Visitor:
    """Who acted and through which form: what the consent record keeps besides the time."""

    ip: str | None
    user_agent: str | None
    form: str

    def consent(self) -> store.Consent:
        agent = (self.user_agent or "")[:MAX_USER_AGENT_LENGTH] or None
        return store.Consent(at=store.now(), ip=self.ip, user_agent=agent, form=self.form)


def confirm_url(settings: Settings, token: str) -> str:
    return f"{settings.base_url}/confirm/{token}"


def confirmation_interval(settings: Settings) -> timedelta:
    """The least time between two confirmation emails to one address.

    Only the last sending time is kept per reader, so "N an hour" is enforced as one every
    hour/N: never more than N in any hour, and it survives a restart of the server.
    """
    return timedelta(hours=1) / settings.subscribe_limit_per_hour


def request_subscription(
    settings: Settings,
    db: Database,
    tokens: ReaderTokens,
    email: str,
    name: str,
    *,
    transport_factory: TransportFactory = open_transport,
) -> SubscribeOutcome:
    """Someone asked to join: keep them pending and email them a link to confirm.

    An active reader gets nothing (they are on the list already); anyone else, new, pending,
    unsubscribed or bounced, gets a link unless one went to the address too recently. Of a
    reader already there only the time of that email changes: a stranger's request must not
    touch their name, status or consent.
    The caller gives the same answer whatever this returns, so nobody can probe the list.
    """
    address, clean = normalise_address(email), clean_name(name)
    expired = datetime.now(UTC) - timedelta(seconds=CONFIRM_MAX_AGE_SECONDS)
    store.purge_unconfirmed(db, expired.isoformat(timespec="seconds"))
    subscriber = store.add_pending_subscriber(db, address, clean)
    # Built (rendered and signed: the costly part) for every address, wanted or not, so the
    # work behind an answer does not tell a reader on the list from a newcomer.
    envelope = confirmation_email(settings, subscriber, tokens.confirm(subscriber.public_id or ""))
    if subscriber.status == "active":
        return "already active"
    if removed_by_author(subscriber):
        return "removed by the author"
    last_allowed = datetime.now(UTC) - confirmation_interval(settings)
    if not store.claim_confirmation(
        db, subscriber.id, last_allowed=last_allowed.isoformat(timespec="seconds")
    ):
        return "too soon"
    transport = transport_factory(settings)
    try:
        transport.send(envelope)
    finally:
        transport.close()
    return "sent"


def confirmation_email(settings: Settings, subscriber: store.Subscriber, token: str) -> Envelope:
    """The email with the confirm link, from templates/confirm_email.txt and .html."""
    sender = settings.sender
    check_newsletter_headers(settings)
    env = template_environment(settings.templates_dir)
    context = {
        "newsletter": {
            "title": settings.title,
            "base_url": settings.base_url,
            "postal_address": settings.postal_address,
        },
        "reader": {"email": subscriber.email, "name": subscriber.name},
        "confirm_url": confirm_url(settings, token),
    }
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = sender
    # The address alone: a name typed into the form is nobody's until the link is followed.
    message["To"] = Address(addr_spec=subscriber.email)
    message["Subject"] = f"Confirm your subscription to {settings.title}"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=sender.domain)
    # RFC 3834: sent by a program, so out-of-office replies stay away.
    message["Auto-Submitted"] = "auto-generated"
    message["MIME-Version"] = "1.0"
    message.make_alternative()
    for template, subtype in (("confirm_email.txt", "plain"), ("confirm_email.html", "html")):
        part = MIMEPart(policy=policy.SMTP)
        part.set_content(render_template(env, template, context), subtype=subtype)
        message.attach(part)  # type: ignore[arg-type]  # typeshed wants the parent's class
    data = message.as_bytes()
    signer = signer_from_settings(settings)
    if signer is not None:
        data = signer.sign(data)
    return Envelope(sender.addr_spec, subscriber.email, str(message["Message-ID"]), data)


def reader_from_confirm_link(db: Database, tokens: ReaderTokens, token: str) -> store.Subscriber:
    """The reader a confirm link names, for the page that asks them to press the button."""
    return _reader(db, tokens.read_confirm(token))


@dataclass(frozen=True)
class Confirmation:
    """Who confirmed, and whether this press of the button is the one that made them active
    (only that one is welcomed)."""

    reader: store.Subscriber
    first_time: bool


def confirm(db: Database, tokens: ReaderTokens, token: str, visitor: Visitor) -> Confirmation:
    """The reader pressed the button behind the emailed link: active, with consent recorded."""
    subscriber = reader_from_confirm_link(db, tokens, token)
    if removed_by_author(subscriber):  # a link emailed before the author took them off
        raise SubscriberError(_REMOVED_BY_AUTHOR)
    if subscriber.status != "active" and not _asked_since_last_change(subscriber):
        # A link older than the reader's last change (they unsubscribed, complained or
        # bounced after it was sent) must not undo that change: only a new request may.
        raise SubscriberError(_STALE_CONFIRMATION)
    first_time = False
    if subscriber.status != "active":  # again is harmless and keeps the first consent
        first_time = store.activate_subscriber(
            db, subscriber.id, visitor.consent(), confirmed_request=True
        )
    return Confirmation(_reader(db, subscriber.id), first_time)


def confirm_subscription(
    db: Database, tokens: ReaderTokens, token: str, visitor: Visitor
) -> store.Subscriber:
    """As `confirm`, for callers that only need the reader."""
    return confirm(db, tokens, token, visitor).reader


def send_welcome(
    settings: Settings,
    db: Database,
    tokens: ReaderTokens,
    subscriber: store.Subscriber,
    *,
    transport_factory: TransportFactory = open_transport,
) -> bool:
    """Welcome a reader who has just confirmed, pointing to the newest post; False when the
    author has no templates/welcome_email.* (then nobody is welcomed)."""
    from .archive import newest_online

    env = template_environment(settings.templates_dir)
    issue = render_welcome(settings, env, newest_online(settings, db))
    if issue is None:
        return False
    messages = IssueMessages(
        issue,
        settings,
        signer=signer_from_settings(settings),
        verp=verp_for(settings.bounce_address, tokens),
    )
    public_id = subscriber.public_id or ""
    envelope = messages.for_reader(
        public_id, subscriber.email, subscriber.name, tokens.unsubscribe(public_id, issue.slug)
    )
    transport = transport_factory(settings)
    try:
        transport.send(envelope)
    finally:
        transport.close()
    return True


def reader_from_unsubscribe_link(
    db: Database, tokens: ReaderTokens, token: str
) -> store.Subscriber:
    """The reader an unsubscribe link names, for the page with the button; changes nothing."""
    return _reader(db, tokens.read_unsubscribe(token).reader)


def unsubscribe(db: Database, tokens: ReaderTokens, token: str) -> store.Subscriber:
    """Take the reader off the list at once (a send in progress skips them); again is harmless.

    The post whose email carried the link is noted, for the per-post figures of `stats`."""
    link = tokens.read_unsubscribe(token)
    subscriber = _reader(db, link.reader)
    # A bounced address stays bounced: made "unsubscribed", the resubscribe button on the
    # next page would bring it back without the email confirmation `resubscribe` asks of it.
    if subscriber.status != "bounced":
        store.set_status(db, subscriber.id, "unsubscribed", "reader")
        if subscriber.status != "unsubscribed":
            store.record_reader_event(db, subscriber.id, "unsubscribe", link.slug, source="web")
    return _reader(db, subscriber.id)


def resubscribe(
    db: Database, tokens: ReaderTokens, token: str, visitor: Visitor
) -> store.Subscriber:
    """Undo an unsubscribe from the same link; anything else needs the confirmed subscribe form."""
    subscriber = reader_from_unsubscribe_link(db, tokens, token)
    if subscriber.status == "unsubscribed" and not may_resubscribe(subscriber):
        raise SubscriberError(_REMOVED_BY_AUTHOR if removed_by_author(subscriber) else _USE_FORM)
    if subscriber.status == "unsubscribed":
        store.activate_subscriber(db, subscriber.id, visitor.consent())
    elif subscriber.status != "active":
        raise SubscriberError(
            f"this address is {subscriber.status}, so it cannot be resubscribed from this link; "
            "subscribe again with the form, which confirms the address by email"
        )
    return _reader(db, subscriber.id)


_REMOVED_BY_AUTHOR = "the author took this address off the list; write to them to come back"
_USE_FORM = (
    "this address cannot be resubscribed from this link; subscribe again with the form, which "
    "confirms the address by email"
)


_STALE_CONFIRMATION = (
    "this confirmation link is older than the last change to this address; subscribe again "
    "with the form to get a new one"
)


def _asked_since_last_change(subscriber: store.Subscriber) -> bool:
    """The newest confirmation email went out after the reader's status last changed."""
    sent = subscriber.confirmation_sent_at
    return sent is not None and sent >= subscriber.status_changed_at


def removed_by_author(subscriber: store.Subscriber) -> bool:
    return subscriber.status == "unsubscribed" and subscriber.status_reason == "author"


def may_resubscribe(subscriber: store.Subscriber) -> bool:
    """Whether the Resubscribe button may bring this unsubscribed reader back."""
    return subscriber.status_reason in READER_UNDOABLE_REASONS


def _reader(db: Database, key: ReaderKey) -> store.Subscriber:
    """The reader a token names: by public id, or by the sequential id of an older link."""
    if isinstance(key, str):
        subscriber = store.get_subscriber_by_public_id(db, key) if key else None
    else:
        subscriber = store.get_subscriber_by_id(db, key) if key else None
    if subscriber is None:
        raise NotOnList("this link is for an address that is not on the list")
    return subscriber
