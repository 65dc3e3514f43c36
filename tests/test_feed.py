"""`newsletter pull`: a blog's feed, served by a real HTTP server on loopback, becomes posts.

The feeds are tests/feeds/blogger.xml (Atom, shaped like Blogger's) and tests/feeds/wordpress.xml
(RSS 2.0 with content:encoded, shaped like WordPress's), both made from the five seed posts.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html import escape
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter import db as store
from newsletter.errors import FeedError
from newsletter.feed import pull, slug_from_title
from newsletter.feed_content import html_to_markdown, sanitise_html
from newsletter.feed_http import FeedClient, user_agent
from newsletter.posts import load_posts, read_post
from newsletter.schedule import posts_to_send

from .conftest import Cli, SmtpSink, add_readers, free_port
from .feed_server import FeedServer, RunningFeedServer

FEEDS = Path(__file__).parent / "feeds"
BLOGGER_PATH = "/feeds/posts/default"
WORDPRESS_PATH = "/feed/"
SEED_TITLES = {
    "Joint inspections of child protection arrangements - are they beyond Ofsted?",
    "Privatisation – steaming ahead?",
    "Apply the ‘airline pilot test’",
    "Mandatory Reporting in Wales",
    "Four, not three",
}


@dataclass(frozen=True)
class Blog:
    """One of the two feed shapes: where it is served and how to add an entry to it."""

    kind: str  # "blogger" or "wordpress"
    path: str

    @property
    def fixture(self) -> str:
        return (FEEDS / f"{self.kind}.xml").read_text(encoding="utf-8")

    def entry(self, number: int, title: str, html: str, published: datetime) -> str:
        if self.kind == "blogger":
            link = f"https://cpnotes.blogspot.com/{published:%Y/%m}/post-{number}.html"
            return (
                f"<entry><id>tag:blogger.com,1999:blog-7050916451366416219.post-{number}</id>"
                f"<published>{published.isoformat()}</published>"
                f"<updated>{published.isoformat()}</updated>"
                f"<title type='text'>{escape(title)}</title>"
                f"<content type='html'>{escape(html)}</content>"
                f"<link rel='alternate' type='text/html' href='{link}' title='{escape(title)}'/>"
                "<author><name>Alan Author</name></author></entry>\n"
            )
        link = f"https://cpnotes.example.org/{published:%Y/%m/%d}/post-{number}/"
        return (
            f"<item><title>{escape(title)}</title><link>{link}</link>"
            "<dc:creator><![CDATA[Alan Author]]></dc:creator>"
            f"<pubDate>{format_datetime(published)}</pubDate>"
            f'<guid isPermaLink="false">https://cpnotes.example.org/?p={number}</guid>'
            f"<description><![CDATA[{html[:80]}]]></description>"
            f"<content:encoded><![CDATA[{html}]]></content:encoded></item>\n"
        )

    def with_entries(self, document: str, *entries: str) -> str:
        marker = "<!-- ENTRIES -->" if self.kind == "blogger" else "<!-- ITEMS -->"
        return document.replace(marker, marker + "\n" + "".join(entries), 1)

    def summary_only(self) -> str:
        """The feed as the blog serves it with WordPress' "Summary" / Blogger's "Short"."""
        document = self.fixture
        if self.kind == "wordpress":
            return re.sub(r"\s*<content:encoded>.*?</content:encoded>", "", document, flags=re.S)

        def shorten(match: re.Match[str]) -> str:
            words = re.sub(r"&lt;.*?&gt;", " ", match.group(1)).split()[:30]
            return f"<summary type='text'>{' '.join(words)}…</summary>"

        return re.sub(r"<content type='html'>(.*?)</content>", shorten, document, flags=re.S)


BLOGS = [Blog("blogger", BLOGGER_PATH), Blog("wordpress", WORDPRESS_PATH)]


@pytest.fixture
def feed_server(tmp_path: Path) -> Iterator[FeedServer]:
    running = RunningFeedServer(tmp_path / "www")
    yield running.state
    running.stop()


@pytest.fixture
def feed_project(smtp_project: Path) -> Path:
    """The newsletter sending to the SMTP sink, with no posts of its own yet."""
    shutil.rmtree(smtp_project / "posts")
    (smtp_project / "posts").mkdir()
    return smtp_project


@pytest.fixture
def feed_cli(feed_project: Path) -> Cli:
    return Cli(feed_project, CliRunner())


def post_files(project: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted((project / "posts").glob("*.md"))}


def first_pull(
    blog: Blog, feed_server: FeedServer, feed_cli: Cli, project: Path, *, readers: int
) -> tuple[str, list[str]]:
    """Serve the blog's feed, put `readers` on the list, and pull once (the back catalogue)."""
    url = feed_server.feed_url(blog.path)
    feed_server.put(blog.path, blog.fixture)
    with _db(project) as database:
        addresses = add_readers(database, readers)
    feed_cli("pull", url)
    return url, addresses


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# --- the first pull: the back catalogue ----------------------------------------------------


@pytest.mark.parametrize("blog", BLOGS, ids=lambda b: b.kind)
def test_first_pull_writes_the_back_catalogue_and_send_mails_none_of_it(
    blog: Blog, feed_server: FeedServer, feed_cli: Cli, feed_project: Path, smtp_sink: SmtpSink
) -> None:
    feed_server.put(blog.path, blog.fixture)
    with _db(feed_project) as database:
        add_readers(database, 3)

    result = feed_cli("pull", feed_server.feed_url(blog.path))

    posts = load_posts(feed_project / "posts")
    assert {post.title for post in posts} == SEED_TITLES
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 6  # one line per post, then the summary
    assert all("(back catalogue, counted as published)" in line for line in lines[:5])
    assert lines[-1].startswith("0 new posts, 5 back catalogue (never mailed), 0 already taken")
    privatisation = next(p for p in posts if p.title.startswith("Privatisation"))
    assert privatisation.date.isoformat() == "2015-01-13"
    assert "like a ghostly ship emerging from a fog" in privatisation.body
    assert privatisation.body.count("\n\n") >= 5  # the paragraphs survive as paragraphs
    assert privatisation.link.startswith("https://cpnotes.")
    files = post_files(feed_project)
    for text in files.values():
        assert "feed_id: " in text and "\nauthor: Alan Author\n" in text
        assert "tracker" not in text and "pixel.wp.com" not in text

    sent = feed_cli("send", "--yes")
    assert "Nothing to send" in sent.stdout
    assert smtp_sink.received == []
    with _db(feed_project) as database:
        assert store.archived_slugs(database) == {post.slug for post in posts}


# --- later pulls ----------------------------------------------------------------------------


@pytest.mark.parametrize("blog", BLOGS, ids=lambda b: b.kind)
def test_a_sixth_entry_is_written_sent_once_and_a_third_pull_asks_conditionally(
    blog: Blog, feed_server: FeedServer, feed_cli: Cli, feed_project: Path, smtp_sink: SmtpSink
) -> None:
    url, readers = first_pull(blog, feed_server, feed_cli, feed_project, readers=4)
    sixth = blog.entry(
        6,
        "Ofsted, again",
        "<p>The inspectorate has <em>again</em> been asked to look at joint inspections.</p>",
        now() - timedelta(hours=1),
    )
    feed_server.put(blog.path, blog.with_entries(blog.fixture, sixth))

    second = feed_cli("pull", "--send", "--yes", url)

    assert "Wrote posts/ofsted-again.md" in second.stdout
    assert "“Ofsted, again” (new)" in second.stdout
    assert "1 new post, 5 already taken" in second.stdout
    assert "“Ofsted, again”: Sent 4, failed 0" in second.stdout
    assert sorted(smtp_sink.per_recipient().items()) == [(r, 1) for r in sorted(readers)]
    message = smtp_sink.received[0].message
    assert message["Subject"] == "Ofsted, again"
    assert "has _again_ been asked" in message.get_body(("plain",)).get_content()
    assert len(post_files(feed_project)) == 6

    before = len(feed_server.requests)
    third = feed_cli("pull", "--send", "--yes", url)

    assert third.stdout.strip() == f"Nothing new: {url} has not changed since the last pull"
    request = feed_server.requests[before]
    assert request.headers.get("If-None-Match", "").startswith('"')
    assert "If-Modified-Since" in request.headers
    assert request.status == 304
    assert len(post_files(feed_project)) == 6
    assert len(smtp_sink.received) == 4

    # An edited entry (same id, new text) is not a new post.
    edited = sixth.replace("asked to look", "asked, once more, to look")
    feed_server.put(blog.path, blog.with_entries(blog.fixture, edited))
    fourth = feed_cli("pull", "--send", "--yes", url)
    assert "0 new posts, 6 already taken" in fourth.stdout
    assert len(post_files(feed_project)) == 6
    assert len(smtp_sink.received) == 4


def test_pull_send_leaves_a_scheduled_entry_and_a_draft_for_later(
    feed_server: FeedServer, feed_cli: Cli, feed_project: Path, smtp_sink: SmtpSink
) -> None:
    """`pull --send` mails what `send` would: not a post dated later, nor one made a draft."""
    blog = BLOGS[0]
    url, _ = first_pull(blog, feed_server, feed_cli, feed_project, readers=2)
    later = blog.entry(6, "Next week", "<p>Not yet.</p>", now() + timedelta(days=7))
    feed_server.put(blog.path, blog.with_entries(blog.fixture, later))

    pulled = feed_cli("pull", "--send", "--yes", url)

    assert "Wrote posts/next-week.md" in pulled.stdout
    assert "Warning: not sent: 'next-week' is scheduled" in pulled.stderr
    assert smtp_sink.received == []

    draft = blog.entry(7, "Half done", "<p>Draft.</p>", now() - timedelta(hours=1))
    feed_server.put(blog.path, blog.with_entries(blog.fixture, later, draft))
    feed_cli("pull", url)  # written, not sent; then the author makes it a draft
    path = feed_project / "posts" / "half-done.md"
    path.write_text(path.read_text().replace("---\n", "---\ndraft: true\n", 1))

    again = feed_cli("pull", "--send", "--yes", url)

    assert "Warning: not sent: 'half-done' is a draft" in again.stderr
    assert smtp_sink.received == []


def test_a_new_entry_dated_long_before_the_first_pull_is_not_mailed(
    feed_server: FeedServer, feed_cli: Cli, feed_project: Path, smtp_sink: SmtpSink
) -> None:
    """A blog that moves gets new guids for old posts: they must not all go out again."""
    blog = BLOGS[1]
    url, _ = first_pull(blog, feed_server, feed_cli, feed_project, readers=2)
    moved = blog.fixture.replace("?p=", "?moved=")
    feed_server.put(blog.path, moved)

    result = feed_cli("pull", "--send", "--yes", url)

    assert result.stdout.count("(back catalogue, counted as published)") == 5
    assert smtp_sink.received == []
    names = sorted(post_files(feed_project))
    assert len(names) == 10 and "four-not-three-2.md" in names  # never over an existing file


def test_the_first_pull_with_send_mails_nothing(
    feed_server: FeedServer, feed_cli: Cli, feed_project: Path, smtp_sink: SmtpSink
) -> None:
    feed_server.put(WORDPRESS_PATH, BLOGS[1].fixture)
    with _db(feed_project) as database:
        add_readers(database, 2)
    feed_cli("pull", "--send", "--yes", feed_server.feed_url(WORDPRESS_PATH))
    assert smtp_sink.received == []


# --- what reaches the reader ----------------------------------------------------------------


@pytest.mark.parametrize("blog", BLOGS, ids=lambda b: b.kind)
def test_script_onclick_and_tracking_pixels_are_gone_from_the_email(
    blog: Blog, feed_server: FeedServer, feed_cli: Cli, feed_project: Path, smtp_sink: SmtpSink
) -> None:
    url, _ = first_pull(blog, feed_server, feed_cli, feed_project, readers=1)
    hostile = (
        '<p onclick="steal(document.cookie)">Read <a href="/2026/01/next.html" '
        'onmouseover="track()">the next one</a>.</p>'
        "<script>alert('gotcha')</script><style>p { display: none }</style>"
        '<p><img src="/images/chart.png" alt="A chart" width="400" onerror="track()"></p>'
        '<img src="https://stats.example.com/open.gif?id=42" width="1" height="1">'
        '<iframe src="https://www.youtube.com/embed/abc123" title="The talk"></iframe>'
        '<p><a href="javascript:steal()">Win a prize</a></p>'
        "<p>Escaped text is text: &lt;blink&gt;escaped&lt;/blink&gt;</p>"
        "<p>4) Not a list, # not a heading</p>"
    )
    entry = blog.entry(7, "Hostile markup", hostile, now())
    feed_server.put(blog.path, blog.with_entries(blog.fixture, entry))

    feed_cli("pull", "--send", "--yes", url)

    message = smtp_sink.received[0].message
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    for gone in (
        "<script",
        "gotcha",
        "onclick",
        "steal",
        "onmouseover",
        "onerror",
        "display: none",
    ):
        assert gone not in html and gone not in text, gone
    assert "stats.example.com" not in html  # the 1×1 tracking pixel
    assert "<iframe" not in html
    assert 'href="https://www.youtube.com/embed/abc123"' in html  # the video, as a link
    site = (
        "https://cpnotes.blogspot.com" if blog.kind == "blogger" else "https://cpnotes.example.org"
    )
    assert f'href="{site}/2026/01/next.html"' in html  # relative to the entry's own link
    assert f'src="{site}/images/chart.png"' in html
    assert "Win a prize" in html and "javascript" not in html
    assert "&lt;blink&gt;escaped&lt;/blink&gt;" in html and "<blink" not in html
    assert "<blink>escaped</blink>" in text  # the plain-text part shows it as written
    assert "<ol" not in html and "4) Not a list, # not a heading" in text


@pytest.mark.parametrize("blog", BLOGS, ids=lambda b: b.kind)
def test_a_summary_only_feed_warns_and_the_email_links_to_the_whole_post(
    blog: Blog, feed_server: FeedServer, feed_cli: Cli, feed_project: Path
) -> None:
    feed_server.put(blog.path, blog.summary_only())

    result = feed_cli("pull", feed_server.feed_url(blog.path))

    assert "Warning: the feed gives only a summary of each post" in result.stderr
    assert "'Summary' to 'Full text'" in result.stderr and "'Short' to 'Full'" in result.stderr
    post = next(p for p in load_posts(feed_project / "posts") if p.title == "Four, not three")
    assert post.summary_only
    html = feed_cli("preview", post.slug).stdout
    text = feed_cli("preview", "--text", post.slug).stdout
    assert f'<a href="{post.link}"' in html and "Read the whole post</a>" in html
    assert f"Read the whole post: {post.link}" in text


def test_a_full_text_feed_does_not_warn(
    feed_server: FeedServer, feed_cli: Cli, feed_project: Path
) -> None:
    feed_server.put(BLOGGER_PATH, BLOGS[0].fixture)
    result = feed_cli("pull", feed_server.feed_url(BLOGGER_PATH))
    assert "Warning" not in result.stderr
    post = load_posts(feed_project / "posts")[0]
    assert not post.summary_only
    assert "Read the whole post" not in feed_cli("preview", post.slug).stdout


# --- errors ---------------------------------------------------------------------------------


def test_a_server_that_is_down_gives_one_line_and_exit_1(feed_cli: Cli, feed_project: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/feed/"
    result = feed_cli("pull", url, ok=False)
    assert result.exit_code == 1
    assert result.output == f"Error: cannot reach {url}: Connection refused\n"
    assert post_files(feed_project) == {}
    with _db(feed_project) as database:
        assert store.get_feed(database, url) is None


BROKEN = {
    "a web page": (
        "<!doctype html><html><head><title>Blog</title>"
        '<link rel="alternate" type="application/rss+xml" href="/feed/"></head>'
        "<body><p>Hello</p></body></html>",
        "text/html; charset=utf-8",
        "Error: {url} is not an RSS or Atom feed but a web page; its feed is {base}/feed/\n",
    ),
    "cut short": (
        None,  # the WordPress feed, cut in the middle of an item
        "application/rss+xml",
        "Error: the feed at {url} is not well-formed XML (line ",
    ),
    "a 500": (
        "",
        "text/plain",
        "Error: {url} answered 500 Internal Server Error\n",
    ),
}


@pytest.mark.parametrize("kind", BROKEN)
def test_a_broken_feed_gives_one_line_exit_1_and_changes_nothing(
    kind: str, feed_server: FeedServer, feed_cli: Cli, feed_project: Path
) -> None:
    url = feed_server.feed_url("/blog")
    feed_server.put("/blog", BLOGS[1].fixture)
    feed_cli("pull", url)
    before_files = post_files(feed_project)
    with _db(feed_project) as database:
        before_state = store.get_feed(database, url)
    document, content_type, expected = BROKEN[kind]
    if document is None:
        fixture = BLOGS[1].with_entries(
            BLOGS[1].fixture, BLOGS[1].entry(8, "New", "<p>New post</p>", now())
        )
        document = fixture[: fixture.index("<title>Privatisation")]
    feed_server.put("/blog", document)
    feed_server.content_type = content_type
    if kind == "a 500":
        feed_server.statuses["/blog"] = 500

    result = feed_cli("pull", url, ok=False)

    assert result.exit_code == 1
    assert result.output.startswith(expected.format(url=url, base=feed_server.url))
    assert result.output.count("\n") == 1
    assert post_files(feed_project) == before_files
    with _db(feed_project) as database:
        assert store.get_feed(database, url) == before_state


def test_one_broken_entry_does_not_stop_the_good_ones(
    feed_server: FeedServer, feed_cli: Cli, feed_project: Path
) -> None:
    anonymous = (
        "<item><title>Nobody knows me</title><description>No guid, no link</description></item>"
    )
    feed_server.put(WORDPRESS_PATH, BLOGS[1].with_entries(BLOGS[1].fixture, anonymous))

    result = feed_cli("pull", feed_server.feed_url(WORDPRESS_PATH))

    assert (
        "Warning: skipped entry 1 (Nobody knows me): it has neither an id/guid nor a link"
        in result.stderr
    )
    assert len(post_files(feed_project)) == 5
    assert "5 back catalogue (never mailed), 0 already taken, 1 skipped" in result.stdout


def test_pull_without_an_address_names_the_setting(feed_cli: Cli) -> None:
    result = feed_cli("pull", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: give the blog's feed address or set NEWSLETTER_FEED_URL"
    )


def test_the_address_can_come_from_the_settings(
    feed_server: FeedServer, feed_cli: Cli, feed_project: Path
) -> None:
    from .conftest import write_env

    feed_server.put(BLOGGER_PATH, BLOGS[0].fixture)
    write_env(feed_project, FEED_URL=feed_server.feed_url(BLOGGER_PATH))
    feed_cli("pull")
    assert len(post_files(feed_project)) == 5


def test_send_needs_yes_when_not_on_a_terminal(feed_server: FeedServer, feed_cli: Cli) -> None:
    feed_server.put(BLOGGER_PATH, BLOGS[0].fixture)
    result = feed_cli("pull", "--send", feed_server.feed_url(BLOGGER_PATH), ok=False)
    assert result.output == "Error: not sending without confirmation: run with --yes\n"
    assert feed_server.requests == []  # refused before anything was fetched


# --- dry run, HTTP manners ------------------------------------------------------------------


def test_dry_run_shows_what_would_be_written_and_changes_nothing(
    feed_server: FeedServer, feed_cli: Cli, feed_project: Path
) -> None:
    url = feed_server.feed_url(WORDPRESS_PATH)
    feed_server.put(WORDPRESS_PATH, BLOGS[1].fixture)
    result = feed_cli("pull", "--dry-run", url)
    assert result.stdout.count("Would write posts/") == 5
    assert "Dry run, nothing written: " in result.stdout
    assert post_files(feed_project) == {}
    with _db(feed_project) as database:
        assert store.get_feed(database, url) is None


def test_requests_name_the_tool_follow_redirects_and_take_gzip(
    feed_server: FeedServer, feed_cli: Cli, feed_project: Path
) -> None:
    feed_server.put(BLOGGER_PATH, BLOGS[0].fixture)
    feed_server.redirects["/old-feed"] = BLOGGER_PATH
    feed_cli("pull", feed_server.feed_url("/old-feed"))
    first, second = feed_server.requests
    assert (first.status, second.status) == (301, 200)
    assert second.headers["User-Agent"] == user_agent()
    assert re.match(r"newsletter/\S+ \(", user_agent())
    assert "gzip" in second.headers["Accept-Encoding"]
    assert len(post_files(feed_project)) == 5


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/feed/"
    try:
        with FeedClient(timeout=0.3) as client, pytest.raises(FeedError) as caught:
            client.fetch(url)
    finally:
        for conn in accepted:
            conn.close()
        listener.close()
    assert str(caught.value) == f"{url} did not answer within 0.3 seconds"


# --- paged feeds ----------------------------------------------------------------------------


def _split_pages(blog: Blog, style: str, server: FeedServer) -> str:
    """Serve the five entries as three pages (2, 2, 1) the way `style` pages; return page 1."""
    document = blog.fixture
    tag = "entry" if blog.kind == "blogger" else "item"
    entries = re.findall(rf"\s*<{tag}>.*?</{tag}>", document, flags=re.S)
    head = document[: document.index(entries[0])]
    tail = document[document.index(entries[-1]) + len(entries[-1]) :]
    pages = [entries[0:2], entries[2:4], entries[4:5]]
    if style == "rfc5005":
        targets = ["/atom/page1.xml", "/atom/page2.xml", "/atom/page3.xml"]
    elif style == "blogger":
        targets = [
            BLOGGER_PATH,
            f"{BLOGGER_PATH}?start-index=3&max-results=2",
            f"{BLOGGER_PATH}?start-index=5&max-results=2",
        ]
    else:
        targets = [WORDPRESS_PATH, f"{WORDPRESS_PATH}?paged=2", f"{WORDPRESS_PATH}?paged=3"]
    for number, (target, page) in enumerate(zip(targets, pages, strict=True)):
        page_head = head
        if style == "rfc5005" and number < 2:
            page_head = page_head.replace(
                "<generator", f"<link rel='next' href='{targets[number + 1]}'/><generator", 1
            )
        if style == "blogger":
            page_head = re.sub(r"<link rel='next'[^>]*>", "", page_head)
            page_head = page_head.replace(
                "<openSearch:startIndex>1<", f"<openSearch:startIndex>{1 + 2 * number}<"
            ).replace("<openSearch:itemsPerPage>25<", "<openSearch:itemsPerPage>2<")
        server.put(target, page_head + "".join(page) + tail)
    return targets[0]


@pytest.mark.parametrize(
    ("style", "blog"),
    [("rfc5005", BLOGS[0]), ("blogger", BLOGS[0]), ("wordpress", BLOGS[1])],
    ids=["rfc5005-next-links", "blogger-start-index", "wordpress-paged"],
)
def test_all_walks_a_feed_of_three_pages_once(
    style: str, blog: Blog, feed_server: FeedServer, feed_cli: Cli, feed_project: Path
) -> None:
    first_page = _split_pages(blog, style, feed_server)
    url = feed_server.feed_url(first_page)

    result = feed_cli("pull", "--all", url)

    assert {p.title for p in load_posts(feed_project / "posts")} == SEED_TITLES
    assert result.stdout.strip().endswith(f"from {url} (3 pages)")
    served = [r.path for r in feed_server.requests if r.status == 200]
    assert len(served) == len(set(served)) == 3  # each page once
    if style == "wordpress":  # WordPress answers 404 past the last page: the walk ends there
        assert [r.status for r in feed_server.requests] == [200, 200, 200, 404]


def test_without_all_only_the_first_page_is_read_and_a_later_all_adds_the_rest_unmailed(
    feed_server: FeedServer, feed_cli: Cli, feed_project: Path, smtp_sink: SmtpSink
) -> None:
    first_page = _split_pages(BLOGS[1], "wordpress", feed_server)
    url = feed_server.feed_url(first_page)
    with _db(feed_project) as database:
        add_readers(database, 1)
    feed_cli("pull", url)
    assert len(post_files(feed_project)) == 2
    assert len(feed_server.requests) == 1

    result = feed_cli("pull", "--all", "--send", "--yes", url)

    assert len(post_files(feed_project)) == 5
    assert result.stdout.count("(back catalogue, counted as published)") == 3
    assert smtp_sink.received == []


# --- other feed formats and small parts -----------------------------------------------------


def test_an_rss_1_0_feed_is_read(
    feed_server: FeedServer, feed_cli: Cli, feed_project: Path
) -> None:
    rdf = """<?xml version="1.0" encoding="utf-8"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"
  xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:content="http://purl.org/rss/1.0/modules/content/">
  <channel rdf:about="https://old.example.org/"><title>Old blog</title>
    <link>https://old.example.org/</link><description>d</description>
    <items><rdf:Seq><rdf:li rdf:resource="https://old.example.org/one"/></rdf:Seq></items>
  </channel>
  <item rdf:about="https://old.example.org/one"><title>Four, not three</title>
    <link>https://old.example.org/one</link><dc:date>2015-01-01T16:30:00+00:00</dc:date>
    <dc:creator>Alan Author</dc:creator>
    <content:encoded><![CDATA[<p>My fourth wish is:</p>]]></content:encoded>
  </item>
</rdf:RDF>"""
    feed_server.put("/index.rdf", rdf)
    feed_cli("pull", feed_server.feed_url("/index.rdf"))
    post = read_post(feed_project / "posts" / "four-not-three.md")
    assert post.date.isoformat() == "2015-01-01"
    assert post.link == "https://old.example.org/one"
    assert post.body.strip() == "My fourth wish is:"


def test_the_date_keeps_the_blogs_own_time_zone(
    feed_server: FeedServer, feed_project: Path, settings
) -> None:
    late = datetime(2015, 1, 20, 23, 30, tzinfo=UTC).astimezone(
        __import__("datetime").timezone(timedelta(hours=-8))
    )
    blog = BLOGS[0]
    feed_server.put(
        BLOGGER_PATH, blog.with_entries(blog.fixture, blog.entry(9, "Late", "<p>x</p>", late))
    )
    with _db(feed_project) as database:
        pull(database, feed_project / "posts", feed_server.feed_url(BLOGGER_PATH))
    assert read_post(feed_project / "posts" / "late.md").date.isoformat() == "2015-01-20"


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Apply the ‘airline pilot test’", "apply-the-airline-pilot-test"),
        ("Privatisation – steaming ahead?", "privatisation-steaming-ahead"),
        ("Café crème: Ærøskøbing", "cafe-creme-rskbing"),
        ("../../etc/passwd", "etc-passwd"),
        ("日本語", ""),
        (
            "Joint inspections of child protection arrangements - are they beyond Ofsted?",
            "joint-inspections-of-child-protection-arrangements-are-they",
        ),
    ],
)
def test_slugs_from_titles_are_safe_file_names(title: str, slug: str) -> None:
    assert slug_from_title(title) == slug


def test_an_untitled_slug_falls_back_to_the_date_and_never_overwrites(
    feed_server: FeedServer, feed_cli: Cli, feed_project: Path
) -> None:
    mine = "---\ntitle: Mine\ndate: 2015-01-01\n---\n\nMy own post.\n"
    (feed_project / "posts" / "four-not-three.md").write_text(mine, encoding="utf-8")
    blog = BLOGS[1]
    japanese = blog.entry(10, "日本語", "<p>本文</p>", datetime(2015, 2, 1, tzinfo=UTC))
    feed_server.put(WORDPRESS_PATH, blog.with_entries(blog.fixture, japanese))

    feed_cli("pull", feed_server.feed_url(WORDPRESS_PATH))

    assert (feed_project / "posts" / "four-not-three.md").read_text(encoding="utf-8") == mine
    assert read_post(feed_project / "posts" / "four-not-three-2.md").title == "Four, not three"
    assert read_post(feed_project / "posts" / "post-2015-02-01.md").title == "日本語"


def test_sanitising_keeps_text_and_safe_links_only() -> None:
    clean = sanitise_html(
        '<p style="color:red" class="x">Hi <a href="../a" target="_blank">a</a>'
        '<form action="/steal"><input name="p"></form><svg onload="x()"></svg></p>',
        "https://blog.example.org/2015/01/post.html",
    )
    assert clean == '<p>Hi <a href="https://blog.example.org/2015/a">a</a></p><p></p>'


def test_markdown_from_blogger_line_breaks_has_paragraphs() -> None:
    markdown = html_to_markdown(
        "<div>One.<br /><br />Two &amp; three.<br /><br /><br /></div>", "https://b.example/"
    )
    assert markdown == "One.\n\nTwo \\& three.\n"


def _db(project: Path):
    """The project's database, opened and closed like a command does."""
    from contextlib import closing

    return closing(store.open_db(project / "newsletter.db"))


def test_a_post_not_sent_because_the_mail_server_was_down_goes_at_the_next_poll(
    feed_server: FeedServer, feed_cli: Cli, feed_project: Path, smtp_sink: SmtpSink
) -> None:
    from .conftest import write_env

    blog = BLOGS[0]
    url, readers = first_pull(blog, feed_server, feed_cli, feed_project, readers=2)
    feed_server.put(
        blog.path,
        blog.with_entries(blog.fixture, blog.entry(11, "Late news", "<p>News.</p>", now())),
    )
    write_env(feed_project, SMTP_PORT=free_port(), SMTP_MAX_ATTEMPTS=1)

    down = feed_cli("pull", "--send", "--yes", url, ok=False)

    assert down.exit_code == 1
    assert "Wrote posts/late-news.md" in down.stdout
    assert smtp_sink.received == []
    with _db(feed_project) as database:
        assert posts_to_send(database) == ["late-news"]
        assert posts_to_send(database, now() + timedelta(days=4)) == []  # too late to go out
    write_env(feed_project, SMTP_PORT=smtp_sink.port)

    again = feed_cli("pull", "--send", "--yes", url)

    assert "Nothing new" in again.stdout
    assert "“Late news”: Sent 2, failed 0" in again.stdout
    assert sorted(smtp_sink.per_recipient()) == sorted(readers)
    feed_cli("pull", "--send", "--yes", url)
    assert len(smtp_sink.received) == 2
