"""Signed reader links: unsubscribe (never expires) and confirm (expires), one salt each.

The token carries the reader's id, not their address. Several keys may be given, newest last:
links signed with an older key keep working while the newest signs everything new.
"""

from __future__ import annotations

from itsdangerous import BadData, URLSafeSerializer, URLSafeTimedSerializer

from .errors import BadToken

CONFIRM_MAX_AGE_SECONDS = 7 * 24 * 3600


class ReaderTokens:
    """Makes and reads the tokens in readers' links."""

    def __init__(self, secret_keys: list[str] | tuple[str, ...]) -> None:
        keys = list(secret_keys)
        if not keys:
            raise ValueError("at least one secret key is needed")
        self._unsubscribe = URLSafeSerializer(keys, salt="newsletter.unsubscribe")
        # What dumps() would make anew for every reader (it derives the key each time).
        self._unsubscribe_signer = self._unsubscribe.make_signer()
        self._confirm = URLSafeTimedSerializer(keys, salt="newsletter.confirm")
        self._form = URLSafeTimedSerializer(keys, salt="newsletter.form")

    def unsubscribe(self, subscriber_id: int) -> str:
        payload = self._unsubscribe.dump_payload(subscriber_id)
        return self._unsubscribe_signer.sign(payload).decode("ascii")

    def read_unsubscribe(self, token: str) -> int:
        try:
            return _as_id(self._unsubscribe.loads(token))
        except BadData as e:
            raise BadToken("this unsubscribe link is not valid") from e

    def confirm(self, subscriber_id: int) -> str:
        return str(self._confirm.dumps(subscriber_id))

    def read_confirm(self, token: str, max_age: int = CONFIRM_MAX_AGE_SECONDS) -> int:
        try:
            return _as_id(self._confirm.loads(token, max_age=max_age))
        except BadData as e:
            raise BadToken("this confirmation link is not valid or has expired") from e

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


def _as_id(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadToken("this link is not valid")
    return value
