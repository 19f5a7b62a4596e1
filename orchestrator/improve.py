"""``selftaught improve``: rounds of collect -> distill -> gate -> promote or not.

One round:

1. **collect**: run the loop on the training tasks with the ``reference`` hint policy
   (the hint-giver sees the reference answer or tests) and the current champion, so
   the model solves, with help, tasks it fails alone. The run is an ordinary run in the
   trajectory store (``selftaught runs list`` shows it; ``run --resume`` continues it).
   With a rehearsal suite, the champion then answers its tasks alone (one greedy
   attempt, no hints, like ``eval``): the ones it gets right are replayed in training,
   so the candidate keeps what the model already knew (training on one family's
   lines otherwise overwrites neighbouring facts).
2. **distill**: train a fresh LoRA adapter on the base model (or, with ``distill.start
   = "champion"``, continue the champion's) from the verified trajectories of every
   round so far (evaluation prompts only: no hints in them).
3. **gate**: pass@1 of the candidate and of the champion (the base model while there
   is none) on the holdout and retention suites; ``orchestrator.gate.decide``
   promotes the candidate or leaves it a candidate, with the reason in its manifest.

The champion's scores are measured once and carried forward when a candidate is
promoted (same tasks, same greedy decoding). A killed ``improve`` loses nothing stored:
finished collection runs, trained adapters and promotions are on disk; run it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel, Field

from core.errors import ConfigError
from core.leakage import check_leakage, prompt_hashes
from finetune.registry import AdapterRegistry
from core.records import RunRecord, Task
from memory.store import TrajectoryStore, open_store
from orchestrator.config import Config, with_overrides
from orchestrator.distill import distill, start_adapter, trainable_base
from orchestrator.evaluate import EvalResult, eval_config, evaluate, evaluated_prompts
from orchestrator.gate import decide
from orchestrator.recall import open_memory
from orchestrator.runner import RoleModels, build_models, execute_run, new_run_id, run_settings

OnStage = Callable[[int, str], None]
"""Called with (round, what is starting) so a caller can show progress."""


class RoundReport(BaseModel):
    """One round; the first keys are DESIGN.md's ``improve --json`` shape."""

    round: int
    train_solved: int
    holdout_before: float
    holdout_after: float | None
    retention_before: float | None
    retention_after: float | None
    promoted: bool
    adapter: str | None
    """The candidate trained this round (None when there was nothing to train on)."""
    reason: str
    train_total: int
    collect_run_id: str
    rehearsal_kept: int | None = None
    """Rehearsal tasks the champion answered right alone (replayed in training)."""
    rehearsal_total: int | None = None
    seconds: dict[str, float] = Field(default_factory=dict)
    """Wall seconds per stage: collect, rehearse (with a rehearsal suite), distill, eval."""


class ImproveReport(BaseModel):
    rounds: list[RoundReport]
    promoted_any: bool
    champion: str | None
    """The champion after the last round."""


class Suites(BaseModel):
    """The task sets of an improve cycle, with the specs they came from."""

    train_spec: str
    train: list[Task]
    holdout_spec: str
    holdout: list[Task]
    retention_spec: str | None = None
    retention: list[Task] = Field(default_factory=list)
    rehearsal_spec: str | None = None
    rehearsal: list[Task] = Field(default_factory=list)
    """Tasks of families the model already handles, replayed when it answers them right."""


def check_suites(suites: Suites) -> None:
    """``ConfigError`` when a training or rehearsal prompt is also an evaluation prompt,
    or the holdout is empty: the gate would be meaningless."""
    if not suites.holdout:
        raise ConfigError(f"--holdout {suites.holdout_spec} has no tasks; give a holdout suite")
    check_leakage([*suites.train, *suites.rehearsal],
                  prompt_hashes([*suites.holdout, *suites.retention]),
                  what="training or rehearsal")


async def improve(
    config: Config,
    suites: Suites,
    *,
    rounds: int | None = None,
    models: RoleModels | None = None,
    on_stage: OnStage | None = None,
) -> ImproveReport:
    """Run ``rounds`` (default ``config.improve.rounds``) improvement rounds."""
    check_suites(suites)
    registry = AdapterRegistry(config.home)
    start_adapter(config, registry, trainable_base(config))  # fail before collecting, not after
    rounds = rounds or config.improve.rounds
    models = models or build_models(config)
    note = on_stage or (lambda _round, _what: None)

    async def score(tasks: list[Task], spec: str | None, adapter: str | None) -> EvalResult | None:
        if not tasks or spec is None:
            return None
        return await evaluate(config, tasks, spec=spec, adapter=adapter, models=models)

    champion = registry.champion()
    note(0, "evaluating the champion" if champion else "evaluating the base model")
    holdout_best = await score(suites.holdout, suites.holdout_spec, "champion")
    retention_best = await score(suites.retention, suites.retention_spec, "champion")
    assert holdout_best is not None  # check_suites: the holdout is never empty
    collect_runs: list[str] = []
    rehearsal_runs: list[str] = []
    reports: list[RoundReport] = []
    store = open_store(config.home)
    try:
        for number in range(1, rounds + 1):
            seconds: dict[str, float] = {}
            note(number, "collecting trajectories with reference hints")
            started = time.monotonic()
            run = await _collect(config, suites, store, models)
            collect_runs.append(run.run_id)
            solved = store.run_totals(run.run_id).solved
            seconds["collect"] = time.monotonic() - started

            trajectories = [t for r in collect_runs for t in store.trajectories(run_id=r)]
            if not any(t.outcome == "solved" for t in trajectories):
                reports.append(RoundReport(
                    round=number, train_solved=solved, train_total=len(suites.train),
                    holdout_before=holdout_best.pass_at_1, holdout_after=None,
                    retention_before=_rate(retention_best), retention_after=None,
                    promoted=False, adapter=None, collect_run_id=run.run_id,
                    reason="no training task was solved, so there is nothing to distill",
                    seconds=_rounded(seconds)))
                continue
            rehearsed: dict[str, int] = {}
            if suites.rehearsal:
                note(number, "rehearsing: the champion answers the rehearsal tasks alone")
                started = time.monotonic()
                rehearsal = await _rehearse(config, suites, store, models)
                rehearsal_runs.append(rehearsal.run_id)
                rehearsed = {"rehearsal_kept": store.run_totals(rehearsal.run_id).solved,
                             "rehearsal_total": len(suites.rehearsal)}
                seconds["rehearse"] = time.monotonic() - started
            note(number, "distilling")
            started = time.monotonic()
            replayed = [t for r in rehearsal_runs for t in store.trajectories(run_id=r)]
            candidate = distill(config, [*trajectories, *replayed],
                                exclude=[*suites.holdout, *suites.retention])
            seconds["distill"] = time.monotonic() - started

            note(number, f"evaluating candidate {candidate.name}")
            started = time.monotonic()
            holdout = await score(suites.holdout, suites.holdout_spec, candidate.name)
            retention = await score(suites.retention, suites.retention_spec, candidate.name)
            assert holdout is not None
            seconds["eval"] = time.monotonic() - started
            decision = decide(
                holdout_before=holdout_best.pass_at_1, holdout_after=holdout.pass_at_1,
                retention_before=_rate(retention_best), retention_after=_rate(retention),
                margin=config.improve.margin, tolerance=config.improve.tolerance,
                retention_tasks=len(suites.retention) or None)
            registry.set_eval(candidate.name, {
                "holdout": _eval_entry(holdout, suites.holdout_spec, holdout_best),
                **({"retention": _eval_entry(retention, suites.retention_spec, retention_best)}
                   if retention is not None else {}),
                "gate": {**decision.model_dump(), "margin": config.improve.margin,
                         "tolerance": config.improve.tolerance,
                         "collect_runs": list(collect_runs),
                         "rehearsal_runs": list(rehearsal_runs)},
            })
            if decision.promote:
                registry.promote(candidate.name)
            reports.append(RoundReport(
                round=number, train_solved=solved, train_total=len(suites.train),
                holdout_before=holdout_best.pass_at_1, holdout_after=holdout.pass_at_1,
                retention_before=_rate(retention_best), retention_after=_rate(retention),
                promoted=decision.promote, adapter=candidate.name, reason=decision.reason,
                collect_run_id=run.run_id, seconds=_rounded(seconds), **rehearsed))
            if decision.promote:
                holdout_best, retention_best = holdout, retention
    finally:
        store.close()
    champion = registry.champion()
    return ImproveReport(rounds=reports, promoted_any=any(r.promoted for r in reports),
                         champion=champion.name if champion else None)


def improve_specs(
    config: Config, train: str, *, holdout: str, retention: str | None = None,
    rehearsal: str | None = None, on_stage: OnStage | None = None,
) -> ImproveReport:
    """``selftaught improve``: :func:`improve` on the suites the specs name."""
    import asyncio

    from orchestrator.suites import load_tasks

    suites = Suites(train_spec=train, train=load_tasks(train), holdout_spec=holdout,
                    holdout=load_tasks(holdout), retention_spec=retention,
                    retention=load_tasks(retention) if retention else [],
                    rehearsal_spec=rehearsal, rehearsal=load_tasks(rehearsal) if rehearsal else [])
    return asyncio.run(improve(config, suites, on_stage=on_stage))


async def _collect(config: Config, suites: Suites, store: TrajectoryStore, models: RoleModels) -> RunRecord:
    """One reference-hint run over the training tasks with the current champion."""
    cfg = with_overrides(config, {"loop.hints": "reference", "run.adapter": "champion"})
    run = RunRecord(run_id=f"improve-{new_run_id()}", tasks_spec=suites.train_spec,
                    settings=run_settings(cfg), total=len(suites.train))
    store.create_run(run)
    # Memory helps collection too, but never with what was learned on a gate task.
    exclude = evaluated_prompts(cfg.home) | prompt_hashes([*suites.holdout, *suites.retention])
    memory = open_memory(cfg, learn=True, exclude=exclude)
    try:
        await execute_run(cfg, suites.train, store, run, models=models, memory=memory)
    finally:
        if memory is not None:
            memory.close()
    return run


async def _rehearse(config: Config, suites: Suites, store: TrajectoryStore, models: RoleModels) -> RunRecord:
    """One attempt per rehearsal task by the champion alone (``eval``'s settings), stored
    as a run in the trajectory store so that its verified answers become training rows."""
    cfg = eval_config(config, "champion")
    run = RunRecord(run_id=f"rehearse-{new_run_id()}", tasks_spec=suites.rehearsal_spec or "",
                    settings=run_settings(cfg), total=len(suites.rehearsal))
    store.create_run(run)
    await execute_run(cfg, suites.rehearsal, store, run, models=models)
    return run


def _rate(result: EvalResult | None) -> float | None:
    return None if result is None else result.pass_at_1


def _eval_entry(result: EvalResult | None, spec: str | None, incumbent: EvalResult | None) -> dict:
    assert result is not None
    return {"spec": spec, "pass_at_1": result.pass_at_1, "passed": result.passed,
            "total": result.total, "per_family": result.per_family, "run_id": result.run_id,
            "incumbent": incumbent.adapter if incumbent else None,
            "incumbent_pass_at_1": incumbent.pass_at_1 if incumbent else None,
            "incumbent_per_family": incumbent.per_family if incumbent else None}


def _rounded(seconds: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in seconds.items()}
