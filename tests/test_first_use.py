"""The small defects a new user met (issue 10): each one as a test."""

from __future__ import annotations

import socket
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter import db as store
from newsletter.cli import app

from .conftest import Cli, SmtpSink

COMMANDS = [
    ["init"],
    ["subscribers", "add"],
    ["subscribers", "remove"],
    ["subscribers", "delete"],
    ["subscribers", "list"],
    ["subscribers", "import"],
    ["subscribers", "export"],
    ["dkim", "generate"],
    ["doctor"],
    ["posts"],
    ["preview"],
    ["send"],
    ["log"],
    ["serve"],
]


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert (result.exit_code, result.stdout) == (0, f"newsletter {version('newsletter')}\n")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_help_has_examples_and_no_bool_placeholder(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "Examples:" in result.stdout
    assert f"newsletter {' '.join(command)}" in result.stdout
    assert "<bool>" not in result.stdout


def test_resubscribe_is_recorded_as_the_authors_action(cli: Cli, project: Path) -> None:
    cli("subscribers", "add", "ann@example.org")
    cli("subscribers", "remove", "ann@example.org")
    refused = cli("subscribers", "add", "ann@example.org", ok=False)
    assert refused.exit_code == 1
    assert "--resubscribe" in refused.stderr and refused.stderr.count("\n") == 1
    cli("subscribers", "add", "ann@example.org", "--resubscribe", "--name", "Ann Archer")
    database = store.open_db(project / "newsletter.db")
    ann = store.get_subscriber(database, "ann@example.org")
    database.close()
    assert ann is not None
    assert (ann.status, ann.status_reason, ann.name) == ("active", "author", "Ann Archer")
    assert ann.status_changed_at[:10] == store.now()[:10]


@pytest.mark.parametrize(
    ("address", "suggestion"),
    [
        ("ann@gmial.com", "gmail.com"),
        ("bob@hotmial.com", "hotmail.com"),
        ("carol@yaho.com", "yahoo.com"),
        ("dave@outlok.com", "outlook.com"),
    ],
)
def test_add_flags_a_likely_typo_and_never_changes_it(
    cli: Cli, project: Path, address: str, suggestion: str
) -> None:
    result = cli("subscribers", "add", address)
    assert result.stderr == (
        f"Warning: {address}: did you mean @{suggestion}? Added as typed; "
        f"`newsletter subscribers delete {address}` undoes it\n"
    )
    assert result.stdout == f"Added {address}\n"
    assert cli("subscribers", "add", "eve@example.org").stderr == ""


def test_log_with_nothing_sent_says_so(cli: Cli) -> None:
    assert cli("log").stdout == (
        "Nothing has been sent yet; `newsletter send` sends the newest post.\n"
    )
    assert cli("log", "--json").stdout == ""


def test_send_to_with_dry_run_sends_nothing(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    result = cli("send", "--to", "me@example.org", "--dry-run")
    assert "nothing sent" in result.stdout
    assert smtp_sink.received == [] and smtp_sink.connections == 0
    assert cli("log").stdout.startswith("Nothing has been sent yet")


def test_serve_port_out_of_range_is_one_line(cli: Cli) -> None:
    result = cli("serve", "--port", "99999", ok=False)
    assert result.exit_code == 1
    assert result.stderr == "Error: --port must be a port number from 1 to 65535, not 99999\n"


def test_serve_on_a_busy_port_is_one_line(cli: Cli) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("serve", "--port", str(port), ok=False)
    assert result.exit_code == 1
    assert result.stderr == f"Error: cannot listen on 127.0.0.1:{port}: it is in use already\n"
    assert "startup complete" not in result.output
