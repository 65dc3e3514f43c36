"""A spam filter's verdict: every post, sent as a real signed message, scored by SpamAssassin.

Debian's `spamassassin` in local mode (`-L`: no network tests, so no DNS blocklists, no Razor)
and test mode (`-t`: the report is appended). Its home and user preferences are a temporary
folder, so a developer's own Bayes database or user_prefs cannot change the verdict.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from newsletter.posts import load_posts

from .conftest import FIXTURE_POSTS, REPO, Cli, SmtpSink, write_env

SPAMASSASSIN = shutil.which("spamassassin")
MAX_SCORE = 1.0
SLUGS = [post.slug for post in load_posts(FIXTURE_POSTS)]

pytestmark = [
    pytest.mark.skipif(SPAMASSASSIN is None, reason="spamassassin is not installed"),
    pytest.mark.slow,
]


@dataclass(frozen=True)
class Verdict:
    score: float
    rules: dict[str, float]  # rule name -> points
    report: str

    def describe(self) -> str:
        fired = ", ".join(f"{name} {points:+.1f}" for name, points in self.rules.items())
        return f"score {self.score:.1f} ({fired or 'no rules'})"


def spamassassin(data: bytes, home: Path) -> Verdict:
    """Score one message as received, from SpamAssassin's X-Spam-Status and its report."""
    home.mkdir(exist_ok=True)
    prefs = home / "user_prefs"
    prefs.touch()
    assert SPAMASSASSIN is not None
    completed = subprocess.run(
        [SPAMASSASSIN, "-L", "-t", "-p", str(prefs)],
        input=data,
        capture_output=True,
        timeout=300,
        env={**os.environ, "HOME": str(home)},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    scored = email.message_from_bytes(completed.stdout)
    # Folded: "tests=A,B,\n\tC autolearn=no": unfold, and join the list back up.
    status = re.sub(r",\s+", ",", " ".join(str(scored["X-Spam-Status"] or "").split()))
    score = re.search(r"\bscore=(-?\d+(?:\.\d+)?)", status)
    assert score, f"no X-Spam-Status score in SpamAssassin's output: {status!r}"
    listed = re.search(r"\btests=(\S*)", status)
    names = [n for n in (listed.group(1) if listed else "").split(",") if n]
    output = completed.stdout.decode("utf-8", "replace")
    report = output[output.index("Content analysis details") :]
    points = {
        m.group(2): float(m.group(1))
        for m in re.finditer(r"(?m)^\s*(-?\d+\.\d+)\s+([A-Z][A-Z0-9_]+)\s", report)
    }
    assert set(names) <= set(points), (names, report)
    return Verdict(float(score.group(1)), {name: points[name] for name in names}, report)


@pytest.fixture
def signed_project(smtp_project: Path, cli: Cli) -> Path:
    """The project sending over loopback SMTP, signing with a new DKIM key, with one reader."""
    cli("dkim", "generate", "--selector", "news", "--domain", "example.org")
    write_env(
        smtp_project, DKIM_KEY_FILE="dkim.key", DKIM_SELECTOR="news", DKIM_DOMAIN="example.org"
    )
    cli("subscribers", "add", "ann.archer@example.org", "--name", "Ann Archer")
    return smtp_project


@pytest.mark.parametrize("slug", SLUGS)
def test_every_post_scores_at_most_one_point(
    signed_project: Path, smtp_sink: SmtpSink, cli: Cli, tmp_path: Path, slug: str
) -> None:
    cli("send", slug, "--yes")
    (received,) = smtp_sink.received
    assert received.data.startswith(b"DKIM-Signature:")
    verdict = spamassassin(received.data, tmp_path / "sa-home")
    print(f"{slug}: {verdict.describe()}")
    assert "HTML_MESSAGE" in verdict.rules  # the HTML part was read, not skipped
    assert verdict.score <= MAX_SCORE, f"{slug}: {verdict.describe()}\n{verdict.report}"


def test_hidden_text_coloured_like_the_background_is_caught(
    signed_project: Path, smtp_sink: SmtpSink, cli: Cli, tmp_path: Path
) -> None:
    """The harness sees what the templates avoid: the old preheader, coloured as the page."""
    css = signed_project / "templates" / "email.css"
    old = css.read_text().replace(
        ".preheader { display: none;", ".preheader { color: #f4f4f0; display: none;"
    )
    assert old != css.read_text()
    css.write_text(old)
    cli("send", SLUGS[0], "--yes")
    (received,) = smtp_sink.received
    verdict = spamassassin(received.data, tmp_path / "sa-home")
    print(f"{SLUGS[0]} with the old preheader: {verdict.describe()}")
    assert verdict.rules.get("HTML_FONT_LOW_CONTRAST", 0) > 0


def test_a_post_with_a_table_footnotes_and_an_image_scores_at_most_one_point(
    signed_project: Path, smtp_sink: SmtpSink, cli: Cli, tmp_path: Path
) -> None:
    """The fixture post of tests/fixtures/blog: the new parts of the template, scored."""
    posts = signed_project / "posts"
    shutil.rmtree(posts)
    shutil.copytree(REPO / "tests" / "fixtures" / "blog", posts)
    cli("send", "rich-post", "--yes")
    (received,) = smtp_sink.received
    verdict = spamassassin(received.data, tmp_path / "sa-home")
    print(f"rich-post: {verdict.describe()}")
    assert "HTML_MESSAGE" in verdict.rules
    assert verdict.score <= MAX_SCORE, f"rich-post: {verdict.describe()}\n{verdict.report}"
