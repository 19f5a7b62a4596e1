"""The loop's state and the dependencies its nodes receive through the runtime context."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
    attempts: list[Attempt]
    draft: Generation | None
    tokens: int
    """Tokens spent on this task so far, every role included."""
    seconds: float
    """Active seconds spent on this task (summed per node, so a resume does not count
    the time the process was dead)."""
    stop_reason: str | None


Retriever = Callable[[Task], Awaitable[list[str]]]


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
    """Lesson retrieval hook; None until a vector memory is configured."""
