"""The command line: parse, load settings, call the core, print. No SQL or SMTP here."""

from __future__ import annotations

import functools
import io
import json
import sys
import tempfile
import webbrowser
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer
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
from sqlite_utils import Database

from . import db as store
from . import subscriber_csv
from .addresses import clean_name, normalise_address
from .config import Settings, load_settings
from .errors import ConfigError, NewsletterError
from .posts import find_post, load_posts

if TYPE_CHECKING:
    from .sender import SendReport

# The sending side (premailer, lxml, dkimpy) is imported by the commands that use it, so that
# `subscribers list` and `log` start in a fraction of the time.

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

STATUS_CHOICES = ("active", "unsubscribed", "bounced", "pending", "all")
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
            typer.echo(f"Error: {e}", err=True)
            raise typer.Exit(1) from None

    return wrapper


@app.callback()
def main(
    directory: Annotated[
        Path | None,
        typer.Option("--directory", "-C", help="The newsletter directory (default: here)."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
) -> None:
    _invocation.set(_Invocation(directory=directory, debug=debug))


def _settings() -> Settings:
    return load_settings(_invocation.get().directory)


@contextmanager
def _database(settings: Settings) -> Iterator[Database]:
    db = store.open_db(settings.db_path)
    try:
        yield db
    finally:
        db.close()


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
    typer.echo(json.dumps(record, ensure_ascii=False, default=str))


# --- subscribers ----------------------------------------------------------------------------


@subscribers_app.command("add")
@reports_errors
def subscribers_add(
    email: Annotated[str, typer.Argument(help="The reader's address.")],
    name: Annotated[str, typer.Option("--name", "-n", help="The reader's name.")] = "",
) -> None:
    """Add a reader to the list (active at once: you vouch for their consent)."""
    address, clean = normalise_address(email), clean_name(name)
    with _database(_settings()) as db:
        subscriber = store.add_subscriber(db, address, clean, source="cli")
    typer.echo(f"Added {subscriber.email}")


@subscribers_app.command("remove")
@reports_errors
def subscribers_remove(email: Annotated[str, typer.Argument(help="The reader's address.")]) -> None:
    """Unsubscribe a reader; the row stays so no import can bring them back."""
    with _database(_settings()) as db:
        subscriber = store.require_subscriber(db, normalise_address(email))
        store.set_status(db, subscriber.id, "unsubscribed", "author")
    typer.echo(f"Unsubscribed {subscriber.email}")


@subscribers_app.command("delete")
@reports_errors
def subscribers_delete(email: Annotated[str, typer.Argument(help="The reader's address.")]) -> None:
    """Erase a reader and their address in the send log (the right to erasure)."""
    with _database(_settings()) as db:
        address = store.delete_subscriber(db, normalise_address(email))
    typer.echo(f"Deleted {address} and erased them from the send log")


@subscribers_app.command("list")
@reports_errors
def subscribers_list(
    status: Annotated[
        str, typer.Option("--status", "-s", help="active, unsubscribed, bounced, pending or all.")
    ] = "active",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List readers, a table for people or JSON lines for programs."""
    if status not in STATUS_CHOICES:
        typer.echo(f"Error: --status must be one of {', '.join(STATUS_CHOICES)}", err=True)
        raise typer.Exit(2)
    out = sys.stdout
    with _database(_settings()) as db:
        count = 0
        if not as_json:
            out.write(f"{'EMAIL':<40} {'STATUS':<12} {'SOURCE':<6} {'SINCE':<25} NAME\n")
        for subscriber in store.iter_subscribers(db, status):
            count += 1
            if as_json:
                record = vars(subscriber)  # flat: no asdict copy
                if subscriber.status_reason in ("bounce", "complaint", "email"):  # #13
                    record = {**record, "events": _events(db, subscriber.id)}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            else:
                out.write(
                    f"{subscriber.email:<40} {subscriber.status:<12} {subscriber.source:<6} "
                    f"{subscriber.created_at:<25} {subscriber.name}\n"
                )
        if not as_json:
            out.write(f"{count} {'reader' if count == 1 else 'readers'}\n")
    out.flush()


@subscribers_app.command("import")
@reports_errors
def subscribers_import(
    file: Annotated[Path, typer.Argument(help="A CSV: Mailchimp, Substack, Buttondown or plain.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and count, change nothing.")
    ] = False,
) -> None:
    """Import readers from a CSV; addresses already on the list are left as they are."""
    with _database(_settings()) as db:
        report = subscriber_csv.import_csv(db, file, dry_run=dry_run)
    for line, reason in report.rejected[:50]:
        typer.echo(f"line {line}: {reason}", err=True)
    if len(report.rejected) > 50:
        typer.echo(f"... and {len(report.rejected) - 50} more rejected lines", err=True)
    verb = "Would add" if dry_run else "Added"
    typer.echo(
        f"{verb} {report.added}, skipped {report.skipped} already on the list, "
        f"rejected {len(report.rejected)}"
    )


@subscribers_app.command("export")
@reports_errors
def subscribers_export(
    file: Annotated[Path | None, typer.Argument(help="Write here instead of stdout.")] = None,
    email: Annotated[
        str | None,
        typer.Option("--email", help="One person: everything kept about them, as JSON."),
    ] = None,
) -> None:
    """Export every reader as CSV (imports back unchanged), or one person's data as JSON."""
    if email is not None:
        with _database(_settings()) as db:
            data = store.personal_data(db, normalise_address(email))
        document = json.dumps(data.as_dict(), ensure_ascii=False, indent=2) + "\n"
        if _output(document, file):
            typer.echo(f"Exported what is kept about {data.email} to {file}", err=True)
        return
    with _database(_settings()) as db:
        if file is None:
            subscriber_csv.export_csv(db, sys.stdout)
            return
        try:
            with file.open("w", encoding="utf-8", newline="") as out:
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
        bool, typer.Option("--smtp", help="Also connect and log in to the SMTP server.")
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
        typer.echo(f"{check.status:<8} {check.name:<{width}}  {check.message}")
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
    """List the posts, newest first, and whether each has been sent."""
    settings = _settings()
    posts = load_posts(settings.posts_dir)
    with _database(settings) as db:
        logs = store.post_logs(db)
    for post in posts:
        log = logs.get(post.slug)
        sent = log.sent if log else 0
        if as_json:
            _json_line(
                {
                    "slug": post.slug,
                    "date": post.date.isoformat(),
                    "title": post.title,
                    "sent": sent > 0,
                    "sent_to": sent,
                }
            )
        else:
            state = f"sent to {sent}" if sent else "not sent"
            typer.echo(f"{post.date.isoformat()}  {post.slug:<32} {state:<14} {post.title}")


@app.command("preview")
@reports_errors
def preview(
    slug: Annotated[str | None, typer.Argument(help="The post (default: the newest).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file.")] = None,
    text: Annotated[bool, typer.Option("--text", help="The plain-text part.")] = False,
    open_browser: Annotated[bool, typer.Option("--open", help="Open it in the browser.")] = False,
) -> None:
    """Show the finished email of a post, as a sample reader will get it."""
    settings = _settings()
    from . import sender

    issue = sender.prepare_issue(settings, find_post(settings.posts_dir, slug))
    body = issue.text_for(*SAMPLE_READER) if text else issue.html_for(*SAMPLE_READER)
    if open_browser and out is None:
        suffix = ".txt" if text else ".html"
        with tempfile.NamedTemporaryFile("w", suffix=suffix, delete=False, encoding="utf-8") as f:
            out = Path(f.name)
    if not _output(body, out):
        return
    typer.echo(f"Wrote {out}", err=True)
    if open_browser:
        webbrowser.open(out.resolve().as_uri())


# --- send, log ------------------------------------------------------------------------------


@app.command("send")
@reports_errors
def send(
    slug: Annotated[str | None, typer.Argument(help="The post (default: the newest).")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render every message, send nothing.")
    ] = False,
    to: Annotated[
        str | None, typer.Option("--to", help="Send one test copy to this address only.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Send a post to every active reader who has not had it yet."""
    from . import sender

    settings = _settings()
    post = find_post(settings.posts_dir, slug)
    where = (
        f"SMTP {settings.smtp_host}:{settings.smtp_port}"
        if settings.uses_smtp
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
    if to is not None:
        reply = sender.send_test(settings, post, to)
        typer.echo(f"Sent a test copy of “{post.title}” to {to} via {where} ({reply})")
        return

    settings.sender  # noqa: B018 - a missing From is reported before anything else
    with _database(settings) as db:
        due = store.count_due(db, post.slug)
        active = store.count_subscribers(db, "active")
    if active == 0:
        raise NewsletterError(
            "there are no active subscribers; add one with `newsletter subscribers add EMAIL`"
        )
    if due == 0:
        typer.echo(f"“{post.title}” has already been sent to every active reader; nothing to do.")
        return
    typer.echo(f"“{post.title}” ({post.slug}) to {due} of {active} active readers via {where}")
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            raise NewsletterError("not sending without confirmation: run with --yes")
        if not typer.confirm("Send it now?", default=False):
            raise typer.Exit(1)

    with _progress(due, dry_run) as advance:
        report = sender.send_post(settings, post, dry_run=dry_run, progress=advance)
    typer.echo(_summary(report))
    for failure in report.failures[:10]:
        typer.echo(f"  failed: {failure}", err=True)
    if report.stopped:
        typer.echo(f"Error: stopped early: {report.stopped}", err=True)
        raise typer.Exit(1)


@contextmanager
def _progress(total: int, dry_run: bool) -> Iterator[Callable[[str], None] | None]:
    """A progress bar (count, rate, time left) on a terminal; nothing when piped."""
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


@app.command("log")
@reports_errors
def log(
    slug: Annotated[str | None, typer.Argument(help="One post: a line per reader.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Read the send log: a line per post, or a line per reader of one post."""
    with _database(_settings()) as db:
        if slug is None:
            for post_log in store.post_logs(db).values():
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
                who = delivery.email or "(erased)"
                kind = " test" if delivery.test else ""
                out.write(
                    f"{who:<40} {delivery.status:<8}{kind} attempts {delivery.attempts}"
                    f"  {delivery.updated_at}  {delivery.last_reply or ''}\n"
                )
        for event in store.reader_events(db, slug=slug):  # #13: what came back from the post
            found = True
            if as_json:
                out.write(json.dumps({"event": vars(event)}, ensure_ascii=False) + "\n")
            else:
                who = _event_email(db, event.subscriber_id)
                out.write(
                    f"{who:<40} {event.kind:<8} from {event.source}  {event.created_at}"
                    f"  {event.detail or ''}\n"
                )
        if not found:
            raise NewsletterError(f"nothing in the send log for {slug!r}")


# --- after the send: bounces, reactivate, stats (#13) ---------------------------------------


def _events(db: Database, subscriber_id: int) -> list[dict[str, Any]]:
    return [vars(event) for event in store.reader_events(db, subscriber_id=subscriber_id)]


def _event_email(db: Database, subscriber_id: int | None) -> str:
    subscriber = store.get_subscriber_by_id(db, subscriber_id) if subscriber_id else None
    return subscriber.email if subscriber else "(erased)"


@app.command("bounces")
@reports_errors
def bounces_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would happen, change nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per message.")] = False,
) -> None:
    """Read the bounce mailbox: mark bounced readers, unsubscribe complaints and emails."""
    from .bounces import process_bounces

    outcomes = process_bounces(_settings(), dry_run=dry_run)
    for outcome in outcomes:
        if as_json:
            _json_line({**asdict(outcome), "dry_run": dry_run})
        else:
            who = outcome.email or "-"
            typer.echo(
                f"{outcome.action:<12} {who:<40} {outcome.kind:<13} {outcome.slug or '-'}"
                f"  {outcome.detail}"
            )
    if not as_json:
        handled = sum(outcome.handled for outcome in outcomes)
        verb = "Would handle" if dry_run else "Handled"
        typer.echo(
            f"{verb} {handled} of {len(outcomes)} messages; {len(outcomes) - handled} left "
            "in the mailbox"
        )


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
    with _database(_settings()) as db:
        posts = store.post_stats(db)
        weeks = store.weekly_stats(db)
    if as_json:
        document = {"posts": [asdict(p) for p in posts], "weeks": [asdict(w) for w in weeks]}
        typer.echo(json.dumps(document, ensure_ascii=False, indent=2))
        return
    typer.echo(f"{'POST':<40} {'SENT':>7} {'BOUNCED':>8} {'COMPLAINTS':>11} {'UNSUBSCRIBED':>13}")
    for p in posts:
        typer.echo(
            f"{p.slug:<40} {p.sent:>7} {p.bounced:>8} {p.complaints:>11} {p.unsubscribes:>13}"
        )
    if not posts:
        typer.echo("(nothing sent yet)")
    if weeks:
        typer.echo(_weekly_chart(weeks))


def _weekly_chart(weeks: list[store.WeekStats], width: int = 30) -> str:
    """Joined, left and bounced per week as bars for the terminal, drawn with rich."""
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

    from .web import create_app

    settings = _settings()
    application = create_app(settings)
    typer.echo(
        f"Serving {settings.title} on http://{host}:{port}/ (links in emails point to "
        f"{settings.base_url}/); Ctrl+C stops",
        err=True,
    )
    uvicorn.run(application, host=host, port=port, server_header=False)
