"""Runs many tasks through the loop concurrently, durably, and resumably.

Durability: every task is a LangGraph thread checkpointed to SQLite
(``run.durability``: at exit by default, or after every step), and a resumed task
continues from its last checkpoint. The trajectory store is the source of truth for
what is finished: a task counts as done once its trajectory is stored, and the store
refuses a second trajectory for the same (run, task), so a resume never loses or
doubles one whatever the durability mode.

Errors: a task whose provider fails after its retries (or that crashes) is not a
verdict. It is recorded as a ``TaskError``, stays unfinished (its graph state up to the
failed step is checkpointed, so a resume continues from there, keeping its attempts),
and the run ends ``failed`` with the errors in its summary. After
``run.stop_after_errors`` tasks in a row fail, no new task starts (a provider that is
down would otherwise fail every task, one retry schedule at a time).

Time: ``loop.max_seconds`` bounds each task's wall time, waiting for the model
included; a task that reaches it is stopped where it is and recorded with
``stop_reason = "max_seconds"`` and the attempts it finished.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from agents.litellm_model import make_chat_model
from agents.local.resolve import is_local
from agents.model import ChatModel
from core.errors import SelftaughtError
from core import records
from core.records import RunRecord, Task, TaskError, Trajectory
from core.secrets import scrub_secrets
from memory.store import TrajectoryStore
from orchestrator.config import Config
from orchestrator.graph import build_graph
from orchestrator.lifecycle import CHECKPOINTS_FILE, check_credentials, check_state_files, owning
from orchestrator.recall import MemoryFigures, MemorySession
from orchestrator.state import LoopContext, LoopState, Retriever

if TYPE_CHECKING:
    from finetune.registry import ResolvedAdapter

STEPS_PER_ATTEMPT = 4  # generate, verify, critique, hint


class RunSummary(BaseModel):
    """What ``selftaught run --json`` prints (more keys may be added, none removed)."""

    run_id: str
    total: int
    solved: int
    unsolved: int
    """Finished tasks with no verified attempt (unfinished ones are not counted)."""
    solved_at: dict[str, int] = Field(default_factory=dict)
    tokens: int
    seconds: float
    errors: list[str] = Field(default_factory=list)
    """``TASK: Kind: message`` for each task that failed in this call (a provider error
    after retries, or a crash): recorded as ``TaskError``, not finished; a resume
    retries them. A run with errors exits non-zero."""
    unfinished: int = 0
    """Tasks with no trajectory yet (errors, or not started): what a resume will run."""
    stopped: str | None = None
    """Why no new task was started, when ``run.stop_after_errors`` tripped."""
    memory: MemoryFigures | None = None
    """What the vector memory did; None when it was off."""
    hint_policy: str = ""
    """The hints later attempts had (``reference`` ones show the answer)."""


OnTrajectory = Callable[[Trajectory], None]


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def run_settings(config: Config) -> dict:
    """The settings a run is pinned to, so ``--resume`` continues with the same ones."""
    return config.model_dump(mode="json", include={"models", "loop", "run", "memory"})


async def execute_run(
    config: Config,
    tasks: list[Task],
    store: TrajectoryStore,
    run: RunRecord,
    *,
    on_trajectory: OnTrajectory | None = None,
    retrieve: Retriever | None = None,
    models: RoleModels | None = None,
    memory: MemorySession | None = None,
) -> RunSummary:
    """Run every task of ``run`` that has no stored trajectory yet; return the summary
    over the whole run (earlier, resumed parts included in the counts).

    The run is owned by this process while it works (``lifecycle.owning``: refused if
    another live process owns it) and ends ``finished``, ``failed`` (task errors) or
    ``interrupted``. ``models`` defaults to the configured ones (tests hand in fakes).
    With a ``memory`` session, tasks retrieve from it and each stored trajectory is
    handed to it (``orchestrator.recall``); trajectories a killed run stored but never
    handed over are handed over first."""
    started = time.monotonic()
    models = models or build_models(config)
    errors: list[str] = []
    streak = _Streak(config.run.stop_after_errors)
    semaphore = asyncio.Semaphore(config.run.concurrency)

    with owning(store, run.run_id):
        done = store.finished_task_ids(run.run_id)
        pending = [t for t in tasks if t.id not in done]
        if memory is not None:
            retrieve = retrieve or memory.retrieve
            if done:
                await memory.catch_up(store.trajectories(run_id=run.run_id))
            await memory.prepare(pending)
        context = LoopContext(generator=models.generator, critic=models.critic,
                              hint_giver=models.hint_giver, judge=models.judge, loop=config.loop,
                              store=store, run_id=run.run_id, adapter=_adapter_path(config),
                              retrieve=retrieve)
        async with _checkpointer(config.home / CHECKPOINTS_FILE) as saver:
            graph = build_graph(saver)

            async def one(task: Task) -> None:
                async with semaphore:
                    if streak.tripped:
                        return  # left unfinished: a resume runs it
                    try:
                        await _run_task(graph, saver, task, context, config)
                    except Exception as exc:  # one task's failure never ends the run
                        message = scrub_secrets(str(exc))
                        store.add_task_error(TaskError(run_id=run.run_id, task_id=task.id,
                                                       kind=type(exc).__name__, message=message))
                        errors.append(f"{task.id}: {type(exc).__name__}: {message}")
                        streak.failed()
                        return
                    streak.succeeded()
                    finished = store.trajectories(run_id=run.run_id, task_id=task.id)
                    if memory is not None:  # before the slot frees, so the next task can retrieve it
                        try:
                            for trajectory in finished:
                                await memory.learn(trajectory)
                        except SelftaughtError as exc:  # stored; the next run's catch-up retries
                            errors.append(f"{task.id}: memory: {scrub_secrets(str(exc))}")
                if on_trajectory is not None:
                    for trajectory in finished:
                        on_trajectory(trajectory)

            await asyncio.gather(*(one(task) for task in pending))
        store.set_run_status(run.run_id, "failed" if errors else "finished")
    summary = summarize(store, run, seconds=time.monotonic() - started, errors=errors,
                        stopped=streak.reason)
    summary.hint_policy = config.loop.hints
    if memory is not None:
        summary.memory = memory.figures(store.trajectories(run_id=run.run_id))
    return summary


async def _run_task(graph, saver, task: Task, context: LoopContext, config: Config) -> None:
    """Run (or continue) one task's graph to its recorded end, within what is left of
    ``loop.max_seconds``; on reaching it, record the task as it stands."""
    thread_id = f"{context.run_id}:{task.id}"
    thread = {"configurable": {"thread_id": thread_id},
              "recursion_limit": STEPS_PER_ATTEMPT * config.loop.max_attempts + 10}
    saved = await graph.aget_state(thread)
    spent = saved.values.get("seconds", 0.0) if saved.next else 0.0
    resume_input = None if saved.next else _initial_state(task, config)
    durability = config.run.durability
    started = time.monotonic()
    budget = asyncio.timeout(max(config.loop.max_seconds - spent, 0.0))
    try:
        async with budget:
            await graph.ainvoke(resume_input, thread, context=context, durability=durability)
    except TimeoutError:
        if not budget.expired():
            raise
        # The graph stopped mid-step; its state up to the last finished step is
        # checkpointed. Route it to `record` as if the verifier had stopped it.
        seconds = spent + time.monotonic() - started
        await graph.aupdate_state(thread, {"stop_reason": "max_seconds", "draft": None,
                                           "seconds": seconds}, as_node="verify")
        await graph.ainvoke(None, thread, context=context, durability=durability)
    await saver.adelete_thread(thread_id)


class _Streak:
    """Counts tasks that failed in a row; trips at ``limit`` (0: never)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count, self.reason = limit, 0, None

    @property
    def tripped(self) -> bool:
        return self.reason is not None

    def failed(self) -> None:
        self.count += 1
        if self.limit and self.count >= self.limit and self.reason is None:
            self.reason = (f"{self.count} tasks in a row failed (run.stop_after_errors = "
                           f"{self.limit}), so no further task was started; fix the cause "
                           "in the errors and resume the run")

    def succeeded(self) -> None:
        self.count = 0


def summarize(store: TrajectoryStore, run: RunRecord, *, seconds: float, errors: list[str],
              stopped: str | None = None) -> RunSummary:
    """The whole run's counts (resumed parts included); ``seconds`` is this call's wall time."""
    stored = store.run_totals(run.run_id)
    return RunSummary(
        run_id=run.run_id,
        total=run.total,
        solved=stored.solved,
        unsolved=stored.unsolved,
        solved_at={str(k): v for k, v in sorted(stored.solved_at.items())},
        tokens=stored.tokens,
        seconds=round(seconds, 3),
        errors=errors,
        unfinished=max(run.total - stored.total, 0),
        stopped=stopped,
    )


def _adapter_path(config: Config) -> str | None:
    path = resolve_adapter(config).path
    return None if path is None else str(path)


def _initial_state(task: Task, config: Config) -> LoopState:
    # Every key is given so a restarted thread never inherits an old attempt list.
    return LoopState(task=task, hint_policy=config.loop.hints, lessons=[], examples=[], retrieved=[],
                     attempts=[], draft=None, tokens=0, seconds=0.0, stop_reason=None)


@dataclass(frozen=True)
class RoleModels:
    """One chat model per role (the same object where roles share a model id)."""

    generator: ChatModel
    critic: ChatModel
    hint_giver: ChatModel
    judge: ChatModel | None = None


def build_models(config: Config) -> RoleModels:
    settings = config.models
    made: dict[str, ChatModel] = {}

    def make(model_id: str) -> ChatModel:
        if model_id not in made:
            # A local model's requests wait in the batcher's queue; a timeout there would
            # only requeue the same work, so local calls get none.
            timeout = None if is_local(model_id) else settings.timeout_s
            made[model_id] = make_chat_model(model_id, timeout_s=timeout,
                                             max_retries=settings.max_retries,
                                             backoff_s=settings.backoff_s)
        return made[model_id]

    return RoleModels(generator=make(settings.generator), critic=make(settings.critic),
                      hint_giver=make(settings.hint), judge=make(settings.judge or settings.critic))


def preflight(config: Config) -> RoleModels:
    """Everything a run needs, checked before a run record is written or claimed: the
    state files (trajectory store, checkpoints), the models (on disk, known provider),
    the credentials of the roles this hint policy calls, and the adapter. Returns the
    models."""
    check_state_files(config.home)
    models = build_models(config)
    settings = config.models
    used = [settings.generator]
    if config.loop.hints != "none":
        used += [settings.critic, settings.hint]
    check_credentials(used)
    resolve_adapter(config)
    return models


def resolve_adapter(config: Config, name: str | None = None) -> ResolvedAdapter:
    """The adapter ``name`` (default ``run.adapter``) means for the configured generator;
    see ``finetune.registry.AdapterRegistry.resolve``."""
    from finetune.registry import AdapterRegistry

    chosen = config.run.adapter if name is None else name
    return AdapterRegistry(config.home).resolve(chosen, config.models.generator)


@asynccontextmanager
async def _checkpointer(path: Path):
    import aiosqlite
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path.parent.mkdir(parents=True, exist_ok=True)
    # Only our own record types may be revived from a checkpoint.
    serde = JsonPlusSerializer(allowed_msgpack_modules=[
        records.Task, records.VerifierSpec, records.Privileged, records.Verdict,
        records.Hint, records.Attempt, records.Generation,
    ])
    async with aiosqlite.connect(path) as conn:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA busy_timeout=10000")
        yield AsyncSqliteSaver(conn, serde=serde)
