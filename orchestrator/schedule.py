"""``selftaught schedule``: jobs that run ``improve`` by themselves, and their schedule.

A job is a name, a trigger, a budget and the arguments of one ``improve``, validated
when the job is added (specs load, the holdout has tasks, nothing leaks, config keys
exist, the generator is trainable), so a bad job fails then, not at 3 a.m.

Two tables in ``<home>/schedule.db`` hold it: ``memory.jobs`` keeps what each job is
(and its runs); APScheduler's persistent ``SQLAlchemyJobStore`` keeps when each fires
next. :func:`sync` makes the second follow the first; every ``schedule`` command that
changes a job calls it, and so does the worker at start and every
``schedule.poll_seconds`` (so it sees jobs added while it runs).

Triggers: ``cron`` (APScheduler's ``CronTrigger.from_crontab``, local time), ``every``
(an ``IntervalTrigger``), and ``after_trajectories`` N, which APScheduler lacks: it is an
interval job every ``schedule.poll_seconds`` whose run starts improve only once N
trajectories were added to the store since the job's last run (:func:`trajectories_due`).

Catch-up policy for runs missed while no worker ran: missed runs of a job coalesce into
one, which starts if the worker gets to it within ``schedule.grace_seconds`` of its time;
a run missed by more is skipped (the worker says so) and the job waits for its next time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import BaseModel, ValidationError

from core.errors import ConfigError
from memory.jobs import (
    SCHEDULE_DB, Budget, ImproveArgs, JobDefinition, JobRun, Trigger, open_jobs,
)
from memory.store import open_store
from orchestrator.config import (
    CONFIG_FILE_NAME, IMPROVE_OPTIONS, Config, ScheduleConfig, load_config, with_overrides,
)
from orchestrator.lifecycle import shown_job_run

if TYPE_CHECKING:
    from orchestrator.improve import Suites

JOB_FUNCTION = "orchestrator.worker:fire"
"""What APScheduler calls with the job name (by reference: its store is persistent)."""

SUITE_OPTIONS = {"spec": "train", "holdout": "holdout", "retention": "retention",
                 "rehearsal": "rehearsal", "test": "test"}
"""``improve`` parameters that name task suites -> the suite's role in ``Suites``."""
CONFIG_OPTIONS = IMPROVE_OPTIONS
UNUSED_OPTIONS = {"as_json", "config"}
"""``--json`` means nothing to a job (its record and log are its output); ``--config``
names the job's config file."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# -- triggers ---------------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``30m``, ``2h``, ``1d`` or a sum such as ``1h30m``."""
    compact = text.replace(" ", "").lower()
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ConfigError(f"bad duration {text!r}: write it like 90s, 30m, 2h, 1d or 1h30m")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"bad duration {text!r}: it must be longer than zero")
    return seconds


def parse_trigger(*, cron: str | None, every: str | None, after_trajectories: int | None) -> Trigger:
    """The one trigger given; ``ConfigError`` unless exactly one is, and valid."""
    given = [(k, v) for k, v in (("cron", cron), ("every", every),
                                 ("after_trajectories", after_trajectories)) if v is not None]
    if len(given) != 1:
        raise ConfigError("give exactly one of --cron EXPR, --every DURATION or "
                          "--after-trajectories N")
    kind, value = given[0]
    trigger = Trigger(kind=kind, text=str(value).strip())
    if kind == "after_trajectories" and int(value) < 1:
        raise ConfigError("--after-trajectories needs a count of at least 1")
    aps_trigger(trigger, ScheduleConfig())  # validates the cron expression or duration
    return trigger


def aps_trigger(trigger: Trigger, settings: ScheduleConfig) -> Any:
    """The APScheduler trigger of ``trigger`` (``after_trajectories`` polls)."""
    if trigger.kind == "cron":
        try:
            return CronTrigger.from_crontab(trigger.text)
        except ValueError as exc:
            raise ConfigError(f"bad cron expression {trigger.text!r} ({exc}); use five fields: "
                              "minute hour day-of-month month day-of-week, e.g. '0 3 * * *'") from None
    if trigger.kind == "every":
        return IntervalTrigger(seconds=parse_duration(trigger.text))
    return IntervalTrigger(seconds=settings.poll_seconds)


def trajectories_due(job: JobDefinition, last_run: JobRun | None, count: int) -> tuple[int, bool]:
    """(new trajectories since the job's last run, whether that reaches its trigger).
    The baseline is the store's count when the last run ended (so the job's own
    collection does not trigger it again), or when the job was added."""
    if last_run is None:
        baseline = job.trajectories_at_add
    else:
        baseline = last_run.trajectories_after if last_run.trajectories_after is not None \
            else last_run.trajectories_before
    new = max(count - baseline, 0)
    return new, job.trigger.kind == "after_trajectories" and new >= int(job.trigger.text)


# -- the improve arguments --------------------------------------------------------------


def improve_args(config: Config, params: dict[str, Any], argv: list[str],
                 config_file: Path | None) -> ImproveArgs:
    """Validate ``improve``'s parsed parameters for a job (``ConfigError`` on anything
    ``improve`` would refuse) and return them in the form the job stores: suite file
    paths and the config file made absolute."""
    refused = sorted(k for k, v in params.items()
                     if k not in {*SUITE_OPTIONS, *CONFIG_OPTIONS, *UNUSED_OPTIONS}
                     and v not in (None, False, (), []))
    if refused:
        raise ConfigError(f"improve option(s) {', '.join(refused)} cannot be scheduled yet; "
                          "leave them out or set them in the job's selftaught.toml")
    chosen = params.get("config") or config_file
    if chosen is None and (Path.cwd() / CONFIG_FILE_NAME).is_file():
        chosen = Path.cwd() / CONFIG_FILE_NAME
    if chosen is not None and not Path(chosen).is_file():
        raise ConfigError(f"config file {chosen} does not exist; fix the --config path.")
    args = ImproveArgs(
        argv=list(argv),
        suites={role: _absolute_spec(params[name]) for name, role in SUITE_OPTIONS.items()
                if params.get(name)},
        overrides={key: params[name] for name, key in CONFIG_OPTIONS.items()
                   if params.get(name) is not None},
        config_file=str(Path(chosen).resolve()) if chosen is not None else None)
    if "train" not in args.suites or "holdout" not in args.suites:
        raise ConfigError("the improve arguments need TASKS and --holdout TASKS")
    from orchestrator.distill import trainable_base
    from orchestrator.improve import check_suites

    trainable_base(job_config(config.home, args))
    check_suites(load_suites(args))
    return args


def job_config(home: Path, args: ImproveArgs) -> Config:
    """The configuration a run of the job uses: its config file (read at each run) or the
    defaults, with the job's overrides, in the data directory ``home``."""
    base = load_config(Path(args.config_file)) if args.config_file else Config()
    return with_overrides(base, {**args.overrides, "home": str(home)})


def load_suites(args: ImproveArgs) -> Suites:
    from orchestrator.improve import Suites
    from orchestrator.suites import load_tasks

    fields: dict[str, Any] = {}
    for role, spec in args.suites.items():
        fields[f"{role}_spec"], fields[role] = spec, load_tasks(spec)
    return Suites(**fields)


def _absolute_spec(spec: str) -> str:
    """``spec`` with each part that is a file replaced by its absolute path, so the job
    reads the same files whatever directory the worker runs in."""
    from orchestrator.suites import split_specs

    parts = split_specs(spec)
    if len(parts) == 1 or Path(spec).expanduser().is_file():
        parts = [spec]
    return "+".join(str(Path(p).expanduser().resolve()) if Path(p).expanduser().is_file() else p
                    for p in parts)


# -- jobs -------------------------------------------------------------------------------


class JobStatus(BaseModel):
    """One line of ``schedule list``."""

    job: JobDefinition
    next_run: datetime | None
    """When the scheduler fires it next (None: paused, or an after-trajectories job)."""
    new_trajectories: int | None = None
    """For an after-trajectories job: trajectories added since its last run."""
    last_run: JobRun | None = None


class JobDetail(JobStatus):
    """``schedule show``: the job and its runs, newest first."""

    runs: list[JobRun]


def add_job(config: Config, name: str, *, cron: str | None, every: str | None,
            after_trajectories: int | None, max_minutes: float | None, max_tokens: int | None,
            max_usd: float | None, improve_params: dict[str, Any], improve_argv: list[str],
            config_file: Path | None) -> JobStatus:
    """``schedule add``: validate everything (name, trigger, budget, the improve
    arguments as ``improve`` parsed them), store the job and schedule it."""
    if not _NAME.match(name):
        raise ConfigError(f"invalid job name {name!r}: use letters, digits, '.', '_' or '-' "
                          "(up to 64, not starting with a symbol)")
    trigger = parse_trigger(cron=cron, every=every, after_trajectories=after_trajectories)
    try:
        budget = Budget(max_minutes=max_minutes, max_tokens=max_tokens, max_usd=max_usd)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
    args = improve_args(config, improve_params, improve_argv, config_file)
    with open_store(config.home) as store:
        count = store.count()
    with open_jobs(config.home) as jobs:
        jobs.add_job(JobDefinition(name=name, trigger=trigger, budget=budget, improve=args,
                                   trajectories_at_add=count))
    return _synced_status(config, name)


def set_paused(config: Config, name: str, paused: bool) -> JobStatus:
    with open_jobs(config.home) as jobs:
        jobs.set_paused(name, paused)
    return _synced_status(config, name)


def remove_job(config: Config, name: str) -> None:
    with open_jobs(config.home) as jobs:
        jobs.remove_job(name)
    with scheduler(config) as sched:
        sync(sched, config)


def list_jobs(config: Config) -> list[JobStatus]:
    with scheduler(config) as sched:
        return [_status(config, sched, job) for job in _definitions(config)]


def show_job(config: Config, name: str) -> JobDetail:
    with open_jobs(config.home) as jobs:
        job, runs = jobs.get_job(name), [shown_job_run(r) for r in jobs.runs(name)]
    with scheduler(config) as sched:
        status = _status(config, sched, job)
    return JobDetail(**dict(status), runs=runs)


def _synced_status(config: Config, name: str) -> JobStatus:
    with scheduler(config) as sched:
        sync(sched, config)
        with open_jobs(config.home) as jobs:
            return _status(config, sched, jobs.get_job(name))


def _status(config: Config, sched: BaseScheduler, job: JobDefinition) -> JobStatus:
    with open_jobs(config.home) as jobs:
        last = next((shown_job_run(r) for r in jobs.runs(job.name, limit=1)), None)
    scheduled = sched.get_job(job.name)
    new = None
    if job.trigger.kind == "after_trajectories":
        with open_store(config.home) as store:
            new, _ = trajectories_due(job, last, store.count())
    next_run = scheduled.next_run_time if scheduled is not None else None
    return JobStatus(job=job, next_run=None if new is not None else next_run,
                     new_trajectories=new, last_run=last)


def _definitions(config: Config) -> list[JobDefinition]:
    with open_jobs(config.home) as jobs:
        return jobs.list_jobs()


# -- the APScheduler side ---------------------------------------------------------------


class OfflineScheduler(BaseScheduler):
    """A scheduler with no loop: it reads and changes the persistent schedule and never
    runs a job (what ``schedule`` commands use while a worker may be running)."""

    def shutdown(self, wait: bool = True) -> None:  # abstract in BaseScheduler
        super().shutdown(wait)

    def wakeup(self) -> None:
        pass


def make_scheduler(home: Path, kind: type[BaseScheduler] = BackgroundScheduler) -> BaseScheduler:
    """A scheduler of ``kind`` on the persistent job store of ``home``, running one job
    at a time."""
    home.mkdir(parents=True, exist_ok=True)
    store = SQLAlchemyJobStore(url=f"sqlite:///{(home / SCHEDULE_DB).resolve()}",
                               engine_options={"connect_args": {"timeout": 30}})
    return kind(jobstores={"default": store}, executors={"default": ThreadPoolExecutor(1)})


@contextmanager
def scheduler(config: Config) -> Iterator[BaseScheduler]:
    """The schedule of ``config.home``, for reading and changing it (nothing fires)."""
    sched = make_scheduler(config.home, OfflineScheduler)
    sched.start(paused=True)
    try:
        yield sched
    finally:
        sched.shutdown(wait=False)


def sync(sched: BaseScheduler, config: Config) -> None:
    """Make the scheduler's jobs match the job definitions: add new ones, re-time those
    whose trigger or grace time changed, pause/resume, remove those no longer defined."""
    settings = config.schedule
    present = {job.id: job for job in sched.get_jobs()}
    for job in _definitions(config):
        trigger = aps_trigger(job.trigger, settings)
        current = present.pop(job.name, None)
        if current is None or str(current.trigger) != str(trigger):
            current = sched.add_job(JOB_FUNCTION, trigger, id=job.name, name=job.name,
                                    args=[job.name], replace_existing=True, coalesce=True,
                                    max_instances=1, misfire_grace_time=int(settings.grace_seconds))
        elif current.misfire_grace_time != int(settings.grace_seconds):
            sched.modify_job(job.name, misfire_grace_time=int(settings.grace_seconds))
        current = sched.get_job(job.name)
        if job.paused and current.next_run_time is not None:
            sched.pause_job(job.name)
        elif not job.paused and current.next_run_time is None:
            sched.resume_job(job.name)
    for leftover in present:
        sched.remove_job(leftover)
