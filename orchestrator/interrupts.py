"""Ending the process on Ctrl-C: exit 130, nothing after the last words, no native abort.

Why not a plain ``sys.exit(130)``: the embedded model decodes on a native worker thread,
and litellm keeps executor threads and finalisers; at interpreter shutdown these abort
the process ("terminate called without an active exception", exit 134) or hang it (a
finaliser importing a module whose import lock a dead thread holds). Everything worth
keeping is written by then (trajectories, task errors and graph checkpoints are
committed SQLite transactions; cancelled tasks checkpoint on their way out), so the
process ends with ``os._exit`` after flushing its output.

:class:`InterruptGuard` covers the whole command. Before the event loop starts nothing
is in flight, so :meth:`~InterruptGuard.exit_at_once` makes Ctrl-C exit there and then
(a ``KeyboardInterrupt`` raised into a library's import can be swallowed by its
``except:``, and the run would go on). Inside the loop, :meth:`~InterruptGuard.arm`
wraps asyncio's handler (which cancels the tasks, so they checkpoint); if the process
is still alive ``grace_s`` after the first Ctrl-C, it says its last words and exits 130
anyway.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

INTERRUPTED = 130
"""The exit code of a process ended by Ctrl-C (128 + SIGINT)."""
GRACE_S = 20.0
"""How long the clean-up after Ctrl-C may take before the process exits regardless."""


def exit_now(code: int) -> NoReturn:
    """Flush stdout and stderr and end the process with ``code`` at once, skipping
    interpreter shutdown (see the module docstring). Call only when all is written."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed pipe: nothing more can be said anyway
            pass
    os._exit(code)


class InterruptGuard:
    """Says ``last_words`` once and exits 130, on :meth:`exit` or ``grace_s`` after the
    first Ctrl-C once :meth:`arm`-ed, whichever comes first."""

    def __init__(self, last_words: Callable[[], None], *, grace_s: float = GRACE_S) -> None:
        self._last_words = last_words
        self._grace_s = grace_s
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def exit_at_once(self) -> None:
        """From now until :meth:`release`, Ctrl-C exits at once (main thread only)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, lambda signum, frame: self.exit())

    def release(self) -> None:
        """Give Ctrl-C back to Python (so ``asyncio.run`` installs its own handler)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def arm(self) -> None:
        """Wrap the current SIGINT handler (call from the main thread, inside the event
        loop, after asyncio has installed its own) so the first Ctrl-C starts the timer."""
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame) -> None:
            if self._timer is None:
                self._timer = threading.Timer(self._grace_s, self.exit)
                self._timer.daemon = True
                self._timer.start()
            if callable(previous):
                previous(signum, frame)
            else:
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, handler)

    def exit(self) -> NoReturn:
        """Say the last words (once, whoever calls first) and exit 130."""
        with self._lock:  # a second caller waits here until the first has exited
            try:
                self._last_words()
            finally:
                exit_now(INTERRUPTED)
