"""DKIM: `newsletter dkim generate`, and messages that arrive over real SMTP signed and verifiable.

Verification is dkimpy's own `dkim.verify`, with a stand-in for DNS that answers the TXT record
`dkim generate` printed, as the author would publish it.
"""

from __future__ import annotations

import base64
import contextlib
import math
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.crypto import parse_pem_private_key, parse_public_key

from newsletter.config import load_settings
from newsletter.dkim import SIGNED_HEADERS, signer_from_settings
from newsletter.errors import ConfigError

from .conftest import Cli, SmtpSink, write_env

REQUIRED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)
DKIM_ENV = {
    "NEWSLETTER_DKIM_KEY_FILE": "dkim.key",
    "NEWSLETTER_DKIM_SELECTOR": "news",
    "NEWSLETTER_DKIM_DOMAIN": "example.org",
}


@contextlib.contextmanager
def store_db(settings):
    from newsletter import db as store

    database = store.open_db(settings.db_path)
    try:
        yield database
    finally:
        database.close()


RECORD_LINE = re.compile(r'(\S+) IN TXT "(v=DKIM1; k=rsa; p=[A-Za-z0-9+/]+=*)"')


def generate(cli: Cli, *args: str) -> tuple[str, str]:
    """Run `dkim generate`; return the record's name and value as printed on stdout."""
    result = cli("dkim", "generate", *args)
    match = RECORD_LINE.fullmatch(result.stdout.strip())
    assert match, result.stdout
    return match.group(1), match.group(2)


def dns_stand_in(name: str, value: str) -> Callable[..., bytes | None]:
    """What a resolver would answer once the record is published (and nothing for other names)."""

    def lookup(query: bytes, timeout: int = 5) -> bytes | None:
        return value.encode() if query.decode().rstrip(".") == name else None

    return lookup


def use_new_key(project: Path, cli: Cli) -> Callable[..., bytes | None]:
    """A new key for example.org in the project's settings; the DNS lookup that verifies it."""
    name, value = generate(cli, "--selector", "news", "--domain", "example.org")
    write_env(project, DKIM_KEY_FILE="dkim.key", DKIM_SELECTOR="news", DKIM_DOMAIN="example.org")
    return dns_stand_in(name, value)


def test_generate_writes_a_private_key_only_its_owner_reads_and_prints_the_record(
    cli: Cli, project: Path
) -> None:
    result = cli("dkim", "generate", "--selector", "news", "--domain", "Example.ORG")
    key_file = project / "dkim.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    pem = key_file.read_bytes()
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")
    private = parse_pem_private_key(pem)
    assert private["modulus"].bit_length() == 2048

    match = RECORD_LINE.fullmatch(result.stdout.strip())
    assert match and match.group(1) == "news._domainkey.example.org"
    public = parse_public_key(base64.b64decode(match.group(2).split("p=")[1]))
    assert public["modulus"] == private["modulus"]  # the record publishes this very key
    assert (
        "Then set in .env: NEWSLETTER_DKIM_KEY_FILE=dkim.key NEWSLETTER_DKIM_SELECTOR=news "
        "NEWSLETTER_DKIM_DOMAIN=example.org" in result.stderr
    )
    # A zone file cannot take one string over 255 characters: the split form is shown too.
    zone = re.search(r"IN TXT \( (.*) \)", result.stderr)
    assert zone
    strings = re.findall(r'"([^"]*)"', zone.group(1))
    assert len(strings) > 1 and all(len(s) <= 255 for s in strings)
    assert "".join(strings) == match.group(2)


def test_generate_takes_its_defaults_from_the_settings(cli: Cli, project: Path) -> None:
    name, _ = generate(cli)
    assert name == "newsletter._domainkey.example.org"  # the From domain
    assert (project / "dkim.key").is_file()
    write_env(
        project, DKIM_KEY_FILE="keys/mail.pem", DKIM_SELECTOR="s2", DKIM_DOMAIN="mail.example.org"
    )
    (project / "keys").mkdir()
    name, _ = generate(cli)
    assert name == "s2._domainkey.mail.example.org"
    assert (project / "keys" / "mail.pem").read_bytes().startswith(b"-----BEGIN RSA")


@pytest.mark.parametrize("kind", ["file", "dangling-symlink"])
def test_generate_never_overwrites(cli: Cli, project: Path, tmp_path: Path, kind: str) -> None:
    key_file = project / "dkim.key"
    elsewhere = tmp_path / "elsewhere.key"
    if kind == "file":
        key_file.write_text("the key that is in DNS\n")
    else:
        key_file.symlink_to(elsewhere)  # a planted link must not redirect the write
    result = cli("dkim", "generate", ok=False)
    assert (result.exit_code, result.stderr) == (
        1,
        f"Error: {key_file} already exists; not overwriting a DKIM key (move it away or give --out)\n",
    )
    assert result.stdout == ""
    if kind == "file":
        assert key_file.read_text() == "the key that is in DNS\n"
    else:
        assert not elsewhere.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--domain", "localhost"],
            "Error: 'localhost' is not a domain name such as example.org\n",
        ),
        (
            ["--domain", "exa mple.org"],
            "Error: 'exa mple.org' is not a domain name such as example.org\n",
        ),
        (
            ["--domain", "a" * 57 + ".example.org"],
            f"Error: '{'a' * 57}.example.org' is longer than the 68 characters a signature can "
            "carry; sign for a shorter domain (the From domain or a parent of it)\n",
        ),
        (
            ["--selector", "new\nline"],
            "Error: 'new\\nline' is not a DKIM selector such as 'newsletter'\n",
        ),
        (
            ["--out", "/nonexistent-dir/dkim.key"],
            "Error: cannot write /nonexistent-dir/dkim.key: No such file or directory\n",
        ),
    ],
)
def test_generate_refuses_bad_input_with_one_line(
    cli: Cli, project: Path, args: list[str], message: str
) -> None:
    result = cli("dkim", "generate", *args, ok=False)
    assert (result.exit_code, result.stderr) == (1, message)
    assert not (project / "dkim.key").exists()


def test_generate_without_any_domain(cli: Cli, project: Path) -> None:
    env = (project / ".env").read_text()
    (project / ".env").write_text(
        "".join(line + "\n" for line in env.splitlines() if "NEWSLETTER_FROM" not in line)
    )
    result = cli("dkim", "generate", ok=False)
    assert (result.exit_code, result.stderr) == (
        1,
        "Error: give --domain, or set NEWSLETTER_FROM or NEWSLETTER_DKIM_DOMAIN\n",
    )


# --- signed mail over real SMTP -------------------------------------------------------------


@pytest.fixture
def signed_delivery(smtp_project: Path, smtp_sink: SmtpSink, cli: Cli) -> tuple[bytes, str, str]:
    """One message as the loopback server received it after a real `newsletter send`."""
    name, value = generate(cli, "--selector", "news", "--domain", "example.org")
    write_env(
        smtp_project, DKIM_KEY_FILE="dkim.key", DKIM_SELECTOR="news", DKIM_DOMAIN="example.org"
    )
    cli("subscribers", "add", "ann@example.org", "--name", "Ann Åberg")
    cli("send", "--yes")
    (received,) = smtp_sink.received
    return received.data, name, value


def test_received_message_verifies_with_the_published_key(
    signed_delivery: tuple[bytes, str, str],
) -> None:
    data, name, value = signed_delivery
    assert dkim.verify(data, dnsfunc=dns_stand_in(name, value))
    signature = dkim.DKIM(data)
    assert signature.verify_headerprep()
    tags = signature.signature_fields
    assert (tags[b"c"], tags[b"d"], tags[b"s"], tags[b"a"]) == (
        b"relaxed/relaxed",
        b"example.org",
        b"news",
        b"rsa-sha256",
    )
    signed = re.sub(rb"\s+", b"", tags[b"h"]).lower().split(b":")
    for header in REQUIRED_HEADERS:
        assert signed.count(header) == 2, header  # signed, and oversigned against additions
    assert set(signed) == {h.lower() for h in SIGNED_HEADERS}


def test_another_key_does_not_verify(signed_delivery: tuple[bytes, str, str], cli: Cli) -> None:
    data, name, _ = signed_delivery
    _, other = generate(cli, "--out", str(cli.directory / "other.key"))
    assert not dkim.verify(data, dnsfunc=dns_stand_in(name, other))


def _replace_header(data: bytes, name: bytes, value: bytes) -> bytes:
    pattern = rb"(?m)^" + name + rb":[^\r\n]*\r\n"
    changed, count = re.subn(pattern, name + b": " + value + b"\r\n", data, count=1)
    assert count == 1, name
    return changed


def _change_body(data: bytes) -> bytes:
    head, body = data.split(b"\r\n\r\n", 1)
    return head + b"\r\n\r\n" + body.replace(b"Ofsted", b"0fsted", 1)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            lambda d: _replace_header(d, b"Subject", b"You have won a prize"), id="subject"
        ),
        pytest.param(
            lambda d: _replace_header(d, b"From", b"Bank <security@example.org>"), id="from"
        ),
        pytest.param(
            lambda d: _replace_header(d, b"List-Unsubscribe", b"<https://evil.example.net/u>"),
            id="list-unsubscribe",
        ),
        pytest.param(lambda d: b"Subject: Urgent\r\n" + d, id="second-subject-added-on-top"),
        pytest.param(
            lambda d: b"From: Bank <security@example.org>\r\n" + d, id="second-from-added-on-top"
        ),
        pytest.param(_change_body, id="one-letter-of-the-body"),
    ],
)
def test_a_changed_message_fails(
    signed_delivery: tuple[bytes, str, str], tamper: Callable[[bytes], bytes]
) -> None:
    data, name, value = signed_delivery
    changed = tamper(data)
    assert changed != data
    assert not dkim.verify(changed, dnsfunc=dns_stand_in(name, value))


def test_relaxed_canonicalisation_survives_refolding(
    signed_delivery: tuple[bytes, str, str],
) -> None:
    """Relaxed/relaxed: a relay that refolds a header or changes its case still verifies."""
    data, name, value = signed_delivery
    subject = re.search(rb"(?m)^Subject: ([^\r\n]*)\r\n", data)
    assert subject
    words = subject.group(1).split(b" ")
    refolded = data.replace(
        subject.group(0),
        b"SUBJECT:   " + b" ".join(words[:2]) + b"\r\n\t" + b" ".join(words[2:]) + b"\r\n",
    )
    assert refolded != data
    assert dkim.verify(refolded, dnsfunc=dns_stand_in(name, value))


# --- keys the signer refuses ----------------------------------------------------------------


def _short_rsa_key(bits: int) -> bytes:
    """A real RSA key below 1024 bits, which `cryptography` will not generate."""

    def prime(size: int) -> int:
        while True:
            n = secrets.randbits(size) | (3 << (size - 2)) | 1  # p*q has all the bits
            if all(pow(a, n - 1, n) == 1 for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)):
                return n

    e = 65537
    while True:
        p, q = prime(bits // 2), prime(bits // 2)
        if p != q and math.gcd(e, (p - 1) * (q - 1)) == 1:
            break
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p,
        q,
        d,
        rsa.rsa_crt_dmp1(d, p),
        rsa.rsa_crt_dmq1(d, q),
        rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    )
    return numbers.private_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    ("content", "environ", "message"),
    [
        (
            None,
            {"NEWSLETTER_DKIM_SELECTOR": "news", "NEWSLETTER_DKIM_DOMAIN": "example.org"},
            "DKIM needs all of NEWSLETTER_DKIM_KEY_FILE, NEWSLETTER_DKIM_SELECTOR and NEWSLETTER_DKIM_DOMAIN",
        ),
        (None, DKIM_ENV, "cannot read the DKIM key {key}: No such file or directory"),
        (b"ssh-rsa AAAAB3NzaC1yc2E me@host\n", DKIM_ENV, "{key} is not a PEM private key"),
        (
            b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
            DKIM_ENV,
            "{key}: not an unencrypted RSA private key in PEM form (PKCS#1 or PKCS#8)",
        ),
        (
            "short",
            DKIM_ENV,
            "{key} is a 512-bit key; receivers ignore DKIM keys under 1024 bits (make one with `newsletter dkim generate`)",
        ),
        (
            b"",
            {**DKIM_ENV, "NEWSLETTER_DKIM_DOMAIN": "example"},
            "NEWSLETTER_DKIM_DOMAIN: 'example' is not a domain name such as example.org",
        ),
    ],
    ids=["half-configured", "missing-file", "not-pem", "garbage-pem", "512-bit", "bad-domain"],
)
def test_signer_refuses_an_unusable_configuration(
    project: Path, content: bytes | str | None, environ: dict[str, str], message: str
) -> None:
    key = project / "dkim.key"
    if content == "short":
        key.write_bytes(_short_rsa_key(512))
    elif content is not None:
        key.write_bytes(content)
    with pytest.raises(ConfigError) as error:
        signer_from_settings(load_settings(project, environ=environ))
    assert str(error.value) == message.format(key=key)


def test_a_key_saved_with_crlf_line_ends_still_signs(project: Path, cli: Cli) -> None:
    generate(cli, "--selector", "news")
    key = project / "dkim.key"
    key.write_bytes(key.read_bytes().replace(b"\n", b"\r\n"))
    signer = signer_from_settings(load_settings(project, environ=DKIM_ENV))
    assert signer is not None and signer.key_bits == 2048


def test_send_with_a_broken_key_stops_before_sending(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    (smtp_project / "dkim.key").write_text(
        "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"
    )
    write_env(
        smtp_project, DKIM_KEY_FILE="dkim.key", DKIM_SELECTOR="news", DKIM_DOMAIN="example.org"
    )
    cli("subscribers", "add", "ann@example.org")
    result = cli("send", "--yes", ok=False)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: {smtp_project / 'dkim.key'}: not an unencrypted RSA private key in PEM form (PKCS#1 or PKCS#8)"
    )
    assert smtp_sink.received == []


# --- signing through OpenSSL ------------------------------------------------------------------


ONE_LINE_HEADERS = (
    b"From: Jane <jane@example.org>\r\nTo: ann@example.org\r\nSubject: one line each\r\n"
    b"Message-ID: <1@example.org>\r\n\r\nbody\r\n"
)
WHITESPACE_TO_FIX = (
    b"From: Jane <jane@example.org>\r\nTo: ann@example.org\r\nSubject:  many   spaces \r\n"
    b"Message-ID: <1@example.org>\r\nX-Folded: a\r\n\tb\r\n\r\nbody \t line  \r\n\r\n.dot\r\n\r\n\r\n"
)


@pytest.mark.parametrize("message", [ONE_LINE_HEADERS, WHITESPACE_TO_FIX])
@pytest.mark.parametrize(
    ("selector", "domain"),
    [
        ("news", "example.org"),
        ("news", "a" * 56 + ".example.org"),  # 68: the longest domain allowed
        ("s" * 63 + ".sel", "example.org"),  # a selector too long for one folded line
    ],
)
def test_openssl_signature_is_byte_for_byte_dkimpys_and_verifies(
    project: Path,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    message: bytes,
    selector: str,
    domain: str,
) -> None:
    """The same header as dkimpy's pure-Python signer: header fields on one line (hashed
    without dkimpy's regular expressions) or with whitespace to fix, and tags long enough
    to be folded inside."""
    import time

    from newsletter.dkim import _INCLUDE_HEADERS, DkimSigner

    name, value = generate(cli, "--selector", selector, "--domain", domain)
    key = (project / "dkim.key").read_bytes()
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.5)
    expected = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=_INCLUDE_HEADERS,
    )
    signed = DkimSigner(key, selector, domain).sign(message)
    assert signed == expected + message
    assert dkim.verify(signed, dnsfunc=dns_stand_in(name, value))


def test_signed_send_with_a_signing_process_verifies(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages signed ahead by a signing process (its own OpenSSL key) and by the
    connections themselves: every one verifies with dkimpy."""
    from newsletter import parallel
    from newsletter.posts import find_post
    from newsletter.sender import send_post

    from .conftest import add_readers

    monkeypatch.setattr(parallel, "READERS_PER_SIGNER", 10)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    lookup = use_new_key(smtp_project, cli)
    write_env(smtp_project, SMTP_CONNECTIONS=6)
    settings = load_settings(smtp_project, environ={})
    with store_db(settings) as database:
        readers = add_readers(database, 60)
    assert parallel.plan(settings, 60, signed=True).signers == 1
    report = send_post(settings, find_post(settings.posts_dir))
    assert report.sent == 60 and sorted(smtp_sink.per_recipient()) == sorted(readers)
    assert all(dkim.verify(r.data, dnsfunc=lookup) for r in smtp_sink.received)
