"""What VERP costs a send: messages built per second with and without NEWSLETTER_BOUNCE_ADDRESS.

Run by hand: `.venv/bin/python bench/bench_verp.py [--messages N]`. Builds N personal messages of
a real post (tokens, Return-Path, List-Unsubscribe with mailto, bodies) in this process, as the
sender does per reader, once without and once with the bounce address, and prints the ratio.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter.config import load_settings  # noqa: E402
from newsletter.message import IssueMessages  # noqa: E402
from newsletter.posts import load_posts  # noqa: E402
from newsletter.sender import prepare_issue  # noqa: E402
from newsletter.tokens import ReaderTokens  # noqa: E402
from newsletter.verp import Verp  # noqa: E402


def build_rate(messages: IssueMessages, tokens: ReaderTokens, count: int) -> float:
    ids = [secrets.token_hex(8) for _ in range(count)]
    slug = messages.issue.slug
    started = time.perf_counter()
    for i, public_id in enumerate(ids):
        messages.for_reader(
            public_id, f"reader{i}@example.org", "Reader", tokens.unsubscribe(public_id, slug)
        )
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    count = parser.parse_args().messages
    root = Path(tempfile.mkdtemp(prefix="newsletter-bench-verp-"))
    try:
        shutil.copytree(REPO / "posts", root / "posts")
        shutil.copytree(REPO / "templates", root / "templates")
        environ = {"NEWSLETTER_FROM": "Jane <jane@example.org>"}
        settings = load_settings(root, environ=environ)
        issue = prepare_issue(settings, load_posts(settings.posts_dir)[0])
        tokens = ReaderTokens(["k" * 43])
        verp = Verp("bounces@news.example.org", tokens)
        plain = with_verp = 0.0
        for _ in range(3):  # interleaved, best of three: the machine's other load varies
            plain = max(plain, build_rate(IssueMessages(issue, settings), tokens, count))
            with_verp = max(
                with_verp, build_rate(IssueMessages(issue, settings, verp=verp), tokens, count)
            )
        print(f"{count} messages of {issue.slug!r}")
        print(f"  without a bounce address: {plain:,.0f} messages/s (baseline)")
        print(f"  with VERP and mailto:     {with_verp:,.0f} messages/s ({with_verp / plain:.2f}x)")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
