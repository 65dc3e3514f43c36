"""Email addresses and reader names: validated once, where they enter, so headers stay clean."""

from __future__ import annotations

import difflib
import functools
import re
import unicodedata

from email_validator import EmailNotValidError, validate_email

from .errors import SubscriberError

# Room for any real name; more is a stranger's message riding in every email's To header.
MAX_NAME_LENGTH = 100


# A plain ASCII local part (RFC 5322 dot-atom), as nearly every address has: checked here, so
# that email-validator's full check runs once per domain, not once per address (a million-row
# import spends most of its time there otherwise). Anything else takes the full check.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
MAX_LOCAL_LENGTH = 64
MAX_ADDRESS_LENGTH = 254


def normalise_address(raw: str) -> str:
    """The address as stored and mailed to: checked syntax, ASCII (IDNA) domain, no DNS look-up."""
    candidate = raw.strip()
    if not candidate:
        raise SubscriberError("an empty address is not an email address")
    if _has_control_characters(candidate):
        raise SubscriberError(f"{candidate!r} contains control characters")
    local, at, domain = candidate.rpartition("@")
    if at and len(local) <= MAX_LOCAL_LENGTH and _PLAIN_LOCAL.fullmatch(local):
        checked = _checked_domain(domain)
        if checked is not None and len(local) + 1 + len(checked) <= MAX_ADDRESS_LENGTH:
            return f"{local}@{checked}"
    return _validated(candidate)


@functools.lru_cache(maxsize=65536)
def _checked_domain(domain: str) -> str | None:
    """The domain as email-validator normalises it, or None if it refuses it."""
    try:
        result = validate_email(f"a@{domain}", check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    return (result.ascii_email or result.normalized).rpartition("@")[2]


def _validated(candidate: str) -> str:
    try:
        # SMTPUTF8 local parts are refused: most servers still cannot deliver them.
        result = validate_email(candidate, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as e:
        raise SubscriberError(f"{candidate!r} is not a valid email address: {e}") from None
    return result.ascii_email or result.normalized


def clean_name(raw: str | None) -> str:
    """A reader's name fit for a To header: trimmed, no line breaks or other control characters."""
    name = (raw or "").strip()
    if _has_control_characters(name):
        raise SubscriberError(f"the name {name!r} contains line breaks or control characters")
    if len(name) > MAX_NAME_LENGTH:
        raise SubscriberError(f"a name may be at most {MAX_NAME_LENGTH} characters long")
    return name


def mend_name(raw: str | None) -> str:
    """A name from someone else's file, made fit for a header rather than refused: line breaks
    and other control characters become spaces, and it is cut to the longest name kept."""
    chars = (" " if _has_control_characters(c) else c for c in (raw or ""))
    return " ".join("".join(chars).split())[:MAX_NAME_LENGTH].strip()


# Format characters that belong in names: the joiners of emoji sequences and of Persian and
# Indic scripts. Other format characters (bidi overrides among them) can disguise a name.
_NAME_JOINERS = frozenset("\u200c\u200d")


def _has_control_characters(text: str) -> bool:
    if text.isascii():  # the usual case, fast: only ASCII's control characters are unprintable
        return not text.isprintable()
    return any(
        unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and c not in _NAME_JOINERS for c in text
    )


def mask_address(email: str) -> str:
    """j***@example.org: enough for a reader to recognise, too little for a passer-by."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}{'*' * max(len(local) - 1, 3)}@{domain}"


# The domains most readers' addresses are at; one letter off from these is likely a typo.
COMMON_DOMAINS = (
    "gmail.com",
    "googlemail.com",
    "ymail.com",
    "mail.com",
    "hotmail.com",
    "hotmail.co.uk",
    "outlook.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "yahoo.co.uk",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "protonmail.com",
    "proton.me",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "btinternet.com",
    "comcast.net",
)


@functools.lru_cache(maxsize=65536)
def suggest_domain(domain: str) -> str | None:
    """A common domain that `domain` is probably a typo of (gmial.com: gmail.com), or None.

    Only a suggestion: the address is never changed, since a real domain can look like a typo.
    """
    domain = domain.lower()
    if domain in COMMON_DOMAINS:
        return None
    close = difflib.get_close_matches(domain, COMMON_DOMAINS, n=1, cutoff=0.85)
    return close[0] if close else None
