"""A post and the templates become the finished email parts: inlined HTML and plain text.

The expensive work (Markdown, Jinja, premailer) runs once per post. What differs per reader
(name, address, unsubscribe token) is left as placeholders and filled in by `Personalised.fill`,
a join of pre-split strings, so a send to 100,000 readers inlines CSS once.
"""

from __future__ import annotations

import html
import logging
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import jinja2
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup
from premailer import Premailer

from .config import Settings
from .errors import TemplateError
from .posts import Post

# Plain ASCII letters survive Jinja's escaping, premailer, lxml and text wrapping untouched.
PLACEHOLDERS = {
    "name": "XNLREADERNAMEX",
    "email": "XNLREADEREMAILX",
    "token": "XNLREADERTOKENX",
}
_PLACEHOLDER_RE = re.compile("(" + "|".join(PLACEHOLDERS.values()) + ")")
_SLOT_NAMES = {value: key for key, value in PLACEHOLDERS.items()}
TEXT_WIDTH = 72


@dataclass(frozen=True)
class Personalised:
    """A rendered part split at its placeholders, ready to be filled per reader."""

    pieces: tuple[str, ...]  # text, slot, text, slot, ..., text

    @classmethod
    def parse(cls, rendered: str) -> Personalised:
        return cls(tuple(_PLACEHOLDER_RE.split(rendered)))

    @property
    def template(self) -> str:
        """The rendered text with its placeholders in place."""
        return "".join(self.pieces)

    @property
    def is_personal(self) -> bool:
        return len(self.pieces) > 1

    def fill(self, values: Mapping[str, str]) -> str:
        pieces = list(self.pieces)
        for i in range(1, len(pieces), 2):
            pieces[i] = values[_SLOT_NAMES[pieces[i]]]
        return "".join(pieces)


@dataclass(frozen=True)
class RenderedIssue:
    """One post as an email, before it is addressed to anyone."""

    slug: str
    subject: str
    html: Personalised
    text: Personalised

    @staticmethod
    def html_values(name: str, email: str, token: str) -> dict[str, str]:
        return {"name": html.escape(name), "email": html.escape(email), "token": token}

    @staticmethod
    def text_values(name: str, email: str, token: str) -> dict[str, str]:
        return {"name": name, "email": email, "token": token}

    def html_for(self, name: str, email: str, token: str) -> str:
        return self.html.fill(self.html_values(name, email, token))

    def text_for(self, name: str, email: str, token: str) -> str:
        return self.text.fill(self.text_values(name, email, token))


def template_environment(templates_dir: Path) -> jinja2.Environment:
    # Autoescape HTML only: the plain-text part must not turn & into &amp;.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        autoescape=jinja2.select_autoescape(["html", "htm"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def load_template(env: jinja2.Environment, name: str) -> jinja2.Template:
    """Load and compile one template; a missing file or a syntax error names file and line."""
    try:
        return env.get_template(name)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"{e.filename or e.name or name}, line {e.lineno}: {e.message}") from e
    except jinja2.TemplateNotFound as e:
        raise TemplateError(f"template {e.name} is missing from {_search_path(env)}") from e
    except UnicodeDecodeError as e:
        raise TemplateError(
            f"template {name} in {_search_path(env)} is not UTF-8 text (byte {e.start}); "
            "save it as UTF-8"
        ) from e


def render_template(env: jinja2.Environment, name: str, context: Mapping[str, object]) -> str:
    """Render one template; a syntax error or unknown variable names the file and line."""
    template = load_template(env, name)
    try:
        return template.render(context)
    except jinja2.UndefinedError as e:
        where = _template_line(e.__traceback__, env)
        raise TemplateError(f"{where or name}: {e.message}") from e
    except jinja2.TemplateError as e:
        where = _template_line(e.__traceback__, env)
        raise TemplateError(f"{where or name}: {e}") from e
    except UnicodeDecodeError as e:  # a template it extends or includes, loaded only now
        raise TemplateError(
            f"a template that {name} uses is not UTF-8 text (byte {e.start}); save it as UTF-8"
        ) from e


def _search_path(env: jinja2.Environment) -> str:
    loader = env.loader
    if isinstance(loader, jinja2.FileSystemLoader):
        return ", ".join(str(p) for p in loader.searchpath)
    return "the templates folder"


def _template_line(tb: TracebackType | None, env: jinja2.Environment) -> str | None:
    """Jinja rewrites tracebacks so that frames point into the template: find the deepest."""
    roots = [str(p) for p in getattr(env.loader, "searchpath", [])]
    found = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if any(filename.startswith(root) for root in roots):
            found = f"{filename}, line {tb.tb_lineno}"
        tb = tb.tb_next
    return found


def post_url(settings: Settings, post: Post) -> str:
    return f"{settings.base_url}/posts/{post.slug}"


def unsubscribe_url(settings: Settings, token: str) -> str:
    return f"{settings.base_url}/unsubscribe/{token}"


_markdown = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def markdown_to_html(markdown: str) -> str:
    return _markdown.render(markdown)


def render_issue(post: Post, settings: Settings, env: jinja2.Environment) -> RenderedIssue:
    """Render and inline a post once; per-reader parts stay placeholders."""
    context = {
        "newsletter": {
            "title": settings.title,
            "base_url": settings.base_url,
            "postal_address": settings.postal_address,
        },
        "post": {
            "title": post.title,
            "slug": post.slug,
            "date": post.date,
            "summary": post.summary,
            "html": Markup(markdown_to_html(post.body)),
            "text": markdown_to_text(post.body),
            "url": post_url(settings, post),
        },
        "reader": {"name": PLACEHOLDERS["name"], "email": PLACEHOLDERS["email"]},
        "unsubscribe_url": unsubscribe_url(settings, PLACEHOLDERS["token"]),
    }
    html_part = inline_css(render_template(env, "email.html", context))
    text_part = render_template(env, "email.txt", context)
    return RenderedIssue(
        slug=post.slug,
        subject=post.title,
        html=Personalised.parse(html_part),
        text=Personalised.parse(_normalise_text(text_part)),
    )


def inline_css(document: str) -> str:
    """Move the stylesheet into style attributes; only @media rules stay in <style>."""
    return Premailer(
        document,
        allow_network=False,
        strip_important=False,
        keep_style_tags=False,
        remove_classes=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
    ).transform()


def _normalise_text(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


# --- Markdown to plain text -----------------------------------------------------------------


def markdown_to_text(markdown: str, width: int = TEXT_WIDTH) -> str:
    """Plain text that reads like a written email: underlined headings, wrapped paragraphs,
    links as URLs in brackets, lists with their markers."""
    tokens = _markdown.parse(markdown)
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
            out.append(re.sub(r"<[^>]+>", "", token.content).strip())
            i += 1
        elif kind == "table_open":
            close = _matching_close(tokens, i)
            rows: list[str] = []
            cells: list[str] = []
            for t in tokens[i:close]:
                if t.type == "inline":
                    cells.append(_inline_text(t))
                elif t.type == "tr_close":
                    rows.append(" | ".join(cells))
                    cells = []
            out.append("\n".join(rows))
            i = close + 1
        else:
            i += 1


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


def _inline_text(token: Token) -> str:
    parts: list[str] = []
    hrefs: list[str] = []
    link_text_start: list[int] = []
    for child in token.children or []:
        kind = child.type
        if kind == "text" or kind == "code_inline":
            parts.append(child.content)
        elif kind == "softbreak":
            parts.append(" ")
        elif kind == "hardbreak":
            parts.append("\n")
        elif kind in ("em_open", "em_close"):
            parts.append("_")
        elif kind in ("strong_open", "strong_close"):
            parts.append("*")
        elif kind == "link_open":
            hrefs.append(str(child.attrs.get("href", "")))
            link_text_start.append(len(parts))
        elif kind == "link_close" and hrefs:
            href = hrefs.pop()
            text = "".join(parts[link_text_start.pop() :])
            if href and href not in (text, f"mailto:{text}"):
                parts.append(f" ({href})")
        elif kind == "image":
            alt = child.content or "image"
            parts.append(f"[{alt}: {child.attrs.get('src', '')}]")
        elif kind == "html_inline":
            continue
    return "".join(parts).strip()


def _wrap(text: str, width: int) -> str:
    return "\n".join(
        textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False)
        for line in text.split("\n")
    )
