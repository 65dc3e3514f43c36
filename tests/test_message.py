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
