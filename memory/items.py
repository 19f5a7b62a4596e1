"""What the vector memory holds: cases (solved tasks, retrieved as worked examples) and
lessons (short advice from the hint that turned a failure into a success), and what a
search returns. Pydantic records, stored whole as JSON in ``memory.db``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["case", "lesson"]
Status = Literal["active", "demoted", "retired"]
"""``active``; ``demoted`` (ranked after active items: it has not helped); ``retired``
(never retrieved; ``memory prune`` deletes it)."""
LessonSource = Literal["model", "verifier", "person"]
GENERAL = "general"
"""The scope of a lesson that applies to every family."""


class Case(BaseModel):
    """A verified trajectory's task and its final reply in the evaluation answer format."""

    model_config = ConfigDict(extra="forbid")

    id: str
    task_id: str
    prompt: str
    prompt_hash: str
    """``core.leakage.prompt_hash`` of the prompt: the leakage rule applies to memory too."""
    family: str
    answer_format: str = "short"
    reply: str
    """The verified reply, normalised to the evaluation answer format (what a demo shows)."""
    answer: str
    trajectory_id: str
    run_id: str
    model: str
    adapter: str | None = None
    hinted: bool = False
    """True when the task was solved only after a hint (attempt 2 or later)."""
    revealed: bool = False
    """True when a hint before the verified attempt showed the reference answer: the
    reply may only repeat it, so it is not a demonstration unless configured."""
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class LessonOrigin(BaseModel):
    """One task a lesson was learned on (a lesson merged from near-duplicates has several)."""

    model_config = ConfigDict(extra="forbid")

    trajectory_id: str
    task_id: str
    prompt: str
    prompt_hash: str
    family: str


class Lesson(BaseModel):
    """Advice without any task's answer, with its scope and the hint's provenance."""

    model_config = ConfigDict(extra="forbid")

    id: str
    text: str
    scope: str
    """A task family, or ``general`` (learned on several families)."""
    source: LessonSource
    """Who wrote the hint it came from: a model, a verifier, or a person (human hints
    come first when lessons are shown)."""
    author: str
    origins: list[LessonOrigin]
    """Where it was learned, first one first; ``count`` is how many."""
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def count(self) -> int:
        return len(self.origins)


class Worth(BaseModel):
    """Whether retrieving an item helped: the first-attempt success of the tasks that had
    it, against tasks of the same families that did not (see ``MemoryBank.worth``)."""

    uses: int = 0
    """Recorded trajectories whose prompt held it."""
    wins: int = 0
    """Of those, solved at the first attempt."""
    compared: int = 0
    """Uses in families that also have trajectories without it (the ones ``lift`` counts)."""
    expected: float = 0.0
    """First-attempt wins those compared uses would have had at their families' rate
    without it."""
    baseline_n: int = 0
    """Trajectories without it in those families (the baseline's size)."""
    lift: float | None = None
    """(wins - expected) / compared among compared uses; None until judged."""
    status: Status = "active"


class Hit(BaseModel):
    """One search result."""

    id: str
    kind: Kind
    similarity: float
    """Cosine similarity of the query and the indexed text (a case's or a lesson's task prompt)."""
    family: str
    """A case's family; a lesson's scope."""
    text: str
    """A case's prompt; a lesson's advice."""
    status: Status
    reply: str | None = None
    """A case's reply (None for lessons)."""
    source: LessonSource | None = None
    """A lesson's provenance (None for cases)."""
