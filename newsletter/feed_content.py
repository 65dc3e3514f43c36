"""A feed entry's HTML made safe to mail and turned into the Markdown of a post.

A blog's feed is HTML written for the blog, and any of it can end up in every reader's inbox,
so it goes through nh3 (the ammonia sanitiser) first: no scripts, styles, iframes, forms or
event handlers; only http(s) and mailto links. Relative links resolve against the entry's own
address (`/2015/01/photo.jpg` means the blog's photo, not the newsletter's). Tracking pixels
(1×1 images, and the known feed counters) are dropped, embedded videos become links.

Then it becomes Markdown (with markdownify) rather than staying HTML: the email's plain-text
part, its stylesheet and the web archive are all made from a post's Markdown, and the author
can edit a pulled post like one they wrote. README.md says more about the choice.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urljoin, urlsplit

import nh3
from markdownify import MarkdownConverter

LINK_SCHEMES = frozenset({"http", "https", "mailto"})
URL_ATTRIBUTES = frozenset({"href", "src", "cite"})
# Removed with everything inside them; every other tag outside nh3's list is unwrapped.
DROPPED_WITH_CONTENT = frozenset({"script", "style", "template", "object", "embed", "noscript"})
# Counters that feed services add to each entry (FeedBurner, WordPress.com, Blogger).
TRACKER_PREFIXES = (
    "feeds.feedburner.com/~r/",
    "feeds.feedburner.com/~ff/",
    "pixel.wp.com/",
    "stats.wordpress.com/",
    "blogger.googleusercontent.com/tracker/",
)
SUMMARY_LENGTH = 200

_TAGS = (set(nh3.ALLOWED_TAGS) | {"iframe"}) - DROPPED_WITH_CONTENT
_ATTRIBUTES = {tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()}
_ATTRIBUTES["a"] = {"href", "title"}
_ATTRIBUTES["img"] = {"src", "alt", "title", "width", "height"}
_ATTRIBUTES["iframe"] = {"src", "title"}


def is_web_link(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def sanitise_html(fragment: str, base_url: str) -> str:
    """The fragment with only harmless tags and attributes left, its links made absolute."""

    def resolve(tag: str, attribute: str, value: str) -> str | None:
        if attribute not in URL_ATTRIBUTES:
            return value
        absolute = urljoin(base_url, value.strip()) if base_url else value.strip()
        if urlsplit(absolute).scheme not in LINK_SCHEMES:
            return None
        return absolute

    return nh3.clean(
        fragment,
        tags=_TAGS,
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes=_ATTRIBUTES,
        attribute_filter=resolve,
        url_schemes=set(LINK_SCHEMES),
        link_rel=None,
        strip_comments=True,
    )


def is_tracking_pixel(attributes: dict[str, Any]) -> bool:
    """A 1×1 (or 0×0) image, or one served by a known feed counter."""
    src = str(attributes.get("src") or "")
    host_and_path = src.split("://", 1)[-1]
    if host_and_path.startswith(TRACKER_PREFIXES):
        return True
    return any(_pixels(attributes.get(side)) in (0, 1) for side in ("width", "height"))


def _pixels(value: object) -> int | None:
    match = re.match(r"\s*(\d+)\s*(px)?\s*$", str(value or ""))
    return int(match.group(1)) if match else None


class _EmailMarkdown(MarkdownConverter):
    """markdownify, minus tracking pixels, with embedded players as links to what they show."""

    def convert_img(self, el: Any, text: str, parent_tags: set[str]) -> str:
        if is_tracking_pixel(el.attrs):
            return ""
        return str(super().convert_img(el, text, parent_tags))  # type: ignore[misc]

    def convert_iframe(self, el: Any, text: str, parent_tags: set[str]) -> str:
        src = el.attrs.get("src") or ""
        if not is_web_link(src):
            return ""
        label = el.attrs.get("title") or "Embedded content"
        return f"\n\n[{_escape_brackets(label)}]({src})\n\n"


def _escape_brackets(text: str) -> str:
    return text.replace("[", r"\[").replace("]", r"\]")


def html_to_markdown(fragment: str, base_url: str) -> str:
    """Sanitise an entry's HTML and write it as CommonMark."""
    clean = sanitise_html(fragment, base_url)
    markdown = _EmailMarkdown(
        heading_style="ATX",
        bullets="-",
        strong_em_symbol="*",
        # Escape what Markdown would read as markup: "4) Create..." is not a list, and text
        # about "&lt;script&gt;" must not come back as a <script> tag.
        escape_misc=True,
    ).convert(clean)
    # Blogs pad with empty paragraphs and <br>s; the email wants one blank line between blocks.
    lines = ["" if not line.strip() else line for line in markdown.splitlines()]
    # A hard break ("  ") that ends a paragraph breaks nothing: keep the file tidy.
    lines = [
        line.rstrip() if i + 1 == len(lines) or not lines[i + 1] else line
        for i, line in enumerate(lines)
    ]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def plain_text(fragment: str) -> str:
    """Text with every tag removed and entities decoded, on one line."""
    text = nh3.clean(fragment, tags=set(), clean_content_tags=set(DROPPED_WITH_CONTENT))
    return " ".join(html.unescape(text).split())


def short_summary(fragment: str, limit: int = SUMMARY_LENGTH) -> str:
    """The opening of an entry's summary as one line of text, cut at a word."""
    text = plain_text(fragment)
    # WordPress ends its excerpts with "[…]" and "The post X appeared first on Y."
    text = re.sub(r"\s*\[(…|&hellip;|\.\.\.)\]\s*", "… ", text).strip()
    text = re.sub(r"\s*The post .{1,300} appeared first on .{1,200}\.$", "", text).strip()
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:-–") + "…"
