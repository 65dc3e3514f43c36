"""The author's posts: Markdown files with YAML front matter in posts/, read into Post records.

A post is published when its time has come (`date`, a bare date being midnight in
NEWSLETTER_TIMEZONE) and it is not a draft. One broken file never stops work on the others:
`read_posts` gives the good posts and, beside them, each broken file with its error.
Where a post's images live, on disk and on the site, is decided by `locate_image`.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import frontmatter
import yaml

from .errors import PostError

SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
UTC = dt.UTC


@dataclass(frozen=True)
class Post:
    slug: str
    title: str
    date: dt.date  # the day it is published, in its own zone
    summary: str  # Markdown: the front matter's, else the opening of the first paragraph
    body: str  # Markdown
    path: Path
    link: str = ""  # where the post lives on the blog, for a post pulled from its feed
    summary_only: bool = False  # the feed gave only a summary: the email links to the rest
    publish_at: dt.datetime | None = None  # aware; None is midnight UTC of `date`
    draft: bool = False
    author: str | None = None
    topics: tuple[str, ...] = ()  # front matter `topics: [inspections, practice]`
    audience: tuple[str, ...] = ()  # front matter `audience:`: only readers of these topics
    # Every front matter key, known or not, so features can add their own (feed pulls: link).
    meta: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def published_at(self) -> dt.datetime:
        return self.publish_at or dt.datetime.combine(self.date, dt.time(), UTC)

    def is_due(self, now: dt.datetime) -> bool:
        """Not a draft, and its time has come: `send` may mail it."""
        return not self.draft and self.published_at <= now

    def state(self, now: dt.datetime) -> str:
        return "draft" if self.draft else "scheduled" if self.published_at > now else "due"


@dataclass(frozen=True)
class BrokenPost:
    """A file in posts/ that cannot be read, and why."""

    path: Path
    error: str

    @property
    def slug(self) -> str:
        return self.path.stem


@dataclass(frozen=True)
class PostSet:
    """The good posts, newest first, and the broken files beside them."""

    posts: list[Post]
    broken: list[BrokenPost]
    folder: Path

    def find(self, slug: str | None = None) -> Post:
        """The post with this slug (a broken one raises its own error), or the newest."""
        if slug is None:
            if not self.posts:
                raise PostError(f"there are no posts in {self.folder}")
            return self.posts[0]
        for post in self.posts:
            if post.slug == slug:
                return post
        for broken in self.broken:
            if broken.slug == slug:
                raise PostError(broken.error)
        known = ", ".join(p.slug for p in self.posts) or "none"
        raise PostError(f"no post with slug {slug!r}; the posts are: {known}")

    def due(self, now: dt.datetime) -> list[Post]:
        """Posts that are not drafts and whose time has come, newest first."""
        return [post for post in self.posts if post.is_due(now)]


def read_post(path: Path, timezone: dt.tzinfo = UTC) -> Post:
    """Read one post; any problem is a PostError naming the file."""
    name = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise PostError(f"{name}: not UTF-8 text (byte {e.start}); save it as UTF-8") from e
    except OSError as e:
        raise PostError(f"{name}: cannot be read: {e.strerror}") from e
    if not text.lstrip("\ufeff").startswith("---"):
        raise PostError(f"{name}: no front matter; start the file with a '---' block")
    try:
        parsed = frontmatter.loads(text.lstrip("\ufeff"))
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise PostError(f"{name}: broken front matter{line}: {_first_line(e)}") from e
    except ValueError as e:  # YAML parses 2020-13-45 as a date and fails
        raise PostError(f"{name}: the front matter holds an impossible date: {e}") from e
    meta = parsed.metadata
    if not isinstance(meta, dict) or not meta:
        raise PostError(f"{name}: no front matter; start the file with a '---' block")

    title = meta.get("title")
    if not isinstance(title, str) or not title.strip():
        raise PostError(f"{name}: front matter has no title")
    if any(c in title for c in "\r\n"):
        raise PostError(f"{name}: the title must be one line")

    publish_at = _parse_date(meta.get("date"), name, timezone)
    slug = str(meta.get("slug") or path.stem)
    if not SLUG_PATTERN.match(slug):
        raise PostError(
            f"{name}: slug {slug!r} may hold only lower-case letters, digits and hyphens"
        )
    summary = meta.get("summary")
    if summary is not None and not isinstance(summary, str):
        raise PostError(f"{name}: summary must be text")
    draft = meta.get("draft", False)
    if not isinstance(draft, bool):
        raise PostError(f"{name}: draft must be true or false, not {draft!r}")
    author = meta.get("author")
    if author is not None and (not isinstance(author, str) or any(c in author for c in "\r\n")):
        raise PostError(f"{name}: author must be one line of text")
    topics = _topic_names(meta.get("topics"), "topics", name)
    audience = _topic_names(meta.get("audience"), "audience", name)
    return Post(
        slug=slug,
        title=title.strip(),
        date=publish_at.date(),
        summary=(summary or "").strip() or _first_paragraph(parsed.content),
        body=parsed.content,
        path=path,
        link=str(meta.get("link") or ""),
        summary_only=meta.get("summary_only") is True,
        publish_at=publish_at.astimezone(UTC),
        draft=draft,
        author=(author or "").strip() or None,
        topics=topics,
        audience=audience,
        meta=dict(meta),
    )


TOPIC_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


def _topic_names(value: object, key: str, name: str) -> tuple[str, ...]:
    """`[inspections, practice]` or `inspections, practice`: topic names, in order, once each.
    Whether each topic exists is checked against the newsletter's topics (`topics.py`)."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise PostError(f"{name}: {key} must be a list of topic names, like [inspections]")
    names = tuple(dict.fromkeys(item.strip().lower() for item in items if item.strip()))
    for topic in names:
        if not TOPIC_PATTERN.match(topic):
            raise PostError(
                f"{name}: {key}: {topic!r} is not a topic name (lower-case letters, digits "
                "and hyphens)"
            )
    return names


def read_posts(posts_dir: Path, timezone: dt.tzinfo = UTC) -> PostSet:
    """Every post, newest first, and every file that cannot be read, each with its error."""
    if not posts_dir.is_dir():
        raise PostError(f"the posts folder {posts_dir} does not exist")
    posts: list[Post] = []
    broken: list[BrokenPost] = []
    seen: dict[str, Path] = {}
    for path in sorted(posts_dir.glob("*.md")):
        try:
            post = read_post(path, timezone)
        except PostError as e:
            broken.append(BrokenPost(path, str(e)))
            continue
        if post.slug in seen:
            broken.append(
                BrokenPost(
                    path, f"{path.name} and {seen[post.slug].name} have the same slug {post.slug!r}"
                )
            )
            continue
        seen[post.slug] = path
        posts.append(post)
    posts.sort(key=lambda p: (p.published_at, p.slug), reverse=True)
    return PostSet(posts, broken, posts_dir)


def load_posts(posts_dir: Path, timezone: dt.tzinfo = UTC) -> list[Post]:
    """Every post, newest first; the first broken file stops with its name (for checks)."""
    found = read_posts(posts_dir, timezone)
    if found.broken:
        raise PostError(found.broken[0].error)
    return found.posts


def find_post(posts_dir: Path, slug: str | None = None, timezone: dt.tzinfo = UTC) -> Post:
    """The post with this slug, or the newest when no slug is given; other files may be broken."""
    return read_posts(posts_dir, timezone).find(slug)


def zone(name: str) -> dt.tzinfo:
    """An IANA zone such as Europe/London; PostError when there is none of that name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise PostError(f"{name!r} is not a time zone such as UTC or Europe/London") from e


# What `serve` sends a browser from posts/, and so what an email may show from there.
IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".avif", ".svg")


@dataclass(frozen=True)
class PostImage:
    """A local image a post shows: as written, its path on the site (percent-encoded, as in
    the email) and the file under posts/ that `serve` answers at that path."""

    source: str
    url_path: str
    file: Path
    folder: Path  # the posts folder: nothing outside it is ever served

    def problem(self) -> str | None:
        """Why readers would see a broken image, or None when `serve` answers it."""
        shown = _shown(self.file, self.folder.parent)
        if not self.file.is_file():
            return f"no file {shown}"
        if not self.file.resolve().is_relative_to(self.folder.resolve()):
            return f"{shown} leads outside {self.folder.name}/"
        if self.file.suffix.lower() not in IMAGE_TYPES:
            kinds = ", ".join(kind.removeprefix(".") for kind in IMAGE_TYPES)
            return f"{shown} is not an image serve answers ({kinds})"
        return None


def locate_image(post: Post, source: str) -> PostImage | None:
    """Where an image a post shows lives, on the site and on disk; None for one from elsewhere.

    The one rule for every layout: the source is resolved against the post's page,
    `/posts/SLUG`, and `/posts/X` is the file `posts/X`. So `SLUG/a.png` (a folder named
    like the post), `images/a.png` (a shared folder) and `a.png` (beside the file) each lead
    to the file an editor previewing the Markdown shows. The email, the web page and `serve`
    all ask this function.
    """
    from . import markup  # Markdown is parsed by the commands that need it: `log` starts fast

    if not markup.is_local(source):
        return None
    path = urlsplit(urljoin(f"/posts/{post.slug}", source)).path
    if not path.startswith("/posts/") or path == "/posts/":
        return None
    folder = post.path.parent
    return PostImage(source, path, folder / unquote(path).removeprefix("/posts/"), folder)


def local_images(post: Post) -> list[PostImage]:
    """The images a post shows from this site."""
    return _local_images(post.slug, post.body, post.path)


@functools.lru_cache(maxsize=512)
def _local_images(slug: str, body: str, path: Path) -> list[PostImage]:
    """Cached by the post's text: `serve` asks for every image it is sent a request for."""
    from . import markup

    post = Post(slug=slug, title="", date=dt.date.min, summary="", body=body, path=path)
    found = (locate_image(post, source) for source in markup.image_sources(body))
    return [image for image in found if image is not None]


def missing_images(post: Post) -> list[tuple[PostImage, str]]:
    """The post's local images readers would see broken, each with why."""
    found = ((image, image.problem()) for image in local_images(post))
    return [(image, problem) for image, problem in found if problem is not None]


def images_report(post: Post) -> str | None:
    """One line naming every image of the post that would reach readers broken, or None."""
    missing = missing_images(post)
    if not missing:
        return None
    if len(missing) == 1:
        ((image, problem),) = missing
        return f"{post.path.name}: the image {image.source} is missing: {problem}"
    listed = "; ".join(f"{image.source} ({problem})" for image, problem in missing)
    return f"{post.path.name}: {len(missing)} images are missing: {listed}"


def check_images(post: Post) -> None:
    """Refuse a post that would reach readers with a broken image."""
    report = images_report(post)
    if report is not None:
        raise PostError(report)


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


_DATE_WITH_ZONE = re.compile(
    r"^(?P<when>\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d)?)\s+(?P<zone>\S+/\S+|UTC)$"
)


def _parse_date(value: object, name: str, timezone: dt.tzinfo) -> dt.datetime:
    """`2026-12-01`, `2026-12-01 08:00`, `2026-12-01 08:00 +01:00`, `... Europe/London`."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(), timezone)
    if isinstance(value, str):
        text = value.strip()
        named = _DATE_WITH_ZONE.match(text)
        try:
            if named:
                tz = zone(named.group("zone"))
                return dt.datetime.fromisoformat(named.group("when")).replace(tzinfo=tz)
            parsed = dt.datetime.fromisoformat(text)
        except PostError as e:
            raise PostError(f"{name}: date {value!r}: {e}") from e
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone)
    if value is None:
        raise PostError(f"{name}: front matter has no date")
    raise PostError(
        f"{name}: date {value!r} is not a date like 2015-01-20 or 2015-01-20 08:00 +00:00"
    )


def _first_line(error: Exception) -> str:
    return str(getattr(error, "problem", None) or error).splitlines()[0]


def _first_paragraph(markdown: str) -> str:
    """The preheader's source when the post has no summary: its first paragraph, as written
    (the renderer makes it plain text)."""
    from . import markup

    return markup.preheader(markdown, typographer=False)
