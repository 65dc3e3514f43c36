"""The weekly digest against a plain send, to the same list, in the same run (issue #23).

100,000 readers (by default) on Postfix's smtp-sink on loopback: first every reader gets one
post by itself (`send SLUG`), then the same readers, all on the digest, get the week's five
posts as one digest each (`digest`: queue, render each set of posts once, send), a third of
them reading one topic only, so the digest goes out as two sets of posts. Each run is made
twice in turn and the faster counts. Prints seconds (the command's own, from its summary line),
messages a second and peak memory of the process tree, and the digest's ratio to the send.

    .venv/bin/python bench/bench_digest.py                 # 100,000 readers
    .venv/bin/python bench/bench_digest.py --readers 20000
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_send import Lists, Measured, Sink, fresh_list, make_project, newsletter, table

POSTS = ("monday", "tuesday", "wednesday", "thursday", "friday")
TOPICS = '[inspections]\ntitle = "Inspections"\n\n[practice]\ntitle = "Practice"\n'
BODY = (
    "The opening paragraph of the post, a few lines long, as a digest quotes it.\n\n"
    + (
        "A paragraph of the rest of the post, which only the post's own email carries. " * 6
        + "\n\n"
    )
    * 8
)


def week_project(root: Path, port: int) -> Path:
    project = make_project(root, "digest", port, DIGEST_DAY=_today(), DIGEST_HOUR=0)
    shutil.rmtree(project / "posts")
    (project / "posts").mkdir()
    (project / "topics.toml").write_text(TOPICS)
    now = dt.datetime.now(dt.UTC)
    for age, slug in enumerate(reversed(POSTS)):
        when = (now - dt.timedelta(hours=2 + age)).strftime("%Y-%m-%d %H:%M +00:00")
        topic = "practice" if age % 2 else "inspections"
        (project / "posts" / f"{slug}.md").write_text(
            f"---\ntitle: The {slug} post\ndate: {when}\ntopics: [{topic}]\n---\n\n{BODY}"
        )
    return project


def _today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%A").lower()


def on_the_digest(path: Path) -> None:
    """Every reader on the digest; every third reads `practice` only."""
    conn = sqlite3.connect(path)
    conn.execute("UPDATE subscribers SET frequency = 'digest'")
    conn.execute(
        "INSERT INTO subscriber_topics (subscriber_id, topic)"
        " SELECT id, 'practice' FROM subscribers WHERE id % 3 = 0"
    )
    conn.execute("UPDATE subscribers SET topics_chosen = 1 WHERE id % 3 = 0")
    conn.commit()
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=100_000)
    readers = parser.parse_args().readers
    root = Path(tempfile.mkdtemp(prefix="newsletter-bench-digest-"))
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {readers:,} readers")
    lists = Lists(root)
    sink = Sink()
    best: dict[str, Measured] = {}
    try:
        project = week_project(root, sink.port)
        for _ in range(2):
            fresh_list(project, lists, readers)
            plain = newsletter(project, "send", POSTS[-1], "--yes")
            plain.label = f"send {POSTS[-1]}: one post to every reader"
            fresh_list(project, lists, readers)
            on_the_digest(project / "newsletter.db")
            digest = newsletter(project, "digest", "--yes")
            digest.label = "digest: the week's 5 posts, 2 sets of posts"
            for run in (plain, digest):
                if run.messages != readers:
                    raise SystemExit(f"{run.label}: sent {run.messages}:\n{run.output}")
                if run.label not in best or run.seconds < best[run.label].seconds:
                    best[run.label] = run
    finally:
        sink.stop()
        shutil.rmtree(root, ignore_errors=True)
    rows = list(best.values())
    table(rows, base=rows[0], note="(seconds: the command's own, queueing included)")
    time_ratio = rows[1].seconds / rows[0].seconds
    memory_ratio = rows[1].peak_mb / rows[0].peak_mb
    print(f"  digest / send: time {time_ratio:.2f}, peak memory {memory_ratio:.2f} (goal <= 2)")


if __name__ == "__main__":
    main()
