"""From a blog's feed to posts: each new entry of an RSS or Atom feed becomes posts/SLUG.md.

The first pull of a feed takes what is already in it as the back catalogue: those posts are
written and counted as published (`db.archive_post`), so no `send` mails years of old posts to
everyone. Later pulls take only entries never taken before, by id/guid (else link), so an
edited entry is not a new post. Everything is fetched, parsed and converted before anything is
written: a feed that is down or broken changes nothing.
"""

from __future__ import annotations

import email.utils
import html
import io
import re
import unicodedata
import xml.sax
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import feedparser
import frontmatter
import yaml
from sqlite_utils import Database

from . import db as store
from .errors import FeedError, FeedNotFound
from .feed_content import html_to_markdown, is_web_link, plain_text, short_summary
from .feed_http import DEFAULT_TIMEOUT_SECONDS, FeedClient, FeedResponse, check_feed_url

BACK_CATALOGUE_REASON = "feed back catalogue"
FULL_TEXT_ADVICE = (
    "the feed gives only a summary of each post, so each email ends with a link to the whole "
    "post. To mail whole posts, have the blog put them in its feed: in WordPress, Settings > "
    "Reading > 'For each post in a feed, include' from 'Summary' to 'Full text'; in Blogger, "
    "Settings > Site feed > 'Allow blog feed' from 'Short' to 'Full'."
)
# An entry dated this long before the feed's first pull is back catalogue even when it is new
# to us: a blog that moved (new guids) must not mail its whole history again.
BACKDATED_AFTER = timedelta(days=7)
# `pull --send` retries a post whose send did not finish (the mail server was down) this long;
# after that, it would reach only readers who joined since, days late.
MAX_PAGES = 1000
SLUG_LENGTH = 60
TITLE_FROM_TEXT_LENGTH = 60


@dataclass(frozen=True)
class FeedEntry:
    """One usable entry of a feed, made safe and converted, not yet written anywhere."""

    key: str  # the id/guid, else the link: what makes it the same entry next time
    title: str
    published: datetime
    link: str
    author: str
    summary: str
    body: str  # Markdown
    summary_only: bool


@dataclass(frozen=True)
class FeedPage:
    """One fetched and parsed page of a feed."""

    url: str
    title: str
    entries: list[FeedEntry]
    skipped: list[str]  # "entry 3 (title): why", for entries that could not be used
    next_url: str | None
    etag: str | None
    last_modified: str | None


@dataclass(frozen=True)
class PulledPost:
    """A post written (or, in a dry run, to be written) from a feed entry."""

    slug: str
    path: Path
    title: str
    published: datetime
    back_catalogue: bool  # counted as published, never mailed
    summary_only: bool
    adopted: bool = False  # its file was already there from an interrupted pull


@dataclass
class PullReport:
    """What a pull did, for one line per post and the closing summary."""

    url: str
    first_pull: bool
    dry_run: bool
    not_modified: bool = False
    pages: int = 0
    feed_title: str = ""
    posts: list[PulledPost] = field(default_factory=list)
    already_taken: int = 0
    skipped: list[str] = field(default_factory=list)

    @property
    def to_send(self) -> list[PulledPost]:
        """The new posts readers should get, oldest first."""
        return sorted((p for p in self.posts if not p.back_catalogue), key=lambda p: p.published)

    @property
    def summary_only(self) -> bool:
        return any(p.summary_only for p in self.posts)


# --- reading a feed document ----------------------------------------------------------------


def read_feed(response: FeedResponse, fetched_at: datetime) -> FeedPage:
    """Parse one feed document; a broken document is a FeedError, a broken entry is skipped."""
    parsed = feedparser.parse(
        io.BytesIO(response.content),
        response_headers={"content-type": response.content_type, "content-location": response.url},
        # nh3 sanitises, and links resolve against each entry's own address, below.
        resolve_relative_uris=False,
        sanitize_html=False,
    )
    problem = parsed.get("bozo_exception")
    if not parsed.get("version"):
        raise FeedError(f"{response.url} is not an RSS or Atom feed{_feed_hint(response)}")
    if isinstance(problem, xml.sax.SAXParseException) and "undefined entity" not in str(problem):
        # feedparser would guess its way through; a half-read feed must not become posts.
        # (An HTML entity such as &nbsp; is the one slip it reads reliably.)
        raise FeedError(
            f"the feed at {response.url} is not well-formed XML (line "
            f"{problem.getLineNumber()}: {problem.getMessage()}); nothing was changed"
        )
    entries: list[FeedEntry] = []
    skipped: list[str] = []
    for number, raw in enumerate(parsed.entries, 1):
        try:
            entries.append(read_entry(raw, response.url, fetched_at))
        except _UnusableEntry as e:
            name = raw.get("title") or raw.get("id") or raw.get("link") or "untitled"
            skipped.append(f"entry {number} ({plain_text(str(name))[:60]}): {e}")
    return FeedPage(
        url=response.url,
        title=plain_text(parsed.feed.get("title", "")),
        entries=entries,
        skipped=skipped,
        next_url=_next_page(parsed, response.url),
        etag=response.etag,
        last_modified=response.last_modified,
    )


class _UnusableEntry(Exception):
    """An entry that cannot become a post; the others still can."""


def read_entry(raw: Any, page_url: str, fetched_at: datetime) -> FeedEntry:
    """One feedparser entry as a FeedEntry: safe Markdown body, plain-text title and summary."""
    link = _entry_link(raw, page_url)
    key = str(raw.get("id") or "").strip() or link
    if not key:
        raise _UnusableEntry("it has neither an id/guid nor a link, so it cannot be told apart")
    content = _html_of(raw.get("content") or [])
    summary_html = _html_of([raw["summary_detail"]]) if raw.get("summary_detail") else ""
    summary_html = summary_html or str(raw.get("summary") or "")
    body_html = content or summary_html
    try:
        body = html_to_markdown(body_html, link or page_url) if body_html.strip() else ""
    except RecursionError:
        raise _UnusableEntry("its HTML is nested too deeply to read") from None
    title = plain_text(str(raw.get("title") or ""))
    if not title:
        title = short_summary(body_html, TITLE_FROM_TEXT_LENGTH)
    if not title:
        raise _UnusableEntry("it has no title and no text")
    if any(c in title for c in "\r\n"):
        title = " ".join(title.split())
    return FeedEntry(
        key=key,
        title=title,
        published=_entry_date(raw, fetched_at),
        link=link,
        # feedparser's `author` may be "Name (email)"; Blogger's email is always noreply.
        author=plain_text(str((raw.get("author_detail") or {}).get("name") or "")),
        summary=short_summary(summary_html or content),
        body=body,
        summary_only=not content and bool(link),
    )


def _entry_link(raw: Any, page_url: str) -> str:
    """The entry's web page: feedparser puts a bare guid in `link` too, which is not one."""
    candidates = [
        str(link.get("href") or "")
        for link in raw.get("links", [])
        if link.get("rel") == "alternate"
    ]
    fallback = str(raw.get("link") or "")
    # A guid standing in for a missing link only counts when it is a full web address.
    if fallback and (is_web_link(fallback) or not raw.get("guidislink")):
        candidates.append(fallback)
    for candidate in candidates:
        absolute = urljoin(page_url, candidate.strip())
        if candidate.strip() and is_web_link(absolute):
            return absolute
    return ""


def _html_of(parts: list[Any]) -> str:
    """The HTML of an entry's content (or summary), preferring an HTML part to a plain one."""
    for part in sorted(parts, key=lambda p: "html" not in str(p.get("type", ""))):
        value = str(part.get("value") or "")
        if "html" in str(part.get("type", "html")):
            return value
        if value.strip():  # plain text: keep its paragraphs, escape the rest
            paragraphs = re.split(r"\n\s*\n", value.strip())
            return "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    return ""


def _entry_date(raw: Any, fallback: datetime) -> datetime:
    """When the entry was published, else updated, keeping the blog's own time zone."""
    for name in ("published", "updated", "created"):
        text = str(raw.get(name) or "").strip()
        if not text:
            continue
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            try:
                value = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                struct = raw.get(f"{name}_parsed")
                if not struct:
                    continue
                value = datetime(*struct[:6]).replace(tzinfo=UTC)
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return fallback


def _feed_hint(response: FeedResponse) -> str:
    """For a web page given instead of its feed: the feed it advertises, if any."""
    kind = response.content_type.split(";")[0].strip() or "no content type"
    if "html" not in kind:
        return f" ({kind})"
    from bs4 import BeautifulSoup  # markdownify's parser; only needed for this hint

    page = BeautifulSoup(response.content, "html.parser")
    for link in page.find_all("link", href=True):
        rel = list(link.get("rel") or [])
        kind_of_link = str(link.get("type") or "")
        if "alternate" in rel and kind_of_link.endswith(("rss+xml", "atom+xml")):
            return f" but a web page; its feed is {urljoin(response.url, str(link['href']))}"
    return " but a web page (for a blog: https://BLOG.blogspot.com/feeds/posts/default, or /feed/)"


# --- paged feeds ----------------------------------------------------------------------------


def _next_page(parsed: Any, page_url: str) -> str | None:
    """The next (older) page: an RFC 5005 `next` link, Blogger's start-index, WordPress's paged."""
    for link in parsed.feed.get("links", []):
        if link.get("rel") == "next" and link.get("href"):
            return urljoin(page_url, str(link["href"]))
    feed = parsed.feed
    try:  # Blogger's OpenSearch counts
        total = int(feed["opensearch_totalresults"])
        start = int(feed["opensearch_startindex"])
        per_page = int(feed["opensearch_itemsperpage"])
    except (KeyError, ValueError):
        pass
    else:
        following = start + per_page
        if per_page > 0 and following <= total:
            return _with_query(page_url, {"start-index": following, "max-results": per_page})
        return None
    if "wordpress" in str(feed.get("generator", "")).lower():
        page = int(dict(parse_qsl(urlsplit(page_url).query)).get("paged", "1") or 1)
        return _with_query(page_url, {"paged": page + 1})
    return None


def _with_query(url: str, values: dict[str, object]) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update({k: str(v) for k, v in values.items()})
    return urlunsplit(parts._replace(query=urlencode(query)))


def fetch_pages(
    client: FeedClient,
    url: str,
    state: store.FeedState | None,
    *,
    all_pages: bool,
    fetched_at: datetime,
) -> list[FeedPage] | None:
    """The feed's first page (conditionally), or with all_pages every page; None for a 304."""
    if all_pages or state is None:
        first = client.fetch(url)
    else:
        first = client.fetch(url, etag=state.etag, last_modified=state.last_modified)
    if first is None:
        return None
    pages = [read_feed(first, fetched_at)]
    if not all_pages:
        return pages
    visited = {url, first.url}
    keys = {entry.key for entry in pages[0].entries}
    while (following := pages[-1].next_url) and following not in visited:
        if len(pages) >= MAX_PAGES:
            break
        visited.add(following)
        try:
            response = client.fetch(following)
        except FeedNotFound:  # WordPress answers 404 past its last page
            break
        if response is None:
            break
        page = read_feed(response, fetched_at)
        fresh = [entry for entry in page.entries if entry.key not in keys]
        if not fresh:  # a server that ignores the page number sends page 1 again
            break
        keys.update(entry.key for entry in fresh)
        pages.append(page)
    return pages


# --- writing posts --------------------------------------------------------------------------


def slug_from_title(title: str) -> str:
    """A file name from a title: lower-case ASCII letters, digits and hyphens, cut at a word."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")
    if len(slug) > SLUG_LENGTH:
        slug = slug[:SLUG_LENGTH].rsplit("-", 1)[0]
    return slug


@dataclass
class _PostsFolder:
    """The slugs in use (files, front matter, the database) and posts already from a feed."""

    directory: Path
    taken: set[str]
    by_feed_id: dict[str, str]

    @classmethod
    def scan(cls, directory: Path, known_slugs: set[str]) -> _PostsFolder:
        taken = set(known_slugs)
        by_feed_id: dict[str, str] = {}
        for path in sorted(directory.glob("*.md")) if directory.is_dir() else []:
            taken.add(path.stem)
            try:
                meta = frontmatter.load(path).metadata
            except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
                continue  # a broken post is `posts`' business; its file name is still taken
            slug = str(meta.get("slug") or path.stem)
            taken.add(slug)
            if meta.get("feed_id"):
                by_feed_id[str(meta["feed_id"])] = slug
        return cls(directory, taken, by_feed_id)

    def claim(self, entry: FeedEntry) -> tuple[str, bool]:
        """A slug for the entry, and whether its file is already there (an interrupted pull)."""
        if entry.key in self.by_feed_id:
            return self.by_feed_id[entry.key], True
        base = slug_from_title(entry.title) or f"post-{entry.published:%Y-%m-%d}"
        slug, number = base, 2
        while slug in self.taken or (self.directory / f"{slug}.md").exists():
            slug, number = f"{base}-{number}", number + 1
        self.taken.add(slug)
        return slug, False


def post_document(entry: FeedEntry) -> str:
    """The post file: YAML front matter, then the Markdown body."""
    meta: dict[str, object] = {
        "title": entry.title,
        "date": entry.published,
        "link": entry.link,
        "feed_id": entry.key,
        "author": entry.author,
        "summary": entry.summary,
    }
    if entry.summary_only:
        meta["summary_only"] = True
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=10_000)
    return f"---\n{front}---\n\n{entry.body}"


def _write_new(path: Path, document: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as out:  # "x": never over an existing post
            out.write(document)
    except OSError as e:
        raise FeedError(f"cannot write {path}: {e.strerror}; nothing was recorded") from e


# --- the pull -------------------------------------------------------------------------------


def pull(
    db: Database,
    posts_dir: Path,
    url: str,
    *,
    all_pages: bool = False,
    dry_run: bool = False,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> PullReport:
    """Fetch the feed and write its new entries as posts; see the module docstring."""
    url = check_feed_url(url)
    state = store.get_feed(db, url)
    fetched_at = now()
    report = PullReport(url=url, first_pull=state is None, dry_run=dry_run)
    with FeedClient(timeout) as client:
        pages = fetch_pages(client, url, state, all_pages=all_pages, fetched_at=fetched_at)
    if pages is None:
        report.not_modified = True
        if not dry_run:
            store.touch_feed(db, url)
        return report
    report.pages = len(pages)
    report.feed_title = pages[0].title

    found: dict[str, tuple[FeedEntry, int]] = {}
    for number, page in enumerate(pages):
        report.skipped.extend(page.skipped)
        for entry in page.entries:
            found.setdefault(entry.key, (entry, number))
    taken = store.taken_entry_keys(db, found)
    report.already_taken = len(taken)
    new = sorted(
        (pair for key, pair in found.items() if key not in taken), key=lambda p: p[0].published
    )
    first_pulled = datetime.fromisoformat(state.first_pulled_at) if state else fetched_at
    folder = _PostsFolder.scan(posts_dir, store.used_slugs(db))
    planned: list[tuple[FeedEntry, PulledPost]] = []
    for entry, page_number in new:
        slug, adopted = folder.claim(entry)
        back_catalogue = (
            state is None
            or page_number > 0  # the older pages of `--all`
            or entry.published < first_pulled - BACKDATED_AFTER
        )
        post = PulledPost(
            slug=slug,
            path=posts_dir / f"{slug}.md",
            title=entry.title,
            published=entry.published,
            back_catalogue=back_catalogue,
            summary_only=entry.summary_only,
            adopted=adopted,
        )
        planned.append((entry, post))
    report.posts = [post for _, post in planned]
    if dry_run:
        return report

    # One transaction: a pull that stops half-way (a full disk, Ctrl+C) records nothing, and
    # the next one adopts the files it wrote by their feed_id instead of writing them twice.
    with db.atomic():
        first = pages[0]
        feed_id = store.save_feed_check(db, url, first.etag, first.last_modified)
        # Asked again under the write lock: a pull that ran meanwhile may have taken some.
        taken_meanwhile = store.taken_entry_keys(db, (entry.key for entry, _ in planned))
        planned = [(e, post) for e, post in planned if e.key not in taken_meanwhile]
        report.posts = [post for _, post in planned]
        for entry, post in planned:
            store.record_feed_entry(
                db, feed_id, entry.key, post.slug, entry.link or None, post.back_catalogue
            )
            if post.back_catalogue:
                store.archive_post(db, post.slug, BACK_CATALOGUE_REASON)
            if not post.adopted:
                _write_new(post.path, post_document(entry))
    return report
