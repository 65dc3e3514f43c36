"""The readers' side on the web: subscribe with confirmation, unsubscribe, read past posts
(pages, their images and an Atom feed).

A thin layer over `subscribe`: requests become calls, the project's errors become pages, and
nothing a visitor sees ever holds a traceback. The database is opened per request in a worker
thread (SQLite calls block), so the event loop never waits on a lock and a running `send` sees
an unsubscribe the moment it is committed.
"""

from __future__ import annotations

import ipaddress
import logging
import mimetypes
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

import jinja2
from markupsafe import Markup
from sqlite_utils import Database
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from . import db as store
from . import preferences, subscribe
from .addresses import (
    MAX_ADDRESS_LENGTH,
    MAX_NAME_LENGTH,
    clean_name,
    mask_address,
    normalise_address,
)
from .archive import online_posts
from .atom import FEED_PATH, atom_feed
from .background import WorkQueue
from .config import Settings
from .dkim import signer_from_settings
from .errors import BadToken, NewsletterError, NotOnList, SubscriberError, TemplateError
from .keys import reader_tokens
from .posts import SLUG_PATTERN, Post, local_images, read_posts
from .render import load_template, post_html, render_template, template_environment
from .tokens import ReaderTokens
from .weblog import redact_tokens

logger = logging.getLogger(__name__)

T = TypeVar("T")
FORM_COOKIE = "newsletter_form"
SUBSCRIBE_FORM = "web: subscribe form, confirmed by the emailed link"
RESUBSCRIBE_FORM = "web: resubscribe button after unsubscribing"
MAX_BODY_BYTES = 64 * 1024
MAX_TRACKED_CLIENTS = 10_000
# A reader may try a few settings in a row; a client saving more often than this is not one.
PREFERENCES_LIMIT_PER_HOUR = 30
SHUTDOWN_WAIT_SECONDS = 30.0
# Checked at start-up; base.html and style.css too, or their absence shows only as a 500.
TEMPLATES = (
    "web/base.html",
    "web/style.css",
    "web/home.html",
    "web/notice.html",
    "web/confirm.html",
    "web/unsubscribe.html",
    "web/unsubscribed.html",
    "web/preferences.html",
    "web/preferences_saved.html",
    "web/posts.html",
    "web/post.html",
    "web/subscribe_form.html",
    "confirm_email.html",
    "confirm_email.txt",
)
# Token pages must not be framed (a hidden button), cached or leak their URL as a Referer.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src * data:; media-src *;"
        " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
IMAGE_HEADERS = {
    "Cache-Control": "public, max-age=86400",
    "X-Content-Type-Options": "nosniff",
    # An SVG opened by itself must not run script on this site.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
}
HOME_POSTS = 5


def create_app(settings: Settings, *, sns_fetch: Callable[[str], bytes] | None = None) -> Starlette:
    """The readers' web app for one newsletter; a bad setup fails here, not at the first visitor.

    `sns_fetch` GETs from SNS for /webhooks/ses: its signing certificate, a subscription's
    confirmation (tests give theirs).
    """
    settings.sender  # noqa: B018 - confirmation emails cannot go out without a From address
    signer_from_settings(settings)  # half a DKIM setup is an error now, not in a background task
    env = template_environment(settings.templates_dir)
    _check_templates(env, settings)
    db = store.open_db(settings.db_path)
    try:
        tokens = reader_tokens(settings, db)
    finally:
        db.close()
    site = _Site(settings, env, tokens)
    site.sns_fetch = sns_fetch

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        # Stopping (Ctrl+C): the confirmation emails already promised go out first.
        await run_in_threadpool(site.emails.drain, SHUTDOWN_WAIT_SECONDS)

    app = Starlette(
        routes=[
            Route("/", site.home, methods=["GET"]),
            Route("/subscribe", site.subscribe, methods=["POST"]),
            Route("/confirm/{token}", site.confirm_page, methods=["GET"]),
            Route("/confirm/{token}", site.confirm, methods=["POST"]),
            Route("/unsubscribe/{token}", site.unsubscribe_page, methods=["GET"]),
            Route("/unsubscribe/{token}", site.unsubscribe, methods=["POST"]),
            Route("/resubscribe/{token}", site.resubscribe, methods=["POST"]),
            Route("/preferences/{token}", site.preferences_page, methods=["GET"]),
            Route("/preferences/{token}", site.save_preferences, methods=["POST"]),
            Route("/posts", site.posts_without_slash, methods=["GET"]),
            Route("/posts/", site.posts, methods=["GET"]),
            Route("/posts/{slug}", site.post, methods=["GET"]),
            Route("/posts/{path:path}", site.post_file, methods=["GET"]),
            Route(FEED_PATH, site.feed, methods=["GET"]),
            Route("/webhooks/postmark", site.postmark_webhook, methods=["POST"]),
            Route("/webhooks/ses", site.ses_webhook, methods=["POST"]),
        ],
        exception_handlers={
            BadToken: site.bad_link,
            NotOnList: site.not_on_list,
            SubscriberError: site.refused,
            NewsletterError: site.failure,
            HTTPException: site.http_error,
            Exception: site.failure,
        },
        max_body_size=MAX_BODY_BYTES,
        lifespan=lifespan,
    )
    # Starlette's own slash redirect writes the Host header into Location; ours is relative.
    app.router.redirect_slashes = False
    return app


def _check_templates(env: jinja2.Environment, settings: Settings) -> None:
    for name in TEMPLATES:
        try:
            load_template(env, name)
        except TemplateError as e:
            if isinstance(e.__cause__, jinja2.TemplateNotFound):
                raise TemplateError(
                    f"{e}; `serve` needs templates/web/ and templates/confirm_email.* from the "
                    "newsletter source"
                ) from e
            raise


class ClientLimiter:
    """At most `limit` subscribe forms an hour from one client, counted in memory.

    Memory is enough here: the per-address limit, kept in the database, is what protects an
    inbox; this one slows a single client spraying many addresses. An IPv6 client counts by
    its /64, which one machine usually holds whole.

    It runs on the event loop, so each request costs the same however many clients it holds:
    clients are kept in the order they were last seen, idle ones leave from the front as
    their hour ends, and past `max_clients` the one seen longest ago makes room.
    """

    def __init__(
        self,
        limit: int,
        window: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_TRACKED_CLIENTS,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._clock = clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._hits)

    def allow(self, client: str) -> bool:
        key = _client_key(client)
        now = self._clock()
        with self._lock:
            self._forget_idle(now)
            hits = self._hits.get(key)
            if hits is None:
                if len(self._hits) >= self.max_clients:
                    self._hits.popitem(last=False)
                hits = self._hits[key] = deque(maxlen=self.limit)
            while hits and now - hits[0] >= self.window:
                hits.popleft()
            allowed = len(hits) < self.limit
            if allowed:
                hits.append(now)
            self._hits.move_to_end(key)
        return allowed

    def _forget_idle(self, now: float) -> None:
        """Drop clients from the front while the one there has no request in the window."""
        while self._hits:
            hits = next(iter(self._hits.values()))
            if hits and now - hits[-1] < self.window:
                return
            self._hits.popitem(last=False)


def _client_key(host: str) -> str:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


def _listed(post: Post) -> dict[str, Any]:
    return {"title": post.title, "slug": post.slug, "date": post.date, "author": post.author}


def _slugs_with_public_files(db: Database) -> set[str]:
    logs = store.post_logs(db)
    shown = {slug for slug, log in logs.items() if log.sent or log.tests}
    return shown | store.archived_slugs(db) | store.digested_slugs(db)


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


class _Site:
    """The endpoints, sharing one newsletter's settings, templates, link keys and rate limit."""

    def __init__(self, settings: Settings, env: jinja2.Environment, tokens: ReaderTokens) -> None:
        self.settings = settings
        self.env = env
        self.tokens = tokens
        self.limiter = ClientLimiter(settings.subscribe_limit_per_hour)
        self.preferences_limiter = ClientLimiter(PREFERENCES_LIMIT_PER_HOUR)
        self.emails = WorkQueue("newsletter emails to readers")  # confirmations and welcomes
        self.sns_fetch: Callable[[str], bytes] | None = None
        self.newsletter = {
            "title": settings.title,
            "base_url": settings.base_url,
            "postal_address": settings.postal_address,
        }

    # --- plumbing ---------------------------------------------------------------------------

    def page(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = render_template(
            self.env, f"web/{template}", {"newsletter": self.newsletter, **context}
        )
        return HTMLResponse(html, status_code, headers=PAGE_HEADERS)

    def notice(self, heading: str, *paragraphs: str, status_code: int = 200) -> HTMLResponse:
        return self.page("notice.html", status_code, heading=heading, paragraphs=paragraphs)

    def with_db(self, work: Callable[[Database], T]) -> T:
        db = store.open_db(self.settings.db_path)
        try:
            return work(db)
        finally:
            db.close()

    async def in_db(self, work: Callable[[Database], T]) -> T:
        return await run_in_threadpool(self.with_db, work)

    @staticmethod
    def visitor(request: Request, form: str) -> subscribe.Visitor:
        return subscribe.Visitor(
            ip=_client_ip(request),
            user_agent=request.headers.get("user-agent"),
            form=form,
        )

    # --- subscribe --------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        """The newest posts, and the form; a broken posts folder must not take the form away."""
        try:
            posts = (await self.in_db(self.online))[:HOME_POSTS]
        except NewsletterError as e:
            logger.error("the home page shows no posts: %s", e)
            posts = []
        return self.subscribe_form(request, posts=posts)

    def subscribe_form(
        self,
        request: Request,
        *,
        status_code: int = 200,
        email: str = "",
        name: str = "",
        error: str | None = None,
        posts: list[Post] | None = None,
    ) -> Response:
        return self.with_form(
            request,
            "home.html",
            status_code,
            email=email,
            name=name,
            error=error,
            posts=[_listed(post) for post in posts or []],
        )

    def with_form(
        self,
        request: Request,
        template: str,
        status_code: int = 200,
        *,
        email: str = "",
        name: str = "",
        error: str | None = None,
        **context: Any,
    ) -> Response:
        """A page that ends with the subscribe form, whose CSRF token is tied to a random nonce
        in a cookie (double submit)."""
        nonce = request.cookies.get(FORM_COOKIE) or secrets.token_urlsafe(16)
        response = self.page(
            template,
            status_code,
            csrf=self.tokens.form(nonce),
            email=email,
            name=name,
            name_limit=MAX_NAME_LENGTH,  # the form stops where clean_name would refuse
            address_limit=MAX_ADDRESS_LENGTH,
            error=error,
            **context,
        )
        if request.cookies.get(FORM_COOKIE) != nonce:
            response.set_cookie(
                FORM_COOKIE,
                nonce,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    async def subscribe(self, request: Request) -> Response:
        """Answer at once, the same for any valid address; the email goes out afterwards."""
        form = await request.form(max_files=0, max_fields=10, max_part_size=4096)
        email, name = _field(form, "email"), _field(form, "name")
        try:
            self.tokens.read_form(_field(form, "csrf"), request.cookies.get(FORM_COOKIE, ""))
        except BadToken as e:
            return self.subscribe_form(
                request, status_code=403, email=email, name=name, error=str(e)
            )
        if not self.limiter.allow(_client_ip(request) or ""):
            response = self.notice(
                "Too many requests",
                "This connection has sent the subscribe form too often. Please try again in an "
                "hour.",
                status_code=429,
            )
            response.headers["Retry-After"] = "3600"
            return response
        try:
            address, clean = normalise_address(email), clean_name(name)
        except SubscriberError as e:
            return self.subscribe_form(
                request, status_code=400, email=email, name=name, error=str(e)
            )
        response = self.notice(
            "Check your inbox",
            f"If {address} is not subscribed yet, an email with a link to confirm is on its way.",
            "Open the link and press the button to start receiving the posts. Nothing after a "
            "few minutes? Look in the spam folder.",
        )
        self.emails.submit(self.send_confirmation, address, clean)
        return response

    def send_confirmation(self, address: str, name: str) -> None:
        """Runs in the queue's thread, so its duration tells nobody if the address is known."""
        try:
            outcome = self.with_db(
                lambda db: subscribe.request_subscription(
                    self.settings, db, self.tokens, address, name
                )
            )
        except NewsletterError as e:
            logger.warning("no confirmation email for %s: %s", mask_address(address), e)
            return
        logger.info("subscribe request for %s: %s", mask_address(address), outcome)

    async def confirm_page(self, request: Request) -> Response:
        token = request.path_params["token"]
        reader = await self.in_db(
            lambda db: subscribe.reader_from_confirm_link(db, self.tokens, token)
        )
        if reader.status == "active":
            return self.confirmed(reader)
        return self.page("confirm.html", token=token, masked_address=mask_address(reader.email))

    async def confirm(self, request: Request) -> Response:
        token = request.path_params["token"]
        visitor = self.visitor(request, SUBSCRIBE_FORM)
        confirmation = await self.in_db(
            lambda db: subscribe.confirm(db, self.tokens, token, visitor)
        )
        response = self.confirmed(confirmation.reader)
        if confirmation.first_time:
            self.emails.submit(self.send_welcome, confirmation.reader)
        return response

    def send_welcome(self, reader: store.Subscriber) -> None:
        """After the answer: a welcome email, when the author wrote its templates."""
        try:
            sent = self.with_db(
                lambda db: subscribe.send_welcome(self.settings, db, self.tokens, reader)
            )
        except NewsletterError as e:
            logger.warning("no welcome email for %s: %s", mask_address(reader.email), e)
            return
        if sent:
            logger.info("welcome email sent to %s", mask_address(reader.email))

    def confirmed(self, reader: store.Subscriber) -> Response:
        return self.notice(
            "You are subscribed",
            f"The next post of {self.settings.title} will come to {mask_address(reader.email)}. "
            "Every email has a link to a page where one button unsubscribes you.",
        )

    # --- unsubscribe ------------------------------------------------------------------------

    async def unsubscribe_page(self, request: Request) -> Response:
        """Show the button only: mail scanners open links, so a GET must never unsubscribe."""
        token = request.path_params["token"]
        reader = await self.in_db(
            lambda db: subscribe.reader_from_unsubscribe_link(db, self.tokens, token)
        )
        template = "unsubscribed.html" if reader.status == "unsubscribed" else "unsubscribe.html"
        return self.page(
            template,
            token=token,
            masked_address=mask_address(reader.email),
            can_resubscribe=subscribe.may_resubscribe(reader),
        )

    async def unsubscribe(self, request: Request) -> Response:
        """The button and RFC 8058 one-click alike: the signed link is the authority, so the body
        (List-Unsubscribe=One-Click, urlencoded or multipart) is not parsed, no cookie or CSRF
        token is needed, and the answer is a 200 page, never a redirect."""
        token = request.path_params["token"]
        reader = await self.in_db(lambda db: subscribe.unsubscribe(db, self.tokens, token))
        return self.page(
            "unsubscribed.html",
            token=token,
            masked_address=mask_address(reader.email),
            can_resubscribe=subscribe.may_resubscribe(reader),
        )

    async def resubscribe(self, request: Request) -> Response:
        token = request.path_params["token"]
        visitor = self.visitor(request, RESUBSCRIBE_FORM)
        reader = await self.in_db(lambda db: subscribe.resubscribe(db, self.tokens, token, visitor))
        return self.notice(
            "Welcome back",
            f"{mask_address(reader.email)} will get the posts of {self.settings.title} again.",
        )

    # --- preferences (`preferences` checks and applies; this parses and answers) -------------

    async def preferences_page(self, request: Request) -> Response:
        """The form; a GET changes nothing. A reader who left sees the unsubscribe outcome."""
        token = request.path_params["token"]
        choices = await self.in_db(
            lambda db: preferences.reader_choices(self.settings, db, self.tokens, token)
        )
        if choices.reader.status == "unsubscribed":
            return self.page(
                "unsubscribed.html",
                token=token,
                masked_address=mask_address(choices.reader.email),
                can_resubscribe=subscribe.may_resubscribe(choices.reader),
            )
        if choices.reader.status != "active":
            return self.notice(
                "Not subscribed",
                f"{mask_address(choices.reader.email)} does not get {self.settings.title}, so "
                "there are no choices to change.",
            )
        return self.preferences_form(request, token, choices)

    def preferences_form(
        self,
        request: Request,
        token: str,
        choices: preferences.Choices,
        status_code: int = 200,
        error: str | None = None,
    ) -> Response:
        paused_until = None
        if choices.paused() and choices.paused_until is not None:
            paused_until = preferences.pause_day(self.settings, choices.paused_until)
        offered = ("none", *preferences.PAUSE_DAYS)
        pauses = [(p, preferences.PAUSE_LABELS[p]) for p in offered]
        if paused_until:
            pauses.insert(0, ("keep", f"Keep my pause (until {paused_until})"))
            pauses[1] = ("none", "End my pause now")
        return self.with_form(
            request,
            "preferences.html",
            status_code,
            error=error,
            token=token,
            masked_address=mask_address(choices.reader.email),
            choices=choices,
            topics=choices.newsletter_topics,
            digest_time=preferences.digest_time(self.settings),
            pauses=pauses,
            paused_until=paused_until,
        )

    async def save_preferences(self, request: Request) -> Response:
        """The same rules as the subscribe form: a CSRF token tied to the cookie, a per-client
        limit, and the signed link for who it is; anything refused changes nothing."""
        token = request.path_params["token"]
        form = await request.form(max_files=0, max_fields=200, max_part_size=4096)
        try:
            self.tokens.read_form(_field(form, "csrf"), request.cookies.get(FORM_COOKIE, ""))
        except BadToken as e:
            choices = await self.in_db(
                lambda db: preferences.reader_choices(self.settings, db, self.tokens, token)
            )
            if choices.reader.status != "active":
                return self.notice("That did not work", f"Sorry: {e}.", status_code=403)
            return self.preferences_form(request, token, choices, 403, str(e))
        if not self.preferences_limiter.allow(_client_ip(request) or ""):
            response = self.notice(
                "Too many requests",
                "This connection has saved choices too often. Please try again in an hour.",
                status_code=429,
            )
            response.headers["Retry-After"] = "3600"
            return response
        ticked = [v for v in form.getlist("topic") if isinstance(v, str)]
        requested = preferences.Requested(
            topics=tuple(ticked) if "topics_shown" in form else None,
            frequency=_field(form, "frequency"),
            pause=_field(form, "pause") or "keep",
        )

        def save(db: Database) -> preferences.Choices | tuple[preferences.Choices, str]:
            try:
                return preferences.save_choices(self.settings, db, self.tokens, token, requested)
            except SubscriberError as e:  # the form again, with the reason, if they still read
                try:
                    choices = preferences.reader_choices(self.settings, db, self.tokens, token)
                except NotOnList:
                    raise e from None
                if choices.reader.status != "active":
                    raise
                return choices, str(e)

        saved = await self.in_db(save)
        if isinstance(saved, tuple):
            return self.preferences_form(request, token, saved[0], 400, f"Sorry: {saved[1]}.")
        return self.page(
            "preferences_saved.html",
            token=token,
            masked_address=mask_address(saved.reader.email),
            lines=preferences.describe(self.settings, saved),
        )

    # --- read online ------------------------------------------------------------------------

    def online(self, db: Database) -> list[Post]:
        """Posts readers may read (sent or published without a send), newest first."""
        return online_posts(self.settings, db)

    async def posts_without_slash(self, request: Request) -> Response:
        return RedirectResponse("/posts/")

    async def posts(self, request: Request) -> Response:
        posts = await self.in_db(self.online)
        return self.with_form(request, "posts.html", posts=[_listed(post) for post in posts])

    async def post(self, request: Request) -> Response:
        slug = request.path_params["slug"]
        if not SLUG_PATTERN.match(slug):  # not a post: perhaps an image beside the posts
            return await self.image(slug)
        online = await self.in_db(self.online)
        post = next((post for post in online if post.slug == slug), None)
        if post is None:
            raise HTTPException(404)
        return self.with_form(
            request,
            "post.html",
            post={
                **_listed(post),
                "html": Markup(post_html(post, self.settings, absolute=False)),
            },
        )

    async def post_file(self, request: Request) -> Response:
        return await self.image(request.path_params["path"])

    async def image(self, path: str) -> Response:
        """An image a post shows, at the path its email gives it (`posts.locate_image`);
        only of a post readers can read, or whose test copy went out (its images must show
        there), never a draft's otherwise, and never a file outside posts/."""
        target = await self.in_db(lambda db: self.public_image(db, f"/posts/{path}"))
        if target is None:
            raise HTTPException(404)
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return FileResponse(target, media_type=kind, headers=IMAGE_HEADERS)

    def public_image(self, db: Database, path: str) -> Path | None:
        if any(part.startswith(".") for part in path.split("/")):
            return None
        public = _slugs_with_public_files(db)
        for post in read_posts(self.settings.posts_dir, self.settings.timezone).posts:
            if post.slug not in public:
                continue
            for image in local_images(post):
                if unquote(image.url_path) == path and image.problem() is None:
                    return image.file.resolve()
        return None

    async def feed(self, request: Request) -> Response:
        posts = await self.in_db(self.online)
        return Response(
            atom_feed(self.settings, posts),
            media_type="application/atom+xml",
            headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    # --- the relay services' webhooks (#22) --------------------------------------------------

    async def postmark_webhook(self, request: Request) -> Response:
        """Postmark's bounce and spam-complaint webhook, behind HTTP basic auth."""
        from .bounces import apply_relay_reports
        from .relays.webhooks import postmark_authorised, postmark_reports

        if not postmark_authorised(self.settings, request.headers.get("authorization")):
            return JSONResponse(
                {"error": "not authorised"},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="newsletter"'},
            )
        try:
            payload = await request.json()
        except (ValueError, RecursionError):  # deep nesting fits in the body limit
            return JSONResponse({"error": "not JSON"}, status_code=400)
        reports = postmark_reports(payload)
        outcomes = await run_in_threadpool(apply_relay_reports, self.settings, "postmark", reports)
        return JSONResponse({"applied": [o.action for o in outcomes]})

    async def ses_webhook(self, request: Request) -> Response:
        """SNS's HTTP notifications of SES's bounces and complaints, signature checked."""
        from .bounces import apply_relay_reports
        from .errors import RelayError
        from .relays.webhooks import WebhookRefused, sns_reports

        body = await request.body()
        try:
            reports = await run_in_threadpool(sns_reports, self.settings, body, self.sns_fetch)
        except WebhookRefused as e:
            return JSONResponse({"error": str(e)}, status_code=403)
        except RelayError as e:  # the subscription could not be confirmed: SNS may try again
            return JSONResponse({"error": str(e)}, status_code=502)
        outcomes = await run_in_threadpool(apply_relay_reports, self.settings, "ses", reports)
        return JSONResponse({"applied": [o.action for o in outcomes]})

    # --- errors -----------------------------------------------------------------------------

    async def bad_link(self, request: Request, exc: Exception) -> Response:
        return self.notice(
            "This link does not work",
            f"Sorry: {exc}.",
            "A link from an email must be opened whole; if your mail program split it over two "
            "lines, copy all of it into the address bar.",
            status_code=400,
        )

    async def not_on_list(self, request: Request, exc: Exception) -> Response:
        return self.notice(
            "Not on the list",
            f"This link is for an address that is not on the list of {self.settings.title}, so "
            "there is nothing to change. Test copies of a post carry such a link.",
        )

    async def refused(self, request: Request, exc: Exception) -> Response:
        return self.notice("That did not work", f"Sorry: {exc}.", status_code=400)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        heading, text = {
            404: ("Page not found", "There is no page at this address."),
            405: ("Not allowed here", "This page cannot be used that way."),
        }.get(exc.status_code, ("That did not work", str(exc.detail)))
        response = self.notice(heading, text, status_code=exc.status_code)
        response.headers.update(exc.headers or {})
        return response

    async def failure(self, request: Request, exc: Exception) -> Response:
        """Anything else: a plain apology for the visitor, the reason in the server's log."""
        if isinstance(exc, NewsletterError):  # others are logged with their traceback by uvicorn
            logger.error("%s %s failed: %s", request.method, redact_tokens(request.url.path), exc)
        try:
            return self.notice(
                "Something went wrong",
                "This page cannot be shown right now. Please try again later.",
                status_code=500,
            )
        except Exception:  # a broken template must not hide the answer
            return PlainTextResponse("Something went wrong; please try again later.", 500)
