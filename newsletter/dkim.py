"""DKIM signing with dkimpy, when the three NEWSLETTER_DKIM_* settings are given."""

from __future__ import annotations

import dkim

from .config import Settings
from .errors import ConfigError

SIGNED_HEADERS = (
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"MIME-Version",
    b"Content-Type",
    b"List-Id",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
)


class DkimSigner:
    """Signs finished messages, relaxed/relaxed, over the headers that matter to filters."""

    def __init__(self, private_key: bytes, selector: str, domain: str) -> None:
        self.private_key = private_key
        self.selector = selector.encode("ascii")
        self.domain = domain.encode("ascii")

    def sign(self, message: bytes) -> bytes:
        signature = dkim.sign(
            message,
            self.selector,
            self.domain,
            self.private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(SIGNED_HEADERS),
        )
        return signature + message


def signer_from_settings(settings: Settings) -> DkimSigner | None:
    """A signer when DKIM is configured, None when it is not; half a configuration is an error."""
    parts = (settings.dkim_key_file, settings.dkim_selector, settings.dkim_domain)
    if not any(parts):
        return None
    if not all(parts):
        raise ConfigError(
            "DKIM needs all of NEWSLETTER_DKIM_KEY_FILE, NEWSLETTER_DKIM_SELECTOR and "
            "NEWSLETTER_DKIM_DOMAIN"
        )
    assert settings.dkim_key_file and settings.dkim_selector and settings.dkim_domain
    try:
        key = settings.dkim_key_file.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the DKIM key {settings.dkim_key_file}: {e.strerror}") from e
    if b"PRIVATE KEY" not in key:
        raise ConfigError(f"{settings.dkim_key_file} is not a PEM private key")
    return DkimSigner(key, settings.dkim_selector, settings.dkim_domain)
