import re

import pytest

from newsletter.config import Settings
from newsletter.errors import TemplateError
from newsletter.posts import find_post
from newsletter.render import (
    PLACEHOLDERS,
    markdown_to_text,
    render_issue,
    template_environment,
)


def render(settings: Settings, slug: str | None = None):
    post = find_post(settings.posts_dir, slug)
    return render_issue(post, settings, template_environment(settings.templates_dir))


def test_html_is_inlined_and_only_media_queries_stay_in_style(settings: Settings) -> None:
    html = render(settings).html_for("Ann", "ann@example.org", "TOKEN123")
    styles = re.findall(r"<style[^>]*>(.*?)</style>", html, re.S)
    assert styles, "the @media rules must stay in a <style> block"
    for block in styles:
        without_media = re.sub(r"@media[^{]*\{(?:[^{}]*\{[^{}]*\})*[^{}]*\}", "", block)
        assert without_media.strip() == "", without_media
    assert "prefers-color-scheme: dark" in html
    assert "!important" in html  # kept, so the dark-mode overrides beat the inlined colours
    assert 'class="content"' in html and re.search(
        r"<td class=\"content\" style='[^']*font-size:18px", html
    )
    assert "max-width:600px" in html.replace(" ", "")


def test_personal_parts_are_filled_per_reader_and_escaped(settings: Settings) -> None:
    issue = render(settings)
    html = issue.html_for("Ann <b>", "ann@example.org", "TOKEN123")
    assert "https://news.example.org/unsubscribe/TOKEN123" in html
    assert "ann@example.org" in html
    assert not any(p in html for p in PLACEHOLDERS.values())
    text = issue.text_for("Ann", "ann@example.org", "TOKEN123")
    assert (
        "To unsubscribe, open this link and press the button: https://news.example.org/unsubscribe/TOKEN123"
        in text
    )
    assert "https://news.example.org/posts/ofsted-joint-inspections" in text
    other = issue.html_for("Bob", "bob@example.org", "OTHER")
    assert "TOKEN123" not in other and "/unsubscribe/OTHER" in other


def test_footer_has_name_postal_address_and_links(settings: Settings) -> None:
    html = render(settings).html_for("", "a@example.org", "T")
    assert "Child Protection Notes, 1 High Street, Leeds LS1 1AA, UK" in html
    assert 'href="https://news.example.org/posts/ofsted-joint-inspections"' in html
    assert 'class="preheader"' in html


def test_plain_text_reads_like_an_email() -> None:
    text = markdown_to_text(
        "# Big news\n\nA paragraph with a [link](https://example.org/x) and *emphasis*.\n\n"
        "## Smaller\n\n- one\n- two\n\n4\\) kept as written\n\n> quoted words\n"
    )
    assert "Big news\n========" in text
    assert "Smaller\n-------" in text
    assert "a link (https://example.org/x) and _emphasis_." in text
    assert "- one\n- two" in text
    assert "4) kept as written" in text
    assert "> quoted words" in text
    assert "<a" not in text and "*emphasis*" not in text


def test_long_paragraphs_are_wrapped_but_urls_are_not_broken() -> None:
    url = "https://example.org/" + "a" * 90
    text = markdown_to_text("word " * 40 + f"[x]({url})")
    assert all(len(line) <= 72 for line in text.splitlines() if url not in line)
    assert url in text


def test_template_syntax_error_names_template_and_line(settings: Settings) -> None:
    path = settings.templates_dir / "email.html"
    lines = path.read_text().splitlines()
    lines[4] = "{% if %}"
    path.write_text("\n".join(lines))
    with pytest.raises(TemplateError) as error:
        render(settings)
    assert str(error.value).startswith(f"{path}, line 5:")


def test_undefined_variable_names_template_and_line(settings: Settings) -> None:
    path = settings.templates_dir / "email.txt"
    path.write_text("line one\n{{ post.title }}\n{{ no_such_thing }}\n")
    with pytest.raises(TemplateError) as error:
        render(settings)
    assert str(error.value) == f"{path}, line 3: 'no_such_thing' is undefined"


def test_missing_template_is_named(settings: Settings) -> None:
    (settings.templates_dir / "email.txt").unlink()
    with pytest.raises(TemplateError, match=r"template email\.txt is missing"):
        render(settings)


def test_the_authors_numbered_wish_is_not_turned_into_a_list(settings: Settings) -> None:
    issue = render(settings, "four-not-three")
    assert "<ol" not in issue.html_for("", "a@example.org", "T")
    assert "4) Create a culture" in issue.text_for("", "a@example.org", "T")


def test_text_part_has_no_html(settings: Settings) -> None:
    text = render(settings).text_for("Ann & Bob", "a@example.org", "T")
    assert "&amp;" not in text and "<p>" not in text and "&rsquo;" not in text
    assert "children’s services" in text  # typographic apostrophe (NEWSLETTER_TYPOGRAPHER)


def test_css_premailer_cannot_parse_names_the_file_and_line(settings: Settings) -> None:
    path = settings.templates_dir / "email.css"
    lines = path.read_text().splitlines()
    lines.insert(3, ".broken color: red; }")
    path.write_text("\n".join(lines))
    with pytest.raises(TemplateError) as error:
        render(settings)
    assert str(error.value).startswith(f"{path}, line 4: premailer cannot parse this CSS: ")
    assert "\n" not in str(error.value)


def test_post_headings_are_smaller_than_the_title_and_images_have_no_invalid_size(
    settings: Settings,
) -> None:
    post = settings.posts_dir / "zz-headings.md"
    post.write_text(
        "---\ntitle: Headings\ndate: 2030-01-01\n---\n# One\n\n## Two\n\n### Three\n\n"
        "![wide](https://cdn.example.org/wide.png)\n"
    )
    html = render(settings, "zz-headings").html_for("", "a@example.org", "T")
    sizes = {
        tag: int(re.search(rf"<{tag}[^>]*font-size:(\d+)px", html).group(1))
        for tag in ('h1 class="title"', "h1 style", "h2", "h3")
    }
    assert sizes['h1 class="title"'] > sizes["h1 style"] > sizes["h2"] > sizes["h3"]
    image = re.search(r"<img [^>]*>", html).group(0)
    assert "max-width:100%" in image and "height:auto" in image
    assert " height=" not in image and " width=" not in image


def test_typography_follows_the_setting(project, settings: Settings) -> None:
    from newsletter.config import load_settings

    assert "children’s services" in render(settings).text_for("", "a@example.org", "T")
    plain = load_settings(project, environ={"NEWSLETTER_TYPOGRAPHER": "false"})
    assert "children's services" in render(plain).text_for("", "a@example.org", "T")
