"""Locks that survive crashes: an ``flock`` on a file under the data directory.

The kernel drops an flock when its holder's process ends, however it ends (SIGKILL
included), so a lock is never left stale. The holder writes its pid into the file, so
whoever finds the lock taken can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from core.errors import SelftaughtError

WORKER_LOCK = "worker.lock"
"""Held by ``selftaught worker`` for its whole life: one worker per data directory."""
JOB_LOCK = "job.lock"
"""Held while a job runs (in a worker or ``schedule run``): jobs never overlap."""


class StopRequested(Exception):
    """A signal asked a job run (or a wait for a lock) to stop; raised at a boundary."""


class LockBusy(SelftaughtError):
    """Another process holds the lock (its message names the holder's pid)."""


@contextmanager
def hold(path: Path, busy: Callable[[int | None], str], *, wait: bool = False,
         stop: threading.Event | None = None, on_wait: Callable[[int | None], None] | None = None,
         poll_s: float = 0.5) -> Iterator[None]:
    """Hold the lock file ``path`` for the ``with`` block.

    When another process holds it: without ``wait``, raise ``LockBusy(busy(pid))``; with
    ``wait``, call ``on_wait(pid)`` once and retry every ``poll_s`` seconds until it is
    free, or raise ``StopRequested`` once ``stop`` is set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        told = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pid = holder(path)
                if not wait:
                    raise LockBusy(busy(pid)) from None
                if on_wait is not None and not told:
                    on_wait(pid)
                    told = True
                if stop is not None and stop.wait(poll_s):
                    raise StopRequested(f"stopped while waiting for {path}") from None
                if stop is None:
                    time.sleep(poll_s)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield  # closing the file releases the lock


def holder(path: Path) -> int | None:
    """The pid written by the lock's last holder (None if unreadable)."""
    try:
        return int(path.read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return None
