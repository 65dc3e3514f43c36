"""A real browser on what readers see: Debian's chromium, driven by Playwright (never a
downloaded browser), against the live server and the emails a real `send` delivered."""

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlite_utils import Database

from newsletter import db as store
from newsletter.db.choices import reader_topics
from newsletter.keys import reader_tokens

from .conftest import Cli, LiveServer, SmtpSink

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests may run as root, where chromium's sandbox will not start
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# A long address, so the masked form is a long unbroken word that must still fit a phone.
READER = "a.reader.with.a.really.quite.long.address.indeed@example.org"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]


@pytest.fixture(scope="module")
def chromium() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def send_every_post(cli: Cli, project: Path) -> list[str]:
    cli("subscribers", "add", READER, "--name", "A Reader")
    slugs = sorted(path.stem for path in (project / "posts").glob("*.md"))
    for slug in slugs:
        cli("send", slug, "--yes")
    return slugs


def test_a_reader_unsubscribes_in_the_browser_from_a_received_email(
    live_server: LiveServer, cli: Cli, smtp_sink: SmtpSink, db: Database, chromium
) -> None:
    cli("subscribers", "add", READER, "--name", "A Reader")
    cli("send", "--yes")
    (received,) = smtp_sink.received
    html = received.message.get_body(("html",)).get_content()
    found = re.search(r'href="(http://127\.0\.0\.1:\d+/unsubscribe/[^"]+)"', html)
    assert found, html
    link = found.group(1)
    assert received.message["List-Unsubscribe"] == f"<{link}>"

    page = chromium.new_page(viewport={"width": 375, "height": 800})
    try:
        page.goto(link)
        assert page.title() == "Unsubscribe · Child Protection Notes"
        assert "a" + "*" * (len(READER.split("@")[0]) - 1) + "@example.org" in page.content()
        reader = store.get_subscriber(db, READER)
        assert reader is not None and reader.status == "active"  # opening the link changed nothing

        page.get_by_role("button", name="Unsubscribe").click()
        page.wait_for_load_state()
        assert page.locator("h1").inner_text() == "You are unsubscribed"
        assert page.get_by_role("button", name="Resubscribe").is_visible()
    finally:
        page.close()
    reader = store.get_subscriber(db, READER)
    assert reader is not None and reader.status == "unsubscribed"


@pytest.mark.parametrize("width", [375, 1000])
def test_emails_and_pages_fit_a_phone_and_a_desktop(
    live_server: LiveServer,
    cli: Cli,
    smtp_sink: SmtpSink,
    db: Database,
    chromium,
    width: int,
) -> None:
    slugs = send_every_post(cli, live_server.settings.directory)
    emails = [r.message.get_body(("html",)).get_content() for r in smtp_sink.received]
    assert len(emails) == len(slugs)
    tokens = reader_tokens(live_server.settings, db)
    reader = store.get_subscriber(db, READER)
    assert reader is not None
    pending = store.add_subscriber(db, "pending@example.org", status="pending")
    paths = [
        "/",
        "/posts/",
        *(f"/posts/{slug}" for slug in slugs),
        f"/unsubscribe/{tokens.unsubscribe(reader.public_id)}",
        f"/preferences/{tokens.unsubscribe(reader.public_id)}",
        f"/confirm/{tokens.confirm(pending.public_id)}",
        "/no-such-page",
    ]

    page = chromium.new_page(viewport={"width": width, "height": 900})
    try:
        for html in emails:
            page.set_content(html)
            scroll_width = page.evaluate("document.documentElement.scrollWidth")
            column = page.evaluate(
                "document.querySelector('table.container').getBoundingClientRect().width"
            )
            assert scroll_width <= width
            if width == 1000:
                assert 500 < column <= 600
            else:
                assert column <= width
        for path in paths:
            page.goto(live_server.url + path)
            assert page.evaluate("document.documentElement.scrollWidth") <= width, path
            assert page.locator("h1").first.is_visible(), path
            main_width = page.evaluate(
                "document.querySelector('main').getBoundingClientRect().width"
            )
            assert main_width <= min(width, 720), path
    finally:
        page.close()


@pytest.mark.parametrize("width", [375, 1000])
def test_a_post_with_a_table_and_a_wide_image_fits_a_phone(
    start_server, cli: Cli, smtp_sink: SmtpSink, chromium, width: int
) -> None:
    """Fixture posts of our own: a table and a 1200 px image, in the email and on the web."""
    server = start_server()
    project = server.settings.directory
    shutil.rmtree(project / "posts")
    shutil.copytree(Path(__file__).resolve().parent / "fixtures" / "blog", project / "posts")
    cli("subscribers", "add", READER, "--name", "A Reader")
    cli("send", "rich-post", "--yes")
    (received,) = smtp_sink.received
    email_html = received.message.get_body(("html",)).get_content()

    page = chromium.new_page(viewport={"width": width, "height": 900})
    try:
        page.set_content(email_html)
        page.wait_for_load_state("load")  # the image comes from the live server
        for where in ("email", "web"):
            if where == "web":
                page.goto(f"{server.url}/posts/rich-post")
            image = page.evaluate(
                "(() => { const i = document.querySelector('img[alt^=\"A wide chart\"]');"
                " return [i.naturalWidth, i.getBoundingClientRect().width,"
                " document.querySelector('table').getBoundingClientRect().right]; })()"
            )
            natural, shown, table_right = image
            assert natural == 1200, where  # it loaded, from the URL `serve` answers
            assert shown <= width, where
            assert table_right <= width, where
            assert page.evaluate("document.documentElement.scrollWidth") <= width, where
    finally:
        page.close()


def test_a_reader_changes_topics_and_frequency_in_the_browser(
    live_server: LiveServer, cli: Cli, smtp_sink: SmtpSink, db: Database, chromium
) -> None:
    """From the Manage link of a received email, without any script of ours on the page."""
    (live_server.settings.directory / "topics.toml").write_text(
        '[inspections]\ntitle = "Inspections"\n\n[practice]\ntitle = "Practice"\n'
        'description = "How the work is done."\n'
    )
    cli("subscribers", "add", READER, "--name", "A Reader")
    cli("send", "--yes")
    (received,) = smtp_sink.received
    html = received.message.get_body(("html",)).get_content()
    found = re.search(r'href="(http://127\.0\.0\.1:\d+/preferences/[^"]+)"', html)
    assert found, html

    page = chromium.new_page(viewport={"width": 375, "height": 800})
    try:
        page.goto(found.group(1))
        assert page.title() == "Your subscription · Child Protection Notes"
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        practice = page.get_by_label("Practice")  # each control is named by its label
        assert practice.is_checked() and page.get_by_label("Inspections").is_checked()
        assert page.get_by_label("Every post, in its own email").is_checked()
        practice.uncheck()
        page.get_by_label("A weekly digest, on Sundays at 08:00 (UTC)").check()
        page.get_by_label("Take a break from the emails").select_option("none")
        page.get_by_role("button", name="Save my choices").click()
        page.wait_for_load_state()
        assert page.locator("h1").inner_text() == "Your choices are saved"
        assert "Posts on Inspections, and posts for every reader." in page.content()
    finally:
        page.close()
    reader = store.get_subscriber(db, READER)
    assert reader is not None
    assert (reader.status, reader.frequency, reader.paused_until) == ("active", "digest", None)
    assert reader_topics(db, reader.id) == ("inspections",)


def test_every_reader_page_passes_axe(
    live_server: LiveServer, cli: Cli, smtp_sink: SmtpSink, db: Database, chromium
) -> None:
    """axe-core (the engine behind Lighthouse's accessibility audit) on each page a reader
    meets, the preferences page with topics included: no violation at all."""
    from axe_playwright_python.sync_playwright import Axe

    (live_server.settings.directory / "topics.toml").write_text(
        '[inspections]\ntitle = "Inspections"\n\n[practice]\ntitle = "Practice"\n'
    )
    slugs = send_every_post(cli, live_server.settings.directory)
    tokens = reader_tokens(live_server.settings, db)
    reader = store.get_subscriber(db, READER)
    assert reader is not None
    pending = store.add_subscriber(db, "pending@example.org", status="pending")
    paths = [
        "/",
        "/posts/",
        f"/posts/{slugs[0]}",
        f"/preferences/{tokens.unsubscribe(reader.public_id)}",
        f"/unsubscribe/{tokens.unsubscribe(reader.public_id)}",
        f"/confirm/{tokens.confirm(pending.public_id)}",
        "/no-such-page",
    ]
    axe = Axe()
    page = chromium.new_page(viewport={"width": 375, "height": 800})
    try:
        found = {}
        for path in paths:
            page.goto(live_server.url + path)
            violations = axe.run(page).response["violations"]
            found[path] = [(v["id"], v["impact"], len(v["nodes"])) for v in violations]
        emails = [r.message.get_body(("html",)).get_content() for r in smtp_sink.received]
        page.set_content(emails[0])
        # An email is shown inside the mail client's own page, which has the landmarks: the
        # two page-landmark rules do not apply to it; every other rule does.
        page_only = {
            "rules": {"landmark-one-main": {"enabled": False}, "region": {"enabled": False}}
        }
        found["the email"] = [
            (v["id"], v["impact"], len(v["nodes"]))
            for v in axe.run(page, options=page_only).response["violations"]
        ]
    finally:
        page.close()
    assert found == {path: [] for path in found}
