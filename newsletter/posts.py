"""The author's posts: Markdown files with YAML front matter in posts/, read into Post records."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import frontmatter
import yaml

from .errors import PostError

SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")


@dataclass(frozen=True)
class Post:
    slug: str
    title: str
    date: dt.date
    summary: str
    body: str  # Markdown
    path: Path
    link: str = ""  # where the post lives on the blog, for a post pulled from its feed
    summary_only: bool = False  # the feed gave only a summary: the email links to the rest


def read_post(path: Path) -> Post:
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

    date = _parse_date(meta.get("date"), name)
    slug = str(meta.get("slug") or path.stem)
    if not SLUG_PATTERN.match(slug):
        raise PostError(
            f"{name}: slug {slug!r} may hold only lower-case letters, digits and hyphens"
        )
    summary = meta.get("summary")
    if summary is not None and not isinstance(summary, str):
        raise PostError(f"{name}: summary must be text")
    return Post(
        slug=slug,
        title=title.strip(),
        date=date,
        summary=(summary or "").strip() or _first_sentences(parsed.content),
        body=parsed.content,
        path=path,
        link=str(meta.get("link") or ""),
        summary_only=meta.get("summary_only") is True,
    )


def load_posts(posts_dir: Path) -> list[Post]:
    """Every post, newest first; the first broken file stops with its name."""
    if not posts_dir.is_dir():
        raise PostError(f"the posts folder {posts_dir} does not exist")
    posts = [read_post(path) for path in sorted(posts_dir.glob("*.md"))]
    seen: dict[str, Path] = {}
    for post in posts:
        if post.slug in seen:
            raise PostError(
                f"{post.path.name} and {seen[post.slug].name} have the same slug {post.slug!r}"
            )
        seen[post.slug] = post.path
    return sorted(posts, key=lambda p: (p.date, p.slug), reverse=True)


def find_post(posts_dir: Path, slug: str | None = None) -> Post:
    """The post with this slug, or the newest when no slug is given."""
    posts = load_posts(posts_dir)
    if not posts:
        raise PostError(f"there are no posts in {posts_dir}")
    if slug is None:
        return posts[0]
    for post in posts:
        if post.slug == slug:
            return post
    known = ", ".join(p.slug for p in posts)
    raise PostError(f"no post with slug {slug!r}; the posts are: {known}")


def _parse_date(value: object, name: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()[:10])
        except ValueError:
            pass
    if value is None:
        raise PostError(f"{name}: front matter has no date")
    raise PostError(f"{name}: date {value!r} is not a date like 2015-01-20")


def _first_line(error: Exception) -> str:
    return str(getattr(error, "problem", None) or error).splitlines()[0]


def _first_sentences(markdown: str, limit: int = 140) -> str:
    """A preheader when the post has no summary: the opening words of its first paragraph."""
    for block in markdown.split("\n\n"):
        text = " ".join(block.split())
        if text and not text.startswith(("#", "!", "<", "|", "```")):
            text = re.sub(r"[*_`\\]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", text)
            if len(text) <= limit:
                return text
            return text[:limit].rsplit(" ", 1)[0].rstrip(",;:-–") + "…"
    return ""
