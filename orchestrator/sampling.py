"""Independent samples: k replies per task to the evaluation prompt, each verified.

What ``samples`` collection (expert iteration, as in STaR and ReST-EM) and pass@k
evaluation need, and what the loop is not: the loop's later attempts see the earlier
ones and stop at the first success, while these k replies are drawn independently, at
one temperature, with no hints, no lessons and no history, so every verified one is the
model's own answer to exactly the prompt it is evaluated (and trained) on.

A task's k replies are stored as one trajectory whose attempts are the samples (index
1..k, each with the evaluation prompt as its messages; ``hint_policy`` ``none``), in the
trajectory store like any run: ``runs list`` shows it, and a killed collection resumes
with the tasks it had not finished.
"""

from __future__ import annotations

import asyncio
import time

from agents.model import GenerationParams
from core.answer_format import evaluation_messages, extract_answer
from core.errors import ModelError, SandboxError
from core.records import Attempt, RunRecord, Task, TaskError, Trajectory, Verdict
from core.secrets import scrub_secrets, secret_scrubber
from critics.registry import verify
from memory.store import TrajectoryStore
from orchestrator.config import Config
from orchestrator.lifecycle import owning
from orchestrator.runner import OnTrajectory, RoleModels, RunSummary, resolve_adapter, summarize


async def sample_run(
    config: Config,
    tasks: list[Task],
    store: TrajectoryStore,
    run: RunRecord,
    *,
    k: int,
    temperature: float,
    models: RoleModels,
    on_trajectory: OnTrajectory | None = None,
) -> RunSummary:
    """Draw ``k`` replies per task of ``run`` not yet stored, at ``temperature``, with
    the generator and ``run.adapter`` of ``config`` (``loop.reply_max_tokens`` caps each
    reply; about ``run.concurrency`` requests in flight: ``run.concurrency // k`` tasks
    at once, each with its ``k`` requests, so tasks finish steadily rather than all at
    the end).
    Returns the run's summary (a task is solved when any sample passed)."""
    started = time.monotonic()
    done = store.finished_task_ids(run.run_id)
    adapter = resolve_adapter(config).path
    params = GenerationParams(temperature=temperature, max_tokens=config.loop.reply_max_tokens,
                              adapter=None if adapter is None else str(adapter))
    semaphore = asyncio.Semaphore(max(1, config.run.concurrency // k))
    errors: list[str] = []

    async def one(task: Task) -> None:
        async with semaphore:
            try:
                trajectory = await sample_task(task, k, params, models, run.run_id)
            except Exception as exc:  # one task's failure never ends the collection
                message = scrub_secrets(str(exc))
                store.add_task_error(TaskError(run_id=run.run_id, task_id=task.id,
                                               kind=type(exc).__name__, message=message))
                errors.append(f"{task.id}: {type(exc).__name__}: {message}")
                return
        store.add_trajectory(trajectory)
        if on_trajectory is not None:
            on_trajectory(trajectory)

    # Owned like any run (pid, heartbeat; interrupted on Ctrl-C): see lifecycle.owning.
    with owning(store, run.run_id):
        await asyncio.gather(*(one(t) for t in tasks if t.id not in done))
        store.set_run_status(run.run_id, "failed" if errors else "finished")
    return summarize(store, run, seconds=time.monotonic() - started, errors=errors)


async def sample_task(
    task: Task, k: int, params: GenerationParams, models: RoleModels, run_id: str
) -> Trajectory:
    """``k`` independent verified replies to ``task``'s evaluation prompt, as one
    trajectory (solved when any passed)."""
    started = time.monotonic()
    messages = evaluation_messages(task)
    attempts = await asyncio.gather(*(
        _sample(task, messages, params, models, index) for index in range(1, k + 1)))
    solved = any(a.verdict.passed for a in attempts)
    return Trajectory(
        run_id=run_id, task=task, attempts=list(attempts),
        outcome="solved" if solved else "unsolved", hint_policy="none",
        generator_model=models.generator.model_id, critic_model=models.critic.model_id,
        hint_model=models.hint_giver.model_id, adapter=params.adapter,
        stop_reason="verified" if solved else "max_attempts",
        tokens=sum(a.prompt_tokens + a.completion_tokens for a in attempts),
        seconds=time.monotonic() - started)


async def _sample(task: Task, messages: list, params: GenerationParams, models: RoleModels,
                  index: int) -> Attempt:
    scrub = secret_scrubber()
    try:
        completion = await models.generator.complete(messages, params)
    except ModelError as exc:  # a provider failure is a failed sample
        return Attempt(index=index, messages=messages, reply="", answer="",
                       model=models.generator.model_id, adapter=params.adapter,
                       temperature=params.temperature, error=scrub(str(exc)),
                       verdict=Verdict(passed=False, score=0.0,
                                       feedback=f"The model call failed: {scrub(str(exc))}"))
    reply = scrub(completion.text)
    answer = extract_answer(reply, task.answer_format)
    try:
        verdict = await verify(answer, task.verifier, judge_model=models.judge)
    except SandboxError as exc:
        verdict = Verdict(passed=False, score=0.0, feedback=f"Could not run the tests: {exc}")
    return Attempt(index=index, messages=messages, reply=reply, answer=answer,
                   model=completion.model, adapter=params.adapter,
                   temperature=params.temperature,
                   prompt_tokens=completion.usage.prompt_tokens,
                   completion_tokens=completion.usage.completion_tokens,
                   latency_s=completion.usage.latency_s, verdict=verdict)


def sample_rates(trajectories: list[Trajectory], total: int) -> tuple[float, float]:
    """(pass@k, sampled pass@1) of a sampling run: the share of its ``total`` tasks with
    at least one verified reply, and the share of all its replies that are verified."""
    replies = [a.verdict.passed for t in trajectories for a in t.attempts]
    solved = sum(t.outcome == "solved" for t in trajectories)
    return solved / max(total, 1), sum(replies) / max(len(replies), 1)
