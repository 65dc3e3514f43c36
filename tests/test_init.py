"""A newsletter anywhere: `newsletter init`, the built wheel in a fresh venv, and commands run
where there is no newsletter."""

from __future__ import annotations

import os
import pty
import select
import shutil
import stat
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.config import load_settings

from .conftest import REPO


def run(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_init_makes_a_working_newsletter_and_never_overwrites(tmp_path: Path) -> None:
    news = tmp_path / "news"
    templates = sum(path.is_file() for path in (REPO / "templates").rglob("*"))
    result = run("init", str(news), "--title", "Jane's Notes", "--from", "Jane <jane@example.org>")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        f"Made in {news}: .env, .gitignore, posts/hello.md, templates/ ({templates} files)"
    )
    assert stat.S_IMODE((news / ".env").stat().st_mode) == 0o600
    settings = load_settings(news, environ={})
    assert settings.title == "Jane's Notes"
    assert str(settings.sender) == "Jane <jane@example.org>"
    assert "/newsletter.db" in (news / ".gitignore").read_text()
    shipped = sorted(p.relative_to(REPO / "templates") for p in (REPO / "templates").rglob("*.*"))
    made = sorted(p.relative_to(news / "templates") for p in (news / "templates").rglob("*.*"))
    assert made == shipped
    assert (news / "templates" / "email.html").read_bytes() == (
        REPO / "templates" / "email.html"
    ).read_bytes()

    (news / "templates" / "email.txt").write_text("mine")
    (news / ".env").write_text("NEWSLETTER_TITLE=Mine\n")
    again = run("init", str(news), "--title", "Other", "--from", "o@example.org")
    assert again.exit_code == 0
    assert "Kept as they were: .env, .gitignore, posts/" in again.stdout
    assert (news / "templates" / "email.txt").read_text() == "mine"
    assert (news / ".env").read_text() == "NEWSLETTER_TITLE=Mine\n"
    assert not (news / "newsletter.db").exists()


def test_init_asks_the_title_and_from_address_at_a_terminal(tmp_path: Path) -> None:
    """Run as a person would, on a real pseudo-terminal, answering the two questions."""
    news = tmp_path / "news"
    script = Path(sys.executable).parent / "newsletter"
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, its stdin and stdout a terminal
        os.execv(script, [str(script), "init", str(news)])
    seen = b""
    for answer in (b"Pty News\n", b"Jane <jane@example.org>\n", None):
        while select.select([fd], [], [], 10)[0]:
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # the child has finished
                break
            seen += chunk
            if seen.rstrip().endswith(b":"):
                break
        if answer:
            os.write(fd, answer)
            seen = b""
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    settings = load_settings(news, environ={})
    assert (settings.title, str(settings.sender)) == ("Pty News", "Jane <jane@example.org>")


def test_init_without_a_from_address_says_what_to_set(tmp_path: Path) -> None:
    result = run("init", str(tmp_path / "news"), "--title", "Notes")
    assert "Set NEWSLETTER_FROM in .env before sending." in result.stdout
    assert load_settings(tmp_path / "news", environ={}).from_address is None
    bad = run("init", str(tmp_path / "other"), "--from", "not an address")
    assert bad.exit_code == 1
    assert bad.stderr.startswith("Error: NEWSLETTER_FROM must be an address")
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["subscribers", "list"],
        ["subscribers", "add", "ann@example.org"],
        ["send", "--yes"],
        ["log"],
        ["posts"],
        ["serve"],
        ["doctor"],
    ],
)
def test_commands_where_there_is_no_newsletter_stop_in_one_line(
    tmp_path: Path, args: list[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, ["-C", str(empty), *args])
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: no newsletter in {empty} (no .env, posts/ or newsletter.db there); start one "
        "with `newsletter init`, or name its directory with `newsletter -C DIR`\n"
    )
    assert list(empty.iterdir()) == []  # no stray database


@pytest.mark.slow
def test_the_built_wheel_works_in_a_fresh_venv_outside_the_repo(tmp_path: Path) -> None:
    """Not editable, no checkout: the wheel alone must carry the templates."""
    # Built from a clean copy: setuptools' build/ folder in a checkout can hold stale files.
    source = tmp_path / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__"),
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("newsletter-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        cwd=tmp_path,
    )
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NEWSLETTER_", "PYTHON", "VIRTUAL_ENV"))
    }
    work = tmp_path / "elsewhere"
    work.mkdir()

    def newsletter(*args: str, cwd: Path) -> str:
        done = subprocess.run(
            [str(bin_dir / "newsletter"), *args],
            cwd=cwd,
            env=environ,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import newsletter; print(newsletter.__file__)"],
        cwd=work,
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(env_dir)), where  # the installed copy, not the checkout
    newsletter(
        "init", "news", "--title", "Wheel News", "--from", "Jane <jane@example.org>", cwd=work
    )
    news = work / "news"
    newsletter("subscribers", "add", "ann@example.org", cwd=news)
    assert "Sent 1, failed 0" in newsletter("send", "--yes", cwd=news)
    (message,) = (news / "outbox" / "new").iterdir()
    text = message.read_text()
    assert "To: ann@example.org" in text and "Subject: Hello, readers" in text
