"""One ledger per job run: what it spent (tokens, dollars, wall time per stage) against
its budget.

Spend comes from the model seam: every call of the run's role models goes through a
:class:`~agents.metered.MeteredChatModel` that adds its ``Usage`` here (tokens; litellm's
cost for hosted models, 0 for the local one). Time is wall time since the run started,
training included. The budget is checked at each stage boundary of ``improve``
(:meth:`Ledger.over`); a run that reached it stops there, before the next stage starts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from agents.metered import MeteredChatModel
from agents.model import ChatModel, Usage
from memory.jobs import Budget, StageTime

if TYPE_CHECKING:
    from orchestrator.runner import RoleModels


class BudgetExceeded(Exception):
    """A job run reached its budget; raised at a stage boundary, so nothing is half done."""


class Ledger:
    """Thread-safe totals of one run: calls, tokens, cost, and seconds per stage."""

    def __init__(self, budget: Budget, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self.calls = self.prompt_tokens = self.completion_tokens = 0
        self.cost_usd = 0.0
        self.stages: list[StageTime] = []
        self._open: tuple[int, str, float, int] | None = None

    def add(self, usage: Usage) -> None:
        with self._lock:
            self.calls += 1
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens
            self.cost_usd += usage.cost_usd

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def seconds(self) -> float:
        return self._clock() - self._started

    def begin_stage(self, round_no: int, stage: str) -> None:
        """Close the stage in progress (if any) and start timing ``stage``."""
        self.end_stage()
        self._open = (round_no, stage, self._clock(), self.tokens)

    def end_stage(self) -> None:
        if self._open is not None:
            round_no, stage, started, tokens = self._open
            self.stages.append(StageTime(round=round_no, stage=stage, tokens=self.tokens - tokens,
                                         seconds=round(self._clock() - started, 3)))
            self._open = None

    def over(self) -> str | None:
        """Which limit the run has reached, in words, or None while within budget."""
        b = self.budget
        if b.max_tokens is not None and self.tokens >= b.max_tokens:
            return f"token budget reached: {self.tokens} tokens of {b.max_tokens}"
        if b.max_usd is not None and self.cost_usd >= b.max_usd:
            return f"dollar budget reached: ${self.cost_usd:.4f} of ${b.max_usd:.4f}"
        minutes = self.seconds / 60
        if b.max_minutes is not None and minutes >= b.max_minutes:
            return f"time budget reached: {minutes:.1f} minutes of {b.max_minutes:g}"
        return None


def metered(models: RoleModels, ledger: Ledger) -> RoleModels:
    """``models`` with every call counted in ``ledger`` (roles that share a model keep
    sharing one wrapper)."""
    from orchestrator.runner import RoleModels

    wrapped: dict[int, ChatModel] = {}

    def wrap(model: ChatModel | None) -> ChatModel | None:
        if model is None:
            return None
        if id(model) not in wrapped:
            wrapped[id(model)] = MeteredChatModel(model, ledger.add)
        return wrapped[id(model)]

    return RoleModels(generator=wrap(models.generator), critic=wrap(models.critic),
                      hint_giver=wrap(models.hint_giver), judge=wrap(models.judge))
