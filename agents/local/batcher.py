"""Dynamic batching: one worker thread owns the model and runs queued requests in batches.

Callers on any thread or event loop ``submit`` a request and get a
``concurrent.futures.Future`` (async callers await ``asyncio.wrap_future``, which works
from whichever loop they run on: litellm and LangGraph may use different ones). The
worker waits a few milliseconds after a request arrives for others to join, then runs
the oldest request's group (same ``group_key``) up to ``max_batch_size`` as one call.

Contract: every submitted future completes. A failing batch fails its futures with
``ModelError`` (or the ``SelftaughtError`` the runner raised); if ``on_start`` (model
loading) fails, every pending and later future fails with that error.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from errors import ModelError, SelftaughtError

_STOP = object()


class Groupable(Protocol):
    @property
    def group_key(self) -> Any: ...


@dataclass
class BatchStats:
    """Counters a test or benchmark can read to see batching happen."""

    batches: int = 0
    requests: int = 0
    largest_batch: int = 0
    recent: deque = field(default_factory=lambda: deque(maxlen=256))
    """``(group_key, size)`` of the most recent batches, oldest first."""


class Batcher:
    """Runs ``run_group(requests) -> results`` (one result per request, same order) on a
    single background thread. ``on_start`` runs first on that thread (e.g. loading the
    model, so the caller's event loop never blocks on it)."""

    def __init__(
        self,
        run_group: Callable[[list], Sequence],
        *,
        max_batch_size: int = 32,
        gather_ms: float = 5.0,
        max_wait_ms: float = 50.0,
        on_start: Callable[[], None] | None = None,
        name: str = "selftaught-batcher",
    ):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._run_group = run_group
        self.max_batch_size = max_batch_size
        self._gather_s = gather_ms / 1000
        self._max_wait_s = max_wait_ms / 1000
        self._on_start = on_start
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()  # orders `submit` against the worker failing for good
        self._fatal: BaseException | None = None
        self.stats = BatchStats()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    @property
    def failed(self) -> bool:
        """True once the worker has stopped for good (start-up failed or closed)."""
        return self._fatal is not None

    def submit(self, request: Groupable) -> Future:
        future: Future = Future()
        with self._lock:
            if self._fatal is not None:
                future.set_exception(self._fatal)
            else:
                self._queue.put((request, future))
        return future

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker after the batch in progress; queued requests fail."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- worker thread ---------------------------------------------------------------

    def _main(self) -> None:
        backlog: list[tuple[Groupable, Future]] = []
        try:
            if self._on_start is not None:
                self._on_start()
            while True:
                if not backlog:
                    item = self._queue.get()
                    if item is _STOP:
                        break
                    backlog.append(item)
                    stop = self._gather(backlog)
                else:
                    stop = self._drain(backlog)  # what arrived during the last batch
                if stop:
                    break
                self._execute(self._take(backlog))
            error: BaseException = ModelError("The local model worker was closed.")
        except BaseException as e:  # never leave a future hanging
            error = e if isinstance(e, SelftaughtError) else _model_error(e, "start")
        self._fail_all(backlog, error)

    def _gather(self, backlog: list) -> bool:
        """Wait until no request has arrived for ``gather_ms`` (or the oldest request's
        group fills a batch, or ``max_wait_ms`` passed). Returns True if asked to stop."""
        deadline = time.monotonic() + self._max_wait_s
        key = backlog[0][0].group_key
        same = sum(1 for request, _ in backlog if request.group_key == key)
        while same < self.max_batch_size:
            timeout = min(self._gather_s, deadline - time.monotonic())
            if timeout <= 0:
                break
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                break
            if item is _STOP:
                return True
            backlog.append(item)
            same += item[0].group_key == key
        return self._drain(backlog)

    def _drain(self, backlog: list) -> bool:
        """Take, without waiting, whatever arrived during the last batch."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is _STOP:
                return True
            backlog.append(item)

    def _take(self, backlog: list) -> list[tuple[Groupable, Future]]:
        """Remove and return the oldest request's group, up to ``max_batch_size``,
        skipping requests whose caller already cancelled."""
        key = backlog[0][0].group_key
        batch, rest = [], []
        for request, future in backlog:
            if len(batch) < self.max_batch_size and request.group_key == key:
                if future.set_running_or_notify_cancel():
                    batch.append((request, future))
            else:
                rest.append((request, future))
        backlog[:] = rest
        return batch

    def _execute(self, batch: list[tuple[Groupable, Future]]) -> None:
        if not batch:
            return
        requests = [request for request, _ in batch]
        # Counted before any future completes, so a caller that wakes up sees its batch.
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        self.stats.recent.append((requests[0].group_key, len(batch)))
        try:
            results = list(self._run_group(requests))
            if len(results) != len(requests):
                raise RuntimeError(f"{len(results)} results for {len(requests)} requests")
        except BaseException as e:  # anything, so no future is left running forever
            error = e if isinstance(e, SelftaughtError) else _model_error(e, "generation")
            for _, future in batch:
                future.set_exception(error)
        else:
            for (_, future), result in zip(batch, results):
                future.set_result(result)

    def _fail_all(self, backlog: list, error: BaseException) -> None:
        with self._lock:
            self._fatal = error
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP:
                    backlog.append(item)
        for _, future in backlog:
            if future.set_running_or_notify_cancel():
                future.set_exception(error)


def _model_error(e: BaseException, stage: str) -> ModelError:
    error = ModelError(f"Local model {stage} failed: {type(e).__name__}: {e}")
    error.__cause__ = e
    return error
