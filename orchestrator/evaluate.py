"""``selftaught eval``: pass@1 of the generator, with or without an adapter.

Evaluation is the loop reduced to one greedy attempt: no hints, no memory (unless asked
for), no retries, no resampling. Every adapter compared on a suite sees exactly the same prompts (the
evaluation prompt distillation trains on), so the numbers are comparable. The result
keeps each task's outcome, so two adapters can be compared task by task (the gate's
paired test). With ``samples = k``, ``k`` replies per task are also drawn at
``temperature`` (``orchestrator.sampling``) for pass@k.

Evaluation trajectories go to their own store (``<home>/evals.db``), never to the
trajectory store that ``distill`` reads: an evaluation task must never become training
data.

With ``cache=True`` a result is kept under ``<home>/eval-cache/`` and reused when the
same generator, the same adapter weights, the same tasks and the same evaluation
settings are asked for again (``improve`` uses this so the base model's evaluation is
measured once per suite, not once per call).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from core.errors import ConfigError, ModelError
from core.files import write_atomic
from core.leakage import prompt_hashes
from core.records import RunRecord, Task, Trajectory
from memory.store import open_store
from orchestrator.config import Config, with_overrides
from orchestrator.recall import open_memory
from orchestrator.runner import RoleModels, execute_run, new_run_id, resolve_adapter, run_settings

EVAL_STORE = "evals.db"
CACHE_DIR = "eval-cache"

OnTask = Callable[[Trajectory], None]


class EvalResult(BaseModel):
    """What ``selftaught eval --json`` prints (more keys may be added, none removed)."""

    adapter: str
    """The adapter evaluated: a registered name, a directory, or ``none`` (the base)."""
    total: int
    passed: int
    pass_at_1: float
    per_family: dict[str, float]
    """pass@1 per task family."""
    run_id: str
    """The evaluation run in ``evals.db``, for reading the replies."""
    seconds: float
    outcomes: dict[str, bool] = Field(default_factory=dict)
    """Task id -> passed (greedy), for paired comparisons."""
    k: int | None = None
    """Sampled replies per task for pass@k (None: not measured)."""
    pass_at_k: float | None = None
    """Share of tasks with at least one of ``k`` sampled replies right."""
    sampled_pass_at_1: float | None = None
    """Share of the sampled replies that are right (pass@1 at the sampling temperature)."""
    samples_run_id: str | None = None
    per_family_pass_at_k: dict[str, float] = Field(default_factory=dict)
    cached: bool = False
    """True when this result was read from the evaluation cache, not measured now."""
    memory: bool = False
    """True when the prompts held retrieved memory (``eval --memory``): then the figure
    measures the weights and the memory together."""


def evaluated_prompts(home: Path) -> set[str]:
    """Prompt hashes of every task an evaluation has run (``evals.db``): memory never
    retrieves what was learned on them."""
    if not (Path(home) / EVAL_STORE).is_file():
        return set()
    with open_store(home, EVAL_STORE) as store:
        return prompt_hashes(t.task for t in store.trajectories())


def eval_config(config: Config, adapter: str | None) -> Config:
    """``config`` reduced to pass@1: one greedy attempt, no hints, no memory."""
    return with_overrides(config, {
        "loop.max_attempts": 1, "loop.hints": "none", "loop.temperature": 0.0,
        "loop.max_resamples": 0, "run.memory": False, "run.adapter": adapter or "none",
    })


async def evaluate(
    config: Config,
    tasks: list[Task],
    *,
    spec: str,
    adapter: str | None,
    models: RoleModels | None = None,
    samples: int = 0,
    temperature: float = 0.7,
    cache: bool = False,
    on_task: OnTask | None = None,
    memory: bool = False,
) -> EvalResult:
    """pass@1 on ``tasks`` (described by ``spec``) with ``adapter`` (name, ``champion``,
    ``none``/None or a directory), and pass@k with ``samples`` > 0. Raises
    ``ConfigError`` for an unknown adapter, ``ModelError`` when a task could not be
    answered (no score from a part). ``on_task`` is called per finished task.

    With ``memory``, each prompt also holds what the vector memory retrieves for it (read
    only: evaluation stores nothing in memory; never cached)."""
    resolved = resolve_adapter(config, adapter or "none")
    cfg = eval_config(config, resolved.label)
    key = cache_key(cfg, resolved.path, tasks, samples, temperature) if cache and not memory else None
    if key is not None and (hit := _cached(config, key)) is not None:
        return hit
    session = None
    if memory:
        cfg = with_overrides(cfg, {"run.memory": True})
        session = open_memory(cfg, learn=False, exclude=evaluated_prompts(config.home))
    started = time.monotonic()
    with open_store(config.home, EVAL_STORE) as store:
        run = RunRecord(run_id=f"eval-{new_run_id()}", tasks_spec=spec,
                        settings=run_settings(cfg), total=len(tasks))
        store.create_run(run)
        try:
            summary = await execute_run(cfg, tasks, store, run, models=models,
                                        on_trajectory=on_task, memory=session)
        finally:
            if session is not None:
                session.close()
        if summary.errors:  # an unfinished task is not a failed one: no score from a part
            raise ModelError(f"evaluation run {run.run_id} of {spec} has {len(summary.errors)} "
                             f"unfinished task(s) (first: {summary.errors[0]}); nothing was "
                             "scored. Fix the cause and evaluate again.")
        outcomes = {t.task.id: t.outcome == "solved" for t in store.trajectories(run_id=run.run_id)}
        sampled = None
        if samples:
            sampled = await _sample(cfg, tasks, spec, store, samples, temperature, models)
    total = len(tasks)
    passed = sum(outcomes.get(t.id, False) for t in tasks)
    result = EvalResult(
        adapter=resolved.label, total=total, passed=passed,
        pass_at_1=passed / total if total else 0.0,
        per_family=per_family(tasks, {t for t, ok in outcomes.items() if ok}),
        run_id=run.run_id, seconds=round(time.monotonic() - started, 3), outcomes=outcomes,
        memory=memory, **(sampled or {}))
    if key is not None:
        write_atomic(config.home / CACHE_DIR / f"{key}.json", result.model_dump_json())
    return result


async def _sample(cfg: Config, tasks: list[Task], spec: str, store, k: int,
                  temperature: float, models: RoleModels | None) -> dict:
    from orchestrator.runner import build_models
    from orchestrator.sampling import sample_rates, sample_run

    run = RunRecord(run_id=f"evalk-{new_run_id()}", tasks_spec=spec,
                    settings={**run_settings(cfg), "samples": k, "temperature": temperature},
                    total=len(tasks))
    store.create_run(run)
    await sample_run(cfg, tasks, store, run, k=k, temperature=temperature,
                     models=models or build_models(cfg))
    trajectories = store.trajectories(run_id=run.run_id)
    pass_at_k, sampled = sample_rates(trajectories, len(tasks))
    solved = {t.task.id for t in trajectories if t.outcome == "solved"}
    return {"k": k, "samples_run_id": run.run_id, "pass_at_k": pass_at_k,
            "sampled_pass_at_1": sampled, "per_family_pass_at_k": per_family(tasks, solved)}


def per_family(tasks: list[Task], solved: set[str]) -> dict[str, float]:
    """The share of each family's tasks whose id is in ``solved``."""
    by_family: dict[str, list[bool]] = defaultdict(list)
    for task in tasks:
        by_family[task.family].append(task.id in solved)
    return {f: sum(v) / len(v) for f, v in sorted(by_family.items())}


def cache_key(cfg: Config, adapter_path, tasks: list[Task], samples: int,
              temperature: float) -> str:
    """The identity of an evaluation: generator, adapter weights (their hash, so a
    retrained adapter of the same name is a new key), tasks and settings."""
    digest = hashlib.sha256()
    weights = "none"
    if adapter_path is not None:
        weights = hashlib.sha256((adapter_path / "adapter_model.safetensors").read_bytes()).hexdigest()
    settings = {"loop": cfg.loop.model_dump(mode="json"), "generator": cfg.models.generator,
                "weights": weights, "samples": samples,
                "temperature": temperature if samples else None}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for task in tasks:
        digest.update(task.model_dump_json(include={"id", "prompt", "verifier",
                                                    "answer_format"}).encode())
    return digest.hexdigest()[:32]


def cached_result(config: Config, tasks: list[Task], adapter: str | None, *,
                  samples: int = 0, temperature: float = 0.7) -> EvalResult | None:
    """What :func:`evaluate` with ``cache=True`` would reuse instead of measuring, or None."""
    resolved = resolve_adapter(config, adapter or "none")
    cfg = eval_config(config, resolved.label)
    return _cached(config, cache_key(cfg, resolved.path, tasks, samples, temperature))


def _cached(config: Config, key: str) -> EvalResult | None:
    """The cached result for ``key`` when its evaluation run is still in ``evals.db``."""
    path = config.home / CACHE_DIR / f"{key}.json"
    if not path.is_file():
        return None
    try:
        result = EvalResult.model_validate_json(path.read_text(encoding="utf-8"))
        with open_store(config.home, EVAL_STORE) as store:
            store.get_run(result.run_id)
    except (OSError, ValidationError, ConfigError):
        return None  # unreadable, or its replies are gone: measure again
    return result.model_copy(update={"cached": True})


def evaluate_spec(config: Config, spec: str, adapter: str | None, *, memory: bool = False) -> EvalResult:
    """:func:`evaluate` on the tasks of ``spec``, with ``improve``'s generation budget
    (``improve.profile``) so the figures match the ones ``improve`` gates on; the result
    is also kept in a registered adapter's manifest, under ``evaluation.eval[spec]`` (not
    with ``memory``: the manifest records what the weights do)."""
    import asyncio

    from finetune.registry import AdapterRegistry
    from orchestrator.profiles import improve_config
    from orchestrator.suites import load_tasks

    config = improve_config(config)
    result = asyncio.run(evaluate(config, load_tasks(spec, limits=config.limits), spec=spec,
                                  adapter=adapter, memory=memory))
    registry = AdapterRegistry(config.home)
    if not memory and result.adapter in {m.name for m in registry.list()}:
        earlier = registry.get(result.adapter).evaluation.get("eval", {})
        registry.set_eval(result.adapter, {"eval": {**earlier, spec: result.model_dump(mode="json")}})
    return result
