"""``selftaught eval``: pass@1 of the generator, with or without an adapter.

Evaluation is the loop reduced to one greedy attempt: no hints, no memory (unless asked
for), no retries, no resampling. Every adapter compared on a suite sees exactly the same
prompts (the evaluation prompt distillation trains on), so the numbers are comparable.

Evaluation trajectories go to their own store (``<home>/evals.db``), never to the
trajectory store that ``distill`` reads: an evaluation task must never become training
data.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel

from core.errors import ModelError
from core.leakage import prompt_hashes
from core.records import RunRecord, Task
from memory.store import open_store
from orchestrator.config import Config, with_overrides
from orchestrator.recall import open_memory
from orchestrator.runner import RoleModels, execute_run, new_run_id, resolve_adapter, run_settings

EVAL_STORE = "evals.db"


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
    memory: bool = False,
) -> EvalResult:
    """pass@1 on ``tasks`` (described by ``spec``) with ``adapter`` (name, ``champion``,
    ``none``/None or a directory). Raises ``ConfigError`` for an unknown adapter.

    With ``memory``, each prompt also holds what the vector memory retrieves for it (read
    only: evaluation stores nothing in memory)."""
    label = resolve_adapter(config, adapter or "none").label
    cfg = eval_config(config, label)
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
            summary = await execute_run(cfg, tasks, store, run, models=models, memory=session)
        finally:
            if session is not None:
                session.close()
        if summary.errors:  # an unfinished task is not a failed one: no score from a part
            raise ModelError(f"evaluation run {run.run_id} of {spec} has {len(summary.errors)} "
                             f"unfinished task(s) (first: {summary.errors[0]}); nothing was "
                             "scored. Fix the cause and evaluate again.")
        by_family: dict[str, list[bool]] = defaultdict(list)
        for trajectory in store.trajectories(run_id=run.run_id):
            by_family[trajectory.task.family].append(trajectory.outcome == "solved")
    total = len(tasks)
    return EvalResult(
        adapter=label, total=total, passed=summary.solved,
        pass_at_1=summary.solved / total if total else 0.0,
        per_family={f: sum(v) / len(v) for f, v in sorted(by_family.items())},
        run_id=run.run_id, seconds=round(time.monotonic() - started, 3), memory=memory,
    )


def evaluate_spec(config: Config, spec: str, adapter: str | None, *, memory: bool = False) -> EvalResult:
    """:func:`evaluate` on the tasks of ``spec``; the result is also kept in a registered
    adapter's manifest, under ``evaluation.eval[spec]`` (not with ``memory``: the
    manifest records what the weights do)."""
    import asyncio

    from finetune.registry import AdapterRegistry
    from orchestrator.suites import load_tasks

    result = asyncio.run(evaluate(config, load_tasks(spec), spec=spec, adapter=adapter, memory=memory))
    registry = AdapterRegistry(config.home)
    if not memory and result.adapter in {m.name for m in registry.list()}:
        earlier = registry.get(result.adapter).evaluation.get("eval", {})
        registry.set_eval(result.adapter, {"eval": {**earlier, spec: result.model_dump(mode="json")}})
    return result
