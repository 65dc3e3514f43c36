"""Every word the list, the send log and what comes back are spelled with, defined once.

Each vocabulary is a `Literal` (checked by mypy wherever a value is compared or stored) and,
where code needs to enumerate it (the CLI's choices, a schema test), a tuple made from it with
`get_args`, so the two cannot drift. The schema's CHECK constraints spell the same words in SQL;
tests/test_vocab.py holds them to these.
"""

from __future__ import annotations

from typing import Literal, get_args

# --- readers ---------------------------------------------------------------------------------

SubscriberStatus = Literal["active", "unsubscribed", "bounced", "pending"]
SUBSCRIBER_STATUSES: tuple[SubscriberStatus, ...] = get_args(SubscriberStatus)
# What `subscribers list --status` takes: one status, or everyone.
StatusFilter = Literal[SubscriberStatus, "all"]
STATUS_FILTERS: tuple[StatusFilter, ...] = get_args(StatusFilter)
# Statuses of someone who left, whom nothing but their own fresh request brings back.
LeftStatus = Literal["unsubscribed", "bounced"]
LEFT_STATUSES: tuple[LeftStatus, ...] = get_args(LeftStatus)

# Where a reader was added.
SubscriberSource = Literal["cli", "import", "web"]
SUBSCRIBER_SOURCES: tuple[SubscriberSource, ...] = get_args(SubscriberSource)

# How often a reader is mailed: each post as it goes out, or a weekly digest of the week's posts.
# A pause (until a date) is kept apart, so the reader comes back to what they had.
Frequency = Literal["every", "digest"]
FREQUENCIES: tuple[Frequency, ...] = get_args(Frequency)

# The pause a reader picks on the preferences page: keep the one they have, none, or a length.
PauseChoice = Literal["keep", "none", "2-weeks", "1-month", "3-months"]
PAUSE_CHOICES: tuple[PauseChoice, ...] = get_args(PauseChoice)

# Why a reader's status last changed; a reason decides who may undo it (an author's removal is
# not undone by the reader's resubscribe button; a complaint never by an import).
StatusReason = Literal[
    "reader",  # the reader's own unsubscribe link or button
    "author",  # `subscribers remove`, `subscribers add --resubscribe`, `reactivate`
    "complaint",  # a spam complaint (ARF report, or a platform's export says so)
    "email",  # an email to the unsubscribe address
    "import",  # an imported file said so
    "bounce",  # permanent delivery failures
    "confirmed",  # the reader confirmed by the emailed link
]
STATUS_REASONS: tuple[StatusReason, ...] = get_args(StatusReason)
# The reasons that came back after a send: `subscribers list --json` shows their events.
RETURNED_REASONS: tuple[StatusReason, ...] = ("bounce", "complaint", "email")

# --- the send log ----------------------------------------------------------------------------

# What one delivery came to: the server took it, refused it for the reader, every try failed
# (or the sender was refused), or the reader left since the run began.
DeliveryOutcome = Literal["sent", "failed", "bounced", "skipped"]
DELIVERY_OUTCOMES: tuple[DeliveryOutcome, ...] = get_args(DeliveryOutcome)
# A delivery's row: queued (`pending`) until it has an outcome.
DeliveryStatus = Literal["pending", DeliveryOutcome]
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = get_args(DeliveryStatus)

# A run of `send`: to the list, or one test copy.
SendKind = Literal["real", "test"]
SEND_KINDS: tuple[SendKind, ...] = get_args(SendKind)
SendStatus = Literal["running", "finished", "stopped", "interrupted"]
SEND_STATUSES: tuple[SendStatus, ...] = get_args(SendStatus)

# --- what comes back after a send ------------------------------------------------------------

# A row of reader_events: what happened to a reader after a send.
ReaderEventKind = Literal[
    "bounce",  # a permanent failure about the reader: out at once
    "soft_bounce",  # not a write-off yet: a refusal counted against the limit, or a delay
    "sender_refusal",  # a report of a refusal that is the sender's fault: the reader stays
    "complaint",  # an ARF spam complaint: unsubscribed
    "unsubscribe",  # by the link (web) or by email
    "reactivate",  # the author brought a bounced reader back
]
READER_EVENT_KINDS: tuple[ReaderEventKind, ...] = get_args(ReaderEventKind)
# Who told us: a bounce report, a complaint, an email to the unsubscribe address, the web page.
EventSource = Literal["report", "complaint", "email", "web", "author"]
EVENT_SOURCES: tuple[EventSource, ...] = get_args(EventSource)
# How a reader leaves by mail: a complaint, or an email to the unsubscribe address.
MailUnsubscribeReason = Literal["complaint", "email"]

# What a refusal (at send time, or in a report) means for the reader: out now, one more
# failure counted, the sender's or the server's fault (the reader stays), or try again.
RefusalEffect = Literal["bounce", "count", "sender", "retry"]

# What a message in the bounce mailbox is.
ReturnedKind = Literal[
    "bounce report",
    "complaint",
    "unsubscribe",
    "auto-reply",
    "notice",  # a report that says nothing failed: delivered, relayed, expanded
    "other",
]
# What `newsletter bounces` did with one.
ReturnAction = Literal[
    "bounced",  # the reader is out
    "counted",  # one more failure against the reader's limit
    "noted",  # recorded; the reader's status stays (a delay, the sender's fault, not active)
    "unsubscribed",
    "left alone",  # not ours to act on: stays in the mailbox
]
RETURN_ACTIONS: tuple[ReturnAction, ...] = get_args(ReturnAction)


def event_kind_for(effect: RefusalEffect) -> ReaderEventKind:
    """The reader event a refusal in a bounce report is kept as."""
    if effect == "bounce":
        return "bounce"
    if effect == "count":
        return "soft_bounce"
    return "sender_refusal"


# --- relays ----------------------------------------------------------------------------------

# Where a send's messages go: the Maildir outbox (nothing configured), an SMTP server, or a
# relay service's HTTP API.
TransportKind = Literal["outbox", "smtp", "ses", "postmark"]
TRANSPORT_KINDS: tuple[TransportKind, ...] = get_args(TransportKind)
# The relay services whose bounces and complaints `newsletter bounces --from` pulls.
RelayService = Literal["ses", "postmark"]
RELAY_SERVICES: tuple[RelayService, ...] = get_args(RelayService)
