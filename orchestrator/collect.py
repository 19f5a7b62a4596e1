"""Where an ``improve`` round's training targets come from (``improve.collect``).

* ``samples``: ``improve.samples`` independent replies per training task at
  ``improve.temperature``, no hints (``orchestrator.sampling``); the verified ones are
  the model's own answers (label ``self``). Expert iteration, as in STaR and ReST-EM.
* ``feedback``: the loop with the ``feedback`` hint policy (a critique and the
  verifier's output, never the reference answer); verified replies are the model's own
  (``self``), found with natural-language feedback, as in ILF.
* ``reference``: the loop with the ``reference`` hint policy (the hint shows the
  reference answer or tests): the model's reply after being told the answer
  (``rationalized``, STaR's rationalization).
* ``gold``: no model at all: the task's worked solution or answer is the target
  (``gold``): supervised fine-tuning on the task generator's labels.

Every collection with the model uses the current champion and is an ordinary run in
the trajectory store (``runs list`` shows it). Rehearsal (the champion answering tasks
of families to keep, alone) is here too: it is collection of ``self`` rows from other
suites.

The generation budget of these runs is ``improve.profile`` (``orchestrator.profiles``).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from core.errors import ModelError
from core.leakage import prompt_hashes
from core.records import RunRecord, Task
from memory.store import TrajectoryStore
from orchestrator.config import Config, with_overrides
from orchestrator.evaluate import eval_config, evaluated_prompts
from orchestrator.recall import open_memory
from orchestrator.runner import (
    OnTrajectory, RoleModels, RunSummary, execute_run, new_run_id, run_settings,
)


class Collection(BaseModel):
    """What one collection produced."""

    mode: str
    run_id: str | None
    """The run in the trajectory store (None for ``gold``: no model ran)."""
    total: int
    solved: int
    """Training tasks with a verified reply (``gold``: tasks with a reference answer)."""
    pass_at_k: float | None = None
    """``samples``: the share of training tasks with at least one of k replies right."""
    sampled_pass_at_1: float | None = None
    """``samples``: the share of all sampled replies that are right."""


async def collect(
    config: Config,
    tasks: list[Task],
    spec: str,
    store: TrajectoryStore,
    models: RoleModels,
    *,
    on_trajectory: OnTrajectory | None = None,
    gate_tasks: Sequence[Task] = (),
) -> Collection:
    """Collect on ``tasks`` (described by ``spec``) by ``config.improve.collect``, with
    the champion. The ``feedback`` and ``reference`` loops use the vector memory as
    ``run`` does (``run.memory``), never retrieving what was learned on ``gate_tasks``
    or on any evaluated task; samples see the bare evaluation prompt."""
    mode = config.improve.collect
    if mode == "gold":
        solved = sum(bool(t.privileged.reference_answer) for t in tasks)
        return Collection(mode=mode, run_id=None, total=len(tasks), solved=solved)
    cfg = with_overrides(config, {"run.adapter": "champion", "run.memory": False})
    if mode == "samples":
        from orchestrator.sampling import sample_rates, sample_run

        k, temperature = config.improve.samples, config.improve.temperature
        run = _new_run(cfg, "improve", spec, len(tasks), {"samples": k, "temperature": temperature})
        store.create_run(run)
        _complete(await sample_run(cfg, tasks, store, run, k=k, temperature=temperature,
                                   models=models, on_trajectory=on_trajectory))
        pass_at_k, sampled = sample_rates(store.trajectories(run_id=run.run_id), len(tasks))
        return Collection(mode=mode, run_id=run.run_id, total=len(tasks),
                          solved=store.run_totals(run.run_id).solved, pass_at_k=pass_at_k,
                          sampled_pass_at_1=sampled)
    cfg = with_overrides(config, {"run.adapter": "champion", "loop.hints": mode})  # feedback or reference
    run = _new_run(cfg, "improve", spec, len(tasks))
    store.create_run(run)
    memory = open_memory(cfg, learn=True,
                         exclude=evaluated_prompts(cfg.home) | prompt_hashes(gate_tasks))
    try:
        _complete(await execute_run(cfg, tasks, store, run, models=models,
                                    on_trajectory=on_trajectory, memory=memory))
    finally:
        if memory is not None:
            memory.close()
    return Collection(mode=mode, run_id=run.run_id, total=len(tasks),
                      solved=store.run_totals(run.run_id).solved)


async def rehearse(
    config: Config, tasks: list[Task], spec: str, store: TrajectoryStore, models: RoleModels,
    *, on_trajectory: OnTrajectory | None = None,
) -> RunRecord:
    """One attempt per rehearsal task by the champion alone (``eval``'s settings), stored
    as a run in the trajectory store so that its verified answers become training rows."""
    cfg = eval_config(config, "champion")
    run = _new_run(cfg, "rehearse", spec, len(tasks))
    store.create_run(run)
    _complete(await execute_run(cfg, tasks, store, run, models=models, on_trajectory=on_trajectory))
    return run


def _complete(summary: RunSummary) -> None:
    """``ModelError`` when tasks of the collection could not be answered (a provider
    error): a round is not trained on what an outage left (the stored part stays)."""
    if summary.errors:
        raise ModelError(f"collection run {summary.run_id} has {len(summary.errors)} unfinished "
                         f"task(s) (first: {summary.errors[0]}); the round stopped before "
                         "training. Fix the cause and run improve again.")


def _new_run(cfg: Config, prefix: str, spec: str, total: int, extra: dict | None = None) -> RunRecord:
    return RunRecord(run_id=f"{prefix}-{new_run_id()}", tasks_spec=spec,
                     settings={**run_settings(cfg), **(extra or {})}, total=total)
