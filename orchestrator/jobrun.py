"""One run of a scheduled job: ``improve`` with a budget, a log file and a record.

The run holds the job lock (``<home>/job.lock``), so runs never overlap on a data
directory, and a run left ``running`` by a process that died is closed as
``interrupted`` by the next one. It calls ``improve`` through its public surface: the
job's config and suites, role models wrapped so every call is counted in the run's
ledger, and an ``improve.Progress`` whose ``stage`` (called at each stage boundary) stops
the run (by raising) when a signal asked it to stop or the budget is reached. A promotion only
ever happens inside a round, right after its gate decision and before the next
boundary, so a stopped run never leaves a half-promoted adapter; it may leave a
candidate that was trained but not yet evaluated, which stays a candidate.

Outcomes: ``done`` (improve finished), ``budget``, ``interrupted`` (a signal, or the
process died), ``failed`` (an error; its traceback is in the log).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from core.secrets import scrub_secrets, secret_scrubber
from finetune.registry import AdapterRegistry
from memory.jobs import JobDefinition, JobRun, JobStore, RunCause, open_jobs
from memory.store import open_store
from orchestrator.budget import BudgetExceeded, Ledger, metered
from orchestrator.config import Config
from orchestrator.improve import Progress, improve
from orchestrator.lock import JOB_LOCK, StopRequested, hold
from orchestrator.report import adapter_result
from orchestrator.runner import RoleModels, build_models, new_run_id
from orchestrator.schedule import job_config, load_suites

LOGS_DIR = Path("logs") / "jobs"

Say = Callable[[str], None]


def run_job(config: Config, name: str, *, cause: RunCause, stop: threading.Event,
            say: Say | None = None, wait: bool = True, models: RoleModels | None = None) -> JobRun:
    """Run job ``name`` once, now, in this thread, and return its record.

    ``stop`` set (by a signal handler) ends the run at the next stage boundary. With
    ``wait``, a run of another process holding the job lock is waited for; without, it
    is ``LockBusy``. An unknown job is ``ConfigError``; everything that goes wrong inside
    the run is recorded in it (outcome ``failed``), not raised. ``models`` default to the
    job's configured ones (tests hand in scripted fakes); they are metered either way."""
    say = say or (lambda _line: None)
    home = config.home

    def busy(pid: int | None) -> str:
        return (f"a job is running on {home} (pid {pid}, holding {home / JOB_LOCK}); "
                "wait for it to finish, or stop that process")

    with open_jobs(home) as jobs:
        job = jobs.get_job(name)
        with hold(home / JOB_LOCK, busy, wait=wait, stop=stop,
                  on_wait=lambda pid: say(f"waiting for the job running in pid {pid}")):
            for stale in jobs.close_stale_runs("the process running it died"):
                say(f"run {stale.run_id} of job {stale.job} was left running by a process "
                    "that died; recorded as interrupted")
            return _run(home, job, jobs, cause=cause, stop=stop, say=say, models=models)


def _run(home: Path, job: JobDefinition, jobs: JobStore, *, cause: RunCause,
         stop: threading.Event, say: Say, models: RoleModels | None) -> JobRun:

    registry = AdapterRegistry(home)
    existing = {m.name for m in registry.list()}
    champion = registry.champion()
    run_id = f"{job.name}-{new_run_id()}"
    log_path = (home / LOGS_DIR / f"{run_id}.log").resolve()
    run = JobRun(run_id=run_id, job=job.name, cause=cause, pid=os.getpid(), log=str(log_path),
                 trajectories_before=_trajectory_count(home),
                 champion_before=champion.name if champion else None)
    jobs.save_run(run)
    ledger = Ledger(job.budget)
    last_round = 0

    with _job_log(log_path, say) as log:
        log(f"run {run_id} ({cause}): improve {' '.join(job.improve.argv)}")
        log(f"budget: {job.budget.model_dump()}")

        class Stages(Progress):
            """At each stage boundary: stop on a signal or a spent budget, else log."""

            def stage(self, round_no: int, what: str, total: int | None = None) -> None:
                nonlocal last_round
                last_round = round_no
                ledger.end_stage()
                where = f"round {round_no}: {what}" if round_no else what
                if stop.is_set():
                    raise StopRequested(f"stopped by a signal before {where}")
                if (reached := ledger.over()) is not None:
                    raise BudgetExceeded(f"{reached}; stopped before {where}")
                ledger.begin_stage(round_no, what)
                log(f"{where} (so far: {ledger.tokens} tokens, ${ledger.cost_usd:.4f}, "
                    f"{ledger.seconds:.0f} s)")
                jobs.save_run(_spent(run, ledger))

        outcome, reason, rounds = "failed", "", 0
        try:
            config = job_config(home, job.improve)
            counted = metered(models or build_models(config), ledger)
            report = asyncio.run(improve(config, load_suites(job.improve), models=counted,
                                         progress=Stages()))
            outcome, rounds = "done", len(report.rounds)
        except BudgetExceeded as exc:
            outcome, reason = "budget", str(exc)
        except StopRequested as exc:
            outcome, reason = "interrupted", str(exc)
        except KeyboardInterrupt:
            outcome, reason = "interrupted", f"interrupted during round {last_round}"
            raise
        except Exception as exc:  # recorded, not raised: the worker goes on to other jobs
            reason = scrub_secrets(f"{type(exc).__name__}: {exc}")
            log(traceback.format_exc())
        finally:
            ledger.end_stage()
            if outcome != "done":
                rounds = max(last_round - 1, 0)  # the round in progress did not finish
            run = _finished(run, ledger, registry, existing, outcome=outcome, reason=reason,
                            rounds=rounds, trajectories=_trajectory_count(home))
            jobs.save_run(run)
            log(f"{outcome}{': ' + reason if reason else ''}; {run.rounds} round(s), promoted "
                f"{', '.join(run.promoted) or 'none'}; {run.tokens} tokens, "
                f"${run.cost_usd:.4f}, {run.seconds:.0f} s")
    return run


def _spent(run: JobRun, ledger: Ledger) -> JobRun:
    return run.model_copy(update={
        "prompt_tokens": ledger.prompt_tokens, "completion_tokens": ledger.completion_tokens,
        "calls": ledger.calls, "cost_usd": ledger.cost_usd, "seconds": round(ledger.seconds, 3),
        "stages": list(ledger.stages)})


def _finished(run: JobRun, ledger: Ledger, registry: AdapterRegistry, existing: set[str], *,
              outcome: str, reason: str, rounds: int, trajectories: int) -> JobRun:
    """The run's record at its end: outcome, spend, and the candidates it trained (read
    back from the registry, the truth about adapters, whatever the outcome)."""
    trained = [m for m in registry.list() if m.name not in existing]
    results = [adapter_result(m) for m in trained]
    champion = registry.champion()
    return _spent(run, ledger).model_copy(update={
        "outcome": outcome, "reason": reason, "rounds": rounds, "ended_at": datetime.now(UTC),
        "adapters": results, "promoted": [r.adapter for r in results if r.promoted],
        "champion_after": champion.name if champion else None,
        "trajectories_after": trajectories})


def _trajectory_count(home: Path) -> int:
    with open_store(home) as store:
        return store.count()


@contextmanager
def _job_log(path: Path, say: Say) -> Iterator[Say]:
    """A ``log(line)`` that writes timestamped lines to the run's log file (and says
    them), secrets scrubbed; warnings logged by the libraries the run uses go to the
    file too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scrub = secret_scrubber()
    with open(path, "a", encoding="utf-8", buffering=1) as handle:
        handler = logging.StreamHandler(handle)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.WARNING)
        logging.getLogger().addHandler(handler)

        def log(line: str) -> None:
            line = scrub(line)
            handle.write(f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
            say(line)

        try:
            yield log
        finally:
            logging.getLogger().removeHandler(handler)
