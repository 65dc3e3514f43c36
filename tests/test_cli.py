"""The author's commands, driven through Typer's CliRunner over a real SQLite file."""

import json
from pathlib import Path

import pytest

from newsletter import db as store

from .conftest import Cli, write_env


def subscribers(project: Path) -> dict[str, store.Subscriber]:
    database = store.open_db(project / "newsletter.db")
    try:
        return {s.email: s for s in store.iter_subscribers(database, "all")}
    finally:
        database.close()


def test_add_normalises_and_is_idempotent(cli: Cli, project: Path) -> None:
    result = cli("subscribers", "add", "  Ann@EXAMPLE.org ", "--name", "Ann Reader")
    assert result.stdout == "Added Ann@example.org\n"
    again = cli("subscribers", "add", "ann@example.org")  # the README's first command, rerun
    assert again.stdout == "Ann@example.org is already on the list (active); nothing to do\n"
    saved = subscribers(project)["Ann@example.org"]
    assert (saved.name, saved.status, saved.source) == ("Ann Reader", "active", "cli")
    assert saved.created_at and saved.status_changed_at


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["not-an-address"],
            "Error: 'not-an-address' is not a valid email address: An email address must have an @-sign.\n",
        ),
        (
            ["a@b"],
            "Error: 'a@b' is not a valid email address: The part after the @-sign is not valid. It should have a period.\n",
        ),
        (
            ["ok@example.org", "--name", "Eve\r\nBcc: victim@example.org"],
            "Error: the name 'Eve\\r\\nBcc: victim@example.org' contains line breaks or control characters\n",
        ),
        (["x\r\n@example.org"], "Error: 'x\\r\\n@example.org' contains control characters\n"),
    ],
)
def test_add_rejects_bad_input_with_one_line(
    cli: Cli, project: Path, args: list[str], message: str
) -> None:
    result = cli("subscribers", "add", *args, ok=False)
    assert result.exit_code == 1
    assert result.stderr == message
    assert subscribers(project) == {}


def test_remove_keeps_the_row_and_delete_erases_it(cli: Cli, project: Path) -> None:
    cli("subscribers", "add", "ann@example.org")
    cli("subscribers", "add", "bob@example.org")
    assert (
        cli("subscribers", "remove", "ann@example.org").stdout == "Unsubscribed ann@example.org\n"
    )
    assert subscribers(project)["ann@example.org"].status == "unsubscribed"
    assert cli("subscribers", "delete", "bob@example.org").stdout.startswith(
        "Deleted bob@example.org"
    )
    assert "bob@example.org" not in subscribers(project)
    missing = cli("subscribers", "remove", "nobody@example.org", ok=False)
    assert (missing.exit_code, missing.stderr) == (
        1,
        "Error: nobody@example.org is not on the list\n",
    )


def test_list_as_table_and_json_with_status_filter(cli: Cli) -> None:
    cli("subscribers", "add", "ann@example.org", "--name", "Ann")
    cli("subscribers", "add", "bob@example.org")
    cli("subscribers", "remove", "bob@example.org")
    table = cli("subscribers", "list").stdout
    assert "ann@example.org" in table and "bob@example.org" not in table
    assert table.splitlines()[-1] == "1 reader"
    lines = cli("subscribers", "list", "--status", "all", "--json").stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["email"] for r in records] == ["ann@example.org", "bob@example.org"]
    assert {"email", "name", "status", "created_at", "source", "consent_at"} <= set(records[0])
    assert records[1]["status"] == "unsubscribed"
    bad = cli("subscribers", "list", "--status", "gone", ok=False)
    assert bad.exit_code == 2 and "--status must be one of" in bad.stderr


MAILCHIMP = (
    "Email Address,First Name,Last Name,MEMBER_RATING\n"
    "ann@example.org,Ann,Archer,2\n"
    "not-an-email,Bad,Row,1\n"
    "bob@example.org,Bob,,1\n"
)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (MAILCHIMP, {"ann@example.org": "Ann Archer", "bob@example.org": "Bob"}),
        (
            "email,created_at,active_subscription\nann@example.org,2020-01-01T00:00:00,true\nbob@example.org,2020-01-02T00:00:00,false\n",
            {"ann@example.org": "", "bob@example.org": ""},
        ),  # Substack
        (
            "email,notes,tags\nann@example.org,,\nbob@example.org,,\n",
            {"ann@example.org": "", "bob@example.org": ""},
        ),  # Buttondown
        (
            "ann@example.org,Ann Archer\nbob@example.org\n",
            {"ann@example.org": "Ann Archer", "bob@example.org": ""},
        ),
        (
            "email,name\nann@example.org,Ann Archer\nbob@example.org,\n",
            {"ann@example.org": "Ann Archer", "bob@example.org": ""},
        ),
        # As a spreadsheet in a comma-decimal locale writes it: BOM, semicolons, CRLF.
        (
            "\ufeffEmail Address;First Name;Last Name\r\nann@example.org;Ann;Archer\r\nbob@example.org;Bob;\r\n",
            {"ann@example.org": "Ann Archer", "bob@example.org": "Bob"},
        ),
    ],
    ids=["mailchimp", "substack", "buttondown", "plain-no-header", "plain-header", "spreadsheet"],
)
def test_import_formats(
    cli: Cli, project: Path, tmp_path: Path, content: str, expected: dict[str, str]
) -> None:
    csv_file = tmp_path / "list.csv"
    csv_file.write_bytes(content.encode("utf-8"))
    result = cli("subscribers", "import", str(csv_file))
    found = {email: s.name for email, s in subscribers(project).items()}
    assert found == expected
    assert all(s.source == "import" and s.status == "active" for s in subscribers(project).values())
    rejected = " (line 3)" if "not-an-email" in content else ""
    assert (
        result.stdout
        == f"Added 2 active, 0 unsubscribed, 0 bounced; kept 0 already on the list; rejected {len(rejected) and 1}{rejected}\n"
    )


def test_import_reports_bad_rows_and_never_reactivates(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    cli("subscribers", "add", "ann@example.org")
    cli("subscribers", "remove", "ann@example.org")
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(MAILCHIMP + "carol@example.org,Carol,\nbob@example.org,Bob,Again\n")
    dry = cli("subscribers", "import", str(csv_file), "--dry-run")
    assert (
        dry.stdout
        == "Would add 2 active, 0 unsubscribed, 0 bounced; kept 1 already on the list; rejected 2 (lines 3, 6)\n"
    )
    assert set(subscribers(project)) == {"ann@example.org"}
    result = cli("subscribers", "import", str(csv_file))
    assert (
        result.stdout
        == "Added 2 active, 0 unsubscribed, 0 bounced; kept 1 already on the list; rejected 2 (lines 3, 6)\n"
    )
    assert "line 3: 'not-an-email' is not a valid email address" in result.stderr
    assert "line 6: bob@example.org appears earlier in the import" in result.stderr
    listed = subscribers(project)
    assert listed["ann@example.org"].status == "unsubscribed"
    assert set(listed) == {"ann@example.org", "bob@example.org", "carol@example.org"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
            "list.csv is not a text file (it holds NUL bytes)",
        ),
        (
            b"email\nann@example.org\n\xff\xfe junk\n",
            "list.csv is not UTF-8 text (bad byte at offset 22)",
        ),
        (
            b"name,phone\nAnn,123\n",
            "list.csv has no email column: name one 'email' or 'Email Address' (found: name, phone)",
        ),
        (
            b"email,name\nann@example.org," + b"x" * 20_000 + b"\n",
            "list.csv, line 2: a field longer than 10000 characters",
        ),
        (
            b'email,name\nann@example.org,"' + b"x" * 200_000 + b'"\n',
            "list.csv, line 2: field larger than field limit",
        ),
        (b"", "list.csv is empty"),
    ],
    ids=["binary", "not-utf8", "no-email-column", "long-field", "huge-field", "empty"],
)
def test_import_refuses_unreadable_files_and_changes_nothing(
    cli: Cli, project: Path, tmp_path: Path, content: bytes, message: str
) -> None:
    cli("subscribers", "add", "keep@example.org")
    csv_file = tmp_path / "list.csv"
    csv_file.write_bytes(content)
    result = cli("subscribers", "import", str(csv_file), ok=False)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {message}")
    assert result.stderr.count("\n") == 1
    assert set(subscribers(project)) == {"keep@example.org"}


def test_import_missing_file(cli: Cli, tmp_path: Path) -> None:
    result = cli("subscribers", "import", str(tmp_path / "nope.csv"), ok=False)
    assert result.exit_code == 1
    assert (
        result.stderr == f"Error: cannot read {tmp_path / 'nope.csv'}: No such file or directory\n"
    )


def test_export_imports_back_unchanged(cli: Cli, project: Path, tmp_path: Path) -> None:
    cli("subscribers", "add", "ann@example.org", "--name", 'Ann, "the" Archer')
    cli("subscribers", "add", "bob@example.org", "--name", "Bøb")
    cli("subscribers", "add", "carol@example.org")
    cli("subscribers", "remove", "carol@example.org")
    exported = cli("subscribers", "export").stdout
    out = tmp_path / "export.csv"
    cli("subscribers", "export", str(out))
    assert out.read_text(encoding="utf-8") == exported
    other = tmp_path / "other"
    other.mkdir()
    (other / "posts").mkdir()
    Cli(other, cli.runner)("subscribers", "import", str(out))
    again = Cli(other, cli.runner)("subscribers", "export").stdout
    assert again == exported
    assert subscribers(other)["carol@example.org"].status == "unsubscribed"


def test_posts_lists_newest_first_with_sent_state(cli: Cli) -> None:
    lines = cli("posts").stdout.splitlines()
    assert len(lines) == 5
    assert lines[0].startswith("2015-01-20  ofsted-joint-inspections") and "not sent" in lines[0]
    records = [json.loads(line) for line in cli("posts", "--json").stdout.splitlines()]
    assert records[0] == {
        "slug": "ofsted-joint-inspections",
        "date": "2015-01-20",
        "publish_at": "2015-01-20T00:00:00+00:00",
        "title": "Joint inspections of child protection arrangements - are they beyond Ofsted?",
        "state": "due",
        "archived": False,
        "sent": False,
        "sent_to": 0,
    }


def test_posts_lists_a_broken_file_with_its_error_beside_the_others(
    cli: Cli, project: Path
) -> None:
    (project / "posts" / "zz-broken.md").write_text("---\ntitle: x\n---\n")
    lines = cli("posts").stdout.splitlines()
    assert len(lines) == 6
    assert lines[-1].split("  ")[0] == "?"
    assert lines[-1].endswith(" broken          zz-broken.md: front matter has no date")
    records = [json.loads(line) for line in cli("posts", "--json").stdout.splitlines()]
    assert records[-1] == {
        "file": "zz-broken.md",
        "state": "broken",
        "error": "zz-broken.md: front matter has no date",
    }


def test_preview_html_text_and_file(cli: Cli, project: Path) -> None:
    html = cli("preview").stdout
    assert html.startswith("<!DOCTYPE html>") and "Joint inspections" in html
    assert "https://news.example.org/unsubscribe/" in html
    text = cli("preview", "airline-pilot-test", "--text").stdout
    assert text.startswith(
        "Child Protection Notes · Read online: https://news.example.org/posts/airline-pilot-test\n\n"
        "Apply the ‘airline pilot test’\nBy Jane Author · 7 January 2015\n"
    )
    out = project / "preview.html"
    result = cli("preview", "four-not-three", "--out", str(out))
    assert "Four, not three" in out.read_text()
    assert result.stderr == f"Wrote {out}\n"


def test_preview_template_error_is_one_line(cli: Cli, project: Path) -> None:
    (project / "templates" / "email.html").write_text("<p>{{ post.nope }}</p>")
    result = cli("preview", ok=False)
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"Error: {project / 'templates' / 'email.html'}, line 1: 'dict object' has no attribute 'nope'\n"
    )


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        (
            "SMTP_PORT",
            "abc",
            "Error: NEWSLETTER_SMTP_PORT must be a port number (1-65535), not 'abc'\n",
        ),
        (
            "SMTP_SECURITY",
            "tls",
            "Error: NEWSLETTER_SMTP_SECURITY must be one of starttls, ssl, none, not 'tls'\n",
        ),
        (
            "BASE_URL",
            "example.org",
            "Error: NEWSLETTER_BASE_URL must be an http(s) URL such as https://news.example.org, not 'example.org'\n",
        ),
    ],
)
def test_bad_settings_are_one_line_errors(
    cli: Cli, project: Path, setting: str, value: str, message: str
) -> None:
    write_env(project, **{setting: value})
    result = cli("subscribers", "list", ok=False)
    assert (result.exit_code, result.stderr) == (1, message)


def test_corrupt_database_is_one_line_error(cli: Cli, project: Path) -> None:
    (project / "newsletter.db").write_bytes(b"this is not a database" * 100)
    result = cli("subscribers", "list", ok=False)
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"Error: cannot open the database {project / 'newsletter.db'}: file is not a database\n"
    )
    assert (project / "newsletter.db").read_bytes() == b"this is not a database" * 100


def test_database_path_that_is_a_folder(cli: Cli, project: Path) -> None:
    (project / "newsletter.db").mkdir()
    result = cli("subscribers", "list", ok=False)
    assert (result.exit_code, result.stderr) == (
        1,
        f"Error: {project / 'newsletter.db'} is not a file\n",
    )


# --- compliance: postal address, erasure and access (issue 7) ------------------------------

SENT_SLUG = "ofsted-joint-inspections"
POSTAL_WARNING = (
    "Warning: NEWSLETTER_POSTAL_ADDRESS is not set; bulk mail should carry a postal address "
    "(CAN-SPAM)\n"
)


def database_dump(project: Path) -> str:
    """Every row of every table, as SQL: where an erased address would still show."""
    database = store.open_db(project / "newsletter.db")
    try:
        return "\n".join(database.conn.iterdump())
    finally:
        database.close()


def test_send_warns_when_the_postal_address_is_unset(cli: Cli, project: Path) -> None:
    cli("subscribers", "add", "ann@example.org")
    assert cli("send", "--yes").stderr == ""
    env = (project / ".env").read_text().splitlines()
    (project / ".env").write_text(
        "".join(line + "\n" for line in env if not line.startswith("NEWSLETTER_POSTAL_ADDRESS="))
    )
    cli("subscribers", "add", "bob@example.org")
    result = cli("send", "--yes")
    assert result.stderr == POSTAL_WARNING
    assert result.stdout.splitlines()[-1].startswith("Sent 1, failed 0")  # a warning, not a stop
    assert len(list((project / "outbox" / "new").iterdir())) == 2


def test_delete_erases_the_address_from_the_send_log_and_keeps_the_counts(
    smtp_project: Path, smtp_sink, cli: Cli
) -> None:
    for who in ("ann", "bob", "carol"):
        cli("subscribers", "add", f"{who}@example.org", "--name", f"{who.title()} Reader")
    smtp_sink.reject["carol@example.org"] = (
        "550 5.1.1 <carol@example.org>: Recipient address rejected: User unknown"
    )
    cli("send", "--yes")
    cli("send", "--to", "Ann@example.org")  # a test copy logs the address as typed
    (before,) = [json.loads(line) for line in cli("log", "--json").stdout.splitlines()]
    assert (before["sent"], before["bounced"], before["tests"]) == (2, 1, 1)
    assert "<carol@example.org>: Recipient" in database_dump(smtp_project)  # the reply quotes it

    cli("subscribers", "delete", "ann@example.org")
    cli("subscribers", "delete", "carol@example.org")

    (after,) = [json.loads(line) for line in cli("log", "--json").stdout.splitlines()]
    assert after == before
    dump = database_dump(smtp_project).lower()
    for gone in ("ann@example.org", "carol@example.org", "ann reader", "carol reader"):
        assert gone not in dump
    assert "bob@example.org" in dump
    per_reader = cli("log", SENT_SLUG).stdout.splitlines()
    assert sorted(line.split()[0] for line in per_reader) == [
        "(erased)",
        "(erased)",
        "(erased)",
        "bob@example.org",
    ]
    (bounce,) = [line for line in per_reader if " bounced " in line]
    assert "550 5.1.1 <(erased)>: Recipient address rejected: User unknown" in bounce


def test_delete_scrubs_the_address_from_a_stopped_runs_note(
    smtp_project: Path, smtp_sink, cli: Cli
) -> None:
    write_env(smtp_project, SMTP_MAX_ATTEMPTS=1, MAX_CONSECUTIVE_FAILURES=1)
    cli("subscribers", "add", "dave@example.org")
    smtp_sink.reject_data["dave@example.org"] = "451 4.2.2 <dave@example.org>: mailbox full"
    assert cli("send", "--yes", ok=False).exit_code == 1  # stopped early, the note says why
    database = store.open_db(smtp_project / "newsletter.db")
    assert "dave@example.org" in store.last_send(database, SENT_SLUG)["note"]
    cli("subscribers", "delete", "dave@example.org")
    assert "(erased)" in store.last_send(database, SENT_SLUG)["note"]
    database.close()
    assert "dave@example.org" not in database_dump(smtp_project).lower()


def test_export_email_gives_one_person_everything_kept_about_them(
    smtp_project: Path, smtp_sink, cli: Cli, tmp_path: Path
) -> None:
    database = store.open_db(smtp_project / "newsletter.db")
    consent = store.Consent(
        at="2026-01-02T03:04:05+00:00",
        ip="192.0.2.7",
        user_agent="Mozilla/5.0 Firefox/140.0",
        form="https://news.example.org/subscribe",
    )
    store.add_subscriber(database, "ann@example.org", "Ann Archer", source="web", consent=consent)
    database.close()
    cli("subscribers", "add", "bob@example.org")
    cli("send", "--yes")
    cli("send", "--to", "ann@example.org")
    cli("send", "--to", "stranger@example.org")

    result = cli("subscribers", "export", "--email", "ANN@example.org")
    data = json.loads(result.stdout)
    assert data["email"] == "ann@example.org"
    row = data["subscriber"]
    assert (row["email"], row["name"], row["status"], row["source"]) == (
        "ann@example.org",
        "Ann Archer",
        "active",
        "web",
    )
    assert (
        row["consent_at"],
        row["consent_ip"],
        row["consent_user_agent"],
        row["consent_form"],
    ) == (
        consent.at,
        consent.ip,
        consent.user_agent,
        consent.form,
    )
    deliveries = [(d["slug"], d["test"], d["status"]) for d in data["deliveries"]]
    assert deliveries == [(SENT_SLUG, 0, "sent"), (SENT_SLUG, 1, "sent")]
    ann_messages = [
        r.message["Message-ID"] for r in smtp_sink.received if r.rcpt_tos == ["ann@example.org"]
    ]
    assert [d["message_id"] for d in data["deliveries"]] == ann_messages
    assert "bob@example.org" not in result.stdout and "stranger" not in result.stdout

    out = tmp_path / "ann.json"
    written = cli("subscribers", "export", "--email", "ann@example.org", str(out))
    assert json.loads(out.read_text(encoding="utf-8")) == data
    assert written.stderr == f"Exported what is kept about ann@example.org to {out}\n"

    stranger = json.loads(cli("subscribers", "export", "--email", "stranger@example.org").stdout)
    assert stranger["subscriber"] is None
    assert [(d["test"], d["email"]) for d in stranger["deliveries"]] == [
        (1, "stranger@example.org")
    ]

    cli("subscribers", "delete", "ann@example.org")
    gone = cli("subscribers", "export", "--email", "ann@example.org", ok=False)
    assert (gone.exit_code, gone.stderr) == (
        1,
        "Error: nothing is kept about ann@example.org: not on the list, never mailed\n",
    )
