"""Records that outlive a process: tasks, verdicts, attempts, trajectories, runs.

Pure pydantic; imports nothing else from selftaught, so every layer may use it.
Stored records carry ``schema_version``; bump it (and teach the store to read the
old shape) whenever a stored field changes meaning or goes away.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Message = dict[str, str]
"""One chat message in the OpenAI/litellm shape: ``{"role": ..., "content": ...}``."""


class VerifierSpec(BaseModel):
    """How to check an answer: a registered verifier ``type`` and its ``params``.

    Examples: ``{"type": "numeric", "params": {"expected": 4, "tolerance": 1e-6}}``,
    ``{"type": "python_tests", "params": {"tests": "...", "entry_point": "f"}}``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    params: dict[str, Any] = Field(default_factory=dict)


class Privileged(BaseModel):
    """Material only the hint-giver may see (never the generator, never at evaluation)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reference_answer: str | None = None
    """A correct answer, e.g. reasoning-gym's ``answer`` or HumanEval's canonical solution."""
    tests: str | None = None
    """Unit tests the answer must pass, as source text."""
    worked_solution: str | None = None
    """Steps that reach the reference answer (e.g. ``5 - 3 = 2``), where the task's
    source gives them. Reference hints show it, so the reply the generator writes from
    such a hint, and distillation trains on, holds working and not only a final answer."""


class Task(BaseModel):
    """One thing to solve and how to check it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    """Stable id: ``HumanEval/0``, ``rg/FAMILY/SEED/INDEX`` or a JSONL file's ``id``."""
    prompt: str
    """What the generator is asked, as the task's source states it."""
    verifier: VerifierSpec
    privileged: Privileged = Field(default_factory=Privileged)
    family: str = "default"
    """Task family, the scope of lessons and the unit of per-family caps."""
    answer_format: str = "short"
    """``short`` (a final-answer line) or ``code`` (a fenced python block)."""
    metadata: dict[str, Any] = Field(default_factory=dict)


VerdictSource = Literal["verifier", "person"]


class Verdict(BaseModel):
    """The result of checking one answer. ``score`` is 0..1 and doubles as a reward."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    score: float = Field(ge=0.0, le=1.0)
    feedback: str = ""
    """Plain text for the critic and hint-giver (e.g. failing test output)."""
    details: dict[str, Any] = Field(default_factory=dict)
    source: VerdictSource = "verifier"
    """Who judged: the task's verifier, or a person in a session (who overrules it)."""
    author: str | None = None
    """The person's name when ``source`` is ``person``."""
    overruled: Verdict | None = None
    """The verifier's own verdict, kept when a person's verdict replaced it."""


HintSource = Literal["model", "verifier", "person", "reference"]
"""Who wrote a hint: a model, a verifier, a person, or the task's reference answer itself."""
HintPolicy = Literal["none", "critique", "feedback", "reference"]


class Hint(BaseModel):
    """Advice given to the generator before its next attempt, with its provenance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    source: HintSource
    author: str
    """Who wrote it: a model id, a verifier type, or a person's name."""
    policy: HintPolicy | Literal["session"]
    used_privileged: bool = False
    """True when the hint-giver saw the reference answer or tests (never at evaluation)."""


class Generation(BaseModel):
    """One reply of the generator, with the answer extracted from it, not yet judged."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message]
    """The exact chat messages the generator saw."""
    reply: str
    """The raw reply, kept beside the extracted answer."""
    answer: str
    model: str
    adapter: str | None = None
    temperature: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    resamples: int = 0
    """How many replies were thrown away for repeating an answer that already failed."""
    error: str | None = None
    """Set (with an empty reply) when the provider failed after its retries; the attempt
    then counts as failed. (Older records only: a provider failure now leaves the task
    unfinished, see ``TaskError``.)"""
    faults: list[str] = Field(default_factory=list)
    """Provider faults survived by retrying while producing this attempt, its critique
    and its hint (rate limits, 5xx, timeouts, broken replies), one line each."""


class Attempt(Generation):
    """One generation and everything that followed it: its verdict, the critique and
    the hint."""

    index: int = Field(ge=1)
    verdict: Verdict
    critique: str | None = None
    critique_model: str | None = None
    hint: Hint | None = None
    proposed_hint: Hint | None = None
    """The hint-giver's hint when a person in a session replaced, edited or declined it
    (``hint`` then holds what was actually given, or None)."""


Outcome = Literal["solved", "unsolved"]


class Trajectory(BaseModel):
    """A task, the lessons retrieved for it, every attempt, and the outcome."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    run_id: str
    task: Task
    lessons: list[str] = Field(default_factory=list)
    attempts: list[Attempt] = Field(default_factory=list)
    outcome: Outcome
    hint_policy: HintPolicy
    generator_model: str
    critic_model: str
    hint_model: str
    adapter: str | None = None
    stop_reason: str
    """Why the loop ended: ``verified``, ``max_attempts``, ``max_tokens`` or ``max_seconds``;
    in a session also ``skipped`` or ``quit`` (the person moved on or left)."""
    tokens: int = 0
    seconds: float = 0.0
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    retrieved: list[str] = Field(default_factory=list)
    """Ids of the memory cases and lessons that were in the generator's prompt
    (``selftaught memory show ID``); empty when memory was off or found nothing."""

    @property
    def solved_at(self) -> int | None:
        """1-based index of the verified attempt, or None."""
        for attempt in self.attempts:
            if attempt.verdict.passed:
                return attempt.index
        return None


RunStatus = Literal["running", "finished", "interrupted", "failed"]
"""``failed``: the run ended with task errors (``TaskError``); a resume retries those tasks."""
RunKind = Literal["run", "session"]


class RunRecord(BaseModel):
    """One ``selftaught run``: what was asked, with which settings, and how far it got."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    run_id: str
    tasks_spec: str
    settings: dict[str, Any]
    """The effective loop settings (models, caps, hint policy) so a resume reuses them."""
    total: int
    status: RunStatus = "running"
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    pid: int | None = None
    """The process working on the run (None: none has claimed it yet, or an old record)."""
    host: str | None = None
    """The host that process runs on."""
    heartbeat_at: datetime | None = None
    """When that process last said it was alive; a ``running`` run whose process is gone
    or silent is shown as interrupted (``orchestrator.lifecycle``)."""
    kind: RunKind = "run"
    """``run`` (autonomous) or ``session`` (a person watched and answered, ``selftaught
    session``)."""


class TaskError(BaseModel):
    """A task that could not finish: its provider failed after retries, or it crashed.
    Not a verdict: the task stays unfinished (no trajectory), so ``--resume`` retries it
    from its last checkpoint."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    task_id: str
    kind: str
    """The error's class: ``ModelError``, ``TransientModelError``, ``ConfigError``, ..."""
    message: str
    """What went wrong, secrets scrubbed."""
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
