"""Fixtures: a newsletter directory, its settings and database, a live SMTP sink on loopback,
and a CLI runner that acts on the directory."""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import TypeVar

import pytest
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlite_utils import Database
from typer.testing import CliRunner

from newsletter import db as store
from newsletter.cli import app
from newsletter.config import Settings, load_settings
from newsletter.web import create_app

REPO = Path(__file__).resolve().parent.parent
# The tests' own copy of the five seed posts: the author adding, editing or removing a post in
# posts/ never changes what the tests see (test_posts checks the real posts/ on its own).
FIXTURE_POSTS = REPO / "tests" / "fixtures" / "posts"
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
    """A newsletter directory with the fixture posts, the real templates and a minimal .env."""
    directory = tmp_path / "news"
    directory.mkdir()
    shutil.copytree(FIXTURE_POSTS, directory / "posts")
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
    at: float = 0.0  # time.monotonic() when the server took it

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
    pipelining: bool = True  # advertise RFC 2920 PIPELINING, as Postfix and most services do
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
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    envelope.original_content,
                    time.monotonic(),
                )
            )
        return f"250 2.0.0 OK queued as {n}"

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self.lock:
            self.connections += 1
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
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


# --- the web app ----------------------------------------------------------------------------


T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 10.0) -> T:
    """Poll until `condition()` is truthy: mail the web app sends after answering comes later."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting after {timeout}s")
        time.sleep(0.02)
    return result


@dataclass
class LiveServer:
    """The web app under a real uvicorn on loopback, over the test newsletter's settings."""

    url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        """Shut down as uvicorn does on Ctrl+C: it waits for every answer and background task,
        so what the app was going to send has been sent when this returns."""
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def start_server(smtp_project: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start the app on a free loopback port, mailing the SMTP sink; keyword arguments are
    written to .env first. The base URL is the server's, so links in sent mail lead to it."""
    started: list[LiveServer] = []

    def start(**env: object) -> LiveServer:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        write_env(smtp_project, BASE_URL=url, **env)
        settings = load_settings(smtp_project, environ={})
        config = uvicorn.Config(
            create_app(settings),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="on",  # as `serve` runs it: stopping waits for queued confirmation emails
            forwarded_allow_ips="127.0.0.1",  # tests play other clients with X-Forwarded-For
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
        thread.start()
        live = LiveServer(url, settings, server, thread)
        started.append(live)
        wait_for(lambda: server.started or not thread.is_alive())
        assert server.started, "uvicorn did not start"
        return live

    yield start
    for live in started:
        live.stop()


@pytest.fixture
def live_server(start_server: Callable[..., LiveServer]) -> LiveServer:
    return start_server()


def as_from_a_terminal() -> None:
    """preexec_fn for a child that is sent Ctrl-C: a shell's background job (CI started with
    `&`, nohup) ignores SIGINT and its children inherit that; a terminal's command does not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
