"""DKIM: signing when the three NEWSLETTER_DKIM_* settings are given, and new keys.

A signature is dkimpy's work (header parsing, relaxed canonicalisation, header selection,
folding) with the RSA step done by OpenSSL through the `cryptography` package: dkimpy's own RSA
is pure Python, about 8 ms a message, where OpenSSL takes a quarter of a millisecond. The
body pieces that every reader shares are canonicalised once (`remember`), which halves the
rest. dkimpy verifies (the tests check every signature with it). New keys come from
`cryptography` too (dkimpy would run the openssl program).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from dkim.canonicalization import (
    CanonicalizationPolicy,
    compress_whitespace,
    correct_empty_body,
    strip_trailing_lines,
    strip_trailing_whitespace,
)
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

from .config import Settings
from .errors import ConfigError, KeyFileError

KEY_BITS = 2048
MAX_SIGNING_DOMAIN = 68  # measured: from 69 characters dkimpy's own signatures fail to verify
MIN_KEY_BITS = 1024  # receivers (dkimpy, Gmail) ignore signatures made with shorter keys
TXT_STRING_LIMIT = 255  # one character-string in a DNS TXT record
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?")

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
# Each header is named twice, one more time than a message has it ("oversigning"): a second
# From or Subject added on the way then breaks the signature instead of riding along under it.
_INCLUDE_HEADERS = [*SIGNED_HEADERS, *SIGNED_HEADERS]
_INCLUDE = tuple(h.lower() for h in _INCLUDE_HEADERS)
_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_HEADER_NAME = b"DKIM-Signature"
_FOLD_INSIDE = 70  # dkim.fold breaks a run of this many characters without a space inside it
_ONE_LINE_FIELD = re.compile(rb"[!-9;-~]+:")  # a field name, its colon, no fold before it
_REMEMBERED_LIMIT = 64  # shared body pieces kept canonicalised (an issue has a handful)


class DkimSigner:
    """Signs finished messages, relaxed/relaxed, over the headers that matter to filters.

    The same steps and output as `dkim.sign` (a test compares them byte for byte), with the
    RSA signature made by OpenSSL.
    """

    def __init__(self, private_key: bytes, selector: str, domain: str) -> None:
        self.private_key = private_key
        self.selector = selector.encode("ascii")
        self.domain = domain.encode("ascii")
        self._remembered: dict[bytes, bytes] = {}
        self._remembered_headers: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self._selections: dict[tuple[bytes, ...], list[int]] = {}
        self._key = _openssl_key(private_key)

    def __getstate__(self) -> dict[str, object]:
        # A signing process gets the PEM and loads its own OpenSSL key (which cannot be pickled).
        state = dict(self.__dict__)
        state.pop("_key")
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._key = _openssl_key(self.private_key)

    def sign(self, message: bytes, *, timestamp: int | None = None) -> bytes:
        """The message with its DKIM-Signature header on top."""
        end = message.find(b"\r\n\r\n")
        if end < 0:  # headers only, no body
            return self.signature((message,), (), timestamp=timestamp) + message
        head, body = message[: end + 2], message[end + 4 :]
        return self.signature((head,), (body,), timestamp=timestamp) + message

    def remember(self, piece: bytes) -> None:
        """Canonicalise once a body piece that many messages share (whole CRLF lines)."""
        if len(self._remembered) < _REMEMBERED_LIMIT:
            self._remembered[piece] = _canonical_lines(piece)

    def remember_headers(self, piece: bytes) -> None:
        """Parse and canonicalise once header fields that many messages share."""
        if len(self._remembered_headers) < _REMEMBERED_LIMIT:
            self._remembered_headers[piece] = _canonical_headers(piece)

    def signature(
        self, head: Iterable[bytes], body: Iterable[bytes], *, timestamp: int | None = None
    ) -> bytes:
        """The DKIM-Signature header field for a message given as its header fields and its
        body, each in pieces that end at a line end (a header field whole in one piece).

        Relaxed canonicalisation works field by field and line by line, so pieces
        canonicalise apart; only the trailing empty lines of the whole body are left to the
        end.
        """
        remembered = self._remembered
        canonical = b"".join(remembered.get(p) or _canonical_lines(p) for p in body)
        canonical = correct_empty_body(strip_trailing_lines(canonical))
        known = self._remembered_headers
        headers = [h for piece in head for h in known.get(piece) or _canonical_headers(piece)]
        fields = [
            (b"v", b"1"),
            (b"a", b"rsa-sha256"),
            (b"c", _RELAXED.to_c_value()),
            (b"d", self.domain),
            (b"i", b"@" + self.domain),
            (b"q", b"dns/txt"),
            (b"s", self.selector),
            (b"t", str(int(time.time()) if timestamp is None else timestamp).encode("ascii")),
            (b"h", b" : ".join(_INCLUDE)),
            (b"bh", base64.b64encode(hashlib.sha256(canonical).digest())),
            (b"b", b""),
        ]
        # dkimpy's hash_headers, with its choice of fields made once per header layout. The
        # DKIM-Signature field goes last with b= empty, relaxed. dkimpy folds it first; a
        # fold at a space unfolds to the same field, so it is hashed as written here, unless
        # a tag is too long for a line (a very long domain or selector) and would be folded
        # inside: then it is folded as dkimpy does.
        unsigned = b"; ".join(b"=".join(f) for f in fields)
        if any(len(token) >= _FOLD_INSIDE for token in unsigned.split(b" ")):
            fields[-1] = (b"b", b"0" * 60)  # forces b= onto a line of its own, as dkimpy does
            folded = dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(_HEADER_NAME))
            folded = dkim.RE_BTAG.sub(b"\\1", folded)
            unsigned = _RELAXED.canonicalize_headers([(_HEADER_NAME, folded)])[0][1].rstrip()
        hashed = [headers[i] for i in self._selection(headers)]
        hashed.append((_HEADER_NAME.lower(), unsigned))
        hasher = hashlib.sha256(b"".join(name + b":" + value for name, value in hashed))
        rsa_signature = self._key.sign(
            hasher.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
        )
        fields[-1] = (b"b", base64.b64encode(rsa_signature))
        value = b"; ".join(b"=".join(f) for f in fields) + b"\r\n"
        signed_field: bytes = dkim.fold(value, namelen=len(_HEADER_NAME))
        return _HEADER_NAME + b": " + signed_field

    def _selection(self, headers: list[tuple[bytes, bytes]]) -> list[int]:
        """Which fields, in which order, dkimpy's select_headers signs: the same for every
        message with the same field names in the same order, so chosen once."""
        names = tuple(name for name, _ in headers)
        chosen = self._selections.get(names)
        if chosen is None:
            numbered = [(name, str(i).encode()) for i, name in enumerate(names)]
            chosen = [int(i) for _, i in dkim.select_headers(numbered, _INCLUDE)]
            if len(self._selections) < _REMEMBERED_LIMIT:
                self._selections[names] = chosen
        return chosen

    @functools.cached_property
    def key_bits(self) -> int:
        return _key_bits(self.private_key)


def _canonical_lines(piece: bytes) -> bytes:
    """Relaxed body canonicalisation (RFC 6376 3.4.4) of whole lines, as dkimpy does it."""
    if b"\t" not in piece and b"  " not in piece and b" \r\n" not in piece:
        return piece  # no tab, no run of spaces, no space at a line end: nothing to change
    canonical: bytes = compress_whitespace(strip_trailing_whitespace(piece))
    return canonical


def _canonical_headers(piece: bytes) -> list[tuple[bytes, bytes]]:
    """Header fields (whole, CRLF-ended) parsed and relaxed-canonicalised as dkimpy does."""
    lines = piece.split(b"\r\n")[:-1]
    if b"\t" in piece or b"  " in piece or not all(_ONE_LINE_FIELD.match(n) for n in lines):
        fields, _ = dkim.rfc822_parse(piece + b"\r\n")
        relaxed: list[tuple[bytes, bytes]] = _RELAXED.canonicalize_headers(fields)
        return relaxed
    # Each field on one line, no tab, no run of spaces: relaxed canonicalisation only
    # lower-cases the name and strips the value.
    canonical = []
    for line in lines:
        name, _, value = line.partition(b":")
        canonical.append((name.lower(), value.strip() + b"\r\n"))
    return canonical


def _openssl_key(private_key: bytes) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(private_key, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(
            "not an unencrypted RSA private key in PEM form (PKCS#1 or PKCS#8)"
        ) from e
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError("not an RSA private key")
    return key


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
    selector = check_selector(settings.dkim_selector, "NEWSLETTER_DKIM_SELECTOR")
    domain = check_domain(settings.dkim_domain, "NEWSLETTER_DKIM_DOMAIN")
    path = settings.dkim_key_file
    try:
        key = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the DKIM key {path}: {e.strerror}") from e
    # dkimpy finds the PEM body by "--\n": a key saved with CRLF line ends would not parse.
    key = key.replace(b"\r\n", b"\n")
    if b"PRIVATE KEY" not in key:
        raise ConfigError(f"{path} is not a PEM private key")
    try:
        bits = _key_bits(key)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    if bits < MIN_KEY_BITS:
        raise ConfigError(
            f"{path} is a {bits}-bit key; receivers ignore DKIM keys under {MIN_KEY_BITS} bits "
            "(make one with `newsletter dkim generate`)"
        )
    try:
        return DkimSigner(key, selector, domain)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def _key_bits(private_key: bytes) -> int:
    """The size of an RSA key as dkimpy reads it; a key it cannot read is a ConfigError."""
    try:
        return int(parse_pem_private_key(private_key)["modulus"]).bit_length()
    except (UnparsableKeyError, ValueError, TypeError, IndexError, KeyError) as e:
        raise ConfigError(
            "not an unencrypted RSA private key in PEM form (PKCS#1 or PKCS#8)"
        ) from e


def check_selector(selector: str, setting: str = "") -> str:
    """A DKIM selector: one or more DNS labels, in ASCII."""
    if not all(_LABEL.fullmatch(label) for label in selector.split(".")):
        where = f"{setting}: " if setting else ""
        raise ConfigError(f"{where}{selector!r} is not a DKIM selector such as 'newsletter'")
    return selector


def check_domain(domain: str, setting: str = "") -> str:
    """A domain to sign for: two or more DNS labels, in ASCII (an IDN in its xn-- form)."""
    labels = domain.rstrip(".").split(".")
    where = f"{setting}: " if setting else ""
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ConfigError(f"{where}{domain!r} is not a domain name such as example.org")
    if len(domain.rstrip(".")) > MAX_SIGNING_DOMAIN:
        # dkimpy folds the i= tag of a longer one inside the tag, and the signature it makes
        # (and so ours, made its way) then fails every check.
        raise ConfigError(
            f"{where}{domain!r} is longer than the {MAX_SIGNING_DOMAIN} characters a signature "
            "can carry; sign for a shorter domain (the From domain or a parent of it)"
        )
    return domain.rstrip(".").lower()


@dataclass(frozen=True)
class DnsRecord:
    """The DNS TXT record that publishes a DKIM public key."""

    selector: str
    domain: str
    value: str  # v=DKIM1; k=rsa; p=...

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def zone_line(self) -> str:
        """One quoted string, as DNS providers' web forms take it."""
        return f'{self.name} IN TXT "{self.value}"'

    def zone_file_line(self) -> str:
        """Split into strings of at most 255 characters, as a zone file (BIND) needs it."""
        chunks = [
            self.value[i : i + TXT_STRING_LIMIT]
            for i in range(0, len(self.value), TXT_STRING_LIMIT)
        ]
        return f"{self.name} IN TXT ( " + " ".join(f'"{c}"' for c in chunks) + " )"


def generate_key(path: Path, selector: str, domain: str) -> DnsRecord:
    """Write a new RSA key readable only by its owner; never replace an existing file."""
    selector = check_selector(selector)
    domain = check_domain(domain)
    # O_EXCL: an existing file (or a symlink planted there) is refused, never truncated.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"{path} already exists; not overwriting a DKIM key (move it away or give --out)"
        ) from None
    except OSError as e:
        raise KeyFileError(f"cannot write {path}: {e.strerror}") from e
    # From here the file is ours: whatever goes wrong (Ctrl+C while the key is made, a full
    # disk), it is closed and removed, so no half-written key is mistaken for one.
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)  # whatever the umask
            key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
            out.write(
                key.private_bytes(
                    encoding=serialization.Encoding.PEM,
                    format=serialization.PrivateFormat.TraditionalOpenSSL,  # PKCS#1: all read it
                    encryption_algorithm=serialization.NoEncryption(),
                )
            )
            out.flush()
            os.fsync(out.fileno())
    except OSError as e:
        path.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write {path}: {e.strerror}") from e
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    public = key.public_key().public_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return DnsRecord(selector, domain, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}")
