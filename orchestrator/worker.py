"""``selftaught worker``: runs due jobs, one at a time, until stopped; and
``schedule run NAME``, one job now in the foreground.

One worker per data directory: it holds ``<home>/worker.lock`` (an flock, so a killed
worker's lock is freed by the kernel); a second worker exits naming the holder's pid, or
waits for it with ``--wait``. The schedule is APScheduler's (a ``BackgroundScheduler`` on
the persistent job store, see ``orchestrator.schedule``) with a one-thread executor; each
due job runs through ``orchestrator.jobrun.run_job``, which also takes the job lock, so
a foreground ``schedule run`` and the worker never overlap either.

Ctrl-C or SIGTERM: the job in progress stops at its next stage boundary and is recorded
``interrupted``; then the worker exits. A second signal stops the process at once (the
stores are crash-safe; the run is closed as ``interrupted`` by the next job).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from apscheduler.events import EVENT_JOB_MISSED

from memory.jobs import JobRun, open_jobs
from memory.store import open_store
from orchestrator.config import Config
from orchestrator.lock import JOB_LOCK, WORKER_LOCK, LockBusy, StopRequested, hold
from orchestrator.schedule import make_scheduler, sync, trajectories_due

if TYPE_CHECKING:
    from orchestrator.jobrun import Say

_active: Worker | None = None
"""The worker of this process: what :func:`fire` hands due jobs to."""


def fire(name: str) -> None:
    """APScheduler's entry point for job ``name`` (its persistent store names functions
    by reference, and reading the schedule imports this module: keep its imports light)."""
    if _active is not None:
        _active.fire(name)


class Worker:
    """What runs the jobs APScheduler finds due, in its executor thread; ``stop`` is set
    by a signal (the job in progress then ends at its next stage boundary)."""

    def __init__(self, config: Config, say: Say) -> None:
        self.config = config
        self.say = say
        self.stop = threading.Event()
        self.runs = 0

    def fire(self, name: str) -> None:
        """Run job ``name`` if it is still defined, not paused, and (for an
        after-trajectories job) enough new trajectories are stored."""
        home = self.config.home
        with open_jobs(home) as jobs:
            job = next((j for j in jobs.list_jobs() if j.name == name), None)
            last = next(iter(jobs.runs(name, limit=1)), None)
        if job is None or job.paused or self.stop.is_set():
            return
        if job.trigger.kind == "after_trajectories":
            with open_store(home) as store:
                new, due = trajectories_due(job, last, store.count())
            if not due:
                return
            self.say(f"job {name}: {new} new trajectories (trigger: {job.trigger.text})")
        from orchestrator.jobrun import run_job

        try:
            run = run_job(self.config, name, cause="schedule", stop=self.stop,
                          say=lambda line: self.say(f"job {name}: {line}"))
        except StopRequested:
            return
        except Exception as exc:  # the worker outlives one job's trouble
            self.say(f"job {name}: {type(exc).__name__}: {exc}")
            return
        self.runs += 1
        self.say(f"job {name}: {run.outcome}; log {run.log}")


def run_worker(config: Config, *, wait: bool, say: Say) -> int:
    """Run due jobs until a signal stops the worker; returns the number of job runs.
    ``LockBusy`` when another worker holds the data directory (without ``wait``). The
    models and the loop are imported when a job first runs, so a refusal is quick."""
    home = config.home
    worker = Worker(config, say)

    def busy(pid: int | None) -> str:
        return (f"another selftaught worker (pid {pid}) is running on {home} (it holds "
                f"{home / WORKER_LOCK}); stop it first, or start this one with --wait")

    with graceful_stop(worker.stop, say, hard=lambda: os._exit(130)), ExitStack() as held:
        try:
            held.enter_context(hold(
                home / WORKER_LOCK, busy, wait=wait, stop=worker.stop,
                on_wait=lambda pid: say(f"waiting for the worker in pid {pid} to stop")))
        except StopRequested:  # a signal while waiting for the other worker
            say("stopped before starting")
            return 0
        _close_stale_runs(home, say)
        _serve(worker)
    say(f"worker stopped after {worker.runs} job run(s)")
    return worker.runs


def _serve(worker: Worker) -> None:
    """APScheduler on the persistent schedule, handing due jobs to ``worker``, until
    ``worker.stop`` is set; returns once the job in progress has ended."""
    global _active
    config, say = worker.config, worker.say
    sched = make_scheduler(config.home)
    sched.add_listener(lambda event: _missed(event, config, say), EVENT_JOB_MISSED)
    sched.start(paused=True)
    _active = worker
    try:
        sync(sched, config)
        sched.resume()
        say(f"worker pid {os.getpid()} on {config.home}: {len(sched.get_jobs())} job(s); "
            "Ctrl-C or SIGTERM stops it after the current stage")
        while not worker.stop.wait(config.schedule.poll_seconds):
            sync(sched, config)  # jobs added, paused or removed meanwhile
            sched.wakeup()
    finally:
        worker.stop.set()
        sched.shutdown(wait=True)  # the job in progress ends at its next boundary
        _active = None


def run_now(config: Config, name: str, say: Say) -> JobRun:
    """``schedule run NAME``: the job once, now, in this process (Ctrl-C stops it at the
    next stage boundary; a second Ctrl-C at once). ``LockBusy`` while a job runs."""
    from orchestrator.jobrun import run_job

    stop = threading.Event()
    with graceful_stop(stop, say, hard=_raise_interrupt):
        return run_job(config, name, cause="manual", stop=stop, say=say, wait=False)


@contextmanager
def graceful_stop(stop: threading.Event, say: Say, hard: Callable[[], None]) -> Iterator[None]:
    """While inside: the first SIGINT/SIGTERM sets ``stop``; a second calls ``hard``.
    (Signal handlers can only be set from the main thread; elsewhere this does nothing.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            say("stopping now")
            hard()
            return
        stop.set()
        say(f"{signal.Signals(signum).name}: stopping after the current stage "
            "(signal again to stop now)")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def _raise_interrupt() -> None:
    raise KeyboardInterrupt


def _close_stale_runs(home, say: Say) -> None:
    """Runs a dead process left ``running`` become ``interrupted`` now, unless a
    foreground ``schedule run`` holds the job lock (then its run is live)."""
    try:
        with hold(home / JOB_LOCK, lambda pid: ""), open_jobs(home) as jobs:
            for run in jobs.close_stale_runs("the process running it died"):
                say(f"run {run.run_id} of job {run.job} was left running by a process that "
                    "died; recorded as interrupted")
    except LockBusy:
        pass


def _missed(event, config: Config, say: Say) -> None:
    say(f"job {event.job_id}: the run due at {event.scheduled_run_time:%Y-%m-%d %H:%M:%S %Z} "
        f"was missed by more than schedule.grace_seconds ({config.schedule.grace_seconds} s); "
        "skipped (the catch-up policy)")
