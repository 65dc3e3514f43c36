"""The newsletter's topics: what a reader may choose to read, and who a post goes to.

The author lists them in `topics.toml` in the newsletter directory, a table each, in the order
readers see them:

    [inspections]
    title = "Inspections"
    description = "Ofsted and joint inspections, and what they find."

A post names its topics in front matter (`topics: [inspections]`). A reader reads every topic
until they pick some; a post with no topics goes to every reader. No file: no topics, and every
post goes to everyone, as before.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, PostError
from .posts import TOPIC_PATTERN, Post

TOPICS_FILE = "topics.toml"


@dataclass(frozen=True)
class Topic:
    name: str  # as posts, links and `--topic` spell it
    title: str
    description: str = ""


def load_topics(directory: Path) -> tuple[Topic, ...]:
    """The topics in DIRECTORY/topics.toml, in the file's order; none without the file."""
    path = directory / TOPICS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{TOPICS_FILE}: cannot be read: {e}") from e
    try:
        tables = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{TOPICS_FILE}: {e}") from e
    topics = []
    for name, table in tables.items():
        if not TOPIC_PATTERN.match(name):
            raise ConfigError(
                f"{TOPICS_FILE}: {name!r} is not a topic name (lower-case letters, digits and "
                "hyphens, at most 40)"
            )
        if not isinstance(table, dict) or not isinstance(table.get("title"), str):
            raise ConfigError(f'{TOPICS_FILE}: [{name}] needs a title = "..."')
        description = table.get("description", "")
        if not isinstance(description, str):
            raise ConfigError(f"{TOPICS_FILE}: [{name}] description must be text")
        title = " ".join(table["title"].split())
        if not title:
            raise ConfigError(f'{TOPICS_FILE}: [{name}] needs a title = "..."')
        topics.append(Topic(name, title, " ".join(description.split())))
    return tuple(topics)


def check_topics(names: Sequence[str], topics: Sequence[Topic], where: str) -> None:
    """Refuse a topic the newsletter does not have, naming where it was written."""
    known = {topic.name for topic in topics}
    for name in names:
        if name not in known:
            listed = ", ".join(sorted(known)) or f"none ({TOPICS_FILE} lists them)"
            raise PostError(f"{where}: unknown topic {name!r}; the topics are: {listed}")


def audience_of(post: Post, topics: Sequence[Topic], chosen: Sequence[str] = ()) -> tuple[str, ...]:
    """The topics whose readers get `post`: `send --topic`, else its `audience:`, else its
    `topics:`; none means every reader. Each is checked against the newsletter's topics."""
    check_topics(post.topics, topics, post.path.name)
    check_topics(post.audience, topics, post.path.name)
    check_topics(chosen, topics, f"--topic for {post.path.name}")
    return tuple(chosen) or post.audience or post.topics
