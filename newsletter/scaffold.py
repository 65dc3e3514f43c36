"""A newsletter directory: made by `newsletter init`, and found (or not) by every other command.

The default templates ship inside the package (the wheel maps the repository's top-level
`templates/` to `newsletter/templates`, so there is one set of files); `init` copies them
into the new directory for the author to change.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from .config import Settings
from .errors import ConfigError

EXAMPLE_SLUG = "hello"
GITIGNORE = """\
# What newsletter writes here: the list and send log, mail not yet sent, secrets.
/newsletter.db
/newsletter.db-*
/outbox/
/.env
/dkim.key
"""


def default_templates_dir() -> Path:
    """The templates shipped with the tool: inside the installed package, or, in a checkout
    (an editable install), the repository's own `templates/`."""
    spec = importlib.util.find_spec("newsletter.templates")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if (Path(location) / "email.html").is_file():
                return Path(location)
    checkout = Path(__file__).resolve().parent.parent / "templates"
    if (checkout / "email.html").is_file():
        return checkout
    raise ConfigError("the default templates are missing from this installation; reinstall it")


def require_newsletter(settings: Settings) -> None:
    """Stop unless `settings.directory` is a newsletter: one line saying where it looked.

    Without this, a command run in the wrong folder would make a stray empty database there.
    """
    if (
        (settings.directory / ".env").is_file()
        or settings.posts_dir.is_dir()
        or settings.db_path.exists()
    ):
        return
    raise ConfigError(
        f"no newsletter in {settings.directory} (no .env, posts/ or "
        f"{settings.db_path.name} there); start one with `newsletter init`, "
        "or name its directory with `newsletter -C DIR`"
    )


@dataclass
class InitReport:
    """What `init` made, and what it found already there and left alone."""

    directory: Path
    made: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def env_text(title: str, from_address: str | None) -> str:
    """The commented `.env` of a new newsletter."""
    from_line = (
        f"NEWSLETTER_FROM={_quote(from_address)}"
        if from_address
        else "# NEWSLETTER_FROM='Jane Author <jane@example.org>'   (needed to send)"
    )
    return f"""\
# Settings of this newsletter; a variable set in the real environment wins over this file.
# Every setting is in the README (newsletter --help lists the commands).

# The newsletter's name: in the footer, the web pages and the List-Id header.
NEWSLETTER_TITLE={_quote(title)}
# The From address of every email.
{from_line}
# Where readers' links point (unsubscribe, confirm, read online): where `newsletter serve` is
# reached, https in production.
NEWSLETTER_BASE_URL=http://127.0.0.1:8000
# Postal address for the footer (CAN-SPAM asks for one in bulk mail).
# NEWSLETTER_POSTAL_ADDRESS="1 High Street, Leeds LS1 1AA, United Kingdom"

# SMTP server; unset, mail is written to the Maildir outbox/ instead of being sent.
# NEWSLETTER_SMTP_HOST=smtp.example.org
# NEWSLETTER_SMTP_PORT=587
# NEWSLETTER_SMTP_USERNAME=
# NEWSLETTER_SMTP_PASSWORD=
# NEWSLETTER_SMTP_SECURITY=starttls
"""


def _quote(value: str) -> str:
    if any(ord(c) < 32 for c in value):
        raise ConfigError("the title and From address must be one line each")
    if "'" not in value:
        return f"'{value}'"  # single quotes: python-dotenv takes the text as it is
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def example_post(today: date) -> str:
    return f"""\
---
title: "Hello, readers"
date: {today.isoformat()}
summary: The first post of this newsletter.
---

This is the first post. Every file in `posts/` is a post: YAML front matter (title, date,
an optional summary) and Markdown below it.

`newsletter preview` shows the email; `newsletter send --to you@example.org` sends yourself a
test copy; `newsletter send` sends the newest post to every reader.
"""


def init_newsletter(
    directory: Path, *, title: str, from_address: str | None, today: date | None = None
) -> InitReport:
    """Make a newsletter in `directory` (created if needed), never overwriting a file."""
    report = InitReport(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write_new(directory / ".env", env_text(title, from_address), report, mode=0o600)
        _write_new(directory / ".gitignore", GITIGNORE, report)
        posts = directory / "posts"
        posts.mkdir(exist_ok=True)
        if not any(posts.glob("*.md")):
            _write_new(posts / f"{EXAMPLE_SLUG}.md", example_post(today or date.today()), report)
        else:
            report.kept.append("posts/")
        source = default_templates_dir()
        for template in sorted(source.rglob("*")):
            if (
                template.is_dir()
                or template.name == "__init__.py"
                or "__pycache__" in str(template)
            ):
                continue
            target = directory / "templates" / template.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                report.kept.append(str(target.relative_to(directory)))
            else:
                shutil.copyfile(template, target)
                report.made.append(str(target.relative_to(directory)))
    except OSError as e:
        raise ConfigError(f"cannot make the newsletter in {directory}: {e.strerror}") from e
    return report


def _write_new(path: Path, text: str, report: InitReport, mode: int = 0o644) -> None:
    """Write a file that does not exist yet; one that does is left as it is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        report.kept.append(str(path.relative_to(report.directory)))
        return
    os.fchmod(fd, mode)  # whatever the umask
    with open(fd, "w", encoding="utf-8") as out:
        out.write(text)
    report.made.append(str(path.relative_to(report.directory)))
