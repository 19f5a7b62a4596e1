"""Runs many tasks through the loop concurrently, durably, and resumably.

Durability: every task is a LangGraph thread checkpointed to SQLite
(``run.durability``: at exit by default, or after every step), and a resumed task
continues from its last checkpoint. The trajectory store is the source of truth for
what is finished: a task counts as done once its trajectory is stored, and the store
refuses a second trajectory for the same (run, task), so a resume never loses or
doubles one whatever the durability mode.
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
from core.errors import ConfigError, SelftaughtError
from core import records
from core.records import RunRecord, Task, Trajectory
from memory.store import TrajectoryStore
from orchestrator.config import Config
from orchestrator.graph import build_graph
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
    solved_at: dict[str, int] = Field(default_factory=dict)
    tokens: int
    seconds: float
    errors: list[str] = Field(default_factory=list)
    """Tasks that crashed (not recorded; a resume retries them)."""
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

    ``models`` defaults to the configured ones (tests hand in scripted fakes). With a
    ``memory`` session, tasks retrieve from it and each stored trajectory is handed to
    it (``orchestrator.recall``); trajectories a killed run stored but never handed over
    are handed over first."""
    started = time.monotonic()
    done = store.finished_task_ids(run.run_id)
    pending = [t for t in tasks if t.id not in done]
    models = models or build_models(config)
    if memory is not None:
        retrieve = retrieve or memory.retrieve
        if done:
            await memory.catch_up(store.trajectories(run_id=run.run_id))
        await memory.prepare(pending)
    context = LoopContext(generator=models.generator, critic=models.critic,
                          hint_giver=models.hint_giver, judge=models.judge, loop=config.loop,
                          store=store, run_id=run.run_id, adapter=_adapter_path(config),
                          retrieve=retrieve)
    errors: list[str] = []
    semaphore = asyncio.Semaphore(config.run.concurrency)

    async with _checkpointer(config.home / "checkpoints.db") as saver:
        graph = build_graph(saver)

        async def one(task: Task) -> None:
            async with semaphore:
                thread = {"configurable": {"thread_id": f"{run.run_id}:{task.id}"},
                          "recursion_limit": STEPS_PER_ATTEMPT * config.loop.max_attempts + 10}
                try:
                    saved = await graph.aget_state(thread)
                    resume_input = None if saved.next else _initial_state(task, config)
                    await graph.ainvoke(resume_input, thread, context=context, durability=config.run.durability)
                    await saver.adelete_thread(thread["configurable"]["thread_id"])
                except Exception as exc:  # one task's failure never ends the run
                    errors.append(f"{task.id}: {type(exc).__name__}: {exc}")
                    return
                finished = store.trajectories(run_id=run.run_id, task_id=task.id)
                if memory is not None:  # before the slot frees, so the next task can retrieve it
                    try:
                        for trajectory in finished:
                            await memory.learn(trajectory)
                    except SelftaughtError as exc:  # stored; the next run's catch-up retries
                        errors.append(f"{task.id}: memory: {exc}")
            for trajectory in finished:
                if on_trajectory is not None:
                    on_trajectory(trajectory)

        store.set_run_status(run.run_id, "running")
        try:
            await asyncio.gather(*(one(task) for task in pending))
        except BaseException:  # Ctrl-C, cancellation: say so, keep what is stored
            store.set_run_status(run.run_id, "interrupted")
            raise
    store.set_run_status(run.run_id, "finished" if not errors else "interrupted")
    summary = summarize(store, run, seconds=time.monotonic() - started, errors=errors)
    summary.hint_policy = config.loop.hints
    if memory is not None:
        summary.memory = memory.figures(store.trajectories(run_id=run.run_id))
    return summary


def summarize(store: TrajectoryStore, run: RunRecord, *, seconds: float, errors: list[str]) -> RunSummary:
    """The whole run's counts (resumed parts included); ``seconds`` is this call's wall time."""
    stored = store.run_totals(run.run_id)
    return RunSummary(
        run_id=run.run_id,
        total=run.total,
        solved=stored.solved,
        unsolved=run.total - stored.solved,
        solved_at={str(k): v for k, v in sorted(stored.solved_at.items())},
        tokens=stored.tokens,
        seconds=round(seconds, 3),
        errors=errors,
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
                                             max_retries=settings.max_retries)
        return made[model_id]

    return RoleModels(generator=make(settings.generator), critic=make(settings.critic),
                      hint_giver=make(settings.hint), judge=make(settings.judge or settings.critic))


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
