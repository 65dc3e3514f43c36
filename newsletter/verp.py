"""The addresses mail comes back to, built on NEWSLETTER_BOUNCE_ADDRESS (`bounces@domain`).

VERP (variable envelope return path): each message's envelope sender is
`bounces+TOKEN@domain`, so a bounce report names its reader and post even when its body does
not; `bounces+unsubscribe-TOKEN@domain` is the mailto in List-Unsubscribe. Mail systems deliver
a plus-addressed local part to the base mailbox (Postfix's recipient_delimiter, Gmail,
Fastmail), so one mailbox receives everything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .errors import BadToken
from .tokens import MailToken, ReaderTokens

UNSUBSCRIBE_PREFIX = "unsubscribe-"
AddressKind = Literal["bounce", "unsubscribe"]


@dataclass(frozen=True)
class ReturnAddress:
    """What an address at the bounce mailbox says: what it is for and who it names."""

    kind: AddressKind
    token: str
    reader: MailToken | None  # None: a token we did not sign (forged or mangled)


class Verp:
    """Builds and reads the plus-addressed variants of the bounce address."""

    def __init__(self, bounce_address: str, tokens: ReaderTokens) -> None:
        self.local, self.domain = bounce_address.rsplit("@", 1)
        self.tokens = tokens
        self._pattern = re.compile(
            rf"^{re.escape(self.local)}\+(?P<unsub>{UNSUBSCRIBE_PREFIX})?(?P<token>[^@\s]*)"
            rf"@{re.escape(self.domain)}$",
            re.IGNORECASE,
        )

    def return_path(self, public_id: str | None, slug: str) -> str:
        return f"{self.local}+{self.tokens.mail_token('bounce', public_id, slug)}@{self.domain}"

    def unsubscribe_address(self, public_id: str | None, slug: str) -> str:
        token = self.tokens.mail_token("unsubscribe", public_id, slug)
        return f"{self.local}+{UNSUBSCRIBE_PREFIX}{token}@{self.domain}"

    @property
    def plain(self) -> str:
        return f"{self.local}@{self.domain}"

    def read(self, address: str) -> ReturnAddress | None:
        """The kind and reader of one of our plus addresses; None for any other address.

        Any suffix after the plus is ours to read (a token we did not sign has reader None), so
        that a forged `bounces+anything@` can never fall back to what the report names.
        """
        match = self._pattern.match(address.strip().strip("<>"))
        if match is None:
            return None
        kind: AddressKind = "unsubscribe" if match["unsub"] else "bounce"
        token = match["token"].lower()
        try:
            reader: MailToken | None = self.tokens.read_mail_token(kind, token)
        except BadToken:
            reader = None
        return ReturnAddress(kind, token, reader)


def verp_for(bounce_address: str | None, tokens: ReaderTokens) -> Verp | None:
    """The VERP addresses when NEWSLETTER_BOUNCE_ADDRESS is set; None sends as before."""
    return Verp(bounce_address, tokens) if bounce_address else None
