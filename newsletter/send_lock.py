"""One real send per database file at a time, however the file was named.

The lock is an flock(2) on a file beside the database's real path: symlinks, `..` and other
spellings of the directory all resolve to the one file, which is also where SQLite itself keeps
the -wal and -shm files (it follows symlinks to the database). The OS drops the lock when the
process dies, so a killed send never leaves a stale lock. The database file itself is not
flocked: SQLite's own POSIX locks on it would be released by closing a second descriptor.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import SendError
from .files import PRIVATE_FILE_MODE

LOCK_SUFFIX = "-send.lock"


def lock_path(db_path: Path) -> Path:
    """The lock file of the database that `db_path` reaches, whatever way it is spelled."""
    real = Path(os.path.realpath(db_path))
    return real.with_name(real.name + LOCK_SUFFIX)


@contextmanager
def send_lock(db_path: Path) -> Iterator[None]:
    """Hold the send lock of the database at `db_path`, or raise SendError if a send holds it."""
    path = lock_path(db_path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    except OSError as e:
        raise SendError(f"cannot create the send lock {path}: {e.strerror}") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SendError(
                "another `newsletter send` is running on this database; wait for it to finish"
            ) from None
        # Who holds it, for a person looking; the lock is the flock, not this text.
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
