"""Signed reader tokens: unsubscribe links (never expire), confirm links (expire), and the short
tokens in the addresses mail comes back to (VERP Return-Path, the mailto unsubscribe).

A token carries the reader's random public id, never the sequential id (which would tell how big
the list is), and never the address. Unsubscribe tokens also name the post whose email carried
them, for the per-post figures of `stats`. Links sent before public ids (payload: the integer id)
keep working. Several keys may be given, newest last: tokens signed with an older key keep
working while the newest signs everything new. It takes its keys; `keys.reader_tokens` finds
them (the configured ones, else the one kept in the database).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass

from itsdangerous import BadData, URLSafeSerializer, URLSafeTimedSerializer

from .errors import BadToken

CONFIRM_MAX_AGE_SECONDS = 7 * 24 * 3600
# A mail token: public id (8 bytes) + post tag (3) + HMAC (8), in lower-case hex, so a server
# that folds the case of a local part keeps it valid (hex rather than base32: Python encodes
# it in C, at a tenth of the cost per message).
_ID_BYTES, _POST_BYTES, _MAC_BYTES = 8, 3, 8
MAIL_TOKEN_LENGTH = 2 * (_ID_BYTES + _POST_BYTES + _MAC_BYTES)  # 38
NOBODY = "0" * 16  # the public id in tokens of test copies: leads to "not on the list"
ReaderKey = str | int  # a public id, or the sequential id of a link made before public ids


def post_tag(slug: str) -> str:
    """The short name of a post inside a mail token (6 hex); `bounces` maps it back to the slug."""
    return hashlib.sha256(slug.encode()).hexdigest()[: _POST_BYTES * 2]


@functools.lru_cache(maxsize=64)
def _post_tag_bytes(slug: str) -> bytes:
    return bytes.fromhex(post_tag(slug))


@dataclass(frozen=True)
class UnsubscribeLink:
    """Who an unsubscribe token names, and the post whose email carried it (None: older link)."""

    reader: ReaderKey
    slug: str | None = None


@dataclass(frozen=True)
class MailToken:
    """What a token in a returned mail's address names: a reader and a post's tag."""

    public_id: str
    post_tag: str


class ReaderTokens:
    """Makes and reads the tokens in readers' links and in the addresses mail comes back to."""

    def __init__(self, secret_keys: list[str] | tuple[str, ...]) -> None:
        keys = list(secret_keys)
        if not keys:
            raise ValueError("at least one secret key is needed")
        self._keys = tuple(k.encode() for k in keys)
        self._unsubscribe = URLSafeSerializer(keys, salt="newsletter.unsubscribe")
        # What dumps() would make anew for every reader (it derives the key each time).
        self._unsubscribe_signer = self._unsubscribe.make_signer()
        self._confirm = URLSafeTimedSerializer(keys, salt="newsletter.confirm")
        self._form = URLSafeTimedSerializer(keys, salt="newsletter.form")
        self._mail_keys = {
            purpose: tuple(
                hmac.new(key, f"newsletter.mail.{purpose}".encode(), hashlib.sha256).digest()
                for key in self._keys
            )
            for purpose in ("bounce", "unsubscribe")
        }

    def unsubscribe(self, public_id: str | None, slug: str | None = None) -> str:
        """The token of an unsubscribe link; None (a test copy to someone not on the list)
        makes one that leads to "not on the list"."""
        payload = self._unsubscribe.dump_payload([public_id or NOBODY, slug or ""])
        return self._unsubscribe_signer.sign(payload).decode("ascii")

    def read_unsubscribe(self, token: str) -> UnsubscribeLink:
        try:
            value = self._unsubscribe.loads(token)
        except BadData as e:
            raise BadToken("this unsubscribe link is not valid") from e
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
            return UnsubscribeLink(value[0], value[1] or None)
        return UnsubscribeLink(_as_id(value))  # a link sent before public ids

    def confirm(self, public_id: str) -> str:
        return str(self._confirm.dumps(public_id))

    def read_confirm(self, token: str, max_age: int = CONFIRM_MAX_AGE_SECONDS) -> ReaderKey:
        try:
            value = self._confirm.loads(token, max_age=max_age)
        except BadData as e:
            raise BadToken("this confirmation link is not valid or has expired") from e
        return value if isinstance(value, str) and value else _as_id(value)

    def form(self, nonce: str) -> str:
        """A CSRF token tying a form to the visitor's cookie nonce."""
        return str(self._form.dumps(nonce))

    def read_form(self, token: str, nonce: str, max_age: int = 3600) -> None:
        try:
            signed_nonce = self._form.loads(token, max_age=max_age)
        except BadData as e:
            raise BadToken("the form has expired; reload the page and try again") from e
        if signed_nonce != nonce:
            raise BadToken("the form has expired; reload the page and try again")

    # --- tokens in addresses (VERP, mailto) --------------------------------------------------

    def mail_token(self, purpose: str, public_id: str | None, slug: str) -> str:
        """A short token for the local part of an address: `purpose` is bounce or unsubscribe."""
        body = bytes.fromhex(public_id or NOBODY) + _post_tag_bytes(slug)
        mac = hmac.digest(self._mail_keys[purpose][-1], body, "sha256")[:_MAC_BYTES]
        return (body + mac).hex()

    def read_mail_token(self, purpose: str, token: str) -> MailToken:
        """The reader and post a mail token names; BadToken if it was not made with our keys."""
        try:
            raw = bytes.fromhex(token)
        except ValueError as e:
            raise BadToken("the address token is not valid") from e
        size = _ID_BYTES + _POST_BYTES
        body, mac = raw[:size], raw[size:]
        if len(raw) != size + _MAC_BYTES or not any(
            hmac.compare_digest(mac, hmac.digest(key, body, "sha256")[:_MAC_BYTES])
            for key in self._mail_keys[purpose]
        ):
            raise BadToken("the address token is not valid")
        return MailToken(body[:_ID_BYTES].hex(), body[_ID_BYTES:].hex())


def _as_id(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadToken("this link is not valid")
    return value
