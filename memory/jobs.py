"""Scheduled jobs and their runs: what ``selftaught schedule`` defines and what the
worker did, in one SQLite file (``<home>/schedule.db``, WAL).

The same file holds APScheduler's own table (``apscheduler_jobs``, written by the
orchestrator through SQLAlchemy): that table is *when* each job fires next; this module
is *what* each job is and every run it had. Records are stored whole as JSON beside a
few columns used for filtering and ordering.

A run is written when it starts (outcome ``running``), updated at each stage boundary,
and finished once. A process killed mid-run leaves it ``running``; whoever next takes the
job lock marks such runs ``interrupted`` (:meth:`JobStore.close_stale_runs`).
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.errors import ConfigError, StoreError
from memory.store import _utc_text

SCHEDULE_DB = "schedule.db"
BUSY_TIMEOUT_S = 30.0

TriggerKind = Literal["cron", "every", "after_trajectories"]
JobOutcome = Literal["running", "done", "failed", "budget", "interrupted"]
RunCause = Literal["schedule", "manual"]


class Trigger(BaseModel):
    """When a job runs: a cron expression, a fixed interval, or after N new trajectories."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: TriggerKind
    text: str
    """As the user gave it: ``0 3 * * *``, ``30m``, or the trajectory count."""

    def describe(self) -> str:
        return {"cron": f"cron {self.text}", "every": f"every {self.text}",
                "after_trajectories": f"after {self.text} new trajectories"}[self.kind]


class Budget(BaseModel):
    """Limits on one run of a job; None is no limit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_minutes: float | None = Field(None, gt=0)
    max_tokens: int | None = Field(None, ge=1)
    max_usd: float | None = Field(None, gt=0)


class ImproveArgs(BaseModel):
    """What a job runs: one ``selftaught improve``, as validated when the job was added."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    argv: list[str]
    """The improve arguments as given (for people)."""
    suites: dict[str, str]
    """Suite specs by role (``train``, ``holdout``, ...), file paths made absolute."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Dotted config keys the arguments set (``improve.rounds``...)."""
    config_file: str | None = None
    """The selftaught.toml the job reads at each run (absolute), or None for defaults."""


class JobDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    trigger: Trigger
    budget: Budget = Field(default_factory=Budget)
    improve: ImproveArgs
    paused: bool = False
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    trajectories_at_add: int = 0
    """Trajectories in the store when the job was added (the first baseline of an
    ``after_trajectories`` trigger)."""


class StageTime(BaseModel):
    """One stage of a run (``stage`` is improve's own description): wall seconds and the
    tokens its model calls spent."""

    round: int
    stage: str
    seconds: float
    tokens: int = 0


class AdapterResult(BaseModel):
    """A candidate a run trained, with its gate figures (None: not evaluated)."""

    adapter: str
    holdout_before: float | None = None
    holdout_after: float | None = None
    retention_before: float | None = None
    retention_after: float | None = None
    promoted: bool = False
    reason: str = ""


class JobRun(BaseModel):
    """One run of a job: when, why it ended, what it did and what it spent."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    job: str
    cause: RunCause
    pid: int
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    ended_at: datetime | None = None
    outcome: JobOutcome = "running"
    reason: str = ""
    """Why it ended as it did: the budget reached, the error, the signal."""
    rounds: int = 0
    """Rounds finished (collect, distill and gate all done)."""
    adapters: list[AdapterResult] = Field(default_factory=list)
    promoted: list[str] = Field(default_factory=list)
    champion_before: str | None = None
    champion_after: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    stages: list[StageTime] = Field(default_factory=list)
    log: str = ""
    """The run's log file."""
    trajectories_before: int = 0
    trajectories_after: int | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS jobs (name TEXT PRIMARY KEY, record TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS job_runs (run_id TEXT PRIMARY KEY, job TEXT NOT NULL,"
    " outcome TEXT NOT NULL, started_at TEXT NOT NULL, record TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS job_runs_job ON job_runs(job, started_at)",
)


class JobStore:
    """Job definitions and runs in ``path`` (SQLite, WAL). One connection behind a lock
    serves every thread of a process; other processes wait on the busy timeout."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S,
                                         isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            for statement in _SCHEMA:
                self._conn.execute(statement)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the schedule at {self.path}: {exc}; move it aside "
                             "or set SELFTAUGHT_HOME to another directory") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs ---------------------------------------------------------------------------

    def add_job(self, job: JobDefinition) -> None:
        """Store a new job; a name already taken is ``ConfigError``."""
        try:
            self._execute("INSERT INTO jobs (name, record) VALUES (?, ?)",
                          (job.name, job.model_dump_json()))
        except sqlite3.IntegrityError:
            raise ConfigError(f"job {job.name!r} already exists; remove it first "
                              f"(`selftaught schedule remove {job.name}`) or pick another name") from None

    def get_job(self, name: str) -> JobDefinition:
        """The job ``name``; an unknown name is ``ConfigError`` listing the jobs."""
        rows = self._query("SELECT record FROM jobs WHERE name = ?", (name,))
        if not rows:
            names = ", ".join(j.name for j in self.list_jobs()) or "none yet"
            raise ConfigError(f"no job named {name!r}; jobs: {names} (`selftaught schedule list`)")
        return JobDefinition.model_validate_json(rows[0][0])

    def list_jobs(self) -> list[JobDefinition]:
        """Every job, by name."""
        rows = self._query("SELECT record FROM jobs ORDER BY name")
        return [JobDefinition.model_validate_json(r[0]) for r in rows]

    def set_paused(self, name: str, paused: bool) -> JobDefinition:
        job = self.get_job(name).model_copy(update={"paused": paused})
        self._execute("UPDATE jobs SET record = ? WHERE name = ?", (job.model_dump_json(), name))
        return job

    def remove_job(self, name: str) -> None:
        """Forget the job (its runs stay, for the report)."""
        self.get_job(name)
        self._execute("DELETE FROM jobs WHERE name = ?", (name,))

    # -- runs ---------------------------------------------------------------------------

    def save_run(self, run: JobRun) -> None:
        """Insert or replace ``run`` (a run is saved when it starts, at each stage, and
        when it ends)."""
        self._execute(
            "INSERT INTO job_runs (run_id, job, outcome, started_at, record) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(run_id) DO UPDATE SET outcome = excluded.outcome, record = excluded.record",
            (run.run_id, run.job, run.outcome, _utc_text(run.started_at), run.model_dump_json()))

    def runs(self, job: str | None = None, limit: int | None = None) -> list[JobRun]:
        """Runs (of one job, or all), newest first."""
        sql, params = "SELECT record FROM job_runs", ()
        if job is not None:
            sql, params = sql + " WHERE job = ?", (job,)
        sql += " ORDER BY started_at DESC, rowid DESC"
        if limit is not None:
            sql, params = sql + " LIMIT ?", (*params, int(limit))
        return [JobRun.model_validate_json(r[0]) for r in self._query(sql, params)]

    def close_stale_runs(self, reason: str) -> list[JobRun]:
        """Mark every ``running`` run ``interrupted`` (call only while holding the job
        lock: then no run can really be in progress) and return them."""
        stale = [JobRun.model_validate_json(r[0]) for r in
                 self._query("SELECT record FROM job_runs WHERE outcome = 'running'")]
        closed = []
        for run in stale:
            run = run.model_copy(update={"outcome": "interrupted", "reason": reason,
                                         "ended_at": datetime.now(UTC)})
            self.save_run(run)
            closed.append(run)
        return closed

    # -- helpers ------------------------------------------------------------------------

    def _execute(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._lock:
            try:
                self._conn.execute(sql, params)
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write the schedule at {self.path}: {exc}") from exc

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the schedule at {self.path}: {exc}") from exc


def open_jobs(home: Path) -> JobStore:
    """The job store of the data directory ``home``."""
    return JobStore(Path(home) / SCHEDULE_DB)
