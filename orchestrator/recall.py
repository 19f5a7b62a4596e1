"""The vector memory as a run uses it: retrieval for the loop's ``retrieve`` node, and
learning from each trajectory once it is recorded.

``run`` (and ``improve``'s collection) open a session that retrieves and learns;
``eval --memory`` opens one that only retrieves (evaluation never writes memory);
``--no-memory`` / ``run.memory = false`` open none, so nothing is retrieved or stored.
Whatever the session, items learned on an evaluation task are never retrieved (the
caller hands in the prompt hashes of every evaluation task it knows of).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable
from contextlib import ExitStack

from pydantic import BaseModel

from core.leakage import prompt_hash
from core.records import Task, Trajectory
from memory.bank import MemoryBank, new_id
from memory.embed import embed
from memory.harvest import case_from, lesson_from
from memory.retrieval import Query, RetrievalRule, retrieve
from orchestrator.config import Config
from orchestrator.lock import LockBusy
from orchestrator.memory_ops import bank_session
from orchestrator.state import Recall

log = logging.getLogger("selftaught.memory")


class MemoryFigures(BaseModel):
    """What memory did in one run (the ``memory`` key of ``run --json``)."""

    with_memory: int = 0
    """Tasks whose prompt held at least one retrieved case or lesson."""
    with_memory_solved_at_1: int = 0
    with_memory_solved: int = 0
    without_memory: int = 0
    without_memory_solved_at_1: int = 0
    without_memory_solved: int = 0
    cases_learned: int = 0
    """Cases stored from this run's verified trajectories."""
    lessons_learned: int = 0
    """Lessons stored or merged from this run's hints."""
    lessons_refused: int = 0
    """Lessons refused for containing a task's answer (in this process)."""
    repaired: int = 0
    """Index entries an interrupted earlier write had left unindexed, indexed at start."""


class MemorySession:
    """One process's use of the memory: ``retrieve`` is the loop's hook, ``learn`` is
    called with each trajectory after the trajectory store has it."""

    def __init__(self, bank: MemoryBank, config: Config, *, learn: bool,
                 exclude: Collection[str] = (), opened: ExitStack | None = None) -> None:
        settings = config.memory
        self.bank = bank
        self._opened = opened or ExitStack()
        """What closing the session releases (the bank and its lock)."""
        self.learning = learn
        self.rule = RetrievalRule(cases_k=settings.cases_k, lessons_k=settings.lessons_k,
                                  min_similarity=settings.min_similarity,
                                  revealed_cases=settings.revealed_cases)
        self.exclude = frozenset(exclude)
        self.refused = 0
        self._vectors: dict[str, list[float]] = {}

    async def prepare(self, tasks: Iterable[Task]) -> None:
        """Embed the prompts of ``tasks`` in one batch, so retrieval is one index query."""
        prompts = sorted({t.prompt for t in tasks} - set(self._vectors))
        if prompts and (self.rule.cases_k or self.rule.lessons_k):
            vectors = await asyncio.to_thread(embed, prompts)
            self._vectors.update(zip(prompts, vectors))

    async def retrieve(self, task: Task) -> Recall:
        if not (self.rule.cases_k or self.rule.lessons_k):
            return Recall()
        if task.prompt not in self._vectors:
            await self.prepare([task])
        query = Query(task_id=task.id, prompt_hash=prompt_hash(task.prompt), family=task.family)
        found = await asyncio.to_thread(retrieve, self.bank, self._vectors[task.prompt], query,
                                        self.rule, self.exclude)
        return Recall(lessons=[lesson.text for lesson, _ in found.lessons],
                      examples=[(case.prompt, case.reply) for case, _ in reversed(found.cases)],
                      ids=found.ids)

    async def catch_up(self, trajectories: Iterable[Trajectory]) -> None:
        """:meth:`learn` from those of ``trajectories`` the memory has not logged (a run
        killed between storing a trajectory and learning from it)."""
        if not self.learning:
            return
        stored = list(trajectories)
        missing = await asyncio.to_thread(self.bank.unlogged, [t.id for t in stored])
        for t in stored:
            if t.id in missing:
                await self.learn(t)

    async def learn(self, trajectory: Trajectory) -> None:
        """Log the outcome for the worth of what was retrieved; store its case and its
        lesson, if it has them. Nothing when the session only retrieves."""
        if self.learning:
            await asyncio.to_thread(self._learn, trajectory)

    def _learn(self, t: Trajectory) -> None:
        first_pass = bool(t.attempts) and t.attempts[0].verdict.passed
        self.bank.record_outcome(t.id, t.run_id, t.task.family, first_pass, t.retrieved)
        case = case_from(t, new_id("case"))
        if case is not None:
            self.bank.add_case(case)
        draft = lesson_from(t)
        if draft is not None:
            result = self.bank.add_lesson(draft.text, draft.origin, source=draft.source,
                                          author=draft.author, answers=draft.answers)
            self.refused += result.outcome == "refused"

    def figures(self, trajectories: Iterable[Trajectory]) -> MemoryFigures:
        """:class:`MemoryFigures` over one run's stored ``trajectories``."""
        stored = list(trajectories)
        had = [t for t in stored if t.retrieved]
        lacked = [t for t in stored if not t.retrieved]
        learned = self.bank.learned_from([t.id for t in stored])
        return MemoryFigures(
            with_memory=len(had), with_memory_solved_at_1=sum(t.solved_at == 1 for t in had),
            with_memory_solved=sum(t.outcome == "solved" for t in had),
            without_memory=len(lacked), without_memory_solved_at_1=sum(t.solved_at == 1 for t in lacked),
            without_memory_solved=sum(t.outcome == "solved" for t in lacked),
            cases_learned=learned["cases"], lessons_learned=learned["lessons"],
            lessons_refused=self.refused, repaired=self.bank.repaired)

    def close(self) -> None:
        self._opened.close()


def open_memory(config: Config, *, learn: bool, exclude: Collection[str] = ()) -> MemorySession | None:
    """A session on the data directory's memory, or None when ``run.memory`` is off, or
    when another process has the local index open: then a warning says the caller goes
    without memory (neither retrieving nor storing) rather than fail or wait.
    ``exclude``: prompt hashes of evaluation tasks, never retrieved from."""
    if not config.run.memory:
        return None
    opened = ExitStack()
    try:
        bank = opened.enter_context(bank_session(config))
    except LockBusy as exc:
        log.warning("%s This %s goes without memory: it neither retrieves nor stores, and what "
                    "it records is not learned from.", exc, "run" if learn else "evaluation")
        return None
    return MemorySession(bank, config, learn=learn, exclude=exclude, opened=opened)
