"""Scheduling logic: triggers, budgets, the job store, validating improve arguments
when a job is added, and the ``schedule`` commands through the real CLI."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.metered import MeteredChatModel
from agents.model import Usage
from agents.testing import ScriptedChatModel
from core.errors import ConfigError
from memory.jobs import Budget, ImproveArgs, JobDefinition, JobRun, JobStore, Trigger
from orchestrator.budget import Ledger
from orchestrator.config import Config
from orchestrator.schedule import (
    CONFIG_OPTIONS, SUITE_OPTIONS, UNUSED_OPTIONS, add_job, list_jobs, parse_duration,
    parse_trigger, remove_job, scheduler, set_paused, show_job, trajectories_due,
)
from tests.support import cli, jsonl


def test_durations_and_triggers():
    assert parse_duration("90s") == 90 and parse_duration("30m") == 1800
    assert parse_duration("1h30m") == 5400 and parse_duration("1d") == 86400
    assert parse_duration("0.5h") == 1800
    for bad in ("", "10", "2x", "1h 3", "0s", "m5"):
        with pytest.raises(ConfigError, match="duration"):
            parse_duration(bad)
    assert parse_trigger(cron="0 3 * * *", every=None, after_trajectories=None).kind == "cron"
    assert parse_trigger(cron=None, every=None, after_trajectories=50).text == "50"
    with pytest.raises(ConfigError, match="cron expression"):
        parse_trigger(cron="0 3 * *", every=None, after_trajectories=None)
    with pytest.raises(ConfigError, match="exactly one"):
        parse_trigger(cron="0 3 * * *", every="1h", after_trajectories=None)
    with pytest.raises(ConfigError, match="at least 1"):
        parse_trigger(cron=None, every=None, after_trajectories=0)


def job(trigger: Trigger, at_add: int = 0) -> JobDefinition:
    return JobDefinition(name="j", trigger=trigger, trajectories_at_add=at_add,
                         improve=ImproveArgs(argv=[], suites={"train": "t", "holdout": "h"}))


def test_after_trajectories_counts_from_the_end_of_the_last_run():
    every_50 = job(Trigger(kind="after_trajectories", text="50"), at_add=10)
    assert trajectories_due(every_50, None, 59) == (49, False)
    assert trajectories_due(every_50, None, 60) == (50, True)
    # The job's own collection (trajectories 60 -> 100) does not count towards the next run.
    last = JobRun(run_id="r", job="j", cause="schedule", pid=1, outcome="done",
                  trajectories_before=60, trajectories_after=100)
    assert trajectories_due(every_50, last, 120) == (20, False)
    killed = last.model_copy(update={"trajectories_after": None, "outcome": "interrupted"})
    assert trajectories_due(every_50, killed, 110) == (50, True)
    # Other triggers are never "due" by count.
    assert trajectories_due(job(Trigger(kind="every", text="1h")), None, 10**6)[1] is False


def test_the_ledger_counts_every_metered_call_and_says_which_budget_is_reached():
    now = [0.0]
    ledger = Ledger(Budget(max_tokens=20, max_minutes=1.0), clock=lambda: now[0])
    model = MeteredChatModel(ScriptedChatModel(["four words right here"] * 3, model_id="m"), ledger.add)
    assert model.model_id == "m"
    ledger.begin_stage(1, "collecting trajectories")
    asyncio.run(model.complete([{"role": "user", "content": "one two three"}]))
    assert (ledger.calls, ledger.prompt_tokens, ledger.completion_tokens) == (1, 3, 4)
    now[0] = 30.0
    assert ledger.over() is None  # 7 tokens, half a minute
    asyncio.run(model.complete([{"role": "user", "content": "a b c d e f g h i j"}]))
    ledger.end_stage()
    assert (ledger.stages[0].tokens, ledger.stages[0].seconds) == (21, 30.0)
    now[0] = 61.0
    assert ledger.over() == "token budget reached: 21 tokens of 20"
    pieces = asyncio.run(_collect(model.stream([{"role": "user", "content": "x"}])))
    assert pieces == ["four words right here"] and ledger.calls == 3  # a stream is metered too
    only_time = Ledger(Budget(max_minutes=1.0), clock=lambda: now[0])
    assert only_time.over() is None
    now[0] = 121.0
    assert only_time.over() == "time budget reached: 1.0 minutes of 1"
    dollars = Ledger(Budget(max_usd=0.01))
    dollars.add(Usage(prompt_tokens=1, cost_usd=0.004))
    assert dollars.over() is None
    dollars.add(Usage(prompt_tokens=1, cost_usd=0.007))
    assert dollars.over().startswith("dollar budget reached: $0.0110")


async def _collect(stream):
    return [piece async for piece in stream]


def test_the_job_store_keeps_jobs_and_runs_and_closes_stale_runs(tmp_path):
    with JobStore(tmp_path / "schedule.db") as store:
        store.add_job(job(Trigger(kind="every", text="1h")))
        with pytest.raises(ConfigError, match="already exists"):
            store.add_job(job(Trigger(kind="every", text="1h")))
        assert store.set_paused("j", True).paused and store.get_job("j").paused
        started = datetime.now(UTC)
        for i, outcome in enumerate(["done", "running"]):
            store.save_run(JobRun(run_id=f"r{i}", job="j", cause="schedule", pid=1, outcome=outcome,
                                  started_at=started + timedelta(seconds=i)))
        assert [r.run_id for r in store.runs("j")] == ["r1", "r0"]  # newest first
        [closed] = store.close_stale_runs("the process running it died")
        assert closed.run_id == "r1" and closed.outcome == "interrupted" and closed.ended_at
        assert [r.outcome for r in store.runs()] == ["interrupted", "done"]
        store.remove_job("j")
        with pytest.raises(ConfigError, match="no job named 'j'"):
            store.get_job("j")
        assert len(store.runs("j")) == 2  # runs outlive their job, for the report


def test_a_run_whose_process_died_is_shown_interrupted_before_anyone_records_it(tmp_path):
    import subprocess
    import sys

    from orchestrator.lifecycle import shown_job_run

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    dead = JobRun(run_id="r0", job="j", cause="schedule", pid=int(gone))
    shown = shown_job_run(dead)
    assert (shown.outcome, shown.reason) == ("interrupted", f"the process running it (pid {gone}) died")
    live = dead.model_copy(update={"pid": os.getpid()})
    assert shown_job_run(live).outcome == "running"
    finished = dead.model_copy(update={"outcome": "done"})
    assert shown_job_run(finished) == finished
    # What `schedule show` and `schedule list` give for it; the store keeps `running` until
    # the next job run (holding the job lock) records it.
    with JobStore(tmp_path / "home" / "schedule.db") as store:
        store.add_job(job(Trigger(kind="every", text="1h")))
        store.save_run(dead)
    config = Config(home=tmp_path / "home")
    assert [r.outcome for r in show_job(config, "j").runs] == ["interrupted"]
    assert list_jobs(config)[0].last_run.outcome == "interrupted"
    with JobStore(tmp_path / "home" / "schedule.db") as store:
        assert store.runs("j")[0].outcome == "running"


def test_every_improve_option_is_scheduled_or_refused_on_purpose():
    # When `improve` gains an option, a job must either pass it on or say it cannot:
    # this fails until orchestrator.schedule knows the new option.
    import typer

    import cli

    improve = typer.main.get_command(cli.typer_app).commands["improve"]
    assert {p.name for p in improve.params} == {*SUITE_OPTIONS, *CONFIG_OPTIONS, *UNUSED_OPTIONS}
    for dotted in CONFIG_OPTIONS.values():  # each names a real config key
        section, key = dotted.split(".")
        assert key in Config.model_fields[section].annotation.model_fields, dotted


def suites_on_disk(tmp_path: Path) -> dict[str, str]:
    def rows(prefix: str, n: int, offset: int) -> list[dict]:
        return [{"id": f"{prefix}{i}", "prompt": f"What is {i + offset} + 1?", "answer": str(i + offset + 1)}
                for i in range(n)]

    jsonl(tmp_path / "train.jsonl", rows("t", 3, 0))
    jsonl(tmp_path / "hold.jsonl", rows("h", 2, 100))
    return {"spec": "train.jsonl", "holdout": "hold.jsonl"}


def add(config: Config, params: dict, name: str = "nightly", max_tokens: int | None = None,
        **trigger) -> object:
    trigger = trigger or {"every": "1d"}
    return add_job(config, name, cron=trigger.get("cron"), every=trigger.get("every"),
                   after_trajectories=trigger.get("after_trajectories"),
                   max_minutes=None, max_tokens=max_tokens, max_usd=None,
                   improve_params=params, improve_argv=["..."], config_file=None)


def test_adding_a_job_checks_the_improve_arguments_and_schedules_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Config(home=tmp_path / "home")
    params = suites_on_disk(tmp_path)
    for bad, match in [({**params, "holdout": "missing.jsonl"}, "not found"),
                       ({**params, "holdout": "train.jsonl"}, "same prompt as an evaluation"),
                       ({**params, "margin": 3.0}, "improve.margin"),
                       ({**params, "spec": "rg:no_such_family"}, "no_such_family"),
                       ({**params, "future_option": "x"}, "cannot be scheduled yet")]:
        with pytest.raises(ConfigError, match=match):
            add(config, bad)
    with pytest.raises(ConfigError, match="--max-tokens: Input should be greater than or equal to 1"):
        add(config, params, max_tokens=0)
    assert list_jobs(config) == []  # nothing half-added

    status = add(config, {**params, "rounds": 2, "as_json": True})
    stored = status.job.improve
    assert stored.suites == {"train": str(tmp_path / "train.jsonl"), "holdout": str(tmp_path / "hold.jsonl")}
    assert stored.overrides == {"improve.rounds": 2} and stored.config_file is None
    assert status.next_run is not None and status.next_run - datetime.now(UTC) > timedelta(hours=23)
    with pytest.raises(ConfigError, match="already exists"):
        add(config, params)

    add(config, params, name="on-data", after_trajectories=5)
    paused = set_paused(config, "nightly", True)
    assert paused.next_run is None and paused.job.paused
    with scheduler(config) as sched:  # APScheduler's persistent store follows the definitions
        assert {j.id: j.next_run_time is None for j in sched.get_jobs()} == {"nightly": True, "on-data": False}
    assert set_paused(config, "nightly", False).next_run is not None
    detail = show_job(config, "on-data")
    assert detail.new_trajectories == 0 and detail.runs == [] and detail.next_run is None
    remove_job(config, "on-data")
    with scheduler(config) as sched:
        assert [j.id for j in sched.get_jobs()] == ["nightly"]
    with pytest.raises(ConfigError, match="no job named"):
        show_job(config, "on-data")


def test_schedule_commands_through_the_cli(tmp_path):
    suites_on_disk(tmp_path)
    bad = cli("schedule", "add", "x", "--every", "1h", "--", "train.jsonl", "--holdout", "nope.jsonl",
              cwd=tmp_path)
    assert bad.returncode == 2 and "nope.jsonl" in bad.stderr
    unknown = cli("schedule", "add", "x", "--every", "1h", "--", "train.jsonl", "--holdout",
                  "hold.jsonl", "--bogus", "1", cwd=tmp_path)
    assert unknown.returncode == 2 and "No such option: --bogus" in unknown.stderr
    added = cli("schedule", "add", "nightly", "--cron", "0 3 * * *", "--max-tokens", "5000", "--json",
                "--", "train.jsonl", "--holdout", "hold.jsonl", "--rounds", "2", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    status = json.loads(added.stdout)
    assert status["job"]["budget"]["max_tokens"] == 5000
    assert status["job"]["improve"]["overrides"] == {"improve.rounds": 2}
    next_run = datetime.fromisoformat(status["next_run"]).astimezone()  # cron is local time
    assert (next_run.hour, next_run.minute) == (3, 0)
    listed = json.loads(cli("schedule", "list", "--json", cwd=tmp_path).stdout)
    assert [(j["job"]["name"], j["next_run"]) for j in listed["jobs"]] == [("nightly", status["next_run"])]
    assert cli("schedule", "remove", "nightly", cwd=tmp_path).returncode == 0
    missing = cli("schedule", "run", "nightly", cwd=tmp_path)
    assert missing.returncode == 2 and "no job named 'nightly'" in missing.stderr


def test_help_imports_neither_the_scheduler_nor_matplotlib():
    import subprocess
    import sys

    probe = ("import sys\nsys.argv = ['selftaught', '--help']\nimport cli\n"
             "try:\n    cli.typer_app()\nexcept SystemExit:\n    pass\n"
             "print('LOADED', sorted(m for m in ('apscheduler', 'sqlalchemy', 'matplotlib')"
             " if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=120)
    assert "schedule" in done.stdout and "worker" in done.stdout and "report" in done.stdout
    assert "LOADED []" in done.stdout, done.stderr


def test_missed_runs_coalesce_within_the_grace_time_and_are_skipped_beyond_it(tmp_path, monkeypatch):
    # The catch-up policy, with APScheduler's real scheduler on the persistent store: a job
    # whose runs were missed within schedule.grace_seconds runs once; one missed by more
    # is skipped (the worker reports the event) and waits for its next time.
    import time
    from types import SimpleNamespace

    from apscheduler.events import EVENT_JOB_MISSED

    from orchestrator import worker
    from orchestrator.config import ScheduleConfig
    from orchestrator.schedule import make_scheduler, sync

    monkeypatch.chdir(tmp_path)
    config = Config(home=tmp_path / "home", schedule=ScheduleConfig(grace_seconds=60))
    params = suites_on_disk(tmp_path)
    add(config, params, name="recent", every="10s")
    add(config, params, name="stale", every="1h")
    now = datetime.now(UTC)
    with scheduler(config) as sched:  # as if no worker ran for a while
        sched.modify_job("recent", next_run_time=now - timedelta(seconds=35))  # 4 runs missed
        sched.modify_job("stale", next_run_time=now - timedelta(minutes=10))
    fired: list[str] = []
    monkeypatch.setattr(worker, "_active", SimpleNamespace(fire=fired.append))
    sched, missed = make_scheduler(config.home), []
    sched.add_listener(lambda event: missed.append(event.job_id), EVENT_JOB_MISSED)
    sched.start(paused=True)
    try:
        sync(sched, config)  # an unchanged job keeps its (missed) time
        sched.resume()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (fired and missed):
            time.sleep(0.05)
        time.sleep(0.5)
        next_stale = sched.get_job("stale").next_run_time
    finally:
        sched.shutdown(wait=True)
    assert fired == ["recent"] and missed == ["stale"]
    assert timedelta(minutes=45) < next_stale - now < timedelta(minutes=61)
