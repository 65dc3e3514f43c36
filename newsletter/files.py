"""Files and folders that only their owner may read: the database, the outbox, exports, .env.

The database holds the signing key and everyone's personal data, so what the tool writes is
created owner-only from the first byte: mode 0600 (folders 0700) given to open(2) and mkdir(2)
and set again with fchmod, since a umask can only take permissions away. An existing file is
never replaced through a symlink planted in its place (O_NOFOLLOW).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
# Group or others may do something with it: what `doctor` warns about.
SHARED_BITS = 0o077


def create_private_file(path: Path) -> bool:
    """Make `path` an empty owner-only file if it does not exist; True if it was made now.

    SQLite creates a database's -wal and -shm files with the mode of the database file, so
    making the (empty, hence valid) database file first makes all three owner-only.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    return True


@contextlib.contextmanager
def open_private(
    path: Path, mode: Literal["w", "wb"] = "w", *, encoding: str | None = "utf-8"
) -> Iterator[IO[Any]]:
    """Open `path` for writing, truncated, owner-only (an existing file is made so too).

    For exports, .env and anything else the tool writes that holds personal data or secrets.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    if "b" in mode:
        with os.fdopen(fd, "wb") as binary:
            yield binary
    else:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as text:
            yield text


def make_private_dir(path: Path) -> None:
    """Create `path` (and missing parents) owner-only; an existing folder of ours is made so too."""
    for folder in [*reversed(path.parents), path]:  # mkdir(parents=True) ignores the mode
        if not folder.exists():
            folder.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
            os.chmod(folder, PRIVATE_DIR_MODE)  # whatever the umask
    info = path.stat()
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & SHARED_BITS:
        path.chmod(stat.S_IMODE(info.st_mode) & ~SHARED_BITS)


def make_private(path: Path) -> None:
    """Take group and other permissions off a file the tool has just written."""
    os.chmod(path, PRIVATE_FILE_MODE)


def shared_with_others(path: Path) -> bool:
    """True if group or others have any permission on `path` (following a symlink)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return False
    return bool(mode & SHARED_BITS)
