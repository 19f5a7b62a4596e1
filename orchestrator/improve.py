"""``selftaught improve``: rounds of collect -> distill -> gate -> promote or not.

Before the first round the champion (the base model while there is none) is evaluated
on the holdout and retention suites (the base model's evaluation is cached, so a later
``improve`` on the same suites with the same settings reuses it), and the time each
round will take is estimated from measured rates (``orchestrator.estimate``). One round:

1. **collect** (``improve.collect``, ``orchestrator.collect``): ``samples`` (the
   champion's own verified replies, no hints), ``feedback``, ``reference`` or ``gold``.
   With a rehearsal suite, the champion then answers its tasks alone, and the ones it
   gets right are replayed in training (so the candidate keeps what it knew).
2. **distill**: a LoRA adapter from the rows of every round so far, trained from the
   base model; or, with ``distill.start = "champion"`` and a champion, the champion's
   adapter trained further on this round's rows only (it already learned the earlier
   ones). Every row carries its supervision label; the manifest counts them.
3. **gate**: greedy pass@1 of candidate and champion on the same holdout and retention
   tasks, compared task by task (``orchestrator.gate``: margin AND a significant paired
   gain, no significant retention loss beyond the tolerance, drift under
   ``improve.max_kl`` when set). The drift is the candidate's mean per-token KL from
   the base model on the base's own replies to the retention prompts (holdout prompts
   without a retention suite).
4. **test** (optional): the candidate and the champion it was compared with answer the
   test suite only after the decision, so the reported gain was not used to select.

The champion's scores are carried forward when a candidate is promoted (same tasks,
same greedy decoding), so round N+1 collects with, and is compared against, round N's
champion. A killed ``improve`` loses nothing stored: finished collection runs, trained
adapters, promotions and cached evaluations are on disk; run it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import BaseModel, Field

from core.errors import ConfigError
from core.leakage import check_leakage, prompt_hashes
from core.records import Task, Trajectory
from finetune.registry import AdapterManifest, AdapterRegistry
from memory.store import TrajectoryStore, open_store
from orchestrator.collect import Collection, collect, rehearse
from orchestrator.config import Config
from orchestrator.distill import distill, start_adapter, trainable_base
from orchestrator.estimate import Plan, Rates, estimate_round
from orchestrator.evaluate import EVAL_STORE, EvalResult, cached_result, evaluate
from orchestrator.gate import GateDecision, decide, pair
from orchestrator.profiles import improve_config
from orchestrator.runner import RoleModels, build_models

GUESSED_PASS_RATE = 0.2
"""The champion's pass@1 an estimate assumes before it has been measured."""


class Progress:
    """What ``improve`` says while it works; the default says nothing. ``stage`` opens
    a stage (``total``: tasks it will finish, None when not counted), ``advance`` is
    called per finished task, ``estimate`` before a round with seconds per stage."""

    def stage(self, round_no: int, what: str, total: int | None = None) -> None: ...

    def advance(self, trajectory: Trajectory | None = None) -> None: ...

    def estimate(self, round_no: int, seconds: dict[str, float]) -> None: ...


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
    collect_run_id: str | None
    """The collection run (None for ``gold``: no model ran)."""
    rehearsal_kept: int | None = None
    """Rehearsal tasks the champion answered right alone (replayed in training)."""
    rehearsal_total: int | None = None
    seconds: dict[str, float] = Field(default_factory=dict)
    """Wall seconds per stage: collect, rehearse, distill, eval, drift, test."""
    collect: str = "samples"
    """How the targets were collected (``improve.collect``)."""
    rows: int = 0
    labels: dict[str, int] = Field(default_factory=dict)
    """Training rows per supervision label (``self``, ``rationalized``, ``gold``, ``human``)."""
    train_pass_at_k: float | None = None
    """``samples``: share of training tasks with a verified reply among the k drawn."""
    p_value: float | None = None
    """One-sided exact McNemar p-value of the holdout gain."""
    wins: int | None = None
    """Holdout tasks the candidate got right and the champion wrong."""
    losses: int | None = None
    retention_p_value: float | None = None
    """One-sided p-value of a retention loss."""
    threshold_only: bool | None = None
    """What the margin/tolerance rule without the significance test would have decided."""
    kl: float | None = None
    """Mean per-token KL(candidate || base) on the base's replies to the retention prompts."""
    holdout_pass_at_k_before: float | None = None
    holdout_pass_at_k_after: float | None = None
    test_before: float | None = None
    """pass@1 on the test suite of the champion the candidate was compared with."""
    test_after: float | None = None
    test_pass_at_k_before: float | None = None
    test_pass_at_k_after: float | None = None
    estimate: dict[str, float] = Field(default_factory=dict)
    """Seconds per stage estimated before the round."""


class ImproveReport(BaseModel):
    rounds: list[RoundReport]
    promoted_any: bool
    champion: str | None
    """The champion after the last round."""
    base_seconds: float = 0.0
    """Seconds spent evaluating the champion before round 1 (0 when cached)."""


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
    test_spec: str | None = None
    test: list[Task] = Field(default_factory=list)
    """Scored only after each decision, to report a gain that was not used to select."""


def check_suites(suites: Suites) -> None:
    """``ConfigError`` when a training or rehearsal prompt is also an evaluation prompt,
    or the holdout is empty: the gate would be meaningless."""
    if not suites.holdout:
        raise ConfigError(f"--holdout {suites.holdout_spec} has no tasks; give a holdout suite")
    check_leakage([*suites.train, *suites.rehearsal],
                  prompt_hashes([*suites.holdout, *suites.retention, *suites.test]),
                  what="training or rehearsal")


async def improve(
    config: Config,
    suites: Suites,
    *,
    rounds: int | None = None,
    models: RoleModels | None = None,
    progress: Progress | None = None,
) -> ImproveReport:
    """Run ``rounds`` (default ``config.improve.rounds``) improvement rounds."""
    check_suites(suites)
    config = improve_config(config)
    registry = AdapterRegistry(config.home)
    start_adapter(config, registry, trainable_base(config))  # fail before collecting, not after
    rounds = rounds or config.improve.rounds
    models = models or build_models(config)
    say = progress or Progress()
    rates = Rates(config.home, f"{config.models.generator}|{config.loop.reply_max_tokens}")
    cycle = _Cycle(config, suites, registry, models, say, rates)

    first = estimate_round(cycle.plan(), rates, GUESSED_PASS_RATE)
    say.estimate(0, {**cycle.baseline_estimate(), **first})
    started = time.monotonic()
    champion = registry.champion()
    say.stage(0, "evaluating the champion" if champion else "evaluating the base model",
              len(suites.holdout) + len(suites.retention))
    best = await cycle.score_all("champion")
    base_seconds = 0.0 if best.holdout.cached else time.monotonic() - started
    reports: list[RoundReport] = []
    with _store(config) as store:
        for number in range(1, rounds + 1):
            report, candidate = await cycle.round(number, store, best)
            reports.append(report)
            if candidate is not None and report.promoted:
                best = candidate
    champion = registry.champion()
    return ImproveReport(rounds=reports, promoted_any=any(r.promoted for r in reports),
                         champion=champion.name if champion else None,
                         base_seconds=round(base_seconds, 1))


class _Scores(BaseModel):
    """One adapter's evaluation on the holdout and (when given) the retention suite."""

    holdout: EvalResult
    retention: EvalResult | None = None


class _Cycle:
    """The state an improve call carries from round to round."""

    def __init__(self, config: Config, suites: Suites, registry: AdapterRegistry,
                 models: RoleModels, say: Progress, rates: Rates) -> None:
        self.config, self.suites, self.registry = config, suites, registry
        self.models, self.say, self.rates = models, say, rates
        self.collect_runs: list[str] = []
        self.rehearsal_runs: list[str] = []

    async def score(self, tasks: list[Task], spec: str | None, adapter: str,
                    *, pass_k: bool = False) -> EvalResult | None:
        if not tasks or spec is None:
            return None
        k = self.config.improve.pass_k if pass_k else 0
        started = time.monotonic()
        result = await evaluate(self.config, tasks, spec=spec, adapter=adapter,
                                models=self.models, samples=k, cache=True,
                                temperature=self.config.improve.temperature,
                                on_task=self.say.advance)
        if not result.cached and not k:
            self.rates.record("eval", time.monotonic() - started, len(tasks))
        return result

    async def score_all(self, adapter: str) -> _Scores:
        # pass@k (sampling, k replies per task) goes where the reported figure is: the
        # test suite, or the holdout when there is none.
        holdout = await self.score(self.suites.holdout, self.suites.holdout_spec, adapter,
                                   pass_k=not self.suites.test)
        assert holdout is not None  # check_suites: the holdout is never empty
        retention = await self.score(self.suites.retention, self.suites.retention_spec, adapter)
        return _Scores(holdout=holdout, retention=retention)

    def baseline_estimate(self) -> dict[str, float]:
        """Seconds to evaluate the champion before round 1 (nothing when it is cached)."""
        cfg, suites = self.config, self.suites
        k = 0 if suites.test else cfg.improve.pass_k
        seconds = 0.0
        for tasks, samples in ((suites.holdout, k), (suites.retention, 0)):
            if tasks and cached_result(cfg, tasks, "champion", samples=samples,
                                       temperature=cfg.improve.temperature) is None:
                seconds += len(tasks) * (self.rates.get("eval") + samples * self.rates.get("sample"))
        return {"baseline": round(seconds)} if seconds else {}

    def plan(self) -> Plan:
        cfg, suites = self.config, self.suites
        return Plan(collect=cfg.improve.collect, train_tasks=len(suites.train),
                    samples=cfg.improve.samples, families=len({t.family for t in suites.train}),
                    max_per_family=cfg.distill.max_per_family,
                    max_per_task=cfg.distill.max_per_task, epochs=cfg.distill.train.epochs,
                    eval_tasks=len(suites.holdout) + len(suites.retention),
                    holdout_tasks=len(suites.holdout),
                    pass_k=cfg.improve.pass_k, test_tasks=len(suites.test),
                    rehearsal_tasks=len(suites.rehearsal),
                    drift_sequences=len(suites.retention or suites.holdout))

    async def round(self, number: int, store: TrajectoryStore,
                    best: _Scores) -> tuple[RoundReport, _Scores | None]:
        cfg, suites, say = self.config, self.suites, self.say
        estimate = estimate_round(self.plan(), self.rates, best.holdout.pass_at_1)
        say.estimate(number, estimate)
        seconds: dict[str, float] = {}
        mode = cfg.improve.collect
        say.stage(number, f"collecting ({mode})", None if mode == "gold" else len(suites.train))
        with _timed(seconds, "collect"):
            collection = await collect(cfg, suites.train, suites.train_spec, store, self.models,
                                       on_trajectory=say.advance,
                                       gate_tasks=[*suites.holdout, *suites.retention, *suites.test])
        self._record_collection(collection, seconds["collect"])
        if collection.run_id:
            self.collect_runs.append(collection.run_id)
        common = dict(round=number, train_solved=collection.solved, train_total=len(suites.train),
                      collect_run_id=collection.run_id, collect=mode, estimate=estimate,
                      train_pass_at_k=collection.pass_at_k,
                      holdout_before=best.holdout.pass_at_1,
                      retention_before=_rate(best.retention))
        continuing = start_adapter(cfg, self.registry, cfg.models.generator) is not None
        runs = self.collect_runs[-1:] if continuing else self.collect_runs
        trajectories = [t for r in runs for t in store.trajectories(run_id=r)]
        if mode != "gold" and not any(t.outcome == "solved" for t in trajectories):
            return RoundReport(**common, holdout_after=None, retention_after=None,
                               promoted=False, adapter=None, seconds=_rounded(seconds),
                               reason=_nothing_solved(cfg)), None
        rehearsed: dict[str, int] = {}
        if suites.rehearsal:
            say.stage(number, "rehearsing: the champion answers the rehearsal tasks alone",
                      len(suites.rehearsal))
            with _timed(seconds, "rehearse"):
                run = await rehearse(cfg, suites.rehearsal, suites.rehearsal_spec or "", store,
                                     self.models, on_trajectory=say.advance)
            self.rehearsal_runs.append(run.run_id)
            rehearsed = {"rehearsal_kept": store.run_totals(run.run_id).solved,
                         "rehearsal_total": len(suites.rehearsal)}
        replayed = self.rehearsal_runs[-1:] if continuing else self.rehearsal_runs
        trajectories += [t for r in replayed for t in store.trajectories(run_id=r)]

        say.stage(number, "distilling")
        with _timed(seconds, "distill"):
            candidate = distill(cfg, trajectories,
                                exclude=[*suites.holdout, *suites.retention, *suites.test],
                                gold=suites.train if mode == "gold" else ())
        self.rates.record("train", seconds["distill"], _row_epochs(candidate))

        say.stage(number, f"evaluating candidate {candidate.name}",
                  len(suites.holdout) + len(suites.retention))
        with _timed(seconds, "eval"):
            after = await self.score_all(candidate.name)
        say.stage(number, "measuring drift from the base model (KL)")
        with _timed(seconds, "drift"):
            kl = await self._drift(candidate)
        self.rates.record("drift", seconds["drift"], len(suites.retention or suites.holdout))
        holdout = pair(best.holdout.outcomes, after.holdout.outcomes)
        retention = (pair(best.retention.outcomes, after.retention.outcomes)
                     if best.retention is not None and after.retention is not None else None)
        decision = decide(holdout=holdout, retention=retention, margin=cfg.improve.margin,
                          tolerance=cfg.improve.tolerance, confidence=cfg.improve.confidence,
                          kl=kl, max_kl=cfg.improve.max_kl)
        self._record_decision(candidate, best, after, decision, kl)
        if decision.promote:
            self.registry.promote(candidate.name)
        tests = await self._test(number, best.holdout.adapter, candidate.name, seconds)
        report = RoundReport(
            **common, holdout_after=after.holdout.pass_at_1,
            retention_after=_rate(after.retention), promoted=decision.promote,
            adapter=candidate.name, reason=decision.reason, seconds=_rounded(seconds),
            rows=candidate.dataset.rows if candidate.dataset else 0,
            labels=candidate.dataset.counts_per_label if candidate.dataset else {},
            p_value=decision.p_value, wins=decision.wins, losses=decision.losses,
            retention_p_value=decision.retention_p_value,
            threshold_only=decision.threshold_only, kl=kl,
            holdout_pass_at_k_before=best.holdout.pass_at_k,
            holdout_pass_at_k_after=after.holdout.pass_at_k, **tests, **rehearsed)
        return report, after

    def _record_collection(self, collection: Collection, seconds: float) -> None:
        if collection.mode == "samples":
            self.rates.record("sample", seconds, collection.total * self.config.improve.samples)
        elif collection.mode != "gold":
            self.rates.record("loop", seconds, collection.total)

    async def _drift(self, candidate: AdapterManifest) -> float:
        """KL of the candidate from the base model on the base's greedy replies to the
        retention prompts (the holdout's without a retention suite)."""
        from finetune.drift import mean_kl

        suites = self.suites
        tasks, spec = ((suites.retention, suites.retention_spec) if suites.retention
                       else (suites.holdout, suites.holdout_spec))
        base = await self.score(tasks, spec, "none")
        assert base is not None
        with open_store(self.config.home, EVAL_STORE) as evals:
            examples = [(t.attempts[0].messages, t.attempts[0].reply)
                        for t in evals.trajectories(run_id=base.run_id) if t.attempts]
        drift = mean_kl(self.config.models.generator, self.registry.path(candidate.name),
                        examples)
        return round(drift.kl, 5)

    def _record_decision(self, candidate: AdapterManifest, best: _Scores, after: _Scores,
                         decision: GateDecision, kl: float | None) -> None:
        cfg, suites = self.config, self.suites
        self.registry.set_eval(candidate.name, {
            "holdout": _eval_entry(after.holdout, suites.holdout_spec, best.holdout),
            **({"retention": _eval_entry(after.retention, suites.retention_spec, best.retention)}
               if after.retention is not None else {}),
            "gate": {**decision.model_dump(), "margin": cfg.improve.margin,
                     "tolerance": cfg.improve.tolerance, "confidence": cfg.improve.confidence,
                     "max_kl": cfg.improve.max_kl, "kl": kl, "collect": cfg.improve.collect,
                     "collect_runs": list(self.collect_runs),
                     "rehearsal_runs": list(self.rehearsal_runs)},
        })

    async def _test(self, number: int, incumbent: str, candidate: str,
                    seconds: dict[str, float]) -> dict:
        """The test suite's scores, measured after the decision (empty without one)."""
        suites = self.suites
        if not suites.test:
            return {}
        self.say.stage(number, "scoring the test suite (after the decision)", 2 * len(suites.test))
        with _timed(seconds, "test"):
            before = await self.score(suites.test, suites.test_spec, incumbent, pass_k=True)
            after = await self.score(suites.test, suites.test_spec, candidate, pass_k=True)
        assert before is not None and after is not None
        self.registry.set_eval(candidate, {"test": _eval_entry(after, suites.test_spec, before)})
        return {"test_before": before.pass_at_1, "test_after": after.pass_at_1,
                "test_pass_at_k_before": before.pass_at_k, "test_pass_at_k_after": after.pass_at_k}


def improve_specs(
    config: Config, train: str, *, holdout: str, retention: str | None = None,
    rehearsal: str | None = None, test: str | None = None, progress: Progress | None = None,
) -> ImproveReport:
    """``selftaught improve``: :func:`improve` on the suites the specs name."""
    from orchestrator.suites import load_tasks

    def tasks(spec: str | None) -> list[Task]:
        return load_tasks(spec, limits=config.limits) if spec else []

    suites = Suites(train_spec=train, train=tasks(train), holdout_spec=holdout,
                    holdout=tasks(holdout), retention_spec=retention,
                    retention=tasks(retention), rehearsal_spec=rehearsal,
                    rehearsal=tasks(rehearsal), test_spec=test, test=tasks(test))
    return asyncio.run(improve(config, suites, progress=progress))


@contextmanager
def _store(config: Config) -> Iterator[TrajectoryStore]:
    store = open_store(config.home)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        seconds[stage] = seconds.get(stage, 0.0) + time.monotonic() - started


def _nothing_solved(config: Config) -> str:
    reason = "no training task was solved, so there is nothing to distill"
    if config.improve.collect == "samples":
        reason += (f" (no right answer in {config.improve.samples} samples per task: try a "
                   "larger improve.samples, tasks the model sometimes gets right, or "
                   "--collect feedback/reference/gold)")
    return reason


def _row_epochs(manifest: AdapterManifest) -> float:
    rows = manifest.dataset.rows if manifest.dataset else 0
    return rows * float(manifest.hyper.get("epochs") or 1.0)


def _rate(result: EvalResult | None) -> float | None:
    return None if result is None else result.pass_at_1


def _eval_entry(result: EvalResult | None, spec: str | None, incumbent: EvalResult | None) -> dict:
    assert result is not None
    return {"spec": spec, "pass_at_1": result.pass_at_1, "passed": result.passed,
            "total": result.total, "per_family": result.per_family, "run_id": result.run_id,
            "outcomes": result.outcomes, "pass_at_k": result.pass_at_k, "k": result.k,
            "incumbent": incumbent.adapter if incumbent else None,
            "incumbent_pass_at_1": incumbent.pass_at_1 if incumbent else None,
            "incumbent_per_family": incumbent.per_family if incumbent else None,
            "incumbent_pass_at_k": incumbent.pass_at_k if incumbent else None,
            "incumbent_outcomes": incumbent.outcomes if incumbent else None}


def _rounded(seconds: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in seconds.items()}
