"""A post and the templates become the finished email parts: inlined HTML and plain text.

The expensive work (Markdown, Jinja, premailer) runs once per post. What differs per reader
(name, address, unsubscribe token) is left as placeholders and filled in by `Personalised.fill`,
a join of pre-split strings, so a send to 100,000 readers inlines CSS once.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import io
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import cssutils
import jinja2
from markupsafe import Markup
from premailer import Premailer

from . import markup
from .config import DEFAULT_BASE_URL, Settings
from .errors import TemplateError
from .posts import Post, locate_image

# Plain ASCII letters survive Jinja's escaping, premailer, lxml and text wrapping untouched.
PLACEHOLDERS = {
    "name": "XNLREADERNAMEX",
    "email": "XNLREADEREMAILX",
    "token": "XNLREADERTOKENX",
}
_PLACEHOLDER_RE = re.compile("(" + "|".join(PLACEHOLDERS.values()) + ")")
_SLOT_NAMES = {value: key for key, value in PLACEHOLDERS.items()}
TEXT_WIDTH = markup.TEXT_WIDTH
WELCOME_TEMPLATES = ("welcome_email.html", "welcome_email.txt")
WELCOME_SLUG = "welcome"  # in the welcome email's Message-ID, where a post's slug goes
_CSS_POSITION = re.compile(r"\[(\d+):\d+:|, (\d+), \d+\)")


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


def preferences_url(settings: Settings, token: str) -> str:
    """The reader's "Manage your subscription" page, under the same token as the unsubscribe
    link (`preferences` says why one token), so it costs nothing more per reader."""
    return f"{settings.base_url}/preferences/{token}"


def read_online_url(settings: Settings, post: Post) -> str | None:
    """The post on the web archive; none while the base URL is the local default, which no
    reader can open."""
    return None if settings.base_url == DEFAULT_BASE_URL else post_url(settings, post)


def byline(settings: Settings, post: Post) -> str:
    """The front matter's author, else the name in From."""
    from_name = settings.from_address.display_name if settings.from_address else ""
    return post.author or from_name or ""


def markdown_to_html(markdown: str) -> str:
    """Markdown as HTML, links left as written (for a page under /posts/)."""
    return markup.to_html(markdown)


def markdown_to_text(markdown: str, width: int = TEXT_WIDTH) -> str:
    return markup.to_text(markdown, width=width)


def post_html(post: Post, settings: Settings, *, absolute: bool, for_email: bool = False) -> str:
    """The post's body as HTML: links resolved against its page, absolute for email and feed."""
    page = post_url(settings, post) if absolute else f"/posts/{post.slug}"
    return markup.to_html(
        post.body,
        page_url=page,
        for_email=for_email,
        typographer=settings.typographer,
        image_url=_image_url(post, settings.base_url if absolute else ""),
    )


def _image_url(post: Post, site: str) -> markup.ImageUrl:
    """The URL of a local image: the path `serve` answers with that very file."""

    def url(source: str) -> str | None:
        image = locate_image(post, source)
        return None if image is None else site + image.url_path

    return url


def newsletter_context(settings: Settings) -> dict[str, object]:
    return {
        "title": settings.title,
        "base_url": settings.base_url,
        "postal_address": settings.postal_address,
        "logo_url": settings.logo_url,
    }


def render_issue(post: Post, settings: Settings, env: jinja2.Environment) -> RenderedIssue:
    """Render and inline a post once; per-reader parts stay placeholders."""
    url = post_url(settings, post)
    context = {
        "newsletter": newsletter_context(settings),
        "post": {
            "title": post.title,
            "slug": post.slug,
            "date": post.date,
            "summary": post.summary,
            "preheader": markup.preheader(post.summary, typographer=settings.typographer),
            "author": byline(settings, post),
            "html": Markup(post_html(post, settings, absolute=True, for_email=True)),
            "text": markup.to_text(
                post.body,
                page_url=url,
                typographer=settings.typographer,
                image_url=_image_url(post, settings.base_url),
            ),
            "url": url,
            "read_online_url": read_online_url(settings, post),
            "link": post.link,
            "summary_only": post.summary_only,
        },
    }
    return _render_email(settings, env, ("email.html", "email.txt"), context, post.slug, post.title)


DIGEST_TEMPLATES = ("digest.html", "digest.txt")


def digest_subject(settings: Settings, posts: Sequence[Post]) -> str:
    more = len(posts) - 1
    tail = f" and {more} more" if more > 1 else " and one more" if more == 1 else ""
    return f"{settings.title} this week: {posts[0].title}{tail}"


def render_digest(
    posts: Sequence[Post], settings: Settings, env: jinja2.Environment, slug: str, date: dt.date
) -> RenderedIssue:
    """One digest email of `posts` (newest first): each post's title, opening paragraph and
    a "Read on" link to its page. Rendered once per set of posts; per-reader parts stay
    placeholders, as in a post's email."""
    if not posts:
        raise ValueError("a digest needs at least one post")
    entries = []
    for post in posts:
        url = post_url(settings, post)
        # The author's own summary when they wrote one, else the opening paragraph.
        written = post.meta.get("summary")
        opening = (
            written if isinstance(written, str) and written.strip() else markup.opening(post.body)
        )
        entries.append(
            {
                "title": post.title,
                "slug": post.slug,
                "date": post.date,
                "author": byline(settings, post),
                "url": url,
                "opening_html": Markup(
                    markup.to_html(
                        opening,
                        page_url=url,
                        for_email=True,
                        typographer=settings.typographer,
                        image_url=_image_url(post, settings.base_url),
                    )
                ),
                "opening_text": markup.to_text(
                    opening,
                    page_url=url,
                    typographer=settings.typographer,
                    image_url=_image_url(post, settings.base_url),
                ),
            }
        )
    subject = digest_subject(settings, posts)
    context = {
        "newsletter": newsletter_context(settings),
        "digest": {
            "title": subject,
            "date": date,
            "posts": entries,
            "preheader": markup.preheader(
                " · ".join(post.title for post in posts), typographer=settings.typographer
            ),
        },
    }
    return _render_email(settings, env, DIGEST_TEMPLATES, context, slug, subject)


def render_welcome(
    settings: Settings, env: jinja2.Environment, newest: Post | None
) -> RenderedIssue | None:
    """The email a reader gets once they confirm, from templates/welcome_email.html and .txt;
    None when the author has not written them. Addressed like an issue (IssueMessages), so it
    carries the one-click headers and the reader's own unsubscribe link."""
    if not all((settings.templates_dir / name).is_file() for name in WELCOME_TEMPLATES):
        return None
    context = {
        "newsletter": newsletter_context(settings),
        "newest_post": (
            {"title": newest.title, "date": newest.date, "url": post_url(settings, newest)}
            if newest
            else None
        ),
    }
    return _render_email(
        settings, env, WELCOME_TEMPLATES, context, WELCOME_SLUG, f"Welcome to {settings.title}"
    )


def _render_email(
    settings: Settings,
    env: jinja2.Environment,
    templates: tuple[str, str],
    context: Mapping[str, object],
    slug: str,
    subject: str,
) -> RenderedIssue:
    """The one way every email is rendered: its own context plus the reader's placeholders
    and links (filled per reader later), the HTML inlined by premailer, the text normalised."""
    context = {
        **context,
        "reader": {"name": PLACEHOLDERS["name"], "email": PLACEHOLDERS["email"]},
        "unsubscribe_url": unsubscribe_url(settings, PLACEHOLDERS["token"]),
        "preferences_url": preferences_url(settings, PLACEHOLDERS["token"]),
    }
    check_css(settings.templates_dir / "email.css")
    html_part = inline_css(render_template(env, templates[0], context))
    text_part = render_template(env, templates[1], context)
    return RenderedIssue(
        slug=slug,
        subject=subject,
        html=Personalised.parse(html_part),
        text=Personalised.parse(_normalise_text(text_part)),
    )


def check_css(path: Path) -> None:
    """CSS that cssutils (premailer's parser) cannot read is an error naming file and line;
    premailer itself would drop the rule without a word."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return  # the template that includes it names it
    except OSError as e:
        raise TemplateError(f"{path}: cannot be read: {e.strerror}") from e
    problem = _css_problem(str(path), stat.st_mtime_ns, stat.st_size)
    if problem:
        raise TemplateError(problem)


@functools.lru_cache(maxsize=16)
def _css_problem(name: str, mtime_ns: int, size: int) -> str | None:
    """The first parse error of one version of a CSS file (parsing takes ~35 ms: once)."""
    path = Path(name)
    try:
        css = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return f"{path}: cannot be read: {e}"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.ERROR)
    logger = logging.getLogger("CSSUTILS")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR)
    try:
        cssutils.CSSParser(validate=False).parseString(css)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    errors = stream.getvalue().strip()
    if not errors:
        return None
    lines = [int(a or b) for a, b in _CSS_POSITION.findall(errors)]
    where = f", line {min(lines)}" if lines else ""
    return f"{path}{where}: premailer cannot parse this CSS: {errors.splitlines()[0]}"


def inline_css(document: str) -> str:
    """Move the stylesheet into style attributes; only @media rules stay in <style>.

    No width/height attributes from CSS: `height="auto"` is invalid HTML, and a fixed width
    would undo `max-width: 100%` on a phone.
    """
    inlined = Premailer(
        document,
        allow_network=False,
        strip_important=False,
        keep_style_tags=False,
        remove_classes=False,
        disable_validation=True,
        disable_basic_attributes=["width", "height"],
        cssutils_logging_level=logging.CRITICAL,
    ).transform()
    return str(inlined)


def _normalise_text(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
