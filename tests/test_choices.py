"""The author's side of readers' choices (#23): `topics`, `subscribers set`, `send --topic`, the
check at delivery time, what `subscribers list`, `stats`, export and import show, and a mixed
week of posts and a digest counted from a real SMTP sink."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from newsletter import db as store
from newsletter.archive import all_posts
from newsletter.config import load_settings
from newsletter.sender import send_post

from .conftest import Cli, SmtpSink, write_env

NOW = dt.datetime.now(dt.UTC)
TOPICS = """
[inspections]
title = "Inspections"
description = "What inspections find."

[practice]
title = "Practice"
"""


def write_topics(project: Path) -> None:
    (project / "topics.toml").write_text(TOPICS)


def write_post(
    project: Path, slug: str, days_ago: float, topics: str = "", audience: str = ""
) -> None:
    when = (NOW - dt.timedelta(days=days_ago)).strftime("%Y-%m-%d %H:%M +00:00")
    front = f"topics: [{topics}]\n" if topics else ""
    front += f"audience: [{audience}]\n" if audience else ""
    (project / "posts" / f"{slug}.md").write_text(
        f"---\ntitle: The {slug} post\ndate: {when}\n{front}---\n\nThe opening of {slug}.\n"
    )


def subscriber(project: Path, email: str) -> store.Subscriber:
    with store.connect(project / "newsletter.db") as db:
        return store.require_subscriber(db, email)


def topics_of(project: Path, email: str) -> tuple[str, ...] | None:
    with store.connect(project / "newsletter.db") as db:
        return store.reader_topics(db, store.require_subscriber(db, email).id)


# --- newsletter topics ------------------------------------------------------------------------


def test_topics_lists_each_with_its_readers(cli: Cli, project: Path) -> None:
    write_topics(project)
    for address in ("ann@example.org", "bob@example.org", "cat@example.org"):
        cli("subscribers", "add", address)
    cli("subscribers", "set", "bob@example.org", "--topics", "practice")
    cli("subscribers", "remove", "cat@example.org")  # not active: not counted
    lines = cli("topics").stdout.splitlines()
    assert lines[0].split() == ["TOPIC", "READERS", "TITLE", "DESCRIPTION"]
    assert lines[1].split() == ["inspections", "1", "Inspections", "What", "inspections", "find."]
    assert lines[2].split() == ["practice", "2", "Practice"]
    assert lines[3] == "2 topics; 1 of 2 active readers read every topic (they never picked)"


def test_topics_without_a_file_says_how_to_write_one(cli: Cli, project: Path) -> None:
    out = cli("topics").stdout
    assert out.startswith("No topics: topics.toml does not exist; write a table per topic in ")
    assert '[inspections] then title = "Inspections"' in out and out.count("\n") == 1


def test_a_broken_topics_file_is_one_line(cli: Cli, project: Path) -> None:
    (project / "topics.toml").write_text("[inspections\ntitle = 'x'\n")
    result = cli("topics", ok=False)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: topics.toml: ") and result.stderr.count("\n") == 1
    (project / "topics.toml").write_text("[inspections]\ndescription = 'no title'\n")
    result = cli("topics", ok=False)
    assert result.stderr == 'Error: topics.toml: [inspections] needs a title = "..."\n'


# --- subscribers set --------------------------------------------------------------------------


def test_set_changes_one_readers_choices(cli: Cli, project: Path) -> None:
    write_topics(project)
    cli("subscribers", "add", "ann@example.org")
    out = cli("subscribers", "set", "ann@example.org", "--frequency", "digest").stdout
    assert out == "ann@example.org: weekly digest, every topic\n"
    out = cli("subscribers", "set", "ann@example.org", "--topics", "practice,inspections").stdout
    assert out == "ann@example.org: weekly digest, topics inspections,practice\n"
    assert topics_of(project, "ann@example.org") == ("inspections", "practice")
    out = cli("subscribers", "set", "ann@example.org", "--pause-weeks", "2").stdout
    until = (NOW + dt.timedelta(weeks=2)).date().isoformat()
    assert (
        out
        == f"ann@example.org: weekly digest, paused until {until}, topics inspections,practice\n"
    )
    future = (NOW + dt.timedelta(days=40)).date()
    cli("subscribers", "set", "ann@example.org", "--pause-until", future.isoformat())
    assert subscriber(project, "ann@example.org").paused_until == (
        f"{future.isoformat()}T00:00:00+00:00"
    )
    out = cli(
        "subscribers", "set", "ann@example.org", "--resume", "--all-topics", "--frequency", "every"
    ).stdout
    assert out == "ann@example.org: every post, every topic\n"
    ann = subscriber(project, "ann@example.org")
    assert (ann.frequency, ann.paused_until, ann.topics_chosen) == ("every", None, 0)


def test_set_refuses_bad_input_and_changes_nothing(cli: Cli, project: Path) -> None:
    write_topics(project)
    cli("subscribers", "add", "ann@example.org")
    cli("subscribers", "set", "ann@example.org", "--topics", "practice")
    before = subscriber(project, "ann@example.org")
    past = (NOW - dt.timedelta(days=1)).date().isoformat()
    cases = {
        ("--topics", "practice,inspectoins", "--frequency", "digest"): (
            "Error: --topics: unknown topic 'inspectoins'; the topics are: inspections, practice"
        ),
        ("--frequency", "weekly"): "Error: --frequency must be one of every, digest",
        ("--pause-until", "next tuesday"): (
            "Error: --pause-until 'next tuesday' is not a date (YYYY-MM-DD)"
        ),
        ("--pause-until", past, "--frequency", "digest"): (
            f"Error: --pause-until {past} is not in the future"
        ),
        ("--pause-weeks", "0"): "Error: --pause-weeks must be 1 or more",
        ("--pause-weeks", "1000000000"): "Error: --pause-weeks 1000000000 is too far away",
        ("--pause-weeks", "2", "--resume"): (
            "Error: give one of --pause-until, --pause-weeks and --resume"
        ),
        ("--topics", "practice", "--all-topics"): "Error: give --topics or --all-topics, not both",
        (): "Error: nothing to change: give --frequency, --topics, --all-topics, "
        "--pause-until, --pause-weeks or --resume",
    }
    for args, error in cases.items():
        result = cli("subscribers", "set", "ann@example.org", *args, ok=False)
        assert (result.exit_code, result.stderr) == (1, error + "\n"), args
    assert subscriber(project, "ann@example.org") == before
    assert topics_of(project, "ann@example.org") == ("practice",)
    gone = cli("subscribers", "set", "nobody@example.org", "--frequency", "digest", ok=False)
    assert gone.stderr == "Error: nobody@example.org is not on the list\n"


# --- send --topic, audience:, and the check at delivery time ------------------------------------


def readers_for_audiences(cli: Cli) -> None:
    for address in ("all@example.org", "insp@example.org", "prac@example.org"):
        cli("subscribers", "add", address)
    cli("subscribers", "set", "insp@example.org", "--topics", "inspections")
    cli("subscribers", "set", "prac@example.org", "--topics", "practice")


def test_send_topic_reaches_the_readers_of_those_topics_only(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    write_topics(smtp_project)
    write_post(smtp_project, "notice", 0.1, topics="practice", audience="practice")
    readers_for_audiences(cli)
    dry = cli("send", "notice", "--topic", "inspections", "--topic", "practice", "--dry-run")
    lines = dry.stdout.splitlines()
    assert lines[0].startswith("“The notice post” (notice) to 3 of 3 active readers via SMTP")
    assert lines[0].endswith("; readers of inspections, practice only")
    assert lines[1:3] == ["  inspections: 2 readers", "  practice: 2 readers"]
    assert smtp_sink.received == []
    # --topic overrides the post's own audience (practice).
    cli("send", "notice", "--topic", "inspections", "--yes")
    assert sorted(r.rcpt_tos[0] for r in smtp_sink.received) == [
        "all@example.org",
        "insp@example.org",
    ]


def test_send_follows_the_audience_in_front_matter(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    write_topics(smtp_project)
    write_post(smtp_project, "notice", 0.1, topics="inspections", audience="practice")
    readers_for_audiences(cli)
    out = cli("send", "notice", "--yes").stdout
    assert "to 2 of 3 active readers" in out and "readers of practice only" in out
    assert sorted(r.rcpt_tos[0] for r in smtp_sink.received) == [
        "all@example.org",
        "prac@example.org",
    ]


def test_unknown_topics_name_the_post_and_the_topic(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    write_topics(smtp_project)
    cli("subscribers", "add", "all@example.org")
    write_post(smtp_project, "notice", 0.1)
    result = cli("send", "notice", "--topic", "inspectoins", "--yes", ok=False)
    assert (result.exit_code, result.stderr) == (
        1,
        "Error: --topic for notice.md: unknown topic 'inspectoins'; "
        "the topics are: inspections, practice\n",
    )
    write_post(smtp_project, "typo", 0.1, topics="practise")
    result = cli("send", "typo", "--yes", ok=False)
    assert result.stderr == (
        "Error: typo.md: unknown topic 'practise'; the topics are: inspections, practice\n"
    )
    write_post(smtp_project, "aimed", 0.1, audience="everyone")
    result = cli("send", "aimed", "--dry-run", ok=False)
    assert result.stderr == (
        "Error: aimed.md: unknown topic 'everyone'; the topics are: inspections, practice\n"
    )
    assert smtp_sink.received == []
    with store.connect(smtp_project / "newsletter.db") as db:
        assert store.count_delivered(db, "typo") == 0 and store.sent_slugs(db, "typo") == []


def test_a_reader_who_chose_otherwise_after_queueing_is_not_mailed(
    smtp_project: Path, smtp_sink: SmtpSink
) -> None:
    """The run's own rule is asked again just before each message: a reader who switched to
    the digest, paused or left the post's topic mid-send is skipped, and the log says why."""
    write_topics(smtp_project)
    write_post(smtp_project, "notice", 0.1, topics="inspections")
    settings = load_settings(smtp_project, environ={})
    with store.connect(settings.db_path) as db:
        ids = {
            email: store.add_subscriber(db, email, "").id
            for email in (
                "first@example.org",
                "digest@example.org",
                "paused@example.org",
                "topic@example.org",
                "stays@example.org",
            )
        }

    def change_choices_once_the_first_is_sent(_outcome: str) -> None:
        if len(smtp_sink.received) != 1:
            return
        with store.connect(settings.db_path) as other:
            store.set_frequency(other, ids["digest@example.org"], "digest")
            store.set_pause(
                other, ids["paused@example.org"], (NOW + dt.timedelta(days=3)).isoformat()
            )
            store.set_topics(other, ids["topic@example.org"], ["practice"])

    report = send_post(
        settings,
        all_posts(settings).find("notice"),
        progress=change_choices_once_the_first_is_sent,
    )
    assert [r.rcpt_tos[0] for r in smtp_sink.received] == [
        "first@example.org",
        "stays@example.org",
    ]
    assert (report.sent, report.skipped) == (2, 3)
    with store.connect(settings.db_path) as db:
        replies = {
            row[0]: (row[1], row[2])
            for row in db.execute(
                "SELECT email, status, last_reply FROM deliveries WHERE slug = 'notice'"
            )
        }
    assert replies["digest@example.org"][0] == "skipped"
    assert replies["digest@example.org"][1].startswith("paused, or chose the digest")


# --- what the author sees: list, stats, export and import -------------------------------------


def mixed_readers(cli: Cli) -> None:
    for address in ("all@example.org", "digest@example.org", "paused@example.org"):
        cli("subscribers", "add", address)
    cli("subscribers", "add", "insp@example.org", "--name", "Ina")
    cli("subscribers", "set", "digest@example.org", "--frequency", "digest")
    cli("subscribers", "set", "paused@example.org", "--pause-until", "2099-01-31")
    cli("subscribers", "set", "insp@example.org", "--topics", "inspections")


def test_list_shows_choices_and_filters_by_topic(cli: Cli, project: Path) -> None:
    write_topics(project)
    mixed_readers(cli)
    table = cli("subscribers", "list").stdout.splitlines()
    assert table[0].split() == [
        *("EMAIL", "STATUS", "SOURCE", "SINCE", "GETS", "PAUSED", "TOPICS", "NAME"),
    ]
    rows = {line.split()[0]: line.split()[4:] for line in table[1:-1]}
    assert rows == {
        "all@example.org": ["every", "-", "all"],
        "digest@example.org": ["digest", "-", "all"],
        "paused@example.org": ["every", "2099-01-31", "all"],
        "insp@example.org": ["every", "-", "inspections", "Ina"],
    }
    practice = cli("subscribers", "list", "--topic", "practice").stdout.splitlines()
    assert [line.split()[0] for line in practice[1:-1]] == [
        "all@example.org",
        "digest@example.org",
        "paused@example.org",
    ]
    assert practice[-1] == "3 readers"
    records = [
        json.loads(line)
        for line in cli(
            "subscribers", "list", "--topic", "inspections", "--json"
        ).stdout.splitlines()
    ]
    assert [(r["email"], r["topics"]) for r in records][-1] == ("insp@example.org", ["inspections"])
    assert len(records) == 4
    bad = cli("subscribers", "list", "--topic", "nope", ok=False)
    assert (bad.exit_code, bad.stderr) == (
        1,
        "Error: --topic: unknown topic 'nope'; the topics are: inspections, practice\n",
    )


def test_stats_counts_frequency_pause_and_topics(cli: Cli, project: Path) -> None:
    write_topics(project)
    mixed_readers(cli)
    text = cli("stats").stdout
    assert "Active readers: 3 every post, 1 weekly digest, 1 of them paused\n" in text
    assert "Readers per topic: inspections 4, practice 3 (3 read every topic)\n" in text
    readers = json.loads(cli("stats", "--json").stdout)["readers"]
    assert readers == {
        "every": 3,
        "digest": 1,
        "paused": 1,
        "all_topics": 3,
        "per_topic": {"inspections": 4, "practice": 3},
    }


def test_export_and_import_round_trip_the_choices(cli: Cli, project: Path, tmp_path: Path) -> None:
    write_topics(project)
    mixed_readers(cli)
    cli("subscribers", "add", "none@example.org")
    with store.connect(project / "newsletter.db") as db:  # chose topics, then none of them
        store.set_topics(db, store.require_subscriber(db, "none@example.org").id, [])
    exported = cli("subscribers", "export").stdout
    header, *lines = exported.splitlines()
    assert header.endswith(",tags,frequency,paused_until,topics")
    by_email = {line.split(",")[0]: line.split(",")[-3:] for line in lines}
    assert by_email["digest@example.org"] == ["digest", "", ""]
    assert by_email["paused@example.org"] == ["every", "2099-01-31T00:00:00+00:00", ""]
    assert by_email["insp@example.org"] == ["every", "", "inspections"]
    assert by_email["none@example.org"] == ["every", "", "(none)"]
    out = tmp_path / "readers.csv"
    out.write_text(exported)
    other = tmp_path / "other"
    other.mkdir()
    (other / "posts").mkdir()
    write_topics(other)
    again = Cli(other, cli.runner)
    again("subscribers", "import", str(out))
    assert again("subscribers", "export").stdout == exported
    assert topics_of(other, "none@example.org") == ()
    with store.connect(other / "newsletter.db") as db:
        assert store.choice_counts(db, ["inspections"]).digest == 1


def test_platform_tags_that_name_a_topic_become_topics(
    cli: Cli, project: Path, tmp_path: Path
) -> None:
    (project / "topics.toml").write_text(TOPICS + '\n[early]\ntitle = "Early readers"\n')
    buttondown = tmp_path / "buttondown.csv"
    buttondown.write_text(
        "id,email,notes,metadata,tags,creation_date,subscriber_type\n"
        '1,ann@example.org,,{},"[""Practice"", ""vip""]",2024-03-13 00:03:09+00:00,regular\n'
        "2,bob@example.org,,{},[],2024-03-14 11:00:00+00:00,regular\n"
    )
    result = cli("subscribers", "import", str(buttondown))
    assert result.stdout == (
        "Added 2 active, 0 unsubscribed, 0 bounced; kept 0 already on the list; "
        "topics from the file for 1; ignored tags that are no topic here: vip (1); rejected 0\n"
    )
    assert topics_of(project, "ann@example.org") == ("practice",)
    assert topics_of(project, "bob@example.org") is None  # no tags: every topic
    ghost = tmp_path / "ghost.csv"
    ghost.write_text(
        "id,email,name,note,subscribed_to_emails,created_at,deleted_at,labels\n"
        '1,cat@example.org,Cat,,true,2015-03-16T14:40:47.000Z,,"Inspections, early, imported"\n'
    )
    result = cli("subscribers", "import", str(ghost))
    assert "ignored tags that are no topic here: imported (1)" in result.stdout
    assert topics_of(project, "cat@example.org") == ("early", "inspections")
    mailchimp = tmp_path / "mailchimp.csv"
    mailchimp.write_text(
        "Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,LEID,EUID,NOTES,TAGS\n"
        'dan@example.org,Dan,Dunn,2,"2015-02-12 10:54:27",1,a1,,"""Early readers"",""Practice"""\n'
    )
    cli("subscribers", "import", str(mailchimp))
    assert topics_of(project, "dan@example.org") == ("early", "practice")  # a title matches too


# --- a mixed week, counted from the sink ------------------------------------------------------


def what_each_received(sink: SmtpSink) -> dict[str, list[str]]:
    """Per reader, each message in the order it came: a post's title, or `digest: A | B`."""
    got: dict[str, list[str]] = {}
    for received in sink.received:
        message = received.message
        text = message.get_body(("plain",)).get_content()
        if " this week: " in message["Subject"]:
            listed = [
                line
                for line in text.splitlines()
                if line.startswith("The ") and line.endswith(" post")
            ]
            what = "digest: " + " | ".join(listed)
        else:
            what = str(message["Subject"])
        for address in received.rcpt_tos:
            got.setdefault(address, []).append(what)
    return got


def test_a_mixed_week_delivers_exactly_what_each_reader_chose(
    smtp_project: Path, smtp_sink: SmtpSink, cli: Cli
) -> None:
    write_topics(smtp_project)
    write_post(smtp_project, "monday", 5, topics="inspections")
    write_post(smtp_project, "wednesday", 3, topics="practice")
    write_post(smtp_project, "friday", 1, audience="practice")  # no topics, aimed at practice
    due = NOW - dt.timedelta(hours=1)
    days = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    write_env(smtp_project, DIGEST_DAY=days[due.weekday()], DIGEST_HOUR=due.hour, TIMEZONE="UTC")
    every = ["every1@example.org", "every2@example.org"]
    digest = ["digest1@example.org", "digest2@example.org"]
    for address in [
        *every,
        *digest,
        "digest-practice@example.org",
        "digest-inspections@example.org",
        "paused@example.org",
        "paused-digest@example.org",
        "inspections-only@example.org",
        "gone@example.org",
    ]:
        cli("subscribers", "add", address)
    for address in [*digest, "digest-practice@example.org", "digest-inspections@example.org"]:
        cli("subscribers", "set", address, "--frequency", "digest")
    cli("subscribers", "set", "digest-practice@example.org", "--topics", "practice")
    cli("subscribers", "set", "digest-inspections@example.org", "--topics", "inspections")
    cli("subscribers", "set", "paused@example.org", "--pause-weeks", "2")
    cli(
        "subscribers", "set", "paused-digest@example.org", "--pause-weeks", "1",
        "--frequency", "digest",
    )  # fmt: skip
    cli("subscribers", "set", "inspections-only@example.org", "--topics", "inspections")
    cli("subscribers", "remove", "gone@example.org")

    assert "to 3 of 9 active readers" in cli("send", "monday", "--yes").stdout
    assert "to 2 of 9 active readers" in cli("send", "wednesday", "--yes").stdout
    assert "to 2 of 9 active readers" in cli("send", "friday", "--yes").stdout
    assert "Sent 4," in cli("digest", "--yes").stdout

    expected = {
        **{
            address: ["The monday post", "The wednesday post", "The friday post"]
            for address in every
        },
        "inspections-only@example.org": ["The monday post"],
        **{
            address: ["digest: The friday post | The wednesday post | The monday post"]
            for address in digest
        },
        "digest-practice@example.org": ["digest: The friday post | The wednesday post"],
        "digest-inspections@example.org": ["digest: The monday post"],
    }
    assert what_each_received(smtp_sink) == expected
    assert len(smtp_sink.received) == 7 + 4  # seven posts' emails, four digests

    # Run again, all of it: nobody gets anything twice.
    for slug in ("monday", "wednesday", "friday"):
        cli("send", slug, "--yes")
    cli("digest", "--yes")
    assert len(smtp_sink.received) == 11


def test_a_digest_reader_who_switched_back_mid_run_is_not_sent_the_digest(
    smtp_project: Path, smtp_sink: SmtpSink
) -> None:
    from newsletter.digest import send_digest

    write_topics(smtp_project)
    write_post(smtp_project, "monday", 2)
    due = NOW - dt.timedelta(hours=1)
    days = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    write_env(smtp_project, DIGEST_DAY=days[due.weekday()], DIGEST_HOUR=due.hour, TIMEZONE="UTC")
    settings = load_settings(smtp_project, environ={})
    with store.connect(settings.db_path) as db:
        ids = [store.add_subscriber(db, f"d{i}@example.org", "").id for i in range(3)]
        for reader_id in ids:
            store.set_frequency(db, reader_id, "digest")

    def switch_the_others_once_the_first_is_sent(_outcome: str) -> None:
        if len(smtp_sink.received) == 1:
            with store.connect(settings.db_path) as other:
                store.set_frequency(other, ids[1], "every")
                store.set_pause(other, ids[2], (NOW + dt.timedelta(days=3)).isoformat())

    report = send_digest(settings, progress=switch_the_others_once_the_first_is_sent)
    assert [r.rcpt_tos[0] for r in smtp_sink.received] == ["d0@example.org"]
    assert (report.sent, report.skipped) == (1, 2)
