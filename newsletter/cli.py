"""The command line: parse, load settings, call the core, print. No SQL or SMTP here."""

from __future__ import annotations

import functools
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

from .errors import ConfigError, NewsletterError, environment_failure
from .terminal import printable
from .vocab import FREQUENCIES, RELAY_SERVICES, RETURNED_REASONS, STATUS_FILTERS

if TYPE_CHECKING:
    from sqlite_utils import Database

    from . import db as store
    from .config import Settings
    from .feed import PullReport
    from .posts import Post
    from .run import SendReport

# Each command imports what it needs when it runs: `--help` pays for Typer alone, and
# `subscribers list` for SQLite, never for the web server, the feed reader or the renderer.
# (bench/bench_startup.py measures it.)

app = typer.Typer(
    help="Publish a Markdown blog as an email newsletter.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a traceback must never show the SMTP password
    add_completion=False,
)
subscribers_app = typer.Typer(help="Keep the list of readers.", no_args_is_help=True)
app.add_typer(subscribers_app, name="subscribers")
dkim_app = typer.Typer(help="Sign mail with DKIM.", no_args_is_help=True)
app.add_typer(dkim_app, name="dkim")

SAMPLE_READER = ("Sample Reader", "reader@example.org", "sample-unsubscribe-token")


@dataclass(frozen=True)
class _Invocation:
    directory: Path | None = None
    debug: bool = False


_invocation: ContextVar[_Invocation] = ContextVar(
    "invocation",
    default=_Invocation(),  # noqa: B039 - frozen, so not shared mutable state
)

P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the core's errors into one `Error: ...` line and exit code 1 (--debug re-raises)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except NewsletterError as e:
            if _invocation.get().debug:
                raise
            typer.echo(f"Error: {printable(str(e))}", err=True)
            raise typer.Exit(1) from None
        except (sqlite3.DatabaseError, OSError) as e:  # a full disk, a read-only file
            problem = environment_failure(e)
            if problem is None or _invocation.get().debug:
                raise
            typer.echo(f"Error: {printable(problem)}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"newsletter {version('newsletter')}")
        raise typer.Exit()


@app.callback()
def main(
    directory: Annotated[
        Path | None,
        typer.Option("--directory", "-C", help="The newsletter directory (default: here)."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", help="Show the version and exit.", callback=_show_version),
    ] = False,
) -> None:
    _invocation.set(_Invocation(directory=directory, debug=debug))


def _settings() -> Settings:
    from .config import load_settings
    from .scaffold import require_newsletter

    settings = load_settings(_invocation.get().directory)
    require_newsletter(settings)  # never a stray database in the wrong folder
    return settings


@contextmanager
def _database(settings: Settings) -> Iterator[Database]:
    from . import db as store

    with store.connect(settings.db_path) as db:
        yield db


def _output(text: str, file: Path | None) -> bool:
    """Write `text` to `file`, or to stdout without one; True when a file was written."""
    if file is None:
        typer.echo(text, nl=False)
        return False
    try:
        file.write_text(text, encoding="utf-8")
    except OSError as e:
        raise NewsletterError(f"cannot write {file}: {e.strerror}") from e
    return True


def _json_line(record: dict[str, Any]) -> None:
    import json

    typer.echo(json.dumps(record, ensure_ascii=False, default=str))


# --- subscribers ----------------------------------------------------------------------------


@subscribers_app.command("add")
@reports_errors
def subscribers_add(
    email: Annotated[str, typer.Argument(help="The reader's address.")],
    name: Annotated[str, typer.Option("--name", "-n", help="The reader's name.")] = "",
    resubscribe: Annotated[
        bool,
        typer.Option(
            "--resubscribe",
            help="Make active again someone who left or bounced (on their fresh request).",
        ),
    ] = False,
) -> None:
    """Add a reader to the list (active at once: you vouch for their consent).

    Adding someone already active is not an error, so the command can be run again.
    """
    from . import db as store
    from .addresses import clean_name, normalise_address, suggest_domain

    address, clean = normalise_address(email), clean_name(name)
    settings = _settings()
    suggestion = suggest_domain(address.rsplit("@", 1)[1])
    if suggestion is not None:
        typer.echo(
            f"Warning: {address}: did you mean @{suggestion}? Added as typed; "
            f"`newsletter subscribers delete {address}` undoes it",
            err=True,
        )
    with _database(settings) as db:
        outcome, subscriber = store.add_by_author(db, address, clean, resubscribe=resubscribe)
    if outcome == "added":
        typer.echo(f"Added {subscriber.email}")
    elif outcome == "already active":
        typer.echo(f"{subscriber.email} is already on the list (active); nothing to do")
    else:
        typer.echo(
            f"Resubscribed {subscriber.email} (recorded as your action, "
            f"{subscriber.status_changed_at})"
        )


@subscribers_app.command("remove")
@reports_errors
def subscribers_remove(email: Annotated[str, typer.Argument(help="The reader's address.")]) -> None:
    """Unsubscribe a reader; the row stays so no import can bring them back."""
    from . import db as store
    from .addresses import normalise_address

    with _database(_settings()) as db:
        subscriber = store.require_subscriber(db, normalise_address(email))
        store.remove_by_author(db, subscriber.id)
    typer.echo(f"Unsubscribed {subscriber.email}")


@subscribers_app.command("delete")
@reports_errors
def subscribers_delete(email: Annotated[str, typer.Argument(help="The reader's address.")]) -> None:
    """Erase a reader and their address in the send log (the right to erasure)."""
    from .addresses import normalise_address
    from .erasure import erase_person

    settings = _settings()
    with _database(settings) as db:
        erased = erase_person(settings, db, normalise_address(email))
    outbox = f" and {erased.outbox_messages} messages in the outbox" * bool(erased.outbox_messages)
    typer.echo(f"Deleted {erased.address} and erased them from the send log{outbox}")


@subscribers_app.command("set")
@reports_errors
def subscribers_set(
    email: Annotated[str, typer.Argument(help="The reader's address.")],
    frequency: Annotated[
        str | None, typer.Option("--frequency", help=f"{' or '.join(FREQUENCIES)}.")
    ] = None,
    topics: Annotated[
        str | None, typer.Option("--topics", help="These topics only, e.g. a,b.")
    ] = None,
    all_topics: Annotated[
        bool, typer.Option("--all-topics", help="Every topic, new ones included.")
    ] = False,
    pause_until: Annotated[
        str | None, typer.Option("--pause-until", help="No mail until this day (YYYY-MM-DD).")
    ] = None,
    pause_weeks: Annotated[
        int | None, typer.Option("--pause-weeks", help="No mail for this many weeks.")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="End a pause now.")] = False,
) -> None:
    """Change one reader's choices: how often, which topics, a pause."""
    from . import db as store
    from .addresses import normalise_address
    from .reader_choices import (
        ChoiceChange,
        change_choices,
        describe_choices,
        parse_day,
        split_topic_list,
    )

    chosen = next((known for known in FREQUENCIES if known == frequency), None)
    if frequency is not None and chosen is None:
        raise NewsletterError(f"--frequency must be one of {', '.join(FREQUENCIES)}")
    change = ChoiceChange(
        frequency=chosen,
        topics=None if topics is None else split_topic_list(topics),
        all_topics=all_topics,
        pause_until=None if pause_until is None else parse_day(pause_until, "--pause-until"),
        pause_weeks=pause_weeks,
        resume=resume,
    )
    settings = _settings()
    with _database(settings) as db:
        reader = change_choices(settings, db, normalise_address(email), change)
        picked = store.reader_topics(db, reader.id)
    note = "" if reader.status == "active" else f" (they are {reader.status}: nothing is sent)"
    typer.echo(f"{printable(reader.email)}: {describe_choices(reader, picked)}{note}")


@subscribers_app.command("list")
@reports_errors
def subscribers_list(
    status: Annotated[
        str,
        typer.Option(
            "--status", "-s", help=f"{', '.join(STATUS_FILTERS[:-1])} or {STATUS_FILTERS[-1]}."
        ),
    ] = "active",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    topic: Annotated[
        str | None, typer.Option("--topic", help="Only the readers of this topic.")
    ] = None,
) -> None:
    """List readers, a table for people or JSON lines for programs.

    Each reader's choices: every post or the weekly digest, a pause, their topics (`all`
    until they pick some).
    """
    import json

    from . import db as store
    from .topics import check_topics, load_topics

    chosen = next((known for known in STATUS_FILTERS if known == status), None)
    if chosen is None:
        typer.echo(f"Error: --status must be one of {', '.join(STATUS_FILTERS)}", err=True)
        raise typer.Exit(2)
    settings = _settings()
    if topic is not None:
        check_topics([topic], load_topics(settings.directory), "--topic")
    out = sys.stdout
    paused_after = store.now()
    with _database(settings) as db:
        count = 0
        if not as_json:
            out.write(
                f"{'EMAIL':<40} {'STATUS':<12} {'SOURCE':<6} {'SINCE':<25} {'GETS':<6} "
                f"{'PAUSED':<10} {'TOPICS':<20} NAME\n"
            )
        for subscriber in store.iter_subscribers(db, chosen, topic=topic):
            count += 1
            picked = store.reader_topics(db, subscriber.id) if subscriber.topics_chosen else None
            if as_json:
                record = vars(subscriber)  # flat: no asdict copy
                record = {**record, "topics": None if picked is None else list(picked)}
                if subscriber.status_reason in RETURNED_REASONS:
                    record = {**record, "events": _events(db, subscriber.id)}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            else:
                until = subscriber.paused_until
                paused = until[:10] if until and until > paused_after else "-"
                shown = "all" if picked is None else ",".join(picked) or "none"
                out.write(
                    f"{printable(subscriber.email):<40} {subscriber.status:<12} "
                    f"{subscriber.source:<6} {subscriber.created_at:<25} "
                    f"{subscriber.frequency:<6} {paused:<10} {shown:<20} "
                    f"{printable(subscriber.name)}\n"
                )
        if not as_json:
            out.write(f"{count} {'reader' if count == 1 else 'readers'}\n")
    out.flush()


@subscribers_app.command("import")
@reports_errors
def subscribers_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="A CSV or ZIP export: Mailchimp, Substack, Buttondown, Ghost, listmonk, "
            "beehiiv, Kit, MailerLite, this tool's own, or plain email[,name]."
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and count, change nothing.")
    ] = False,
) -> None:
    """Import readers with the status their platform gives them; nobody who left is mailed.

    Who unsubscribed, bounced or complained there is kept here as left, so that no later
    import, form or `add` brings them back unasked; who is waiting to confirm stays pending.
    Someone who left here stays left whatever the file says; someone the file says left is
    marked so here. A new reader's tags or labels that name a topic in topics.toml become
    their topics; the summary names the tags that do not.
    """
    from . import subscriber_csv
    from .topics import load_topics

    settings = _settings()
    with _database(settings) as db:
        report = subscriber_csv.import_file(
            db, file, dry_run=dry_run, topics=load_topics(settings.directory)
        )
    if report.platforms:
        typer.echo(f"Read as the export of: {', '.join(sorted(report.platforms))}", err=True)
    for where, reason in report.rejected_lines:
        typer.echo(f"{where}: {reason}", err=True)
    if report.rejected > len(report.rejected_lines):
        typer.echo(
            f"... and {report.rejected - len(report.rejected_lines)} more rejected lines",
            err=True,
        )
    for where, address, domain in report.typo_lines:
        typer.echo(f"{where}: {address}: did you mean @{domain}? (imported as typed)", err=True)
    if report.typos > len(report.typo_lines):
        typer.echo(f"... and {report.typos - len(report.typo_lines)} more likely typos", err=True)
    for skipped in report.skipped_files:
        typer.echo(f"{skipped}: no email column, skipped", err=True)
    typer.echo(report.summary())


@subscribers_app.command("export")
@reports_errors
def subscribers_export(
    file: Annotated[Path | None, typer.Argument(help="Write here instead of stdout.")] = None,
    email: Annotated[
        str | None,
        typer.Option("--email", help="One person: everything kept about them, as JSON."),
    ] = None,
) -> None:
    """Export every reader as CSV (imports back unchanged), or one person's data as JSON.

    A file written is readable by you only; cells a spreadsheet would run as formulas start
    with a single quote.
    """
    import json

    from . import db as store
    from . import subscriber_csv
    from .addresses import normalise_address
    from .files import open_private

    if email is not None:
        with _database(_settings()) as db:
            data = store.personal_data(db, normalise_address(email))
        document = json.dumps(data.as_dict(), ensure_ascii=False, indent=2) + "\n"
        if file is None:
            typer.echo(document, nl=False)
            return
        try:
            with open_private(file) as out:
                out.write(document)
        except OSError as e:
            raise NewsletterError(f"cannot write {file}: {e.strerror}") from e
        typer.echo(f"Exported what is kept about {data.email} to {file}", err=True)
        return
    with _database(_settings()) as db:
        if file is None:
            subscriber_csv.export_csv(db, sys.stdout)
            return
        try:
            with open_private(file) as out:
                count = subscriber_csv.export_csv(db, out)
        except OSError as e:
            raise NewsletterError(f"cannot write {file}: {e.strerror}") from e
    typer.echo(f"Exported {count} readers to {file}", err=True)


# --- deliverability: dkim, doctor -----------------------------------------------------------


@dkim_app.command("generate")
@reports_errors
def dkim_generate(
    selector: Annotated[
        str | None,
        typer.Option(
            "--selector", "-s", help="Default: NEWSLETTER_DKIM_SELECTOR, else 'newsletter'."
        ),
    ] = None,
    domain: Annotated[
        str | None,
        typer.Option("--domain", "-d", help="Default: NEWSLETTER_DKIM_DOMAIN, else From's."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="The key file. Default: NEWSLETTER_DKIM_KEY_FILE, else dkim.key."
        ),
    ] = None,
) -> None:
    """Write a new 2048-bit DKIM key (never over an existing file); print its DNS record."""
    from .dkim import KEY_BITS, generate_key

    settings = _settings()
    selector = selector or settings.dkim_selector or "newsletter"
    from_domain = settings.from_address.domain if settings.from_address else None
    domain = domain or settings.dkim_domain or from_domain
    if domain is None:
        raise ConfigError("give --domain, or set NEWSLETTER_FROM or NEWSLETTER_DKIM_DOMAIN")
    path = out or settings.dkim_key_file or settings.directory / "dkim.key"
    record = generate_key(path, selector, domain)
    typer.echo(
        f"Wrote a {KEY_BITS}-bit DKIM key to {path}, readable only by you; keep it secret. "
        "Publish this DNS TXT record:",
        err=True,
    )
    typer.echo(record.zone_line())
    typer.echo(
        f"(In a zone file, as strings of at most 255 characters: {record.zone_file_line()})",
        err=True,
    )
    key_setting = (
        path.resolve().relative_to(settings.directory)
        if path.resolve().is_relative_to(settings.directory)
        else path.resolve()
    )
    typer.echo(
        f"Then set in .env: NEWSLETTER_DKIM_KEY_FILE={key_setting} "
        f"NEWSLETTER_DKIM_SELECTOR={record.selector} NEWSLETTER_DKIM_DOMAIN={record.domain}",
        err=True,
    )


@app.command("doctor")
@reports_errors
def doctor_command(
    smtp: Annotated[
        bool,
        typer.Option(
            "--smtp",
            help="Also connect and log in to the SMTP server (or ask SES or Postmark for the "
            "account's status).",
        ),
    ] = False,
    imap: Annotated[
        bool, typer.Option("--imap", help="Also log in to the bounce mailbox over IMAP.")
    ] = False,
) -> None:
    """Check the setup against Gmail's and Yahoo's bulk sender rules (exit 1: something missing).

    Sends nothing; with --smtp, connects and logs in to the SMTP server and leaves.
    """
    from . import doctor

    checks = doctor.run_checks(_settings(), smtp=smtp, imap=imap)
    width = max(len(check.name) for check in checks)
    for check in checks:
        typer.echo(f"{check.status:<8} {check.name:<{width}}  {printable(check.message)}")
    missing = doctor.missing(checks)
    warnings = sum(check.status == "warning" for check in checks)
    noted = f", {warnings} warning{'s' * (warnings != 1)}" if warnings else ""
    if missing:
        typer.echo(f"{len(missing)} missing{noted}: bulk mail is not ready to go out")
        raise typer.Exit(1)
    typer.echo(f"Nothing required is missing{noted}")


# --- posts, preview -------------------------------------------------------------------------


@app.command("posts")
@reports_errors
def posts_command(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List the posts, newest first: sent or not, draft, scheduled, and broken files."""
    from . import db as store
    from .archive import all_posts

    settings = _settings()
    found = all_posts(settings)
    with _database(settings) as db:
        logs = store.post_logs(db)
        archived = store.archived_slugs(db)
    now = datetime.now(UTC)
    for post in found.posts:
        log = logs.get(post.slug)
        sent = log.sent if log else 0
        state = post.state(now)
        if as_json:
            _json_line(
                {
                    "slug": post.slug,
                    "date": post.date.isoformat(),
                    "publish_at": post.published_at.isoformat(),
                    "title": post.title,
                    "state": state,
                    "archived": post.slug in archived,
                    "sent": sent > 0,
                    "sent_to": sent,
                }
            )
        else:
            label = _post_state(post, state, sent, archived)
            typer.echo(f"{post.date.isoformat()}  {post.slug:<32} {label}  {printable(post.title)}")
    for broken in found.broken:
        if as_json:
            _json_line({"file": broken.path.name, "state": "broken", "error": broken.error})
        else:
            typer.echo(
                f"{'?':<10}  {broken.path.name:<32} {'broken':<14}  {printable(broken.error)}"
            )


@app.command("topics")
@reports_errors
def topics_command() -> None:
    """List the newsletter's topics (topics.toml) and how many active readers read each."""
    from . import db as store
    from .topics import TOPICS_FILE, load_topics

    settings = _settings()
    topics = load_topics(settings.directory)
    if not topics:
        what = "lists none" if (settings.directory / TOPICS_FILE).exists() else "does not exist"
        typer.echo(
            f"No topics: {TOPICS_FILE} {what}; write a table per topic in "
            f"{settings.directory / TOPICS_FILE}, e.g. [inspections] then "
            'title = "Inspections" and description = "What inspections find."'
        )
        return
    with _database(settings) as db:
        counts = store.choice_counts(db, [topic.name for topic in topics])
    typer.echo(f"{'TOPIC':<24} {'READERS':>7}  {'TITLE':<28} DESCRIPTION")
    for topic in topics:
        typer.echo(
            f"{topic.name:<24} {counts.per_topic[topic.name]:>7}  {printable(topic.title):<28} "
            f"{printable(topic.description)}"
        )
    typer.echo(
        f"{len(topics)} topics; {counts.all_topics} of {counts.every + counts.digest} active "
        "readers read every topic (they never picked)"
    )


def _post_state(post: Post, state: str, sent: int, archived: set[str]) -> str:
    if sent:
        label = f"sent to {sent}"
    elif post.slug in archived:
        label = "archived"
    elif state == "scheduled":
        label = f"scheduled {post.published_at:%Y-%m-%d %H:%M}Z"
    else:
        label = "draft" if state == "draft" else "not sent"
    return f"{label:<14}" + (" (draft)" if post.draft and sent else "")


@app.command("preview")
@reports_errors
def preview(
    slug: Annotated[str | None, typer.Argument(help="The post (default: the newest).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file.")] = None,
    text: Annotated[bool, typer.Option("--text", help="The plain-text part.")] = False,
    open_browser: Annotated[bool, typer.Option("--open", help="Open it in the browser.")] = False,
    digest: Annotated[
        bool, typer.Option("--digest", help="This week's digest instead of a post.")
    ] = False,
) -> None:
    """Show the finished email of a post (or the weekly digest), as a sample reader gets it."""
    import tempfile
    import webbrowser

    settings = _settings()
    if digest:
        from .digest import preview_digest

        if slug is not None:
            raise NewsletterError("--digest shows this week's digest: give no slug")
        issue = preview_digest(settings)
    else:
        from . import sender
        from .posts import find_post, images_report

        post = find_post(settings.posts_dir, slug, settings.timezone)
        broken = images_report(post)
        if broken is not None:  # shown, not refused: the author previews to find such things
            typer.echo(f"Warning: {printable(broken)}; `send` refuses the post", err=True)
        issue = sender.prepare_issue(settings, post)
    body = issue.text_for(*SAMPLE_READER) if text else issue.html_for(*SAMPLE_READER)
    if open_browser and out is None:
        suffix = ".txt" if text else ".html"
        with tempfile.NamedTemporaryFile("w", suffix=suffix, delete=False, encoding="utf-8") as f:
            out = Path(f.name)
    if not _output(body, out):
        return
    typer.echo(f"Wrote {out}", err=True)
    if open_browser and out is not None:
        webbrowser.open(out.resolve().as_uri())


# --- send, log ------------------------------------------------------------------------------


@app.command("send")
@reports_errors
def send(
    slug: Annotated[
        str | None, typer.Argument(help="The post (default: the newest one that is due).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render every message, send nothing.")
    ] = False,
    to: Annotated[
        str | None, typer.Option("--to", help="Send one test copy to this address only.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    now: Annotated[
        bool, typer.Option("--now", help="Send a scheduled post before its time.")
    ] = False,
    send_due: Annotated[
        bool,
        typer.Option("--due", help="Send every post whose time has come and that was not sent."),
    ] = False,
    topic: Annotated[
        list[str] | None,
        typer.Option(
            "--topic", help="Only to the readers of this topic (repeatable; overrides audience:)."
        ),
    ] = None,
) -> None:
    """Send a post to every active reader who has not had it yet.

    Without a slug: the newest post that is not a draft and whose time has come. Readers on
    the weekly digest or paused get nothing now; a post's `audience:` (or `topics:`), or
    `--topic`, sends it to the readers of those topics only.
    """
    from . import db as store
    from . import schedule, sender
    from .addresses import normalise_address

    settings = _settings()
    chosen_topics = tuple(topic or ())
    if send_due and chosen_topics:
        raise NewsletterError("--due sends each post to its own audience: give no --topic")
    if send_due:
        _send_due(settings, slug=slug, to=to, dry_run=dry_run, yes=yes)
        return
    with _database(settings) as db:
        post = schedule.post_for_send(
            settings, db, slug, early=now, test=to is not None, now=datetime.now(UTC)
        )
    if post is None:
        typer.echo(
            "Nothing to send: every post that is due counts as published (a feed's back catalogue)"
        )
        return
    readers_of = schedule.audience(settings, post, chosen_topics)  # an unknown topic stops here
    where = (
        f"SMTP {settings.smtp_host}:{settings.smtp_port}"
        if settings.uses_smtp
        else "Amazon SES"
        if settings.transport == "ses"
        else "Postmark"
        if settings.transport == "postmark"
        else f"the outbox {settings.outbox.relative_to(settings.directory)}/"
        if settings.outbox.is_relative_to(settings.directory)
        else f"the outbox {settings.outbox}"
    )
    if not settings.postal_address:
        typer.echo(
            "Warning: NEWSLETTER_POSTAL_ADDRESS is not set; bulk mail should carry a postal "
            "address (CAN-SPAM)",
            err=True,
        )
    if to is not None and dry_run:
        sender.prepare_issue(settings, post)  # rendered, so a template error shows now
        typer.echo(
            f"Dry run: a test copy of “{post.title}” to {normalise_address(to)}; nothing sent"
        )
        return
    if to is not None:
        reply = sender.send_test(settings, post, to)
        typer.echo(printable(f"Sent a test copy of “{post.title}” to {to} via {where} ({reply})"))
        return

    settings.sender  # noqa: B018 - a missing From is reported before anything else
    with _database(settings) as db:
        due = store.count_due(db, post.slug, readers_of)
        active = store.count_subscribers(db, "active")
        per_topic = [(name, store.count_due(db, post.slug, [name])) for name in readers_of]
    if active == 0:
        raise NewsletterError(
            "there are no active subscribers; add one with `newsletter subscribers add EMAIL`"
        )
    audience_note = f"; readers of {', '.join(readers_of)} only" if readers_of else ""
    if due == 0:
        typer.echo(
            f"“{printable(post.title)}” has already been sent to every active reader"
            f"{audience_note}; nothing to do."
        )
        return
    typer.echo(
        f"“{printable(post.title)}” ({post.slug}) to {due} of {active} active readers via {where}"
        f"{audience_note}"
    )
    if dry_run and per_topic:
        for name, count in per_topic:
            typer.echo(f"  {name}: {count} {'reader' if count == 1 else 'readers'}")
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            raise NewsletterError("not sending without confirmation: run with --yes")
        if not typer.confirm("Send it now?", default=False):
            raise typer.Exit(1)

    with _progress(due, dry_run) as advance:
        report = sender.send_post(
            settings, post, dry_run=dry_run, progress=advance, topics=chosen_topics
        )
    _print_report(report)


def _send_due(
    settings: Settings, *, slug: str | None, to: str | None, dry_run: bool, yes: bool
) -> None:
    """Every post whose time has come and that was not sent, oldest first; quiet when there is
    nothing to do, so cron mails nothing."""
    from . import db as store
    from . import schedule, sender

    if slug is not None or to is not None:
        raise NewsletterError("--due sends every due post: give no slug and no --to")
    if not yes and not dry_run:
        raise NewsletterError("--due sends without asking: run it with --yes")
    from .digest import digest_is_due, send_digest

    settings.sender  # noqa: B018 - a missing From is reported before anything else
    moment = datetime.now(UTC)
    with _database(settings) as db:
        chosen = schedule.due_posts(settings, db, moment)
        active = store.count_subscribers(db, "active")
        digest = digest_is_due(settings, db, moment)
    if active == 0 or not (chosen.posts or chosen.refused or digest):
        return
    for post in chosen.posts:
        typer.echo(f"“{post.title}” ({post.slug}), due {post.published_at:%Y-%m-%d %H:%M}Z")
        _print_report(sender.send_post(settings, post, dry_run=dry_run))
    if digest is not None:
        report = send_digest(settings, now=moment, dry_run=dry_run)
        if report.due:  # quiet when no digest reader has anything new
            typer.echo(f"The weekly digest ({report.slug}), due {digest.due_at:%Y-%m-%d %H:%M}Z")
            _print_report(report)
    for reason in chosen.refused:
        typer.echo(f"Error: not sent: {printable(reason)}", err=True)
    if chosen.refused:
        raise typer.Exit(1)


@contextmanager
def _progress(total: int | None, dry_run: bool) -> Iterator[Callable[[str], None] | None]:
    """A progress bar (count, rate, time left) on a terminal; nothing when piped."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    with Progress(
        TextColumn("rendering" if dry_run else "sending"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("send", total=total, rate="")

        def advance(_outcome: str) -> None:
            speed = bar.tasks[0].speed
            bar.update(task, advance=1, rate=f"{speed:,.0f}/s" if speed else "")

        yield advance


def _summary(report: SendReport) -> str:
    if report.dry_run:
        return (
            f"Dry run: {report.due} messages rendered ({report.message_bytes / 1e6:.1f} MB), "
            f"nothing sent, in {report.seconds:.1f}s"
        )
    rate = report.sent / report.seconds if report.seconds else 0
    return (
        f"Sent {report.sent}, failed {report.failed}, bounced {report.bounced}, "
        f"skipped {report.skipped} in {report.seconds:.1f}s ({rate:,.0f}/s)"
    )


def _print_report(report: SendReport, prefix: str = "") -> None:
    """A send's closing lines: the summary, the first failures, and why it stopped (exit 1)."""
    typer.echo(prefix + _summary(report))
    for failure in report.failures[:10]:
        typer.echo(f"  failed: {printable(failure)}", err=True)
    if report.stopped:
        typer.echo(f"Error: stopped early: {printable(report.stopped)}", err=True)
        raise typer.Exit(1)


@app.command("digest")
@reports_errors
def digest_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render every message, send nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Send this week's digest to every digest reader with something new.

    Each gets the posts published since their last digest, in their topics, newest first;
    a reader with nothing new gets nothing. `send --due` sends it by itself at
    NEWSLETTER_DIGEST_DAY and NEWSLETTER_DIGEST_HOUR.
    """
    from .digest import latest_digest, send_digest

    settings = _settings()
    settings.sender  # noqa: B018 - a missing From is reported before anything else
    moment = datetime.now(UTC)
    slug = latest_digest(settings, moment).slug
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            raise NewsletterError("not sending without confirmation: run with --yes")
        if not typer.confirm(f"Send the weekly digest ({slug}) now?", default=False):
            raise typer.Exit(1)
    with _progress(None, dry_run) as advance:
        report = send_digest(settings, now=moment, dry_run=dry_run, progress=advance)
    if not report.due and not dry_run:
        typer.echo(f"Nothing to send: no digest reader has a post new to them ({slug})")
        return
    _print_report(report)


@app.command("log")
@reports_errors
def log(
    slug: Annotated[str | None, typer.Argument(help="One post: a line per reader.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Read the send log: a line per post, or a line per reader of one post."""
    import json
    from dataclasses import asdict

    from . import db as store

    with _database(_settings()) as db:
        if slug is None:
            logs = store.post_logs(db)
            if not logs and not as_json:
                typer.echo("Nothing has been sent yet; `newsletter send` sends the newest post.")
            for post_log in logs.values():
                if as_json:
                    _json_line(asdict(post_log))
                else:
                    typer.echo(
                        f"{post_log.slug:<32} sent {post_log.sent:>6}  failed {post_log.failed:>4}"
                        f"  bounced {post_log.bounced:>4}  pending {post_log.pending:>4}"
                        f"  tests {post_log.tests:>3}  last {post_log.last_sent_at or '-'}"
                    )
            return
        out = sys.stdout
        found = False
        for delivery in store.iter_deliveries(db, slug):
            found = True
            if as_json:
                out.write(json.dumps(vars(delivery), ensure_ascii=False) + "\n")
            else:
                who = printable(delivery.email or "(erased)")
                kind = " test" if delivery.test else ""
                out.write(
                    f"{who:<40} {delivery.status:<8}{kind} attempts {delivery.attempts}"
                    f"  {delivery.updated_at}  {printable(delivery.last_reply or '')}\n"
                )
        for event in store.reader_events(db, slug=slug):  # #13: what came back from the post
            found = True
            if as_json:
                out.write(json.dumps({"event": vars(event)}, ensure_ascii=False) + "\n")
            else:
                who = printable(_event_email(db, event.subscriber_id))
                out.write(
                    f"{who:<40} {event.kind:<8} from {event.source}  {event.created_at}"
                    f"  {printable(event.detail or '')}\n"
                )
        if not found:
            raise NewsletterError(f"nothing in the send log for {slug!r}")


# --- pull: from the blog's feed -----------------------------------------------------------


@app.command("pull")
@reports_errors
def pull(
    feed_url: Annotated[
        str | None,
        typer.Argument(help="The blog's RSS or Atom feed (default: NEWSLETTER_FEED_URL)."),
    ] = None,
    send_posts: Annotated[
        bool, typer.Option("--send", help="Send each new post to every reader, oldest first.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before sending.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be written; change nothing.")
    ] = False,
    all_pages: Annotated[
        bool, typer.Option("--all", help="Follow a paged feed to its end (the back catalogue).")
    ] = False,
) -> None:
    """Write the blog feed's new entries as posts; the first pull's count as already published."""
    from . import feed

    settings = _settings()
    url = feed_url or settings.feed_url
    if url is None:
        raise ConfigError(
            "give the blog's feed address or set NEWSLETTER_FEED_URL (Blogger: "
            "https://BLOG.blogspot.com/feeds/posts/default, WordPress: https://BLOG/feed/)"
        )
    if send_posts and not dry_run:
        settings.sender  # noqa: B018 - a missing From is reported before anything is fetched
        if not yes and not sys.stdin.isatty():
            raise NewsletterError("not sending without confirmation: run with --yes")
    with _database(settings) as db:
        report = feed.pull(db, settings.posts_dir, url, all_pages=all_pages, dry_run=dry_run)
    for skipped in report.skipped:
        typer.echo(f"Warning: skipped {skipped}", err=True)
    if report.summary_only:
        typer.echo(f"Warning: {feed.FULL_TEXT_ADVICE}", err=True)
    verb = "Would write" if dry_run else "Wrote"
    for post in report.posts:
        where = _shown_path(settings, post.path)
        kind = "back catalogue, counted as published" if post.back_catalogue else "new"
        again = ", already there" if post.adopted else ""
        typer.echo(f"{verb} {where}  {post.published:%Y-%m-%d}  “{post.title}” ({kind}{again})")
    typer.echo(_pull_summary(report))
    if send_posts:
        _send_pulled(settings, report, yes=yes, dry_run=dry_run)


def _shown_path(settings: Settings, path: Path) -> str:
    return str(
        path.relative_to(settings.directory) if path.is_relative_to(settings.directory) else path
    )


def _pull_summary(report: PullReport) -> str:
    if report.not_modified:
        return f"Nothing new: {report.url} has not changed since the last pull"
    new = len(report.to_send)
    parts = [f"{new} new post{'s' * (new != 1)}"]
    old = len(report.posts) - new
    if old:
        parts.append(f"{old} back catalogue (never mailed)")
    parts.append(f"{report.already_taken} already taken")
    if report.skipped:
        parts.append(f"{len(report.skipped)} skipped")
    pages = f" ({report.pages} pages)" if report.pages > 1 else ""
    prefix = "Dry run, nothing written: " if report.dry_run else ""
    return f"{prefix}{', '.join(parts)} from {report.url}{pages}"


def _send_pulled(settings: Settings, report: PullReport, *, yes: bool, dry_run: bool) -> None:
    """Send the feed's new posts not yet sent, oldest first, through the exactly-once log."""
    from . import db as store
    from . import schedule, sender

    moment = datetime.now(UTC)
    with _database(settings) as db:
        active = store.count_subscribers(db, "active")
        waiting = schedule.posts_to_send(db, moment)
    if dry_run:
        waiting = [post.slug for post in report.to_send] + waiting
    if not waiting:
        return
    if active == 0:
        typer.echo("No active readers: nothing sent")
        return
    count = f"{len(waiting)} new post{'s' * (len(waiting) != 1)}"
    if dry_run:
        typer.echo(f"Would send {count} to {active} active readers")
        return
    if not yes and not typer.confirm(f"Send {count} to {active} active readers now?"):
        raise typer.Exit(1)
    with _database(settings) as db:
        chosen = schedule.pulled_posts(settings, db, moment)
        due = {
            post.slug: store.count_due(db, post.slug, schedule.audience(settings, post))
            for post in chosen.posts
        }
    for reason in chosen.refused:  # deleted, broken, a draft, scheduled: theirs to decide
        typer.echo(f"Warning: not sent: {printable(reason)}", err=True)
    for post in chosen.posts:
        with _progress(due[post.slug], False) as advance:
            sent = sender.send_post(settings, post, progress=advance)
        _print_report(sent, prefix=f"“{post.title}”: ")


# --- after the send: bounces, reactivate, stats (#13) ---------------------------------------


def _events(db: Database, subscriber_id: int) -> list[dict[str, Any]]:
    from . import db as store

    return [vars(event) for event in store.reader_events(db, subscriber_id=subscriber_id)]


def _event_email(db: Database, subscriber_id: int | None) -> str:
    from . import db as store

    subscriber = store.get_subscriber_by_id(db, subscriber_id) if subscriber_id else None
    return subscriber.email if subscriber else "(erased)"


@app.command("bounces")
@reports_errors
def bounces_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would happen, change nothing.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per message, with its readers.")
    ] = False,
    origin: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="PATH|ses|postmark",
            help="Read saved mail instead of IMAP: an .eml file, an mbox or a Maildir "
            "(left unchanged); or pull what a relay service kept: ses or postmark.",
        ),
    ] = None,
) -> None:
    """Read the bounce mailbox: mark bounced readers, unsubscribe complaints and emails."""
    from dataclasses import asdict

    from .bounces import process_bounces, process_relay_reports

    service = next((word for word in RELAY_SERVICES if word == (origin or "").lower()), None)
    settings = _settings()
    outcomes = (
        process_relay_reports(settings, service, dry_run=dry_run)
        if service is not None
        else process_bounces(settings, dry_run=dry_run, origin=origin)
    )
    for outcome in outcomes:
        if as_json:
            _json_line({**asdict(outcome), "dry_run": dry_run})
            continue
        lines = [(r.action, r.email, r.slug, r.detail) for r in outcome.readers] or [
            (outcome.action, "-", None, outcome.detail)
        ]
        for action, who, slug, detail in lines:
            typer.echo(
                f"{action:<12} {who:<40} {outcome.kind:<13} {slug or '-'}"
                f"  {printable(detail or '')}"
            )
    if not as_json:
        handled = sum(outcome.handled for outcome in outcomes)
        verb = "Would handle" if dry_run else "Handled"
        left = len(outcomes) - handled
        if service is not None:
            where = f"reports from {service}; {left} left alone"
        else:
            place = "in the mailbox" if origin is None else "unhandled"
            where = f"messages; {left} left {place}"
        typer.echo(f"{verb} {handled} of {len(outcomes)} {where}")


@subscribers_app.command("reactivate")
@reports_errors
def subscribers_reactivate(
    emails: Annotated[list[str] | None, typer.Argument(help="Bounced readers' addresses.")] = None,
    bounced_since: Annotated[
        str | None,
        typer.Option(
            "--bounced-since", help="Every reader bounced on or after this date (YYYY-MM-DD)."
        ),
    ] = None,
) -> None:
    """Bring readers bounced by mistake back to active (recorded as your action)."""
    from datetime import date

    from . import db as store
    from .addresses import normalise_address

    if not emails and bounced_since is None:
        raise NewsletterError("give the addresses to reactivate, or --bounced-since DATE")
    with _database(_settings()) as db:
        readers = [store.require_subscriber(db, normalise_address(e)) for e in emails or []]
        if bounced_since is not None:
            try:
                since = date.fromisoformat(bounced_since)
            except ValueError:
                raise NewsletterError(
                    f"--bounced-since must be a date like 2026-01-31, not {bounced_since!r}"
                ) from None
            readers += store.bounced_since(db, since.isoformat())
        done: set[int] = set()
        for reader in readers:
            if reader.id not in done:
                store.reactivate_subscriber(db, reader)
                done.add(reader.id)
                typer.echo(f"Reactivated {reader.email}")
    if not done:
        typer.echo("No reader bounced since then; nothing changed")


@app.command("stats")
@reports_errors
def stats_command(
    as_json: Annotated[bool, typer.Option("--json", help="The figures as JSON.")] = False,
) -> None:
    """Per post: sent, bounced, complaints, unsubscribes; the list week by week.

    No opens or clicks: the emails carry no tracking pixel and no redirected links.
    """
    import json
    from dataclasses import asdict

    from . import db as store
    from .topics import load_topics

    settings = _settings()
    topics = [topic.name for topic in load_topics(settings.directory)]
    with _database(settings) as db:
        posts = store.post_stats(db)
        weeks = store.weekly_stats(db)
        readers = store.choice_counts(db, topics)
    if as_json:
        document = {
            "posts": [asdict(p) for p in posts],
            "weeks": [asdict(w) for w in weeks],
            "readers": asdict(readers),
        }
        typer.echo(json.dumps(document, ensure_ascii=False, indent=2))
        return
    typer.echo(f"{'POST':<40} {'SENT':>7} {'BOUNCED':>8} {'COMPLAINTS':>11} {'UNSUBSCRIBED':>13}")
    for p in posts:
        typer.echo(
            f"{p.slug:<40} {p.sent:>7} {p.bounced:>8} {p.complaints:>11} {p.unsubscribes:>13}"
        )
    if not posts:
        typer.echo("(nothing sent yet)")
    typer.echo(
        f"Active readers: {readers.every} every post, {readers.digest} weekly digest, "
        f"{readers.paused} of them paused"
    )
    if topics:
        per_topic = ", ".join(f"{name} {count}" for name, count in readers.per_topic.items())
        typer.echo(f"Readers per topic: {per_topic} ({readers.all_topics} read every topic)")
    if weeks:
        typer.echo(_weekly_chart(weeks))


def _weekly_chart(weeks: list[store.WeekStats], width: int = 30) -> str:
    """Joined, left and bounced per week as bars for the terminal, drawn with rich."""
    import io

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    top = max(max(w.joined, w.left, w.bounced) for w in weeks) or 1
    table = Table(title="The list, week by week (weeks start on Monday)", box=None)
    table.add_column("WEEK")
    for name in ("joined", "left", "bounced"):
        table.add_column(name.upper())
    for w in weeks:
        cells = [
            Text(f"{'█' * round(width * n / top) or ('▏' if n else '')} {n}", style=style)
            for n, style in ((w.joined, "green"), (w.left, "yellow"), (w.bounced, "red"))
        ]
        table.add_row(w.week, *cells)
    console = Console(width=max(60, 12 + 3 * (width + 8)), record=True, file=io.StringIO())
    console.print(table)
    return console.export_text(styles=sys.stdout.isatty())


# --- serve ----------------------------------------------------------------------------------


@app.command("serve")
@reports_errors
def serve(
    host: Annotated[str, typer.Option("--host", help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="The port to listen on.")] = 8000,
) -> None:
    """Serve the readers' pages: subscribe, confirm, unsubscribe and read past posts."""
    # Imported here: only `serve` needs the web stack, and every other command starts faster.
    import uvicorn

    from .listen import listening_socket
    from .web import create_app
    from .weblog import log_config

    settings = _settings()
    application = create_app(settings)
    sock = listening_socket(host, port)  # a bad or busy port is one line, before anything starts
    typer.echo(
        f"Serving {settings.title} on http://{host}:{port}/ (links in emails point to "
        f"{settings.base_url}/); Ctrl+C stops",
        err=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(application, server_header=False, log_config=log_config())
    )
    server.run(sockets=[sock])


# --- init -----------------------------------------------------------------------------------


@app.command("init")
@reports_errors
def init(
    directory: Annotated[
        Path, typer.Argument(help="Where to make it (default: here); made if missing.")
    ] = Path("."),
    title: Annotated[str | None, typer.Option("--title", help="The newsletter's name.")] = None,
    from_address: Annotated[
        str | None,
        typer.Option("--from", help="The From address, e.g. 'Jane Author <jane@example.org>'."),
    ] = None,
) -> None:
    """Start a newsletter: posts/ with an example post, templates/, a commented .env, a
    .gitignore. A file that exists is never overwritten."""
    from .config import _parse_from
    from .scaffold import init_newsletter

    if sys.stdin.isatty():
        title = title or typer.prompt("The newsletter's name", default="My Newsletter")
        if from_address is None:
            from_address = typer.prompt("From address (Jane Author <jane@example.org>)")
    if from_address:
        _parse_from(from_address)  # a bad address stops here, before any file is written
    report = init_newsletter(directory, title=title or "My Newsletter", from_address=from_address)
    where = directory if directory != Path(".") else Path.cwd()
    if report.made:
        templates = sum(name.startswith("templates") for name in report.made)
        made = [name for name in report.made if not name.startswith("templates")]
        if templates:
            made.append(f"templates/ ({templates} files)")
        typer.echo(f"Made in {where}: {', '.join(made)}")
    if report.kept:
        typer.echo(f"Kept as they were: {', '.join(report.kept)}")
    if not from_address:
        typer.echo("Set NEWSLETTER_FROM in .env before sending.")
    cd = f"cd {directory} && " if directory != Path(".") else ""
    typer.echo(
        f"Next: {cd}newsletter subscribers add you@example.org && "
        "newsletter send --to you@example.org"
    )


# --- help -----------------------------------------------------------------------------------

EXAMPLES: dict[str, tuple[str, ...]] = {
    "init": ("newsletter init news --title 'Notes' --from 'Jane <jane@example.org>'",),
    "add": (
        "newsletter subscribers add ann@example.org --name 'Ann Archer'",
        "newsletter subscribers add ann@example.org --resubscribe",
    ),
    "remove": ("newsletter subscribers remove ann@example.org",),
    "delete": ("newsletter subscribers delete ann@example.org",),
    "set": (
        "newsletter subscribers set ann@example.org --frequency digest",
        "newsletter subscribers set ann@example.org --topics inspections,practice",
        "newsletter subscribers set ann@example.org --pause-weeks 3",
    ),
    "topics": ("newsletter topics",),
    "list": ("newsletter subscribers list", "newsletter subscribers list --status all --json"),
    "import": (
        "newsletter subscribers import mailchimp-export.zip --dry-run",
        "newsletter subscribers import email_list.csv",
    ),
    "export": (
        "newsletter subscribers export readers.csv",
        "newsletter subscribers export --email ann@example.org",
    ),
    "generate": ("newsletter dkim generate --selector news --domain example.org",),
    "doctor": ("newsletter doctor", "newsletter doctor --smtp"),
    "posts": ("newsletter posts", "newsletter posts --json"),
    "preview": ("newsletter preview", "newsletter preview SLUG --text --out issue.txt"),
    "send": (
        "newsletter send --dry-run",
        "newsletter send --to me@example.org",
        "newsletter send SLUG --yes",
        "newsletter send --due --yes",
        "newsletter send SLUG --topic inspections --dry-run",
    ),
    "pull": (
        "newsletter pull https://BLOG.blogspot.com/feeds/posts/default",
        "newsletter pull --send --yes",
    ),
    "log": ("newsletter log", "newsletter log SLUG --json"),
    "bounces": ("newsletter bounces --dry-run", "newsletter bounces --json"),
    "reactivate": (
        "newsletter subscribers reactivate ann@example.org",
        "newsletter subscribers reactivate --bounced-since 2026-11-01",
    ),
    "stats": ("newsletter stats", "newsletter stats --json"),
    "digest": ("newsletter digest --dry-run", "newsletter digest --yes"),
    "serve": ("newsletter serve", "newsletter serve --host 0.0.0.0 --port 8080"),
}


def _add_examples(typer_app: typer.Typer) -> None:
    """Give each command's --help its examples (kept here, in one table, as commands grow)."""
    for info in typer_app.registered_commands:
        name = info.name or (info.callback.__name__ if info.callback else "")
        examples = EXAMPLES.get(name)
        if examples and not info.epilog:
            info.epilog = "Examples:\n\n" + "\n\n".join(f"  {line}" for line in examples)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _add_examples(group.typer_instance)


def _flags_without_placeholder() -> None:
    """A flag takes no value, so its help shows no `<bool>` (Typer's rich help shows one)."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_add_examples(app)
_flags_without_placeholder()
