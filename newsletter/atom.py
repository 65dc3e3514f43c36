"""`/feed.xml`: the published posts as an Atom feed (RFC 4287), full content, absolute links.

Built with the standard library's ElementTree, which escapes what it writes; nothing here
parses XML.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

from .config import Settings
from .posts import Post
from .render import byline, post_html, post_url

ATOM = "http://www.w3.org/2005/Atom"
FEED_PATH = "/feed.xml"
MAX_ENTRIES = 50  # feed readers keep what they saw; the archive pages hold the rest


def _tag_uri(settings: Settings, specific: str) -> str:
    """An id that stays the same if the site moves to https or a new port (RFC 4151)."""
    host = urlsplit(settings.base_url).hostname or "localhost"
    return f"tag:{host},2015:{specific}"


def atom_feed(settings: Settings, posts: Sequence[Post]) -> bytes:
    """The feed of `posts` (newest first), as UTF-8 XML."""
    ET.register_namespace("", ATOM)
    shown = list(posts)[:MAX_ENTRIES]
    feed = ET.Element(f"{{{ATOM}}}feed")
    _text(feed, "title", settings.title)
    _text(feed, "id", _tag_uri(settings, "feed"))
    updated = max((p.published_at for p in shown), default=dt.datetime(2015, 1, 1, tzinfo=dt.UTC))
    _text(feed, "updated", _stamp(updated))
    _link(feed, f"{settings.base_url}{FEED_PATH}", "self", "application/atom+xml")
    _link(feed, f"{settings.base_url}/", "alternate", "text/html")
    author = ET.SubElement(feed, f"{{{ATOM}}}author")  # RFC 4287 wants one for every entry
    from_name = settings.from_address.display_name if settings.from_address else ""
    _text(author, "name", from_name or settings.title)
    if settings.logo_url:
        _text(feed, "logo", settings.logo_url)
    for post in shown:
        entry = ET.SubElement(feed, f"{{{ATOM}}}entry")
        _text(entry, "title", post.title)
        digest = hashlib.sha256(post.slug.encode()).hexdigest()[:8]
        _text(entry, "id", _tag_uri(settings, f"post:{post.slug}:{digest}"))
        _text(entry, "published", _stamp(post.published_at))
        _text(entry, "updated", _stamp(post.published_at))
        _link(entry, post_url(settings, post), "alternate", "text/html")
        name = byline(settings, post)
        if name:
            author = ET.SubElement(entry, f"{{{ATOM}}}author")
            _text(author, "name", name)
        content = _text(entry, "content", post_html(post, settings, absolute=True, for_email=True))
        content.set("type", "html")
    return bytes(ET.tostring(feed, encoding="utf-8", xml_declaration=True))


def _text(parent: ET.Element, name: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM}}}{name}")
    element.text = text
    return element


def _link(parent: ET.Element, href: str, rel: str, kind: str) -> None:
    ET.SubElement(parent, f"{{{ATOM}}}link", {"href": href, "rel": rel, "type": kind})


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
