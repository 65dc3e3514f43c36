import datetime as dt
from pathlib import Path

import pytest

from newsletter.errors import PostError
from newsletter.posts import find_post, load_posts, read_post

from .conftest import FIXTURE_POSTS

REPO_POSTS = Path(__file__).resolve().parent.parent / "posts"
SEED = Path(__file__).resolve().parent.parent.parent / "shared" / "seed" / "blog.txt"


def test_the_authors_five_posts_newest_first() -> None:
    posts = load_posts(FIXTURE_POSTS)
    assert [p.date for p in posts] == [
        dt.date(2015, 1, 20),
        dt.date(2015, 1, 13),
        dt.date(2015, 1, 7),
        dt.date(2015, 1, 5),
        dt.date(2015, 1, 1),
    ]
    assert (
        posts[0].title
        == "Joint inspections of child protection arrangements - are they beyond Ofsted?"
    )
    assert posts[2].title == "Apply the ‘airline pilot test’"
    assert posts[-1].slug == "four-not-three"  # the file name
    assert all(p.summary for p in posts)


@pytest.mark.skipif(not SEED.exists(), reason="the seed is beside the repository only")
def test_posts_keep_the_authors_words() -> None:
    """The real posts/ against the seed: every post from the seed's time keeps the author's
    words; posts the author adds later (dated after the seed's last) are theirs to write."""
    seed = " ".join(SEED.read_text(encoding="utf-8").split())
    fixtures = load_posts(FIXTURE_POSTS)
    last_seed_date = max(post.date for post in fixtures)
    real = [post for post in load_posts(REPO_POSTS) if post.date <= last_seed_date]
    for post in [*real, *fixtures]:
        body = " ".join(post.body.replace("4\\)", "4)").split())
        assert body in seed, post.slug
        assert post.title in seed


def write(directory: Path, name: str, text: str | bytes) -> Path:
    path = directory / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_slug_and_summary_from_front_matter(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.md",
        "---\ntitle: Hi\ndate: 2020-02-03\nslug: hello\nsummary: Short.\n---\nBody\n",
    )
    post = read_post(path)
    assert (post.slug, post.summary, post.date) == ("hello", "Short.", dt.date(2020, 2, 3))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("Just text, no front matter\n", "bad.md: no front matter"),
        ("---\ntitle: [unclosed\ndate: 2020-01-01\n---\nx", "bad.md: broken front matter"),
        ("---\ndate: 2020-01-01\n---\nx", "bad.md: front matter has no title"),
        ("---\ntitle: Hi\n---\nx", "bad.md: front matter has no date"),
        ("---\ntitle: Hi\ndate: someday\n---\nx", "bad.md: date 'someday' is not a date"),
        (
            "---\ntitle: Hi\ndate: 2020-13-45\n---\nx",
            "bad.md: the front matter holds an impossible date",
        ),
        ("---\ntitle: Hi\ndate: 2020-01-01\nslug: Not A Slug\n---\nx", "bad.md: slug 'Not A Slug'"),
        (b"---\ntitle: Caf\xe9\ndate: 2020-01-01\n---\n", "bad.md: not UTF-8 text"),
    ],
)
def test_broken_posts_name_the_file(tmp_path: Path, content: str | bytes, message: str) -> None:
    write(tmp_path, "bad.md", content)
    with pytest.raises(PostError) as error:
        load_posts(tmp_path)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_unknown_slug_lists_the_known_ones() -> None:
    with pytest.raises(PostError, match="no post with slug 'nope'; the posts are: ofsted-joint"):
        find_post(FIXTURE_POSTS, "nope")
    assert find_post(FIXTURE_POSTS).slug == "ofsted-joint-inspections"


def test_the_real_posts_all_load() -> None:
    """Whatever the author has in posts/ must parse: a broken post would stop `send`."""
    assert load_posts(REPO_POSTS)
