"""Continuous batching: one worker thread owns the model and keeps a batch of rows running.

Callers on any thread or event loop ``submit`` a request and get a
``concurrent.futures.Future`` (async callers await ``asyncio.wrap_future``, which works
from whichever loop they run on: litellm and LangGraph may use different ones).

The worker drives a ``Stepper`` (``decode.DecodeBatch`` for the local model): between
steps it admits queued requests into the running batch, up to ``max_batch_size`` rows,
as long as they share the running rows' ``group_key`` (the adapter). When the oldest
queued request has another key, admission pauses until the running rows finish, so no
key waits forever. When idle, it waits a few milliseconds after a request arrives for
others to join, so they share one prefill.

Contract: every submitted future completes. A failing admit or step fails the futures
it involved (the requests being admitted and the rows running) with ``ModelError`` (or
the ``SelftaughtError`` raised); if ``start`` (model loading) fails, every pending and
later future fails with that error.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.errors import ModelError, SelftaughtError

_STOP = object()

Finished = list[tuple[Hashable, Any]]


class Groupable(Protocol):
    @property
    def group_key(self) -> Any: ...


class Stepper(Protocol):
    """Work the batcher drives, on its thread only. Handles are opaque to the stepper;
    it returns each finished request's handle with its result."""

    def __len__(self) -> int:
        """Rows still running."""

    def admit(self, requests: list, handles: list) -> Finished:
        """Start ``requests`` (one ``group_key``, that of any running rows)."""

    def step(self) -> Finished:
        """Advance every running row once."""

    def clear(self) -> list:
        """Drop every running row; returns their handles."""


class WholeBatches:
    """A ``Stepper`` for a function that runs a whole group at once:
    ``run_group(requests) -> results`` (same order). Nothing stays running."""

    def __init__(self, run_group: Callable[[list], Sequence]):
        self._run_group = run_group

    def __len__(self) -> int:
        return 0

    def admit(self, requests: list, handles: list) -> Finished:
        results = list(self._run_group(requests))
        if len(results) != len(requests):
            raise RuntimeError(f"{len(results)} results for {len(requests)} requests")
        return list(zip(handles, results))

    def step(self) -> Finished:
        return []

    def clear(self) -> list:
        return []


@dataclass
class BatchStats:
    """Counters a test or benchmark can read to see batching happen."""

    batches: int = 0
    """Admissions: groups of queued requests that joined the running batch together."""
    requests: int = 0
    largest_batch: int = 0
    """Most rows running at once."""
    recent: deque = field(default_factory=lambda: deque(maxlen=256))
    """``(group_key, size)`` of the most recent admissions, oldest first."""


class Batcher:
    """Runs the ``Stepper`` that ``start()`` returns (called first, on the worker
    thread: e.g. loading the model, so the caller's event loop never blocks on it).
    ``check(request)``, if given, runs on the worker thread before a request is admitted;
    the error it returns fails that request alone."""

    def __init__(
        self,
        start: Callable[[], Stepper],
        *,
        max_batch_size: int = 32,
        gather_ms: float = 5.0,
        max_wait_ms: float = 50.0,
        name: str = "selftaught-batcher",
        check: Callable[[Any], BaseException | None] | None = None,
    ):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._start = start
        self._check = check
        self._stepper: Stepper = WholeBatches(list)  # runs nothing; replaced by start()
        self._running_key: Any = None
        self.max_batch_size = max_batch_size
        self._gather_s = gather_ms / 1000
        self._max_wait_s = max_wait_ms / 1000
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
        """Stop the worker after the step in progress; running and queued requests fail."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- worker thread ---------------------------------------------------------------

    def _main(self) -> None:
        backlog: list[tuple[Groupable, Future]] = []
        try:
            self._stepper = self._start()
            while True:
                if backlog or len(self._stepper):
                    stop = self._drain(backlog)  # what arrived during the last step
                else:
                    item = self._queue.get()
                    if item is _STOP:
                        break
                    backlog.append(item)
                    stop = self._gather(backlog)
                if stop:
                    break
                self._admit(backlog)
                if len(self._stepper):
                    self._run(self._stepper.step, [])
            error: BaseException = ModelError("The local model worker was closed.")
        except BaseException as e:  # never leave a future hanging
            error = e if isinstance(e, SelftaughtError) else _model_error(e, "start")
        running = self._stepper.clear()
        self._fail_all(backlog, error)
        for future in running:
            if not future.done():
                future.set_exception(error)

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
        """Take, without waiting, whatever arrived meanwhile."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is _STOP:
                return True
            backlog.append(item)

    def _admit(self, backlog: list) -> None:
        """Start the oldest request's group, as many as there are free rows, if its key
        is the running rows' key (or nothing runs)."""
        running = len(self._stepper)
        if not backlog or (running and backlog[0][0].group_key != self._running_key):
            return
        key = backlog[0][0].group_key
        batch = self._take(backlog, key, self.max_batch_size - running)
        if not batch:
            return
        self._running_key = key
        requests = [request for request, _ in batch]
        futures = [future for _, future in batch]
        # Counted before any future completes, so a caller that wakes up sees its batch.
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, running + len(batch))
        self.stats.recent.append((key, len(batch)))
        self._run(lambda: self._stepper.admit(requests, futures), futures)

    def _take(self, backlog: list, key: Any, limit: int) -> list[tuple[Groupable, Future]]:
        """Remove and return up to ``limit`` requests of ``key``, oldest first, skipping
        requests whose caller already cancelled."""
        batch, rest = [], []
        for request, future in backlog:
            if len(batch) < limit and request.group_key == key:
                if future.set_running_or_notify_cancel():
                    problem = self._check(request) if self._check else None
                    if problem is not None:  # refused alone: the batch is not failed with it
                        future.set_exception(problem)
                    else:
                        batch.append((request, future))
            else:
                rest.append((request, future))
        backlog[:] = rest
        return batch

    def _run(self, call: Callable[[], Finished], admitted: list[Future]) -> None:
        """Run one admit or step and complete the futures that finished; on an error,
        fail ``admitted`` and every running row."""
        try:
            finished = call()
        except BaseException as e:  # anything, so no future is left running forever
            error = e if isinstance(e, SelftaughtError) else _model_error(e, "generation")
            for future in dict.fromkeys([*admitted, *self._stepper.clear()]):
                if not future.done():
                    future.set_exception(error)
            return
        for future, result in finished:
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
