"""The loop's state and the dependencies its nodes receive through the runtime context."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypedDict

from agents.model import ChatModel
from core.records import Attempt, Generation, HintPolicy, Task
from memory.store import TrajectoryStore
from orchestrator.config import LoopConfig


class LoopState(TypedDict, total=False):
    """What the graph carries for one task. Nodes return only the keys they change."""

    task: Task
    hint_policy: HintPolicy
    lessons: list[str]
    examples: list[tuple[str, str]]
    """Solved (prompt, reply) pairs from memory, shown as worked examples before the task."""
    retrieved: list[str]
    """Ids of the memory items in ``lessons`` and ``examples``."""
    attempts: list[Attempt]
    draft: Generation | None
    tokens: int
    """Tokens spent on this task so far, every role included."""
    seconds: float
    """Active seconds spent on this task (summed per node, so a resume does not count
    the time the process was dead)."""
    stop_reason: str | None


@dataclass(frozen=True)
class Recall:
    """What memory gives one task: lessons for the system turn, worked examples (most
    similar last), and the ids of the items they came from."""

    lessons: list[str] = field(default_factory=list)
    examples: list[tuple[str, str]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


Retriever = Callable[[Task], Awaitable[Recall]]


@dataclass(frozen=True)
class LoopContext:
    """Everything the nodes need, handed in by the runner at invoke time."""

    generator: ChatModel
    critic: ChatModel
    hint_giver: ChatModel
    loop: LoopConfig
    store: TrajectoryStore
    run_id: str
    judge: ChatModel | None = None
    adapter: str | None = None
    retrieve: Retriever | None = None
    """Memory retrieval hook (``orchestrator.recall``); None when memory is off."""
