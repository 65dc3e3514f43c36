"""What a transport carries: a finished message and where it goes.

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
