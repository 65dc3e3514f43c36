"""Markdown as bloggers write it: footnotes, tables, strikethrough, bare URLs, typography, and
the plain text and preview line made from the same tokens."""

import pytest

from newsletter import markup


def test_footnotes_link_to_the_post_page_in_email_and_back_on_the_web() -> None:
    source = "Words[^a] and more[^b].\n\n[^a]: First note.\n[^b]: Second note.\n"
    email = markup.to_html(source, page_url="https://n.example.org/posts/x", for_email=True)
    assert '<a href="https://n.example.org/posts/x#fn1">[1]</a>' in email
    assert '<a href="https://n.example.org/posts/x#fn2">[2]</a>' in email
    assert "footnote-backref" not in email and 'id="fnref1"' not in email
    assert email.index("First note.") > email.index("and more")
    web = markup.to_html(source, page_url="/posts/x")
    assert '<a href="/posts/x#fn1" id="fnref1">[1]</a>' in web
    assert '<a href="#fnref1" class="footnote-backref">' in web
    text = markup.to_text(source)
    assert text.startswith("Words[1] and more[2].")
    assert text.endswith("[1] First note.\n\n[2] Second note.\n")


def test_relative_links_and_images_resolve_against_the_post_page() -> None:
    html = markup.to_html(
        "[about](/about) [next](other-post) ![p](x/p.png) [ext](https://e.org/) [m](mailto:a@b.c)",
        page_url="https://n.example.org/posts/x",
    )
    assert 'href="https://n.example.org/about"' in html
    assert 'href="https://n.example.org/posts/other-post"' in html
    assert 'src="https://n.example.org/posts/x/p.png"' in html
    assert 'href="https://e.org/"' in html and 'href="mailto:a@b.c"' in html


def test_bare_urls_become_links() -> None:
    html = markup.to_html("See https://example.org/a?b=1 today.")
    assert '<a href="https://example.org/a?b=1">https://example.org/a?b=1</a>' in html
    assert (
        markup.to_text("See https://example.org/a today.") == "See https://example.org/a today.\n"
    )


@pytest.mark.parametrize(
    ("typographer", "expected"),
    [(True, "“Quoted” – it’s here…"), (False, '"Quoted" -- it\'s here...')],
)
def test_typography_is_on_by_default_and_can_be_switched_off(
    typographer: bool, expected: str
) -> None:
    source = '"Quoted" -- it\'s here...'
    assert markup.to_text(source, typographer=typographer).strip() == expected


def test_a_table_lines_up_in_text_and_a_wide_one_becomes_records() -> None:
    narrow = markup.to_text("| Name | Count |\n|---|---:|\n| Ann | 3 |\n| Robert | 12 |\n")
    assert narrow == "Name   | Count\n-------+------\nAnn    |     3\nRobert |    12\n"
    wide = markup.to_text(
        "| Question | Answer |\n|---|---|\n| " + "why " * 15 + "| " + "because " * 8 + "|\n"
    )
    assert wide.startswith("Question: why why")
    assert "\nAnswer: because because" in wide
    assert all(len(line) <= markup.TEXT_WIDTH for line in wide.splitlines())


def test_strikethrough_stays_visible_in_text_and_out_of_the_preview_line() -> None:
    assert markup.to_text("It was ~~red~~ blue.") == "It was ~~red~~ blue.\n"
    assert markup.preheader("It was ~~red~~ blue.") == "It was blue."


def test_the_preview_line_has_no_markdown_and_no_entities() -> None:
    source = (
        "# A heading\n\nTom &amp; Jerry &mdash; *both* of [them](https://e.org) `here`<b>!</b>"
        "[^1]\n\n| a | b |\n|---|---|\n| cell | cell |\n\n[^1]: note\n"
    )
    line = markup.preheader(source)
    assert line == "A heading Tom & Jerry — both of them here!"
    long = markup.preheader("word " * 100)
    assert len(long) <= markup.PREHEADER_LENGTH + 1 and long.endswith("word…")


def test_images_are_listed_as_written() -> None:
    assert markup.image_sources("![a](x/a.png) text ![b](https://e.org/b.png)") == [
        "x/a.png",
        "https://e.org/b.png",
    ]
    assert markup.is_local("x/a.png") and markup.is_local("/posts/x/a.png")
    assert not markup.is_local("https://e.org/b.png") and not markup.is_local("//e.org/b.png")
