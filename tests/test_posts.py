import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from newsletter.errors import PostError
from newsletter.posts import (
    find_post,
    load_posts,
    local_images,
    missing_images,
    read_post,
    read_posts,
)

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


# --- drafts, schedules, zones ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "published_at"),
    [
        ("2026-12-01 08:00 +00:00", dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)),
        ("2026-12-01T08:00:00Z", dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)),
        ("2026-12-01 08:00:00 +01:00", dt.datetime(2026, 12, 1, 7, 0, tzinfo=dt.UTC)),
        ("2026-07-01 08:00 Europe/Paris", dt.datetime(2026, 7, 1, 6, 0, tzinfo=dt.UTC)),
        ("2026-07-01 08:00", dt.datetime(2026, 7, 1, 7, 0, tzinfo=dt.UTC)),  # in London
        ("2026-07-01", dt.datetime(2026, 6, 30, 23, 0, tzinfo=dt.UTC)),  # midnight in London
    ],
)
def test_a_date_may_carry_a_time_and_zone_and_a_bare_one_is_local_midnight(
    tmp_path: Path, written: str, published_at: dt.datetime
) -> None:
    path = write(tmp_path, "x.md", f"---\ntitle: Hi\ndate: {written}\n---\nBody\n")
    post = read_post(path, ZoneInfo("Europe/London"))
    assert post.published_at == published_at
    assert post.published_at.tzinfo == dt.UTC


def test_a_bare_date_is_midnight_utc_by_default(tmp_path: Path) -> None:
    post = read_post(write(tmp_path, "x.md", "---\ntitle: Hi\ndate: 2026-07-01\n---\n"))
    assert post.published_at == dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
    assert post.date == dt.date(2026, 7, 1)


def test_drafts_and_scheduled_posts_are_not_due(tmp_path: Path) -> None:
    write(tmp_path, "a.md", "---\ntitle: A\ndate: 2020-01-01\n---\n")
    write(tmp_path, "b.md", "---\ntitle: B\ndate: 2021-01-01\ndraft: true\n---\n")
    write(tmp_path, "c.md", "---\ntitle: C\ndate: 2030-01-01 08:00 +00:00\n---\n")
    found = read_posts(tmp_path)
    now = dt.datetime(2029, 1, 1, tzinfo=dt.UTC)
    assert [p.slug for p in found.due(now)] == ["a"]
    assert [p.state(now) for p in found.posts] == ["scheduled", "draft", "due"]
    later = dt.datetime(2030, 1, 1, 8, 0, tzinfo=dt.UTC)
    assert [p.slug for p in found.due(later)] == ["c", "a"]


def test_unknown_front_matter_is_kept_and_is_no_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.md",
        "---\ntitle: Hi\ndate: 2020-01-01\nlink: https://example.org/x\nfeed_id: 7\n"
        "author: Sam\n---\n",
    )
    post = read_post(path)
    assert post.meta["link"] == "https://example.org/x" and post.meta["feed_id"] == 7
    assert post.author == "Sam"


@pytest.mark.parametrize(
    ("front", "message"),
    [
        ("date: 2020-01-01\ndraft: maybe", "bad.md: draft must be true or false, not 'maybe'"),
        (
            "date: 2026-12-01 08:00 Mars/Olympus",
            "bad.md: date '2026-12-01 08:00 Mars/Olympus': 'Mars/Olympus' is not a time zone",
        ),
        ("date: 2020-01-01\nauthor: [1, 2]", "bad.md: author must be one line of text"),
    ],
)
def test_bad_draft_zone_or_author_name_the_file(tmp_path: Path, front: str, message: str) -> None:
    write(tmp_path, "bad.md", f"---\ntitle: Hi\n{front}\n---\n")
    (broken,) = read_posts(tmp_path).broken
    assert broken.error.startswith(message)


def test_one_broken_file_leaves_the_others_readable(tmp_path: Path) -> None:
    write(tmp_path, "good.md", "---\ntitle: Good\ndate: 2020-01-01\n---\nText\n")
    write(tmp_path, "bad.md", "---\ntitle: [\n---\n")
    write(tmp_path, "twin.md", "---\ntitle: Twin\ndate: 2020-01-02\nslug: good\n---\n")
    found = read_posts(tmp_path)
    assert [p.slug for p in found.posts] == ["good"]
    assert [b.path.name for b in found.broken] == ["bad.md", "twin.md"]
    assert found.broken[1].error == "twin.md and good.md have the same slug 'good'"
    assert found.find("good").title == "Good"
    with pytest.raises(PostError, match=r"^bad\.md: broken front matter"):
        found.find("bad")


def test_local_images_are_found_beside_the_post(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.md",
        "---\ntitle: Hi\ndate: 2020-01-01\n---\n![a](x/a%20b.png) ![b](https://cdn.example.org/b.png)"
        " ![c](/posts/x/c.png) ![d](/elsewhere/d.png)\n",
    )
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a b.png").write_bytes(b"png")
    post = read_post(path)
    assert [(i.source, i.url_path, i.file) for i in local_images(post)] == [
        ("x/a%20b.png", "/posts/x/a%20b.png", tmp_path / "x" / "a b.png"),
        ("/posts/x/c.png", "/posts/x/c.png", tmp_path / "x" / "c.png"),
    ]
    assert [(i.source, problem) for i, problem in missing_images(post)] == [
        ("/posts/x/c.png", f"no file {tmp_path.name}/x/c.png")
    ]


def test_the_real_posts_all_load() -> None:
    """Whatever the author has in posts/ must parse: a broken post would stop `send`."""
    assert load_posts(REPO_POSTS)
