"""The MIME bytes built per reader: correct, personal, and cheap to make."""

import email
import email.policy
import quopri

import pytest

from newsletter.config import Settings
from newsletter.message import IssueMessages, list_id, message_id
from newsletter.posts import load_posts
from newsletter.render import render_issue, template_environment


def unix(text: str) -> str:
    return text.replace("\r\n", "\n").rstrip("\n")


@pytest.fixture
def messages(settings: Settings) -> list[IssueMessages]:
    env = template_environment(settings.templates_dir)
    return [
        IssueMessages(render_issue(p, settings, env), settings)
        for p in load_posts(settings.posts_dir)
    ]


def test_parts_decode_to_exactly_the_rendered_text(messages: list[IssueMessages]) -> None:
    for built in messages:
        issue = built.issue
        name, address, token = "Zoë O'Brien & Co", "zoe@example.org", "TOK-en_1.2"
        envelope = built.for_reader(42, address, name, token)
        parsed = email.message_from_bytes(envelope.data, policy=email.policy.default)
        text_part, html_part = parsed.get_payload()
        assert text_part["Content-Transfer-Encoding"] == "quoted-printable"
        assert unix(text_part.get_content()) == unix(issue.text_for(name, address, token))
        assert unix(html_part.get_content()) == unix(issue.html_for(name, address, token))
        assert "Zoë O&#x27;Brien &amp; Co" not in text_part.get_content()


def test_lines_stay_within_the_limits(messages: list[IssueMessages]) -> None:
    data = messages[0].for_reader(1, "a@example.org", "A " * 60, "t" * 40).data
    head, body = data.split(b"\r\n\r\n", 1)
    assert max(len(line) for line in body.split(b"\r\n")) <= 76  # quoted-printable's limit
    assert max(len(line) for line in head.split(b"\r\n")) <= 998
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert data.isascii()


def test_headers(messages: list[IssueMessages], settings: Settings) -> None:
    envelope = messages[0].for_reader(7, "ann@example.org", "Ann Åberg", "TOKEN")
    parsed = email.message_from_bytes(envelope.data, policy=email.policy.default)
    assert envelope.message_id == message_id(messages[0].issue.slug, 7, "example.org")
    assert parsed["Message-ID"] == envelope.message_id
    assert parsed["List-Id"] == list_id(settings)
    assert parsed["List-Unsubscribe"] == "<https://news.example.org/unsubscribe/TOKEN>"
    assert str(parsed["To"]) == "Ann Åberg <ann@example.org>"
    assert parsed["Subject"] == messages[0].issue.subject
    assert (envelope.sender, envelope.recipient) == ("jane@example.org", "ann@example.org")


def test_message_id_depends_on_post_and_reader_only() -> None:
    assert message_id("a", 1, "example.org") == message_id("a", 1, "example.org")
    assert (
        len({message_id("a", 1, "x.org"), message_id("a", 2, "x.org"), message_id("b", 1, "x.org")})
        == 3
    )


def test_quoted_printable_of_the_whole_body_matches(messages: list[IssueMessages]) -> None:
    """Encoding line by line must give bytes that decode like encoding the whole body at once."""
    built = messages[0]
    html = built.issue.html_for("N", "n@example.org", "T")
    encoded = built._html.encode(built.issue.html_values("N", "n@example.org", "T"))
    assert unix(quopri.decodestring(encoded).decode("utf-8")) == unix(html)


def test_with_a_bounce_address_the_return_path_and_mailto_name_reader_and_post(
    settings: Settings,
) -> None:
    from newsletter.tokens import ReaderTokens
    from newsletter.verp import Verp

    tokens = ReaderTokens(["key"])
    verp = Verp("bounces@news.example.org", tokens)
    [post, *_] = load_posts(settings.posts_dir)
    issue = render_issue(post, settings, template_environment(settings.templates_dir))
    built = IssueMessages(issue, settings, verp=verp)
    envelope = built.for_reader("0a1b2c3d4e5f6789", "ann@example.org", "Ann", "TOKEN")
    local, domain = envelope.sender.split("@")
    assert domain == "news.example.org" and local.startswith("bounces+")
    assert len(local) <= 64 and local == local.lower()
    found = verp.read(envelope.sender.upper())  # a server that folds case keeps it valid
    assert found is not None and found.kind == "bounce" and found.reader is not None
    assert found.reader.public_id == "0a1b2c3d4e5f6789"
    parsed = email.message_from_bytes(envelope.data, policy=email.policy.default)
    https, mailto = (part.strip() for part in parsed["List-Unsubscribe"].split(","))
    assert https == "<https://news.example.org/unsubscribe/TOKEN>"
    unsubscribe = verp.read(mailto.removeprefix("<mailto:").rstrip(">"))
    assert unsubscribe is not None and unsubscribe.kind == "unsubscribe"
    assert len(mailto.removeprefix("<mailto:").split("@")[0]) <= 64
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "0a1b2c3d4e5f6789" in parsed["Message-ID"]  # per post and reader, public id only
    # A test copy names no reader: the plain bounce address.
    assert built.for_test("me@example.org", "", "TOKEN").sender == "bounces@news.example.org"
    # Without a bounce address, as before: From is the envelope sender, the https link alone.
    plain = IssueMessages(issue, settings).for_reader("0a1b2c3d4e5f6789", "a@example.org", "", "T")
    assert plain.sender == "jane@example.org"
    assert b"mailto:" not in plain.data
