"""DKIM signing in processes of its own, ahead of the connections.

An RSA-2048 signature is a quarter of a millisecond of CPU, as much as all the rest of a
delivery, and Python's interpreter lock lets one process use one core. So a signed send keeps
its connections, its send log and its bookkeeping in one process, exactly as an unsigned send
does, and hands the signing to a process on each other core: readers go to them in batches, a
few batches ahead of the connections, and come back with their unsubscribe token and the
DKIM-Signature header of their message (`IssueMessages.signature_for_reader`, which builds the
same bytes the sending process then builds and sends). When nothing signed is ready, a
connection signs its next message itself: no core waits while another has work.

Nothing here touches the send log: a reader signed but not sent (the run was stopped or
killed) is still pending, and the next run signs them again.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from . import db as store
from .message import IssueMessages
from .tokens import ReaderTokens

BATCH = 32  # readers per round trip: the pipe's cost spread thin, and little signed for nothing
IN_FLIGHT = 2  # batches out per signing process, so it never waits for the next one
_Request = list[tuple[str, str, str]]
_Reply = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Prepared:
    """A reader ready to send: the unsubscribe token, and the signature if made ahead."""

    recipient: store.Recipient
    token: str
    signature: bytes | None = None


class SigningPool:
    """Processes that make the tokens and DKIM signatures of a send's readers."""

    def __init__(self, messages: IssueMessages, tokens: ReaderTokens, processes: int) -> None:
        # spawn: fork is unsafe beside threads (a progress bar's, SQLite's).
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes: list[Any] = []
        try:
            self._start(ctx, messages, tokens, processes)
        except BaseException:
            self.close()
            raise

    def _start(self, ctx: Any, messages: IssueMessages, tokens: ReaderTokens, count: int) -> None:
        for number in range(count):
            ours, theirs = ctx.Pipe()
            process = ctx.Process(
                target=_sign_batches,
                args=(theirs, messages, tokens),
                name=f"newsletter-sign-{number}",
                daemon=True,
            )
            self.pipes.append(ours)
            try:
                with _sigint_ignored():
                    process.start()
            finally:
                theirs.close()  # ours alone: its death reads as EOF here
            self.processes.append(process)

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in self.pipes:
            pipe.close()

    def ahead(
        self,
        take: Callable[[int], list[store.Recipient]],
        prepare_here: Callable[[], Prepared | None],
        stopped: Callable[[], bool],
        halt: Callable[[str], None],
    ) -> Callable[[], Prepared | None]:
        """Feed the processes readers from `take`, a few batches ahead; return what the
        connections call for their next reader (None: no more, or the run was stopped).

        When nothing signed is ready (the processes are starting, half a second, or behind),
        a connection takes its next reader through `prepare_here` and signs it itself
        rather than wait. If a process fails, `halt` stops the run: the readers it had stay
        pending for the next one.
        """
        ready: queue.Queue[Prepared | None] = queue.Queue(maxsize=BATCH * IN_FLIGHT * 4)
        feeding = [len(self.pipes)]
        lock = threading.Lock()
        taken_all = threading.Event()

        def put(item: Prepared | None) -> bool:
            while not stopped():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def feed(pipe: Connection) -> None:
            out: collections.deque[list[store.Recipient]] = collections.deque()
            try:
                while True:
                    while len(out) < IN_FLIGHT and not stopped():
                        batch = take(BATCH)
                        if not batch:
                            break
                        request: _Request = [(r.public_id, r.email, r.name) for r in batch]
                        pipe.send(request)
                        out.append(batch)
                    if not out:
                        return
                    reply: _Reply | str = pipe.recv()
                    if isinstance(reply, str):
                        halt(f"signing failed: {reply}")
                        return
                    for recipient, (token, signature) in zip(out.popleft(), reply, strict=True):
                        if not put(Prepared(recipient, token, signature)):
                            return
            except (EOFError, OSError):
                halt("a signing process ended unexpectedly; run `newsletter send` again")
            except Exception as e:  # the send log's reader failed, say: stop, and say why
                halt(f"unexpected error: {type(e).__name__}: {e}")
            finally:
                with lock:
                    feeding[0] -= 1
                    last = feeding[0] == 0
                if last:
                    put(None)

        for number, pipe in enumerate(self.pipes):
            threading.Thread(
                target=feed, args=(pipe,), name=f"sign-feed-{number}", daemon=True
            ).start()

        def next_prepared() -> Prepared | None:
            while not stopped():
                try:
                    item = ready.get_nowait()
                except queue.Empty:
                    if not taken_all.is_set():
                        here = prepare_here()
                        if here is not None:
                            return here
                        taken_all.set()  # all taken: what is left comes from the processes
                    try:
                        item = ready.get(timeout=0.1)
                    except queue.Empty:
                        continue
                if item is None:  # the end: leave it there for the other connections
                    ready.put(None)
                return item
            return None

        return next_prepared


@contextlib.contextmanager
def signing_pool(
    messages: IssueMessages, tokens: ReaderTokens, processes: int
) -> Iterator[SigningPool | None]:
    """`processes` signing processes for the length of a send (none: None), started now so
    that they start up while the send connects and watches its first deliveries."""
    pool = None
    if processes:
        try:
            pool = SigningPool(messages, tokens, processes)
        except OSError:  # no room for another process: the connections sign their own
            pool = None
    try:
        yield pool
    finally:
        if pool is not None:
            pool.close()


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ctrl-C ignored while a signing process is started: it inherits that through exec and
    keeps it while it imports (half a second), where a KeyboardInterrupt would kill it with a
    traceback. Ctrl-C is the sending process's to act on; it misses only this moment's."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; a send started elsewhere
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


def _sign_batches(pipe: Connection, messages: IssueMessages, tokens: ReaderTokens) -> None:
    """A signing process: batches of readers in, their tokens and signatures out (or one
    line saying what went wrong)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sending process's to decide
    slug = messages.issue.slug
    try:
        while (batch := pipe.recv()) is not None:
            try:
                replies: _Reply = []
                for public_id, email, name in batch:
                    token = tokens.unsubscribe(public_id, slug)
                    signature = messages.signature_for_reader(public_id, email, name, token)
                    replies.append((token, signature))
            except Exception as e:  # one line for the send's summary
                pipe.send(" ".join(f"{type(e).__name__}: {e}".split()))
                return
            pipe.send(replies)
    except (EOFError, OSError):
        pass  # the sending process is gone
