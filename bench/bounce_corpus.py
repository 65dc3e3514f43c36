"""How much of a bounce corpus nobody here wrote `newsletter bounces` reads: Mailman's own test
messages (flufl.bounce's tests/data, with the addresses its tests expect).

Run by hand, on a checkout of flufl.bounce kept outside this repository:
`.venv/bin/python bench/bounce_corpus.py /tmp/flufl.bounce`. A throw-away newsletter (outbox
transport, no network) adds every address the corpus expects, sends them a post, then reads each
message with the same code as `bounces --dry-run`: as found (to the plain bounce address), at
the first expected reader's VERP address, and at a forged plus address. Prints the figures.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from typer.testing import CliRunner  # noqa: E402

from newsletter import db as store  # noqa: E402
from newsletter.bounces import process_message  # noqa: E402
from newsletter.cli import app  # noqa: E402
from newsletter.config import load_settings  # noqa: E402
from newsletter.keys import reader_tokens  # noqa: E402
from newsletter.verp import Verp  # noqa: E402

SLUG = "ofsted-joint-inspections"
BOUNCES = "bounces@news.example.org"


def expectations(checkout: Path) -> dict[str, tuple[set[str], bool]]:
    """file -> (addresses, temporary) from flufl.bounce's own test table."""
    source = (checkout / "flufl/bounce/_detectors/tests/detectors.py").read_text()
    table = source.split("DATA = ", 1)[1]
    rows = ast.literal_eval(table[: table.index("\n    )") + 6])
    found: dict[str, tuple[set[str], bool]] = {}
    for row in rows:
        addresses = {a.decode().lower() for a in row[2]}
        if addresses:
            found[row[1]] = (addresses, len(row) > 3 and bool(row[3]))
    return found


def project(directory: Path) -> None:
    shutil.copytree(REPO / "tests/fixtures/posts", directory / "posts")
    shutil.copytree(REPO / "templates", directory / "templates")
    (directory / ".env").write_text(
        "NEWSLETTER_FROM='Jane Author <jane@example.org>'\nNEWSLETTER_TITLE=Notes\n"
        "NEWSLETTER_POSTAL_ADDRESS='1 High Street, Leeds'\n"
        f"NEWSLETTER_BASE_URL=https://news.example.org\nNEWSLETTER_BOUNCE_ADDRESS={BOUNCES}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a checkout of flufl.bounce")
    args = parser.parse_args()
    data = args.checkout / "flufl/bounce/tests/data"
    expected = expectations(args.checkout)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        project(directory)
        settings = load_settings(directory, environ={})
        db = store.open_db(settings.db_path)
        readers = sorted({a for addresses, _ in expected.values() for a in addresses})
        rows = (store.NewSubscriber(email=a, name="") for a in readers)
        store.insert_new_subscribers(db, rows, dry_run=False)
        db.close()
        result = CliRunner().invoke(app, ["-C", str(directory), "send", SLUG, "--yes"])
        assert result.exit_code == 0, result.output
        db = store.open_db(settings.db_path)
        verp = Verp(BOUNCES, reader_tokens(settings, db))
        public = {s.email.lower(): s.public_id for s in store.iter_subscribers(db)}
        figures = {"found": 0, "verp": 0, "temporary bounced": 0, "forged acted": 0}
        misses: list[str] = []
        notes: list[str] = []
        for name, (addresses, temporary) in sorted(expected.items()):
            raw = (data / name).read_bytes()
            found = process_message(settings, db, verp, name, raw, dry_run=True)
            acted = {r.email.lower(): r for r in found.readers}
            if addresses <= set(acted):
                figures["found"] += 1
                kept = [r for a, r in acted.items() if a in addresses and r.action != "bounced"]
                if not temporary and kept:
                    notes.append(f"permanent to Mailman, noted here: {name} {kept[0].status} "
                                 f"{kept[0].detail[:70]}")  # fmt: skip
            else:
                misses.append(f"as found: {name} named {sorted(acted)}, not {sorted(addresses)}")
            first = min(addresses)
            to = verp.return_path(public[first], SLUG).encode()
            at = process_message(
                settings, db, verp, name, b"Delivered-To: " + to + b"\n" + raw, dry_run=True
            )
            if [(r.email.lower(), r.matched_by) for r in at.readers] == [(first, "token")]:
                figures["verp"] += 1
            else:
                misses.append(f"at VERP: {name} -> {at.action} ({at.detail})")
            bounced = [r for o in (found, at) for r in o.readers if r.action == "bounced"]
            if temporary and bounced:
                figures["temporary bounced"] += 1
                misses.append(f"temporary written off: {name}")
            forged = b"Delivered-To: bounces+" + public[first].encode() + b"@news.example.org\n"
            if process_message(settings, db, verp, name, forged + raw, dry_run=True).readers:
                figures["forged acted"] += 1
                misses.append(f"forged acted on: {name}")
        left = sorted(p.name for p in data.glob("*.txt") if p.name not in expected)
        for name in left:
            outcome = process_message(settings, db, verp, name, (data / name).read_bytes(),
                                      dry_run=True)  # fmt: skip
            print(f"no expectation: {name}: {outcome.action} {[r.email for r in outcome.readers]}")
        db.close()
    total = len(expected)
    temporary = sum(t for _, t in expected.values())
    print(f"{total} messages with expected readers ({temporary} temporary), {len(left)} without")
    print(f"read as found:     {figures['found']}/{total} ({100 * figures['found'] / total:.1f}%)")
    print(f"read at VERP:      {figures['verp']}/{total} ({100 * figures['verp'] / total:.1f}%)")
    print(f"temporary failures written off: {figures['temporary bounced']}")
    print(f"forged plus addresses acted on: {figures['forged acted']}")
    for line in misses + notes:
        print("  " + line)


if __name__ == "__main__":
    main()
