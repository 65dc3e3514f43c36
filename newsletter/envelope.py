"""What a transport carries: a finished message and where it goes; and what a relay answers.

Its own module so that the transports (`mailer`) need neither the renderer nor the message
builder to know what they send.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Envelope:
    """A finished message and where it goes."""

    sender: str
    recipient: str
    message_id: str
    data: bytes


class ServiceReply(str):
    """A relay service's answer: the text for the send log, and the id the service gave the
    message, which its bounce and complaint reports name (kept per delivery)."""

    service_id: str

    def __new__(cls, text: str, service_id: str) -> ServiceReply:
        reply = super().__new__(cls, text)
        reply.service_id = service_id
        return reply


def service_id(reply: str) -> str | None:
    """The relay's message id in a transport's reply, if a relay sent it."""
    return reply.service_id if isinstance(reply, ServiceReply) else None
