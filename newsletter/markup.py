"""Markdown as bloggers write it, to HTML for the email and the web and to plain text.

markdown-it-py with its own rules and mdit-py-plugins' footnotes: tables, strikethrough, bare
URLs made links (linkify-it-py), typographic quotes and dashes (switchable). Relative links and
images are resolved against the post's page, `/posts/SLUG`; a local image's URL is the
caller's to give (`posts.locate_image` decides it for the email, the web and `serve` alike).
The email and the feed pass an absolute page URL, the web a path.
"""

from __future__ import annotations

import functools
import html
import re
import textwrap
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from mdit_py_plugins.footnote import footnote_plugin

TEXT_WIDTH = 72
PREHEADER_LENGTH = 140


@functools.cache
def parser(typographer: bool = True) -> MarkdownIt:
    """One parser per typography choice, made once: building one compiles its rules."""
    md = MarkdownIt("commonmark", {"typographer": typographer, "linkify": True})
    md.enable(["table", "strikethrough", "linkify"])
    if typographer:
        md.enable(["replacements", "smartquotes"])
    md.use(footnote_plugin)
    md.core.ruler.push("resolve_urls", _resolve_urls)
    md.add_render_rule("footnote_ref", _footnote_ref)
    md.add_render_rule("footnote_anchor", _footnote_anchor)
    return md


ImageUrl = Callable[[str], "str | None"]  # an image's source as written -> its URL, or None


def _env(page_url: str, for_email: bool, image_url: ImageUrl | None) -> dict[str, Any]:
    return {"page_url": page_url, "for_email": for_email, "image_url": image_url}


def _resolve_urls(state: StateCore) -> None:
    """Relative links and images, resolved against the post's page (see the module's doc)."""
    page_url = state.env.get("page_url")
    image_url = state.env.get("image_url")
    if not page_url:
        return
    for block in state.tokens:
        for token in block.children or ():
            for attr in ("href", "src"):
                value = token.attrs.get(attr)
                if not isinstance(value, str) or not value:
                    continue
                given = image_url(value) if image_url and token.type == "image" else None
                token.attrs[attr] = given or urljoin(page_url, value)


def _footnote_ref(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """A numbered reference; its link leads to the note on the post's page, which works in
    every mail client (an in-message #anchor does not in Gmail or Outlook)."""
    meta = tokens[idx].meta
    number = meta["id"] + 1
    ref_id = f"fnref{number}" + (f":{meta['subId']}" if meta.get("subId", 0) > 0 else "")
    target = f"{env.get('page_url', '')}#fn{number}"
    id_attr = "" if env.get("for_email") else f' id="{ref_id}"'
    return (
        f'<sup class="footnote-ref"><a href="{html.escape(target)}"{id_attr}>[{number}]</a></sup>'
    )


def _footnote_anchor(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """The way back to the reference: on the web only; in an email it would open the web."""
    if env.get("for_email"):
        return ""
    meta = tokens[idx].meta
    ref_id = f"fnref{meta['id'] + 1}" + (f":{meta['subId']}" if meta.get("subId", 0) > 0 else "")
    return f' <a href="#{ref_id}" class="footnote-backref">\u21a9\ufe0e</a>'


def to_html(
    markdown: str,
    *,
    page_url: str = "",
    for_email: bool = False,
    typographer: bool = True,
    image_url: ImageUrl | None = None,
) -> str:
    return str(parser(typographer).render(markdown, _env(page_url, for_email, image_url)))


def image_sources(markdown: str) -> list[str]:
    """Every image a post shows, as written (before resolving)."""
    found: list[str] = []
    for block in parser(False).parse(markdown, {}):
        for token in block.children or ():
            if token.type == "image":
                found.append(str(token.attrs.get("src", "")))
    return found


def is_local(url: str) -> bool:
    """A path on this site (no scheme, no host), such as `slug/pic.png` or `/posts/x.png`."""
    parts = urlsplit(url)
    return bool(parts.path) and not parts.scheme and not parts.netloc


def opening(markdown: str) -> str:
    """The Markdown of the first paragraph (a digest quotes it); the whole text if it has none."""
    lines = markdown.splitlines()
    for token in parser(False).parse(markdown, {}):
        if token.type == "paragraph_open" and token.level == 0 and token.map:
            start, end = token.map
            return "\n".join(lines[start:end])
    return markdown


# --- plain text -----------------------------------------------------------------------------


def preheader(markdown: str, *, limit: int = PREHEADER_LENGTH, typographer: bool = True) -> str:
    """The inbox preview line: the words alone, no Markdown syntax, no HTML or entities."""
    words: list[str] = []
    for block in parser(typographer).parse(markdown, {}):
        if block.type == "inline" and block.level <= 1:  # paragraphs and headings, not tables
            words.append(_inline_text(block, markers=False))
        if sum(len(w) for w in words) > limit:
            break
    text = " ".join(" ".join(words).split())
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:-–") + "…"


def to_text(
    markdown: str,
    *,
    page_url: str = "",
    width: int = TEXT_WIDTH,
    typographer: bool = True,
    image_url: ImageUrl | None = None,
) -> str:
    """Plain text that reads like a written email: underlined headings, wrapped paragraphs,
    links as URLs in brackets, lists with their markers, tables in columns, ~~struck~~ words
    kept, and numbered notes at the end."""
    tokens = parser(typographer).parse(markdown, _env(page_url, True, image_url))
    blocks: list[str] = []
    _render_blocks(tokens, 0, len(tokens), blocks, width)
    return "\n\n".join(b for b in blocks if b.strip()) + "\n"


def _render_blocks(tokens: list[Token], start: int, end: int, out: list[str], width: int) -> None:
    i = start
    while i < end:
        token = tokens[i]
        kind = token.type
        if kind == "heading_open":
            text = _inline_text(tokens[i + 1])
            level = int(token.tag[1])
            if level == 1:
                out.append(f"{text}\n{'=' * min(len(text), width)}")
            elif level == 2:
                out.append(f"{text}\n{'-' * min(len(text), width)}")
            else:
                out.append(f"{'#' * level} {text}")
            i += 3
        elif kind == "paragraph_open":
            out.append(_wrap(_inline_text(tokens[i + 1]), width))
            i += 3
        elif kind in ("bullet_list_open", "ordered_list_open", "blockquote_open"):
            close = _matching_close(tokens, i)
            inner: list[str] = []
            if kind == "blockquote_open":
                _render_blocks(tokens, i + 1, close, inner, width - 2)
                quoted = "\n\n".join(inner)
                out.append("\n".join(f"> {line}".rstrip() for line in quoted.splitlines()))
            else:
                out.append(_render_list(tokens, i, close, width))
            i = close + 1
        elif kind in ("fence", "code_block"):
            out.append(textwrap.indent(token.content.rstrip("\n"), "    "))
            i += 1
        elif kind == "hr":
            out.append("-" * 20)
            i += 1
        elif kind == "html_block":
            out.append(html.unescape(re.sub(r"<[^>]+>", "", token.content)).strip())
            i += 1
        elif kind == "table_open":
            close = _matching_close(tokens, i)
            out.append(_render_table(tokens[i:close], width))
            i = close + 1
        elif kind == "footnote_block_open":
            out.append("-" * 20)
            i += 1
        elif kind == "footnote_open":
            close = _matching_close(tokens, i)
            marker = f"[{token.meta['id'] + 1}] "
            inner = []
            _render_blocks(tokens, i + 1, close, inner, width - len(marker))
            lines = "\n\n".join(inner).splitlines() or [""]
            indent = " " * len(marker)
            out.append(
                "\n".join([marker + lines[0]] + [indent + x if x else "" for x in lines[1:]])
            )
            i = close + 1
        else:
            i += 1


def _render_table(tokens: list[Token], width: int) -> str:
    """Columns padded to line up (numbers to the right, as the Markdown aligned them); a table
    too wide for the text becomes one record per row."""
    rows: list[list[str]] = []
    cells: list[str] = []
    right: dict[int, bool] = {}
    for t in tokens:
        if t.type in ("th_open", "td_open"):
            right[len(cells)] = "text-align:right" in str(t.attrs.get("style", ""))
        elif t.type == "inline":
            cells.append(_inline_text(t))
        elif t.type == "tr_close":
            rows.append(cells)
            cells = []
    if not rows:
        return ""
    columns = max(len(row) for row in rows)
    rows = [row + [""] * (columns - len(row)) for row in rows]
    widths = [max(len(row[c]) for row in rows) for c in range(columns)]
    if sum(widths) + 3 * (columns - 1) <= width:
        lines = [
            " | ".join(
                cell.rjust(w) if right.get(c) else cell.ljust(w)
                for c, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in rows
        ]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(lines)
    head, *body = rows
    records = [
        "\n".join(_wrap(f"{name}: {value}", width) for name, value in zip(head, row, strict=True))
        for row in body
    ]
    return "\n\n".join(records)


def _render_list(tokens: list[Token], start: int, close: int, width: int) -> str:
    ordered = tokens[start].type == "ordered_list_open"
    number = int(tokens[start].attrs.get("start", 1) or 1) if ordered else 0
    items: list[str] = []
    i = start + 1
    while i < close:
        if tokens[i].type == "list_item_open":
            item_close = _matching_close(tokens, i)
            marker = f"{number}. " if ordered else "- "
            number += 1
            inner: list[str] = []
            _render_blocks(tokens, i + 1, item_close, inner, width - len(marker))
            lines = "\n\n".join(inner).splitlines() or [""]
            indent = " " * len(marker)
            items.append(
                "\n".join(
                    [marker + lines[0]] + [indent + line if line else "" for line in lines[1:]]
                )
            )
            i = item_close + 1
        else:
            i += 1
    tight = any(t.hidden for t in tokens[start:close] if t.type == "paragraph_open")
    return ("\n" if tight else "\n\n").join(items)


def _matching_close(tokens: list[Token], open_index: int) -> int:
    depth = 0
    for j in range(open_index, len(tokens)):
        depth += tokens[j].nesting
        if depth == 0:
            return j
    return len(tokens) - 1


def _inline_text(token: Token, *, markers: bool = True) -> str:
    """An inline run as text; without `markers` (the preheader) emphasis, links' URLs, struck
    words, notes and images are left out, so only the words remain."""
    parts: list[str] = []
    hrefs: list[str] = []
    link_text_start: list[int] = []
    struck = 0
    for child in token.children or []:
        kind = child.type
        if kind in ("text", "code_inline"):
            if not struck or markers:
                parts.append(child.content)
        elif kind == "softbreak":
            parts.append(" ")
        elif kind == "hardbreak":
            parts.append("\n" if markers else " ")
        elif kind in ("em_open", "em_close") and markers:
            parts.append("_")
        elif kind in ("strong_open", "strong_close") and markers:
            parts.append("*")
        elif kind in ("s_open", "s_close"):
            struck += 1 if kind == "s_open" else -1
            if markers:
                parts.append("~~")
        elif kind == "link_open":
            hrefs.append(str(child.attrs.get("href", "")))
            link_text_start.append(len(parts))
        elif kind == "link_close" and hrefs:
            href = hrefs.pop()
            text = "".join(parts[link_text_start.pop() :])
            if markers and href and href not in (text, f"mailto:{text}", f"http://{text}"):
                parts.append(f" ({href})")
        elif kind == "image" and markers:
            alt = child.content or "image"
            parts.append(f"[{alt}: {child.attrs.get('src', '')}]")
        elif kind == "footnote_ref" and markers:
            parts.append(f"[{child.meta['id'] + 1}]")
    return "".join(parts).strip()


def _wrap(text: str, width: int) -> str:
    return "\n".join(
        textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False)
        for line in text.split("\n")
    )
