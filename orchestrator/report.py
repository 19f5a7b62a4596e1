"""``selftaught report``: what self-improvement achieved, as numbers.

:func:`gather` reads the data directory (the adapter registry, the trajectory store,
the job runs) into one :class:`Report`, which ``report --json`` prints;
``orchestrator.plots`` draws it and ``orchestrator.report_page`` writes the page.

What is shown:

* holdout and retention pass@1 per task family, for the base model and each adapter in
  the order they were trained (the figures each round's gate recorded in the adapter's
  manifest), with the champion marked;
* solved-at-attempt distributions per hint policy, from the trajectory store;
* memory worth, when trajectories retrieved memory (``Trajectory.lessons``): for each
  item, how often attempt 1 succeeded with it, against same-family attempts without any;
* tokens and minutes per stage for each job run;
* tables of runs, adapters and job runs.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from core.records import Trajectory
from finetune.registry import AdapterManifest, AdapterRegistry
from memory.jobs import AdapterResult, JobRun, open_jobs
from memory.store import open_store
from orchestrator.config import Config
from orchestrator.lifecycle import shown_job_run

MEMORY_ITEMS = 15
"""The memory panel shows the items retrieved most often."""


class PassSeries(BaseModel):
    """pass@1 of one family of one suite at each point of its chart (None: not measured)."""

    suite: str | None
    family: str
    values: list[float | None]


class PassChart(BaseModel):
    """pass@1 across the base model and the adapters, in training order."""

    kind: Literal["holdout", "retention"]
    points: list[str]
    """``base`` (when the base model was the incumbent of a gate) then adapter names."""
    series: list[PassSeries]
    champion: str | None
    """The champion now, when it is one of the points."""


class SolvedAt(BaseModel):
    """How trajectories of one hint policy ended: solved at attempt k, or not."""

    policy: str
    total: int
    solved_at: dict[str, int]
    unsolved: int


class MemoryWorth(BaseModel):
    item: str
    """The retrieved text (a lesson or case), as stored in the trajectory."""
    retrieved: int
    first_attempt_with: float
    """Share of the trajectories that retrieved it solved at attempt 1."""
    first_attempt_without: float | None
    """The same share over same-family trajectories that retrieved nothing."""


class JobSpend(BaseModel):
    run_id: str
    job: str
    started_at: datetime
    outcome: str
    tokens: int
    cost_usd: float
    minutes: float
    minutes_by_stage: dict[str, float]
    """Minutes per kind of stage (its first word: evaluating, collecting, distilling...)."""


class RunRow(BaseModel):
    run_id: str
    status: str
    tasks: str
    hints: str | None
    total: int
    done: int
    solved: int
    tokens: int
    created_at: datetime


class AdapterRow(AdapterResult):
    """An adapter's gate figures (:func:`adapter_result`) and what it is."""

    status: str
    method: str
    created_at: datetime
    holdout_spec: str | None = None
    train_rows: int | None = None
    train_seconds: float | None = None


class Report(BaseModel):
    """Everything the report shows; ``report --json`` prints it."""

    home: str
    generated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    champion: str | None
    holdout: PassChart | None
    retention: PassChart | None
    solved_at: list[SolvedAt]
    memory: list[MemoryWorth]
    spend: list[JobSpend]
    runs: list[RunRow]
    adapters: list[AdapterRow]
    job_runs: list[JobRun]
    files: dict[str, str] = Field(default_factory=dict)
    """What ``report_page.write`` wrote: ``html`` and each figure's PNG, by name."""


def gather(config: Config) -> Report:
    """Read the data directory of ``config`` into a :class:`Report`."""
    manifests = AdapterRegistry(config.home).list()
    champion = next((m.name for m in manifests if m.status == "champion"), None)
    with open_store(config.home) as store:
        trajectories = store.trajectories()
        runs = [_run_row(store, r) for r in store.list_runs()]
    with open_jobs(config.home) as jobs:
        job_runs = [shown_job_run(r) for r in jobs.runs()]
    return Report(
        home=str(config.home), champion=champion,
        holdout=pass_chart(manifests, "holdout", champion),
        retention=pass_chart(manifests, "retention", champion),
        solved_at=solved_at(trajectories), memory=memory_worth(trajectories),
        spend=[job_spend(r) for r in reversed(job_runs)], runs=runs,
        adapters=[_adapter_row(m) for m in manifests], job_runs=job_runs)


def pass_chart(manifests: list[AdapterManifest], kind: Literal["holdout", "retention"],
               champion: str | None) -> PassChart | None:
    """The chart of ``kind`` from the manifests (oldest first), or None without data."""
    entries = [(m.name, e) for m in manifests
               if isinstance(e := m.evaluation.get(kind), dict) and e.get("per_family")]
    if not entries:
        return None
    points = ["base", *(name for name, _ in entries)]
    values: dict[tuple[str | None, str], list[float | None]] = {}

    def put(suite: str | None, family: str, index: int, rate: float) -> None:
        row = values.setdefault((suite, family), [None] * len(points))
        if row[index] is None:  # the base model: the first gate that measured it
            row[index] = rate

    for index, (_, entry) in enumerate(entries, start=1):
        for family, rate in entry["per_family"].items():
            put(entry.get("spec"), family, index, rate)
        if entry.get("incumbent") == "none":
            for family, rate in (entry.get("incumbent_per_family") or {}).items():
                put(entry.get("spec"), family, 0, rate)
    series = [PassSeries(suite=suite, family=family, values=row)
              for (suite, family), row in sorted(values.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))]
    if all(s.values[0] is None for s in series):  # no gate ran against the base model
        points = points[1:]
        series = [s.model_copy(update={"values": s.values[1:]}) for s in series]
    return PassChart(kind=kind, points=points, series=series,
                     champion=champion if champion in points else None)


def solved_at(trajectories: list[Trajectory]) -> list[SolvedAt]:
    """Per hint policy: trajectories solved at each attempt, and unsolved."""
    by_policy: dict[str, Counter[str]] = defaultdict(Counter)
    for t in trajectories:
        by_policy[t.hint_policy][str(t.solved_at) if t.solved_at else "unsolved"] += 1
    rows = []
    for policy, counts in sorted(by_policy.items()):
        unsolved = counts.pop("unsolved", 0)
        rows.append(SolvedAt(policy=policy, total=sum(counts.values()) + unsolved,
                             solved_at={k: counts[k] for k in sorted(counts, key=int)},
                             unsolved=unsolved))
    return rows


def memory_worth(trajectories: list[Trajectory]) -> list[MemoryWorth]:
    """Attempt-1 success with each retrieved item against same-family trajectories that
    retrieved nothing (empty when no trajectory retrieved memory)."""
    def first(t: Trajectory) -> bool:
        return t.solved_at == 1

    without: dict[str, list[bool]] = defaultdict(list)
    with_item: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajectories:
        if not t.lessons:
            without[t.task.family].append(first(t))
        for item in dict.fromkeys(t.lessons):
            with_item[item].append(t)
    rows = []
    for item, hits in sorted(with_item.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:MEMORY_ITEMS]:
        baseline = [ok for f in {t.task.family for t in hits} for ok in without[f]]
        rows.append(MemoryWorth(item=item, retrieved=len(hits),
                                first_attempt_with=sum(map(first, hits)) / len(hits),
                                first_attempt_without=sum(baseline) / len(baseline) if baseline else None))
    return rows


def job_spend(run: JobRun) -> JobSpend:
    by_stage: dict[str, float] = defaultdict(float)
    for stage in run.stages:
        by_stage[(stage.stage.split() or ["other"])[0]] += stage.seconds / 60
    return JobSpend(run_id=run.run_id, job=run.job, started_at=run.started_at,
                    outcome=run.outcome, tokens=run.tokens,
                    cost_usd=run.cost_usd, minutes=run.seconds / 60,
                    minutes_by_stage=dict(by_stage))


def _run_row(store, run) -> RunRow:
    totals = store.run_totals(run.run_id)
    return RunRow(run_id=run.run_id, status=run.status, tasks=run.tasks_spec,
                  hints=(run.settings.get("loop") or {}).get("hints"), total=run.total,
                  done=totals.total, solved=totals.solved, tokens=totals.tokens,
                  created_at=run.created_at)


def adapter_result(manifest: AdapterManifest) -> AdapterResult:
    """A candidate's gate figures from its manifest (None where it was not evaluated)."""
    evaluation = manifest.evaluation
    holdout, retention = evaluation.get("holdout", {}), evaluation.get("retention", {})
    gate = evaluation.get("gate", {})
    return AdapterResult(
        adapter=manifest.name, holdout_before=holdout.get("incumbent_pass_at_1"),
        holdout_after=holdout.get("pass_at_1"),
        retention_before=retention.get("incumbent_pass_at_1"),
        retention_after=retention.get("pass_at_1"), promoted=bool(gate.get("promote")),
        reason=gate.get("reason", "not evaluated by a gate"))


def _adapter_row(m: AdapterManifest) -> AdapterRow:
    return AdapterRow(**dict(adapter_result(m)), status=m.status, method=m.method,
                      created_at=m.created_at, holdout_spec=(m.evaluation.get("holdout") or {}).get("spec"),
                      train_rows=m.dataset.rows if m.dataset else None, train_seconds=m.train_seconds)
