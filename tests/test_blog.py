"""Posts as a blog has them, end to end: drafts and schedules through `send`, a rich post
through the loopback SMTP server and `serve`, a broken post beside good ones, the Atom feed
read by feedparser, and the welcome email. Fixture posts live in tests/fixtures/blog/."""

from __future__ import annotations

import datetime as dt
import html
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import feedparser
import httpx
import pytest
from sqlite_utils import Database

from newsletter import db as store
from newsletter.keys import reader_tokens

from .conftest import Cli, LiveServer, Received, SmtpSink, wait_for, write_env

FIXTURE_POSTS = Path(__file__).resolve().parent / "fixtures" / "blog"
READER = "ann@example.org"


@pytest.fixture
def blog(smtp_project: Path) -> Path:
    """The project with the fixture posts in place of the author's."""
    shutil.rmtree(smtp_project / "posts")
    shutil.copytree(FIXTURE_POSTS, smtp_project / "posts")
    return smtp_project


def subjects(sink: SmtpSink) -> list[str]:
    return [r.message["Subject"] for r in sink.received]


def parts(received: Received) -> tuple[str, str]:
    message = received.message
    return (
        message.get_body(("plain",)).get_content().replace("\r\n", "\n"),
        message.get_body(("html",)).get_content().replace("\r\n", "\n"),
    )


# --- drafts and schedules -------------------------------------------------------------------


def test_send_and_send_due_mail_neither_a_draft_nor_a_scheduled_post(
    blog: Path, cli: Cli, smtp_sink: SmtpSink
) -> None:
    cli("subscribers", "add", READER)
    cli("send", "--yes")  # the newest due post: not the newer draft, not the scheduled one
    assert subjects(smtp_sink) == ["Tables, notes and pictures"]

    result = cli("send", "--due", "--yes")
    assert subjects(smtp_sink) == ["Tables, notes and pictures", "An older post"]
    assert "An older post" in result.stdout and "Sent 1, failed 0" in result.stdout

    again = cli("send", "--due", "--yes")  # every minute from cron: quiet when nothing is due
    assert (again.stdout, again.stderr) == ("", "")
    assert len(smtp_sink.received) == 2


def test_send_due_mails_a_scheduled_post_once_its_time_has_come(
    blog: Path, cli: Cli, smtp_sink: SmtpSink
) -> None:
    cli("subscribers", "add", READER)
    for slug in ("rich-post", "old-post"):
        cli("send", slug, "--yes")
    scheduled = blog / "posts" / "scheduled-post.md"
    cli("send", "--due", "--yes")
    assert len(smtp_sink.received) == 2  # not yet

    in_a_moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    text = scheduled.read_text().replace(
        "2999-01-01 08:00 +00:00", in_a_moment.strftime("%Y-%m-%d %H:%M:%S +00:00")
    )
    scheduled.write_text(text)
    cli("send", "--due", "--yes")
    assert len(smtp_sink.received) == 2  # its time has not come yet
    wait_for(lambda: dt.datetime.now(dt.UTC) > in_a_moment, timeout=5)
    cli("send", "--due", "--yes")
    cli("send", "--due", "--yes")
    assert subjects(smtp_sink)[2:] == ["From the future"]


def test_send_due_oldest_first_and_never_an_archived_post(
    blog: Path, cli: Cli, smtp_sink: SmtpSink, db: Database
) -> None:
    cli("subscribers", "add", READER)
    (blog / "posts" / "middle-post.md").write_text(
        "---\ntitle: The middle one\ndate: 2022-06-01 12:00 Europe/London\n---\nText.\n"
    )
    store.archive_post(db, "old-post", "pulled from a feed")
    cli("send", "--due", "--yes")
    assert subjects(smtp_sink) == ["The middle one", "Tables, notes and pictures"]
    refused = cli("send", "old-post", "--yes", ok=False)
    assert (
        refused.stderr == "Error: 'old-post' counts as published without a send; it is not mailed\n"
    )


def test_send_slug_refuses_a_draft_and_a_scheduled_post_but_test_copies_go(
    blog: Path, cli: Cli, smtp_sink: SmtpSink
) -> None:
    cli("subscribers", "add", READER)
    draft = cli("send", "draft-post", "--yes", ok=False)
    assert (draft.exit_code, draft.stderr) == (
        1,
        "Error: 'draft-post' is a draft: remove `draft: true` to send it (`preview` and `send --to` work on drafts)\n",
    )
    early = cli("send", "scheduled-post", "--yes", ok=False)
    assert (early.exit_code, early.stderr) == (
        1,
        "Error: 'scheduled-post' is scheduled for 2999-01-01 08:00 UTC; `send --due` mails it then, or add --now to send it early\n",
    )
    assert smtp_sink.received == []
    cli("send", "draft-post", "--to", "me@example.org")
    assert "Not finished" in cli("preview", "draft-post").stdout
    cli("send", "scheduled-post", "--now", "--yes")
    assert subjects(smtp_sink) == ["Not finished", "From the future"]
    assert smtp_sink.received[1].rcpt_tos == [READER]


def test_a_missing_local_image_stops_the_send_and_is_named(
    blog: Path, cli: Cli, smtp_sink: SmtpSink
) -> None:
    cli("subscribers", "add", READER)
    (blog / "posts" / "rich-post" / "wide-chart.png").unlink()
    result = cli("send", "rich-post", "--yes", ok=False)
    assert (result.exit_code, result.stderr) == (
        1,
        "Error: rich-post.md: the image rich-post/wide-chart.png is missing: no file posts/rich-post/wide-chart.png\n",
    )
    due = cli("send", "--due", "--yes", ok=False)  # the others still go
    assert subjects(smtp_sink) == ["An older post"]
    assert due.stderr.endswith(
        "Error: not sent: rich-post.md: the image rich-post/wide-chart.png is missing: no file posts/rich-post/wide-chart.png\n"
    )
    doctor = cli("doctor", ok=False).stdout
    assert (
        "warning  Post image      rich-post.md shows rich-post/wide-chart.png, but readers would not see it (no file posts/rich-post/wide-chart.png): `send` refuses the post"
        in doctor
    )


# --- a rich post, received and served -------------------------------------------------------


def test_a_post_with_a_footnote_a_table_and_an_image_arrives_rendered_right(
    blog: Path, cli: Cli, smtp_sink: SmtpSink, start_server: Callable[..., LiveServer]
) -> None:
    server = start_server()
    cli("subscribers", "add", READER)
    cli("send", "rich-post", "--yes")
    (received,) = smtp_sink.received
    text, page = parts(received)
    image_url = f"{server.url}/posts/rich-post/wide-chart.png"

    # The HTML part: table cells, the image by an absolute URL, the note at the end.
    assert re.search(r"<td[^>]*>North</td>", page) and re.search(r"<td[^>]*>42</td>", page)
    assert re.search(r"<th[^>]*border:1px solid", page)  # styled inline, for Gmail and Outlook
    assert f'<img src="{image_url}" alt="A wide chart of caseloads" style="max-width:100%' in page
    assert 'height="auto"' not in page and 'width="1200"' not in page
    assert page.index("Counted on 1 May") > page.index("</table>")
    assert page.index("Counted on 1 May") > page.index("Read more at")
    assert f'href="{server.url}/posts/rich-post#fn1"' in page  # works from any mail client
    assert "footnote-backref" not in page
    assert f'href="{server.url}/about"' in page  # a relative link made absolute
    assert '<a href="https://example.org/report"' in page  # a bare URL made a link
    assert "<s " in page and "Nobody</s>" in page
    assert "“rose” – again –" in page  # typographic quotes and dashes
    assert f'<a href="{server.url}/posts/rich-post"' in page.split('class="content"')[0]
    assert "By Sam Writer · 1 May 2024" in page
    preheader = re.search(r'<div class="preheader"[^>]*>([^<]*)</div>', page)
    assert preheader and html.unescape(preheader.group(1)) == (
        "A post with everything in it: Tom & Jerry, a link"
    )

    # The text part: the same content in the same order.
    expected_order = [
        f"Read online: {server.url}/posts/rich-post",
        "Tables, notes and pictures",
        "By Sam Writer · 1 May 2024",
        "Caseloads “rose” – again – this year[1]. ~~Nobody~~ Few saw it coming.",
        "What the figures say\n--------------------",
        "Team       | Cases | Change\n-----------+-------+-------\nNorth      |    42 | +12%",
        f"[A wide chart of caseloads:\n{image_url}]",
        f"the about page\n({server.url}/about)",
        "[1] Counted on 1 May; see the council’s figures\n    (https://example.org/figures).",
        "To unsubscribe, open this link and press the button:",
    ]
    flat = " ".join(text.split())  # wrapping depends on the length of the server's URL
    positions = [flat.index(" ".join(piece.split())) for piece in expected_order]
    assert positions == sorted(positions), text
    assert (
        "Team       | Cases | Change\n-----------+-------+-------\nNorth      |    42 | +12%"
        in text
    )

    with httpx.Client(base_url=server.url, timeout=10) as client:
        image = client.get(image_url)
        online = client.get("/posts/rich-post")
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content == (blog / "posts" / "rich-post" / "wide-chart.png").read_bytes()
    assert "max-age=" in image.headers["cache-control"]
    assert online.status_code == 200
    assert 'src="/posts/rich-post/wide-chart.png"' in online.text
    assert '<li id="fn1" class="footnote-item">' in online.text  # the footnote links' target


# Every layout the README allows: the picture in a shared images/ folder, in a folder named like
# the post, and beside the file (with a space in its name, percent-encoded in the email).
LAYOUTS = {
    "shared folder": ("images/lamp.png", "images/lamp.png"),
    "folder named like the post": ("lamp-post/lamp.png", "lamp-post/lamp.png"),
    "beside the file": ("my%20lamp.png", "my lamp.png"),
}


def write_lamp_post(posts: Path, *sources: str, draft: bool = False) -> None:
    images = " ".join(f"![A lamp]({source})" for source in sources)
    (posts / "lamp-post.md").write_text(
        f"---\ntitle: A lamp\ndate: 2024-06-01\ndraft: {str(draft).lower()}\n---\n\n"
        f"Look: {images}\n"
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_image_of_a_delivered_email_is_answered_by_serve(
    blog: Path, cli: Cli, smtp_sink: SmtpSink, start_server: Callable[..., LiveServer], layout: str
) -> None:
    source, file = LAYOUTS[layout]
    picture = blog / "posts" / file
    picture.parent.mkdir(exist_ok=True)
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + layout.encode())
    write_lamp_post(blog / "posts", source)
    server = start_server()
    cli("subscribers", "add", READER)
    cli("send", "lamp-post", "--yes")
    (received,) = smtp_sink.received
    text, page = parts(received)
    urls = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(urls) == 1 and urls[0].startswith(f"{server.url}/posts/")
    assert urls[0] in text  # the plain text gives the same address
    with httpx.Client(timeout=10) as client:
        answers = [client.get(url) for url in urls]
        online = client.get(f"{server.url}/posts/lamp-post").text
    assert [(a.status_code, a.content) for a in answers] == [(200, picture.read_bytes())]
    assert answers[0].headers["content-type"] == "image/png"
    assert f'src="{urls[0].removeprefix(server.url)}"' in online  # the web page shows it too


def test_an_image_is_answered_only_once_a_post_showing_it_went_out(
    blog: Path, cli: Cli, start_server: Callable[..., LiveServer]
) -> None:
    (blog / "posts" / "images").mkdir()
    (blog / "posts" / "images" / "lamp.png").write_bytes(b"lamp")
    (blog / "posts" / "images" / "unshown.png").write_bytes(b"unshown")
    write_lamp_post(blog / "posts", "images/lamp.png", draft=True)
    server = start_server()
    cli("subscribers", "add", READER)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/posts/images/lamp.png").status_code == 404  # a draft's picture
        write_lamp_post(blog / "posts", "images/lamp.png")
        assert client.get("/posts/images/lamp.png").status_code == 404  # not sent yet
        cli("send", "lamp-post", "--yes")
        assert client.get("/posts/images/lamp.png").content == b"lamp"
        for path in (
            "/posts/images/unshown.png",  # in the folder, but no post shows it
            "/posts/images/..%2f..%2f.env",
            "/posts/..%2f.env",
            "/posts/%2e%2e/.env",
            "/posts/lamp-post.md",
        ):
            assert client.get(path).status_code == 404, path


def test_an_image_leading_outside_posts_is_refused_and_never_served(
    blog: Path, cli: Cli, smtp_sink: SmtpSink, start_server: Callable[..., LiveServer]
) -> None:
    secret = blog / "secret.png"
    secret.write_bytes(b"not for the web")
    (blog / "posts" / "images").mkdir()
    (blog / "posts" / "images" / "lamp.png").symlink_to(secret)
    write_lamp_post(blog / "posts", "images/lamp.png")
    server = start_server()
    cli("subscribers", "add", READER)
    refused = cli("send", "lamp-post", "--yes", ok=False)
    assert refused.stderr == (
        "Error: lamp-post.md: the image images/lamp.png is missing: "
        "posts/images/lamp.png leads outside posts/\n"
    )
    assert smtp_sink.received == []
    cli("send", "lamp-post", "--to", "me@example.org", ok=False)  # nor a test copy
    database = store.open_db(server.settings.db_path)  # as if it went out before the link
    store.archive_post(database, "lamp-post", "test")
    database.close()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/posts/images/lamp.png").status_code == 404


def test_preview_and_send_name_every_missing_image_before_sending(
    blog: Path, cli: Cli, smtp_sink: SmtpSink
) -> None:
    write_lamp_post(blog / "posts", "images/lamp.png", "lamp.png", "https://cdn.example.org/x.png")
    cli("subscribers", "add", READER)
    missing = (
        "lamp-post.md: 2 images are missing: images/lamp.png (no file posts/images/lamp.png); "
        "lamp.png (no file posts/lamp.png)"
    )
    preview = cli("preview", "lamp-post")
    assert preview.stderr == f"Warning: {missing}; `send` refuses the post\n"
    assert "A lamp" in preview.stdout
    sent = cli("send", "lamp-post", "--yes", ok=False)
    assert sent.stderr == f"Error: {missing}\n"
    assert smtp_sink.received == []


@pytest.mark.parametrize(
    "path",
    [
        "/posts/rich-post/../../.env",
        "/posts/rich-post/%2e%2e/%2e%2e/.env",
        "/posts/rich-post/..%2f..%2f.env",
        "/posts/rich-post/%2e%2e/rich-post.md",
        "/posts/draft-post/secret.png",  # a draft's picture
        "/posts/old-post/..%2frich-post%2fwide-chart.png",
        "/posts/rich-post/nothing.png",
    ],
)
def test_serve_answers_only_a_published_posts_images(
    blog: Path, cli: Cli, start_server: Callable[..., LiveServer], path: str
) -> None:
    server = start_server()
    cli("subscribers", "add", READER)
    cli("send", "rich-post", "--yes")
    cli("send", "old-post", "--yes")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        answer = client.get(path)
        assert client.get("/posts/rich-post/wide-chart.png").status_code == 200
    assert answer.status_code == 404
    assert "SMTP" not in answer.text and "Not finished" not in answer.text


def test_a_drafts_images_are_served_once_a_test_copy_went_out(
    blog: Path, cli: Cli, start_server: Callable[..., LiveServer]
) -> None:
    server = start_server()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/posts/draft-post/secret.png").status_code == 404
        cli("send", "draft-post", "--to", "me@example.org")
        assert client.get("/posts/draft-post/secret.png").status_code == 200
        assert client.get("/posts/draft-post").status_code == 404  # its text stays off the web


# --- one broken post ------------------------------------------------------------------------


def test_a_broken_post_beside_good_ones_stops_nothing(
    blog: Path, cli: Cli, smtp_sink: SmtpSink, start_server: Callable[..., LiveServer]
) -> None:
    (blog / "posts" / "broken.md").write_text("---\ntitle: [unclosed\ndate: 2020-01-01\n---\nx\n")
    server = start_server()
    cli("subscribers", "add", READER)
    cli("send", "old-post", "--yes")
    assert subjects(smtp_sink) == ["An older post"]
    assert "An older post" in cli("preview", "old-post", "--text").stdout
    listed = cli("posts").stdout
    assert "broken.md" in listed and "broken front matter (line 3)" in listed
    assert "old-post" in listed
    with httpx.Client(base_url=server.url, timeout=10) as client:
        archive = client.get("/posts/")
        feed = client.get("/feed.xml")
        home = client.get("/")
    assert archive.status_code == 200 and "An older post" in archive.text
    assert feed.status_code == 200 and "An older post" in feed.text
    assert home.status_code == 200 and "An older post" in home.text
    doctor = cli("doctor", ok=False).stdout
    assert "warning  Post" in doctor and "broken.md: broken front matter (line 3)" in doctor
    alone = cli("send", "broken", "--yes", ok=False)
    assert alone.stderr.startswith("Error: broken.md: broken front matter (line 3)")


def test_a_plain_send_beside_a_broken_post_sends_nothing_and_names_the_file(
    blog: Path, cli: Cli, smtp_sink: SmtpSink
) -> None:
    """The broken file may be the post just written: a plain send must not mail an older one
    in its place, nor say there is nothing to do."""
    (blog / "posts" / "new.md").write_text("---\ntitle: [unclosed\ndate: 2099-01-01\n---\nx\n")
    cli("subscribers", "add", READER)
    refused = cli("send", "--yes", ok=False)
    assert refused.stderr.startswith("Error: new.md: broken front matter (line 3)")
    assert "name the post to send" in refused.stderr and "Traceback" not in refused.stderr
    assert smtp_sink.received == []
    cli("send", "old-post", "--yes")  # a named post still goes
    assert subjects(smtp_sink) == ["An older post"]


# --- the feed -------------------------------------------------------------------------------


def test_feedparser_reads_the_feed_and_finds_every_sent_post(
    blog: Path, cli: Cli, db: Database, start_server: Callable[..., LiveServer]
) -> None:
    server = start_server()
    cli("subscribers", "add", READER)
    cli("send", "rich-post", "--yes")
    cli("send", "old-post", "--yes")
    cli("send", "draft-post", "--to", "me@example.org")  # a test copy publishes nothing
    (blog / "posts" / "pulled.md").write_text(
        "---\ntitle: Pulled in\ndate: 2019-05-05\n---\nOld.\n"
    )
    store.archive_post(db, "pulled", "back catalogue")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        answer = client.get("/feed.xml")
        page = client.get("/posts/")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/atom+xml")
    parsed = feedparser.parse(answer.content)
    assert not parsed.bozo, parsed.bozo_exception
    assert parsed.version == "atom10"
    assert [entry.title for entry in parsed.entries] == [
        "Tables, notes and pictures",
        "An older post",
        "Pulled in",
    ]
    rich = parsed.entries[0]
    assert rich.link == f"{server.url}/posts/rich-post"
    assert rich.author == "Sam Writer"
    assert rich.published_parsed[:5] == (2024, 5, 1, 8, 30)  # 09:30 +01:00
    content = rich.content[0].value
    assert f'src="{server.url}/posts/rich-post/wide-chart.png"' in content
    assert "Counted on 1 May" in content and "<table>" in content
    assert len({entry.id for entry in parsed.entries}) == 3
    assert parsed.feed.links[0].href == f"{server.url}/feed.xml"
    assert '<link rel="alternate" type="application/atom+xml"' in page.text


# --- welcome --------------------------------------------------------------------------------


def subscribe_and_confirm(server: LiveServer, sink: SmtpSink, email: str, presses: int) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        form = client.get("/")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf
        client.post("/subscribe", data={"csrf": csrf.group(1), "email": email, "name": "Bo"})
        (confirmation,) = wait_for(lambda: sink.received)
        link = re.search(r"http://127\.0\.0\.1:\d+/confirm/\S+", parts(confirmation)[0])
        assert link
        for _ in range(presses):  # a double click, a reload
            assert client.post(link.group(0)).status_code == 200


def test_confirming_leads_to_exactly_one_welcome_email(
    blog: Path, cli: Cli, smtp_sink: SmtpSink, db: Database, start_server: Callable[..., LiveServer]
) -> None:
    server = start_server()
    cli("subscribers", "add", READER)
    cli("send", "rich-post", "--yes")
    smtp_sink.received.clear()
    subscribe_and_confirm(server, smtp_sink, "bo@example.org", presses=3)
    server.stop()  # waits for the tasks that run after each answer
    confirmation, welcome = smtp_sink.received
    assert confirmation.message["Subject"].startswith("Confirm your subscription")
    assert welcome.rcpt_tos == ["bo@example.org"]
    assert welcome.message["Subject"] == "Welcome to Child Protection Notes"
    reader = store.get_subscriber(db, "bo@example.org")
    assert reader is not None and reader.status == "active"
    link = welcome.message["List-Unsubscribe"].strip("<>")
    assert welcome.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    tokens = reader_tokens(server.settings, db)
    assert tokens.read_unsubscribe(link.rsplit("/", 1)[1]).reader == reader.public_id
    text, page = parts(welcome)
    assert (
        f"{server.url}/posts/rich-post" in text and f'href="{server.url}/posts/rich-post"' in page
    )
    assert link in text and f'href="{link}"' in page


def test_no_welcome_email_without_its_templates(
    blog: Path, smtp_sink: SmtpSink, start_server: Callable[..., LiveServer]
) -> None:
    for name in ("welcome_email.html", "welcome_email.txt"):
        (blog / "templates" / name).unlink()
    server = start_server()
    subscribe_and_confirm(server, smtp_sink, "bo@example.org", presses=1)
    server.stop()
    assert len(smtp_sink.received) == 1  # the confirmation only


def test_read_online_is_left_out_while_the_base_url_is_the_local_default(
    blog: Path, cli: Cli
) -> None:
    write_env(blog, BASE_URL="", LOGO_URL="https://cdn.example.org/logo.png")
    page = cli("preview", "old-post").stdout
    text = cli("preview", "old-post", "--text").stdout
    assert "Read online" not in page and "Read online" not in text
    assert (
        '<img class="logo" src="https://cdn.example.org/logo.png" alt="Child Protection Notes"'
        in page
    )
    assert "By Jane Author · 1 January 2020" in text  # From's name when the post names nobody


def test_doctor_names_css_premailer_cannot_parse(blog: Path, cli: Cli) -> None:
    css = blog / "templates" / "email.css"
    css.write_text(css.read_text() + "\n.oops color: red; }\n")
    line = len(css.read_text().splitlines())
    doctor = cli("doctor", ok=False).stdout
    assert (
        f"warning  Email CSS       {css}, line {line}: premailer cannot parse this CSS:" in doctor
    )
    preview = cli("preview", "old-post", ok=False)
    assert preview.stderr.startswith(f"Error: {css}, line {line}: premailer cannot parse this CSS:")
