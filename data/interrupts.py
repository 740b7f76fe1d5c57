"""Signals around commits: `deferred_signals` (a critical section SIGINT/SIGTERM wait
for) and `StopOnSignal` (SIGINT and SIGTERM stop a command cleanly, once).

A commit of the episode store is two Lance commits plus the writer's own book-keeping
(which episodes are still pending). A signal handled between those steps would leave
the writer believing nothing was written and commit the same rows again on close; the
writer therefore runs each commit inside `deferred_signals`, and a signal that arrives
meanwhile is delivered, to whatever handler was installed before, as soon as the
section ends. SIGKILL cannot be deferred: there each Lance commit is atomic on its own
and the next writer removes step rows whose episodes row never landed.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

DEFERRED = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM inside `StopOnSignal` (a
    `KeyboardInterrupt`, so cleanup written for Ctrl-C runs for it too)."""


# Tests set this to a callable run at every point of the commit path (e.g. one that
# raises KeyboardInterrupt at the k-th call) to check that no point leaves a double commit.
commit_hook: Callable[[str], None] | None = None


def checkpoint(where: str) -> None:
    """A point inside a commit where an interruption is possible (a no-op unless a test
    set `commit_hook`)."""
    if commit_hook is not None:
        commit_hook(where)


@contextmanager
def deferred_signals(signums: tuple[int, ...] = DEFERRED) -> Iterator[None]:
    """Hold back `signums` (default SIGINT, SIGTERM) for the duration of the block, then
    deliver the ones that arrived to the handlers installed before. Outside the main
    thread (where Python cannot set handlers) the block runs unprotected."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: object) -> None:
        received.append(signum)

    previous: dict[int, object] = {}
    for signum in signums:
        handler = signal.getsignal(signum)
        if handler is None:  # installed outside Python: it cannot be restored, leave it
            continue
        previous[signum] = signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)  # runs the restored handler now (KeyboardInterrupt, exit, ...)


class StopOnSignal:
    """Within the block (main thread only), the first SIGINT raises KeyboardInterrupt and
    the first SIGTERM raises `Terminated`, so ``finally``/``with`` cleanup runs and saved
    work is kept; later SIGINT/SIGTERM are ignored while that cleanup runs and, once one
    fired, after the block too (the process is stopping; ``timeout`` and process managers
    often signal a process twice, and a second signal delivered after the cleanup must not
    kill it before it exits with its status). Without a signal the block restores the
    handlers it found. `fired` names the signal once one arrived (None before).

    >>> with StopOnSignal() as stop:
    ...     long_job()
    """

    def __init__(self) -> None:
        self.fired: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.fired is not None:
            return  # already stopping
        self.fired = signal.Signals(signum).name
        if signum == signal.SIGTERM:
            raise Terminated(self.fired)
        raise KeyboardInterrupt(self.fired)

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for signum in DEFERRED:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            if self.fired is not None:
                # stopping: a late second signal (sent twice, the second delivered after the cleanup) must not turn
                # the clean exit into a kill by the default handler, so SIGINT/SIGTERM stay ignored from here on
                handler = signal.SIG_IGN
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
