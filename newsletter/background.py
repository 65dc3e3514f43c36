"""Work done after the answer, off the request path: one thread takes jobs from a queue.

Starlette's BackgroundTask runs after the response but on the same connection, so the next
request on a kept-alive connection waits for it: the time it took (an email sent, or not for
a reader already on the list) showed in the next answer. Here every request only puts a job
in a queue, which costs the same whatever the job will do.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)
MAX_WAITING_JOBS = 1000

Job = tuple[Callable[..., None], tuple[Any, ...]]


class WorkQueue:
    """A bounded queue of jobs and the one daemon thread that runs them in order."""

    def __init__(self, name: str, max_waiting: int = MAX_WAITING_JOBS) -> None:
        self.name = name
        self._jobs: queue.Queue[Job] = queue.Queue(max_waiting)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, job: Callable[..., None], *args: Any) -> bool:
        """Queue `job(*args)`; False (and a log line) if the queue is full."""
        self._start()
        try:
            self._jobs.put_nowait((job, args))
        except queue.Full:
            logger.warning(
                "%s: %d jobs waiting; this one is dropped", self.name, self._jobs.qsize()
            )
            return False
        return True

    def drain(self, timeout: float | None = None) -> None:
        """Wait until every job queued so far has run (at shutdown, and in tests)."""
        if self._thread is None:
            return
        done = threading.Event()
        try:
            self._jobs.put((lambda: done.set(), ()), timeout=timeout)
        except queue.Full:
            return
        done.wait(timeout)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            job, args = self._jobs.get()
            try:
                job(*args)
            except Exception:  # one failed job must not stop the ones after it
                logger.exception("%s: a job failed", self.name)
