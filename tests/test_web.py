"""The readers' web pages, served by a real uvicorn on loopback and driven with httpx."""

import base64
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from itsdangerous import URLSafeSerializer
from sqlite_utils import Database

from newsletter import db as store
from newsletter.keys import reader_tokens
from newsletter.mailer import open_transport
from newsletter.message import Envelope
from newsletter.posts import find_post
from newsletter.sender import send_post
from newsletter.tokens import ReaderTokens
from newsletter.web import RESUBSCRIBE_FORM, SUBSCRIBE_FORM, ClientLimiter

from .conftest import Cli, LiveServer, SmtpSink, free_port, wait_for, write_env

TITLE = "Child Protection Notes"


def browser(
    server: LiveServer, client_ip: str | None = None, user_agent: str | None = None
) -> httpx.Client:
    """A client with its own cookies; `client_ip` plays another visitor (via the trusted proxy
    header, as a reverse proxy in front of `serve` would send it)."""
    headers = {"X-Forwarded-For": client_ip} if client_ip else {}
    if user_agent:
        headers["User-Agent"] = user_agent
    return httpx.Client(base_url=server.url, headers=headers, timeout=10)


def open_form(client: httpx.Client) -> str:
    """GET / as a browser does: the page's CSRF token (its nonce is now in a cookie)."""
    page = client.get("/")
    assert page.status_code == 200
    assert "newsletter_form" in client.cookies
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def subscribe(client: httpx.Client, email: str, name: str = "") -> httpx.Response:
    return client.post("/subscribe", data={"csrf": open_form(client), "email": email, "name": name})


def everyone(db: Database) -> list[store.Subscriber]:
    return list(store.iter_subscribers(db, "all"))


@pytest.fixture
def tokens(live_server: LiveServer, db: Database) -> ReaderTokens:
    return reader_tokens(live_server.settings, db)


@pytest.fixture
def ann(live_server: LiveServer, db: Database) -> store.Subscriber:
    return store.add_subscriber(db, "ann.archer@example.org", "Ann Archer")


# --- unsubscribe ----------------------------------------------------------------------------


def test_the_unsubscribe_link_shows_a_button_and_a_get_changes_nothing(
    live_server: LiveServer, db: Database, tokens: ReaderTokens, ann: store.Subscriber
) -> None:
    token = tokens.unsubscribe(ann.public_id)
    with browser(live_server) as client:
        pages = [client.get(f"/unsubscribe/{token}") for _ in range(3)]  # scanners open links
        head = client.head(f"/unsubscribe/{token}")
    for page in pages:
        assert page.status_code == 200
        assert f"<title>Unsubscribe · {TITLE}</title>" in page.text
        assert "a*********@example.org" in page.text
        assert "ann.archer" not in page.text
        assert f'<form method="post" action="/unsubscribe/{token}">' in page.text
        assert page.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert head.status_code == 200
    assert store.get_subscriber_by_id(db, ann.id) == ann


def test_the_button_unsubscribes_and_offers_to_resubscribe(
    live_server: LiveServer, db: Database, tokens: ReaderTokens, ann: store.Subscriber
) -> None:
    token = tokens.unsubscribe(ann.public_id)
    with browser(live_server, "203.0.113.40", "Phone/1") as client:
        client.get(f"/unsubscribe/{token}")
        done = client.post(f"/unsubscribe/{token}")  # the form's button: an empty form body
        assert done.status_code == 200 and "location" not in done.headers
        assert "You are unsubscribed" in done.text
        assert f'<form method="post" action="/resubscribe/{token}">' in done.text
        gone = store.get_subscriber_by_id(db, ann.id)
        assert gone is not None and gone.status == "unsubscribed"

        again = client.post(f"/unsubscribe/{token}")
        assert again.status_code == 200 and "You are unsubscribed" in again.text
        assert store.get_subscriber_by_id(db, ann.id) == gone  # nothing changed the second time
        assert "You are unsubscribed" in client.get(f"/unsubscribe/{token}").text

        back = client.post(f"/resubscribe/{token}")
    assert back.status_code == 200
    assert "Welcome back" in back.text and "a*********@example.org" in back.text
    reader = store.get_subscriber_by_id(db, ann.id)
    assert reader is not None
    assert (reader.status, reader.consent_form, reader.consent_ip, reader.consent_user_agent) == (
        "active",
        RESUBSCRIBE_FORM,
        "203.0.113.40",
        "Phone/1",
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"data": {"List-Unsubscribe": "One-Click"}}, id="urlencoded"),
        pytest.param({"files": {"List-Unsubscribe": (None, "One-Click")}}, id="multipart"),
    ],
)
def test_one_click_unsubscribes_with_200_and_no_redirect(
    live_server: LiveServer,
    db: Database,
    tokens: ReaderTokens,
    ann: store.Subscriber,
    body: dict,
) -> None:
    """RFC 8058: what Gmail and Yahoo POST, with no cookies and no CSRF token."""
    url = f"{live_server.url}/unsubscribe/{tokens.unsubscribe(ann.public_id)}"
    answer = httpx.post(url, follow_redirects=False, **body)
    sent_as = answer.request.headers["content-type"]
    assert sent_as.startswith("multipart/form-data" if "files" in body else "application/x-www")
    assert "cookie" not in answer.request.headers
    assert answer.status_code == 200
    assert not answer.is_redirect and "location" not in answer.headers
    reader = store.get_subscriber_by_id(db, ann.id)
    assert reader is not None and reader.status == "unsubscribed"


def _forgeries(tokens: ReaderTokens, kind: str) -> dict[str, str]:
    good = tokens.unsubscribe(1) if kind == "unsubscribe" else tokens.confirm(1)
    rest = good.split(".", 1)[1]
    middle = len(good) // 2 + 4  # inside the signature; a last character may only be padding
    flipped = good[:middle] + ("A" if good[middle] != "A" else "B") + good[middle + 1 :]
    return {
        "another id under the signature": base64.urlsafe_b64encode(b"2").decode().rstrip("=")
        + "."
        + rest,
        "a flipped character": flipped,
        "another key": URLSafeSerializer("another key", salt=f"newsletter.{kind}").dumps(1),
        "the other kind of link": tokens.confirm(1)
        if kind == "unsubscribe"
        else tokens.unsubscribe(1),
        "garbage": "not-a-token",
    }


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("GET", "/unsubscribe/{}", "unsubscribe"),
        ("POST", "/unsubscribe/{}", "unsubscribe"),
        ("POST", "/resubscribe/{}", "unsubscribe"),
        ("GET", "/confirm/{}", "confirm"),
        ("POST", "/confirm/{}", "confirm"),
    ],
)
def test_forged_links_answer_400_and_change_nothing(
    live_server: LiveServer, db: Database, tokens: ReaderTokens, method: str, path: str, kind: str
) -> None:
    store.add_subscriber(db, "ann@example.org", status="pending" if kind == "confirm" else "active")
    store.add_subscriber(db, "bob@example.org", status="unsubscribed")
    before = everyone(db)
    with browser(live_server) as client:
        for name, token in _forgeries(tokens, kind).items():
            answer = client.request(
                method, path.format(token), data={"List-Unsubscribe": "One-Click"}
            )
            assert answer.status_code == 400, name
            assert "This link does not work" in answer.text, name
            assert "Traceback" not in answer.text
    assert everyone(db) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/unsubscribe/{}"), ("POST", "/unsubscribe/{}"), ("POST", "/resubscribe/{}")],
)
def test_a_test_copys_link_says_not_on_the_list(
    live_server: LiveServer,
    db: Database,
    tokens: ReaderTokens,
    ann: store.Subscriber,
    method: str,
    path: str,
) -> None:
    """`send --to` gives someone not on the list a link with id 0."""
    with browser(live_server) as client:
        answer = client.request(method, path.format(tokens.unsubscribe(None)))
    assert answer.status_code == 200
    assert "<h1>Not on the list</h1>" in answer.text
    assert everyone(db) == [ann]


def test_an_unsubscribe_during_a_send_skips_the_reader(
    start_server: Callable[..., LiveServer], db: Database, smtp_sink: SmtpSink
) -> None:
    server = start_server(SMTP_CONNECTIONS=1)
    tokens = reader_tokens(server.settings, db)
    ann = store.add_subscriber(db, "ann@example.org")
    bob = store.add_subscriber(db, "bob@example.org")
    bob_leaves = f"{server.url}/unsubscribe/{tokens.unsubscribe(bob.public_id)}"

    class BobLeavesAfterTheFirstMessage:
        """The real SMTP transport; its first message is Bob's cue to press one-click."""

        def __init__(self, settings) -> None:
            self.smtp = open_transport(settings)
            self.sent = 0

        def send(self, envelope: Envelope) -> str:
            reply = self.smtp.send(envelope)
            self.sent += 1
            if self.sent == 1:
                answer = httpx.post(bob_leaves, data={"List-Unsubscribe": "One-Click"})
                assert answer.status_code == 200
            return reply

        def close(self) -> None:
            self.smtp.close()

    post = find_post(server.settings.posts_dir)
    report = send_post(server.settings, post, transport_factory=BobLeavesAfterTheFirstMessage)
    assert (report.sent, report.skipped) == (1, 1)
    assert smtp_sink.per_recipient() == {"ann@example.org": 1}
    (bobs,) = [d for d in store.iter_deliveries(db, post.slug) if d.subscriber_id == bob.id]
    assert (bobs.status, bobs.last_reply) == ("skipped", "no longer subscribed")
    assert store.is_active(db, ann.id)


# --- subscribe ------------------------------------------------------------------------------


def test_subscribe_then_confirm_through_the_emailed_link(
    live_server: LiveServer, db: Database, smtp_sink: SmtpSink, cli: Cli
) -> None:
    with browser(live_server, user_agent="TestBrowser/1.0") as client:
        answer = subscribe(client, "new.reader@example.org", "New Reader")
        assert answer.status_code == 200
        assert "<h1>Check your inbox</h1>" in answer.text

        (received,) = wait_for(lambda: smtp_sink.received)
        assert received.rcpt_tos == ["new.reader@example.org"]
        text = received.message.get_payload()[0].get_content()
        link = re.search(r"http://127\.0\.0\.1:\d+/confirm/(\S+)", text)
        assert link and link.group(0).startswith(f"{live_server.url}/confirm/")
        waiting = store.get_subscriber(db, "new.reader@example.org")
        assert waiting is not None and waiting.status == "pending"

        page = client.get(link.group(0))  # opening the link only shows the button
        assert page.status_code == 200
        assert f'<form method="post" action="/confirm/{link.group(1)}">' in page.text
        assert "n*********@example.org" in page.text
        assert store.get_subscriber(db, "new.reader@example.org") == waiting

        done = client.post(link.group(0))
    assert done.status_code == 200 and "<h1>You are subscribed</h1>" in done.text

    listed = [json.loads(line) for line in cli("subscribers", "list", "--json").stdout.splitlines()]
    assert len(listed) == 1
    reader = listed[0]
    assert (reader["email"], reader["name"], reader["status"], reader["source"]) == (
        "new.reader@example.org",
        "New Reader",
        "active",
        "web",
    )
    assert reader["consent_at"] and reader["confirmation_sent_at"]
    assert (reader["consent_ip"], reader["consent_user_agent"], reader["consent_form"]) == (
        "127.0.0.1",
        "TestBrowser/1.0",
        SUBSCRIBE_FORM,
    )


def test_the_answer_is_the_same_whether_or_not_the_address_is_known(
    live_server: LiveServer, db: Database, smtp_sink: SmtpSink
) -> None:
    store.add_subscriber(db, "known1@example.org", "Known")
    store.add_subscriber(db, "unsub1@example.org", status="unsubscribed")
    answers = {}
    for address in ("known1@example.org", "newbie@example.org", "unsub1@example.org"):
        with browser(live_server) as client:
            answer = subscribe(client, address)
        headers = {k: v for k, v in answer.headers.items() if k not in ("date", "set-cookie")}
        answers[address] = (answer.status_code, headers, answer.text.replace(address, "ADDRESS"))
    assert answers["known1@example.org"] == answers["newbie@example.org"]
    assert answers["unsub1@example.org"] == answers["newbie@example.org"]
    assert "If ADDRESS is not subscribed yet" in answers["newbie@example.org"][2]

    live_server.stop()  # waits for the emails sent after the answers
    assert smtp_sink.per_recipient() == {"newbie@example.org": 1, "unsub1@example.org": 1}
    known = store.get_subscriber(db, "known1@example.org")
    assert known is not None and (known.status, known.name) == ("active", "Known")


@pytest.mark.parametrize("case", ["no token", "garbage", "another visitor's token", "no cookie"])
def test_the_form_without_its_csrf_token_is_refused(
    live_server: LiveServer, db: Database, smtp_sink: SmtpSink, case: str
) -> None:
    with browser(live_server) as client, browser(live_server) as other:
        data = {"email": "victim@example.org", "csrf": open_form(client)}
        if case == "no token":
            del data["csrf"]
        elif case == "garbage":
            data["csrf"] = "garbage"
        elif case == "another visitor's token":
            data["csrf"] = open_form(other)
        else:
            client.cookies.clear()
        answer = client.post("/subscribe", data=data)
    assert answer.status_code == 403
    assert "the form has expired; reload the page and try again" in answer.text
    assert re.search(r'name="csrf" value="[^"]+"', answer.text)  # a fresh form to try again
    assert 'value="victim@example.org"' in answer.text
    live_server.stop()
    assert smtp_sink.received == []
    assert everyone(db) == []


def test_a_bad_address_is_shown_in_the_form_with_the_reason(
    live_server: LiveServer, db: Database
) -> None:
    with browser(live_server) as client:
        answer = subscribe(client, "not-an-address")
    assert answer.status_code == 400
    assert "is not a valid email address: An email address must have an @-sign." in answer.text
    assert everyone(db) == []


def test_the_forms_name_limit_is_the_one_the_server_keeps(
    live_server: LiveServer, db: Database
) -> None:
    with browser(live_server) as client:
        limit = re.search(r'<input id="name"[^>]*maxlength="(\d+)"', client.get("/").text)
        assert limit, "the name field has no maxlength"
        longest = int(limit.group(1))
        refused = subscribe(client, "long@example.org", "n" * (longest + 1))
        accepted = subscribe(client, "full@example.org", "n" * longest)
    assert refused.status_code == 400
    assert f"a name may be at most {longest} characters long" in refused.text
    assert accepted.status_code == 200 and "Check your inbox" in accepted.text
    assert [s.email for s in everyone(db)] == ["full@example.org"]  # the name comes on confirming


def test_one_address_gets_one_confirmation_however_often_it_is_entered(
    live_server: LiveServer, db: Database, smtp_sink: SmtpSink
) -> None:
    for n in range(3):  # three visitors, each under their own client limit
        with browser(live_server, f"198.51.100.{n}") as client:
            answer = subscribe(client, "flooded@example.org")
        assert answer.status_code == 200 and "Check your inbox" in answer.text
    live_server.stop()
    assert smtp_sink.per_recipient() == {"flooded@example.org": 1}
    flooded = store.get_subscriber(db, "flooded@example.org")
    assert flooded is not None and flooded.status == "pending"
    assert flooded.consent_ip is None  # asking is not consenting


def test_one_client_may_send_the_form_the_limit_times_an_hour(
    start_server: Callable[..., LiveServer], db: Database, smtp_sink: SmtpSink
) -> None:
    server = start_server(SUBSCRIBE_LIMIT_PER_HOUR=2)
    statuses = []
    with browser(server, "203.0.113.5") as client:
        for n in range(3):
            answer = subscribe(client, f"reader{n}@example.org")
            statuses.append(answer.status_code)
    assert statuses == [200, 200, 429]
    assert "<h1>Too many requests</h1>" in answer.text
    assert answer.headers["retry-after"] == "3600"
    with browser(server, "203.0.113.6") as client:  # another client is not held back
        assert subscribe(client, "other@example.org").status_code == 200
    server.stop()
    assert set(smtp_sink.per_recipient()) == {
        "reader0@example.org",
        "reader1@example.org",
        "other@example.org",
    }
    assert store.get_subscriber(db, "reader2@example.org") is None


def test_the_client_limit_counts_an_hour_and_an_ipv6_client_by_its_64() -> None:
    now = [0.0]
    limiter = ClientLimiter(2, clock=lambda: now[0])
    assert [limiter.allow("2001:db8:1:2::a"), limiter.allow("2001:db8:1:2::b")] == [True, True]
    assert not limiter.allow("2001:db8:1:2:ffff::1")  # the same /64: one machine
    assert limiter.allow("2001:db8:1:3::a")  # the next /64 is someone else
    assert limiter.allow("192.0.2.1") and limiter.allow("192.0.2.1")
    assert not limiter.allow("192.0.2.1")
    assert limiter.allow("192.0.2.2")  # IPv4 counts by the address
    now[0] = 3600.0  # an hour on, the first hits no longer count
    assert limiter.allow("2001:db8:1:2::a") and limiter.allow("192.0.2.1")


# --- read online ----------------------------------------------------------------------------


def test_only_sent_posts_are_online(live_server: LiveServer, cli: Cli) -> None:
    cli("subscribers", "add", "ann@example.org")
    cli("send", "four-not-three", "--yes")
    cli("send", "airline-pilot-test", "--to", "me@example.org")  # a test copy publishes nothing
    with browser(live_server) as client:
        listing = client.get("/posts/")
        post = client.get("/posts/four-not-three")
        tested = client.get("/posts/airline-pilot-test")
        unknown = client.get("/posts/no-such-post")
        bare = client.get("/posts", follow_redirects=True)
    assert listing.status_code == 200
    assert re.findall(r'href="/posts/([^"]+)"', listing.text) == ["four-not-three"]
    assert "Four, not three" in listing.text and "1 January 2015" in listing.text
    assert post.status_code == 200
    assert "<title>Four, not three · Child Protection Notes</title>" in post.text
    first_words = find_post(live_server.settings.posts_dir, "four-not-three").body.split()[:3]
    assert " ".join(first_words) in post.text
    assert "<p>" in post.text  # the Markdown is rendered
    for missing in (tested, unknown):
        assert missing.status_code == 404
        assert "<h1>Page not found</h1>" in missing.text
    assert bare.status_code == 200 and bare.url.path == "/posts/"


def test_the_home_page_has_the_name_and_the_form(live_server: LiveServer) -> None:
    with browser(live_server) as client:
        page = client.get("/")
    assert page.status_code == 200
    assert f"<h1>{TITLE}</h1>" in page.text
    assert '<form method="post" action="/subscribe">' in page.text
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


# --- errors ---------------------------------------------------------------------------------


def test_errors_are_tidy_pages_without_tracebacks(live_server: LiveServer) -> None:
    posts_dir = live_server.settings.posts_dir
    posts_dir.rename(
        posts_dir.with_name("posts-moved")
    )  # one broken post is skipped; no folder is not
    with browser(live_server) as client:
        broken = client.get("/posts/")
        wrong_method = client.get("/subscribe")
        too_big = client.post("/subscribe", content=b"x" * 100_000)
    assert broken.status_code == 500
    assert "<h1>Something went wrong</h1>" in broken.text
    assert "posts" not in broken.text.split("<main>")[1].split("</main>")[0]
    assert "Traceback" not in broken.text
    assert TITLE in broken.text
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert "<h1>Not allowed here</h1>" in wrong_method.text
    assert too_big.status_code == 413


# --- newsletter serve -----------------------------------------------------------------------


def test_serve_runs_the_app_on_the_given_port(smtp_project: Path) -> None:
    port = free_port()
    command = [sys.executable, "-c", "from newsletter.cli import app; app()"]
    process = subprocess.Popen(
        [*command, "-C", str(smtp_project), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def home() -> httpx.Response | None:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/")
        except httpx.ConnectError:
            assert process.poll() is None, process.communicate()
            return None

    try:
        page = wait_for(home, timeout=20)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert page.status_code == 200 and f"<h1>{TITLE}</h1>" in page.text
    assert "server" not in page.headers
    assert f"Serving {TITLE} on http://127.0.0.1:{port}/" in stderr


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            lambda project: write_env(project, FROM=""),
            "Error: NEWSLETTER_FROM is not set: add e.g. NEWSLETTER_FROM='Jane Author <jane@example.org>' to .env\n",
        ),
        (
            lambda project: (project / "templates" / "web" / "post.html").unlink(),
            "Error: template web/post.html is missing from {templates}; `serve` needs templates/web/ and templates/confirm_email.* from the newsletter source\n",
        ),
        (
            lambda project: (project / "templates" / "web" / "base.html").unlink(),
            "Error: template web/base.html is missing from {templates}; `serve` needs templates/web/ and templates/confirm_email.* from the newsletter source\n",
        ),
    ],
)
def test_serve_stops_at_once_on_a_bad_setup(cli: Cli, project: Path, setup, message: str) -> None:
    setup(project)
    result = cli("serve", "--port", str(free_port()), ok=False)
    assert result.exit_code == 1
    assert result.stderr == message.format(templates=project / "templates")
