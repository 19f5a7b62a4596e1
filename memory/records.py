"""Records that outlive a process: tasks (and, later, attempts and trajectories).

Pure pydantic; imports nothing else from selftaught, so every layer may use it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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
