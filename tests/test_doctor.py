"""`newsletter doctor`: the setup against Gmail's and Yahoo's bulk sender rules, CAN-SPAM and RFC 8058.

Real settings files, a real DKIM key, a real SQLite file and, for `--smtp`, the live loopback
SMTP server with its login.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from newsletter import db as store
from newsletter import doctor
from newsletter.config import load_settings
from newsletter.dkim import generate_key

from .conftest import Cli, SmtpSink, free_port, write_env

COMPLETE = {
    "FROM": "'Jane Author <jane@cpnotes.org.uk>'",
    "BASE_URL": "https://news.cpnotes.org.uk",
    "SECRET_KEY": "k" * 43,
    "DKIM_KEY_FILE": "dkim.key",
    "DKIM_SELECTOR": "news",
    "DKIM_DOMAIN": "cpnotes.org.uk",
    "SMTP_HOST": "smtp.cpnotes.org.uk",
    "BOUNCE_ADDRESS": "bounces@news.cpnotes.org.uk",
}
NAMES = [
    "From",
    "DKIM",
    "DKIM alignment",
    "Base URL",
    "Secret key",
    "Postal address",
    "SMTP",
    "Bounces",
    "Permissions",
]


@pytest.fixture
def complete(project: Path) -> Path:
    """A newsletter set up as the rules ask, with a real 2048-bit key."""
    generate_key(project / "dkim.key", "news", "cpnotes.org.uk")
    write_env(project, **COMPLETE)
    (project / ".env").chmod(0o600)  # as `init` writes it
    return project


def lines(output: str) -> list[tuple[str, str, str]]:
    """(status, name, message) per check line of the report."""
    found = []
    for line in output.splitlines()[:-1]:
        status, rest = line[:8].strip(), line[9:]
        name = next(n for n in sorted(NAMES, key=len, reverse=True) if rest.startswith(n))
        found.append((status, name, rest[len(name) :].strip()))
    return found


def statuses(project: Path, **overrides: str) -> dict[str, doctor.Check]:
    environ = {f"NEWSLETTER_{k}": v for k, v in overrides.items()}
    return {c.name: c for c in doctor.run_checks(load_settings(project, environ=environ))}


def test_a_complete_setup_is_all_ok(complete: Path, cli: Cli) -> None:
    result = cli("doctor")
    report = lines(result.stdout)
    assert [name for _, name, _ in report] == NAMES
    assert {status for status, _, _ in report} == {"ok"}, result.stdout
    assert result.stdout.splitlines()[-1] == "Nothing required is missing"
    messages = dict((name, message) for _, name, message in report)
    assert messages["From"] == "jane@cpnotes.org.uk (domain cpnotes.org.uk)"
    assert messages["DKIM"] == (
        f"signs as d=cpnotes.org.uk with the 2048-bit key {complete / 'dkim.key'} "
        "(TXT record news._domainkey.cpnotes.org.uk)"
    )
    assert messages["SMTP"] == (
        "smtp.cpnotes.org.uk:587 (starttls); `doctor --smtp` logs in to check"
    )


def test_a_bare_setup_says_what_is_missing_and_exits_1(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / ".env").write_text("")  # a newsletter with nothing set (no .env at all: not one)
    (bare / ".env").chmod(0o600)
    result = Cli(bare, CliRunner())("doctor", ok=False)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "missing  From            NEWSLETTER_FROM is not set: e.g. NEWSLETTER_FROM='Jane Author <jane@example.org>'",
        "missing  DKIM            not configured: run `newsletter dkim generate`, publish the DNS record it prints, then set NEWSLETTER_DKIM_KEY_FILE, _SELECTOR and _DOMAIN",
        "missing  Base URL        http://127.0.0.1:8000 is not https: one-click unsubscribe (RFC 8058) needs an https link; set NEWSLETTER_BASE_URL to where `newsletter serve` is reached",
        "warning  Secret key      none yet: one is made at the first send and kept in the database; or set NEWSLETTER_SECRET_KEY",
        "missing  Postal address  NEWSLETTER_POSTAL_ADDRESS is not set; CAN-SPAM asks for one in every bulk email",
        "warning  SMTP            NEWSLETTER_SMTP_HOST is not set: mail goes to the outbox, not to readers",
        "warning  Bounces         NEWSLETTER_BOUNCE_ADDRESS is not set: bounce reports and complaints go to the From address and nothing reads them; dead addresses stay on the list",
        "ok       Permissions     the database, .env and DKIM key are owner-only",
        "4 missing, 3 warnings: bulk mail is not ready to go out",
    ]
    assert not (bare / "newsletter.db").exists()  # a check changes nothing


@pytest.mark.parametrize(
    ("overrides", "name", "status", "message"),
    [
        (
            {"FROM": "jane@gmail.com"},
            "From",
            "missing",
            "jane@gmail.com is on gmail.com, whose DMARC policy makes receivers refuse it from other servers: send From an address on your own domain",
        ),
        ({"FROM": "jane@yahoo.co.uk"}, "From", "missing", "jane@yahoo.co.uk is on yahoo.co.uk"),
        (
            {"FROM": "jane@example.org"},
            "From",
            "warning",
            "jane@example.org: example.org is a reserved example domain; no receiver trusts it",
        ),
        ({"DKIM_SELECTOR": ""}, "DKIM", "missing", "DKIM needs all of NEWSLETTER_DKIM_KEY_FILE"),
        (
            {"DKIM_KEY_FILE": "nope.key"},
            "DKIM",
            "missing",
            "cannot read the DKIM key {project}/nope.key: No such file or directory",
        ),
        (
            {"DKIM_DOMAIN": "other.org"},
            "DKIM alignment",
            "warning",
            "d=other.org is not the From domain cpnotes.org.uk, nor its parent or subdomain: DMARC then rests on SPF alone",
        ),
        (
            {"FROM": "jane@news.cpnotes.org.uk"},
            "DKIM alignment",
            "ok",
            "d=cpnotes.org.uk aligns with From",
        ),
        (
            {"BASE_URL": "http://news.cpnotes.org.uk"},
            "Base URL",
            "missing",
            "http://news.cpnotes.org.uk is not https",
        ),
        (
            {"BASE_URL": "https://127.0.0.1:8000"},
            "Base URL",
            "missing",
            "https://127.0.0.1:8000 is this machine or a private network: readers' unsubscribe links cannot reach it",
        ),
        ({"BASE_URL": "https://localhost"}, "Base URL", "missing", "https://localhost is this"),
        (
            {"SECRET_KEY": "old-key-long-enough-to-pass-the-check-xx,short"},
            "Secret key",
            "warning",
            "NEWSLETTER_SECRET_KEY has a key of 5 characters; use 32 or more random ones",
        ),
        (
            {"SECRET_KEY": "a" * 32 + "," + "b" * 40},
            "Secret key",
            "ok",
            "set in NEWSLETTER_SECRET_KEY (2 keys)",
        ),
        (
            {"POSTAL_ADDRESS": "", "SECRET_KEY": "k" * 43},
            "Postal address",
            "missing",
            "NEWSLETTER_POSTAL_ADDRESS is not set; CAN-SPAM asks for one in every bulk email",
        ),
        (
            {"SMTP_SECURITY": "none", "SMTP_USERNAME": "jane", "SMTP_PASSWORD": "pw"},
            "SMTP",
            "warning",
            "smtp.cpnotes.org.uk:25 with NEWSLETTER_SMTP_SECURITY=none: the password crosses the network unencrypted",
        ),
    ],
)
def test_each_check(
    complete: Path, overrides: dict[str, str], name: str, status: str, message: str
) -> None:
    check = statuses(complete, **overrides)[name]
    assert check.status == status
    assert check.message.startswith(message.format(project=complete)), check.message


def test_a_weak_dkim_key_is_a_warning(complete: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (complete / "weak.key").write_bytes(
        weak.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    check = statuses(complete, DKIM_KEY_FILE="weak.key")["DKIM"]
    assert (check.status, check.message) == (
        "warning",
        f"1024-bit key {complete / 'weak.key'} is weak: make a 2048-bit one "
        "(TXT record news._domainkey.cpnotes.org.uk)",
    )


def test_the_secret_key_kept_in_the_database_counts(complete: Path) -> None:
    settings = load_settings(complete, environ={"NEWSLETTER_SECRET_KEY": ""})
    assert doctor.check_secret_key(settings).status == "warning"
    assert not settings.db_path.exists()
    database = store.open_db(settings.db_path)
    store.stored_secret_key(database)
    database.close()
    check = doctor.check_secret_key(settings)
    assert (check.status, check.message) == ("ok", "kept in the database newsletter.db")


def test_a_corrupt_database_is_reported_not_raised(complete: Path) -> None:
    settings = load_settings(complete, environ={"NEWSLETTER_SECRET_KEY": ""})
    settings.db_path.write_bytes(b"not a database" * 100)
    check = doctor.check_secret_key(settings)
    assert check.status == "missing"
    assert check.message == f"cannot open the database {settings.db_path}: file is not a database"


# --- doctor --smtp against the live loopback server -----------------------------------------


def smtp_env(project: Path, sink: SmtpSink, **extra: object) -> None:
    write_env(
        project,
        SMTP_HOST=sink.host,
        SMTP_PORT=sink.port,
        SMTP_SECURITY="none",
        SMTP_TIMEOUT="10",
        **extra,
    )


def test_smtp_login_succeeds_and_sends_nothing(
    complete: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    smtp_env(complete, smtp_sink, SMTP_USERNAME="jane", SMTP_PASSWORD="right-password")
    result = cli("doctor", "--smtp")
    report = {name: (status, message) for status, name, message in lines(result.stdout)}
    assert report["SMTP"] == (
        "ok",
        f"connected to {smtp_sink.host}:{smtp_sink.port} and logged in as jane",
    )
    assert smtp_sink.connections == 1 and smtp_sink.received == []


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("wrong-password", "the SMTP server {where} refused the login for jane: 535 5.7.8"),
        ("closed-port", "cannot connect to the SMTP server 127.0.0.1:{port}: connection refused"),
        ("no-host", "NEWSLETTER_SMTP_HOST is not set: mail goes to the outbox, not to readers"),
    ],
)
def test_smtp_failure_is_missing_and_exits_1(
    complete: Path, smtp_sink: SmtpSink, cli: Cli, setup: str, message: str
) -> None:
    port = free_port()
    if setup == "wrong-password":
        smtp_env(complete, smtp_sink, SMTP_USERNAME="jane", SMTP_PASSWORD="Pw-never-shown-9")
    elif setup == "closed-port":
        smtp_env(complete, smtp_sink)
        write_env(complete, SMTP_PORT=port)
    else:
        env = (complete / ".env").read_text().splitlines()
        (complete / ".env").write_text(
            "".join(line + "\n" for line in env if "SMTP_HOST" not in line)
        )
    result = cli("doctor", "--smtp", ok=False)
    assert result.exit_code == 1
    report = {name: (status, text) for status, name, text in lines(result.stdout)}
    status, text = report["SMTP"]
    assert status == "missing"
    where = f"{smtp_sink.host}:{smtp_sink.port}"
    assert text.startswith(message.format(where=where, port=port)), text
    assert "Pw-never-shown-9" not in result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "1 missing: bulk mail is not ready to go out"
    assert smtp_sink.received == []
