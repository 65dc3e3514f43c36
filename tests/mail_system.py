"""A real Postfix and Dovecot on loopback (../shared/tools/inbox.sh), for tests that cross a
real mail system: real SMTP, real bounce reports (DSNs), real IMAP mailboxes."""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from imapclient import IMAPClient

REPO = Path(__file__).resolve().parent.parent
# The worktree's or checkout's sibling `shared/`, or where INBOX_SH says.
INBOX_SH = Path(os.environ.get("INBOX_SH", REPO.parent / "shared" / "tools" / "inbox.sh"))


@dataclass(frozen=True)
class MailSystem:
    smtp_port: int
    imap_port: int
    domain: str
    password: str

    def send(self, message: EmailMessage, *, mail_from: str, to: str) -> None:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as smtp:
            smtp.send_message(message, from_addr=mail_from, to_addrs=[to])

    def mailbox(self, address: str) -> list[EmailMessage]:
        """Every message in an address's INBOX, oldest first."""
        with IMAPClient("127.0.0.1", port=self.imap_port, ssl=False, timeout=10) as client:
            client.login(address, self.password)
            client.select_folder("INBOX", readonly=True)
            uids = client.search("ALL")
            fetched = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
        return [
            message_from_bytes(fetched[uid][b"BODY[]"], policy=policy.default)  # type: ignore[misc]
            for uid in sorted(fetched)
        ]

    def folder_count(self, address: str, folder: str) -> int:
        with IMAPClient("127.0.0.1", port=self.imap_port, ssl=False, timeout=10) as client:
            client.login(address, self.password)
            if not client.folder_exists(folder):
                return 0
            return int(client.select_folder(folder, readonly=True)[b"EXISTS"])

    def wait_for_mail(self, address: str, count: int, timeout: float = 60.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while True:
            messages = self.mailbox(address)
            if len(messages) >= count:
                return messages
            if time.monotonic() > deadline:
                raise AssertionError(f"{address} got {len(messages)} of {count} messages")
            time.sleep(0.3)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cannot_run() -> str | None:
    if not INBOX_SH.is_file():
        return f"{INBOX_SH} is not there (set INBOX_SH to inbox.sh)"
    if shutil.which("dpkg-query") is None:
        return "inbox.sh needs a Debian system (dpkg, apt)"
    missing = [
        p
        for p in ("postfix", "postfix-sqlite", "dovecot-imapd")
        if "install ok installed"
        not in subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True
        ).stdout
    ]
    if missing and os.geteuid() != 0:
        return f"{', '.join(missing)} not installed, and installing needs root (.ci/run does it)"
    if os.geteuid() != 0:
        return "inbox.sh starts Postfix, which needs root"
    return None


@pytest.fixture(scope="session")
def mail_system() -> Iterator[MailSystem]:
    """Start Postfix and Dovecot on free loopback ports for the session; stop them after."""
    reason = _cannot_run()
    if reason:
        pytest.skip(f"no real mail system: {reason}")
    env = {
        **os.environ,
        "INBOX_DIR": f"/var/tmp/newsletter-tests-inbox-{os.getpid()}",
        "INBOX_SMTP_PORT": str(free_port()),
        "INBOX_IMAP_PORT": str(free_port()),
    }
    started = subprocess.run(
        [str(INBOX_SH), "start"], env=env, capture_output=True, text=True, timeout=600
    )
    if started.returncode != 0:
        pytest.skip(f"inbox.sh start failed: {started.stderr.strip().splitlines()[-1:]}")
    fields = dict(item.split("=", 1) for item in started.stdout.split())
    try:
        yield MailSystem(
            smtp_port=int(fields["SMTP"].rsplit(":", 1)[1]),
            imap_port=int(fields["IMAP"].rsplit(":", 1)[1]),
            domain=fields["DOMAIN"],
            password=fields["PASSWORD"],
        )
    finally:
        subprocess.run([str(INBOX_SH), "stop"], env=env, capture_output=True, timeout=120)
