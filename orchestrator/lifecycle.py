"""A run's life: checks before it starts, who owns it while it runs, and whether it is
still running when a record says ``running``.

Reusable by anything long-running that keeps a ``RunRecord`` (runs, evaluations,
improve's collection runs; sessions and scheduled jobs can do the same):

* :func:`check_state_files` and :func:`check_credentials` fail fast, before any record
  is written (``runner.preflight`` adds the models and the adapter).
* :func:`owning` claims the run for this process (pid, host, heartbeat) in one write
  transaction, refusing a run another live process owns; a :class:`Heartbeat` thread
  refreshes ``heartbeat_at`` every :data:`HEARTBEAT_S` seconds until the run ends.
* :func:`shown_status` is what a listing shows: a ``running`` record whose process is
  gone (same host: no such pid) or silent (no heartbeat for :data:`STALE_AFTER_S`) is
  ``interrupted``, so a kill -9 never leaves a run "running" forever;
  :func:`shown_job_run` does the same for a scheduled job's run (by its pid).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from core.errors import ConfigError, SelftaughtError, StoreError
from core.records import RunRecord, RunStatus
from memory import damage
from memory.jobs import JobRun
from memory.store import DB_FILENAME, TrajectoryStore

HEARTBEAT_S = 10.0
"""How often a running process refreshes its run's heartbeat."""
STALE_AFTER_S = 120.0
"""A run whose heartbeat is older than this is not running (whatever its pid says:
the pid may have been reused, or the process frozen)."""
CHECKPOINTS_FILE = "checkpoints.db"

log = logging.getLogger("selftaught.lifecycle")


def this_process() -> tuple[int, str]:
    """(pid, host name) of this process, as run records store them."""
    return os.getpid(), socket.gethostname()


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def is_live(run: RunRecord, *, now: datetime | None = None) -> bool:
    """Whether a process is still working on ``run``: status ``running``, a heartbeat
    younger than :data:`STALE_AFTER_S`, and (on this host) its pid alive."""
    if run.status != "running" or run.pid is None or run.heartbeat_at is None:
        return False
    age = ((now or datetime.now(UTC)) - run.heartbeat_at).total_seconds()
    if age > STALE_AFTER_S:
        return False
    return run.host != socket.gethostname() or process_alive(run.pid)


def shown_status(run: RunRecord) -> RunStatus:
    """The status to show: ``interrupted`` for a ``running`` record nobody works on."""
    return "interrupted" if run.status == "running" and not is_live(run) else run.status


def shown_job_run(run: JobRun) -> JobRun:
    """A scheduled job's run as a listing shows it: one left ``running`` by a process
    that is gone (kill -9, a crash) is ``interrupted``, as the next job run records it."""
    if run.outcome != "running" or process_alive(run.pid):
        return run
    return run.model_copy(update={"outcome": "interrupted",
                                  "reason": f"the process running it (pid {run.pid}) died"})


def refuse_if_live(run: RunRecord) -> None:
    """``ConfigError`` when another live process owns ``run`` (this process may re-claim)."""
    pid, host = this_process()
    if (run.pid, run.host) == (pid, host) or not is_live(run):
        return
    seconds = (datetime.now(UTC) - run.heartbeat_at).total_seconds() if run.heartbeat_at else 0
    raise ConfigError(
        f"run {run.run_id} is still running (pid {run.pid} on {run.host}, alive {seconds:.0f} s "
        f"ago); a second process would do its work twice. Wait for it to end, or stop it "
        f"(`kill {run.pid}` on {run.host}) and resume then.")


class Heartbeat:
    """A daemon thread that refreshes ``run_id``'s heartbeat every ``interval_s`` until
    :meth:`stop`. A thread, not an asyncio task, so a busy event loop cannot starve it;
    a failed write is logged and retried at the next beat."""

    def __init__(self, store: TrajectoryStore, run_id: str, *, interval_s: float = HEARTBEAT_S):
        self._store, self._run_id, self._interval = store, run_id, interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        pid = os.getpid()
        while not self._stopped.wait(self._interval):
            try:
                if not self._store.heartbeat(self._run_id, pid):
                    return  # another process has claimed the run, or it ended
            except SelftaughtError as exc:
                log.warning("heartbeat of run %s failed: %s", self._run_id, exc)


@contextmanager
def owning(store: TrajectoryStore, run_id: str) -> Iterator[RunRecord]:
    """Own ``run_id`` for the ``with`` block: claim it (``ConfigError`` if another live
    process owns it) and keep its heartbeat. An exception out of the block (Ctrl-C
    included) marks the run ``interrupted``; otherwise the caller sets the final status."""
    pid, host = this_process()
    claimed = store.claim_run(run_id, pid=pid, host=host, check=refuse_if_live)
    beat = Heartbeat(store, run_id).start()
    try:
        yield claimed
    except BaseException:
        beat.stop()
        try:
            store.set_run_status(run_id, "interrupted")
        except SelftaughtError as exc:  # the listing shows it interrupted anyway (dead pid)
            log.warning("could not mark run %s interrupted: %s", run_id, exc)
        raise
    finally:
        beat.stop()


def check_state_files(home: Path) -> None:
    """``StoreError`` naming the file and the repair command when the trajectory store or
    the checkpoint file under ``home`` is damaged (a full read of each: the checkpoint
    file is small, the store is read at the speed of the disk)."""
    for name in (DB_FILENAME, CHECKPOINTS_FILE):
        path = Path(home) / name
        # langgraph's checkpoint file starts empty; ours never does (see memory.store).
        problem = damage.check(path, empty_ok=name == CHECKPOINTS_FILE)
        if problem:
            raise StoreError(damage.damaged_message(path, problem))


def check_credentials(model_ids: list[str]) -> None:
    """``ConfigError`` naming each remote model whose provider key is not set."""
    from agents.litellm_model import missing_credentials

    problems = []
    for model_id in dict.fromkeys(model_ids):
        missing = missing_credentials(model_id)
        if missing:
            problems.append(f"{model_id} needs {' or '.join(missing)} in the environment")
    if problems:
        raise ConfigError("; ".join(problems) + " (not set). Export the key, or choose another "
                          "model (--model, --critic-model, --hint-model, or [models] in the config).")
