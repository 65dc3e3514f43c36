"""Fixtures: a newsletter directory, its settings and database, a live SMTP sink on loopback,
and a CLI runner that acts on the directory."""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlite_utils import Database
from typer.testing import CliRunner

from newsletter import db as store
from newsletter.cli import app
from newsletter.config import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
FROM = "Jane Author <jane@example.org>"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own NEWSLETTER_* variables must never leak into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)


def write_env(directory: Path, **values: object) -> None:
    """Add or replace settings in the directory's .env."""
    env_file = directory / ".env"
    current: dict[str, str] = {}
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, _, value = line.partition("=")
            current[key] = value
    for key, value in values.items():
        current[f"NEWSLETTER_{key.upper()}"] = str(value)
    env_file.write_text("".join(f"{k}={v}\n" for k, v in current.items()))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A newsletter directory with the real posts and templates and a minimal .env."""
    directory = tmp_path / "news"
    directory.mkdir()
    shutil.copytree(REPO / "posts", directory / "posts")
    shutil.copytree(REPO / "templates", directory / "templates")
    write_env(
        directory,
        FROM=f"'{FROM}'",
        TITLE="'Child Protection Notes'",
        POSTAL_ADDRESS="'1 High Street, Leeds LS1 1AA, UK'",
        BASE_URL="https://news.example.org",
    )
    return directory


@pytest.fixture
def settings(project: Path) -> Settings:
    return load_settings(project, environ={})


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = store.open_db(settings.db_path)
    yield database
    database.close()


# --- SMTP -----------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class SmtpSink:
    """What a loopback SMTP server received, and the faults it is told to inject."""

    host: str = "127.0.0.1"
    port: int = 0
    received: list[Received] = field(default_factory=list)
    reject: dict[str, str] = field(default_factory=dict)  # address -> 5xx reply at RCPT
    reject_data: dict[str, str] = field(default_factory=dict)  # address -> reply at DATA
    tempfail_every: int = 0  # every Nth DATA answered 451
    drop_every: int = 0  # every Nth DATA: connection closed, no reply
    stall_every: int = 0  # every Nth DATA: no answer for stall_seconds, then 451, nothing kept
    stall_seconds: float = 0.0
    data_count: int = 0
    tempfail_count: int = 0
    drop_count: int = 0
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def per_recipient(self) -> Counter[str]:
        return Counter(r for message in self.received for r in message.rcpt_tos)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.reject:
            return self.reject[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.data_count += 1
            n = self.data_count
        for address in envelope.rcpt_tos:
            if address in self.reject_data:
                return self.reject_data[address]
        if self.stall_every and n % self.stall_every == 0:
            await asyncio.sleep(self.stall_seconds)
            return "451 4.4.2 too slow"
        if self.drop_every and n % self.drop_every == 0:
            self.drop_count += 1
            server.transport.close()
            return "421 4.4.2 dropped on purpose"
        if self.tempfail_every and n % self.tempfail_every == 0:
            self.tempfail_count += 1
            return "451 4.3.0 try again later"
        with self.lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
        return f"250 2.0.0 OK queued as {n}"

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self.lock:
            self.connections += 1
        session.host_name = hostname
        return responses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"right-password"
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server on a free loopback port that keeps what it receives."""
    sink = SmtpSink(port=free_port())
    controller = Controller(
        sink,
        hostname=sink.host,
        port=sink.port,
        authenticator=_authenticator,
        auth_require_tls=False,
    )
    controller.start()
    yield sink
    controller.stop()


@pytest.fixture
def smtp_project(project: Path, smtp_sink: SmtpSink) -> Path:
    """The project, sending to the loopback sink."""
    write_env(
        project,
        SMTP_HOST=smtp_sink.host,
        SMTP_PORT=smtp_sink.port,
        SMTP_SECURITY="none",
        SMTP_RETRY_DELAY="0.01",
        SMTP_TIMEOUT="10",
    )
    return project


# --- the command line -----------------------------------------------------------------------


@dataclass
class Cli:
    directory: Path
    runner: CliRunner

    def __call__(self, *args: str, input: str | None = None, ok: bool = True):
        """Run `newsletter -C DIR ARGS`; with ok=True a surprise shows its traceback."""
        result = self.runner.invoke(
            app, ["-C", str(self.directory), *args], input=input, catch_exceptions=not ok
        )
        if ok:
            assert result.exit_code == 0, result.output
        return result


@pytest.fixture
def cli(project: Path) -> Cli:
    return Cli(project, CliRunner())


def add_readers(database: Database, count: int, *, start: int = 0) -> list[str]:
    addresses = [f"reader{i}@example.org" for i in range(start, start + count)]
    store.insert_new_subscribers(
        database,
        (store.NewSubscriber(email=a, name=f"Reader {i}") for i, a in enumerate(addresses, start)),
        dry_run=False,
    )
    return addresses
