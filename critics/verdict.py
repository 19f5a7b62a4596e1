"""The verdict value and the verifier protocol."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from memory.records import VerifierSpec


class Verdict(BaseModel):
    """The result of checking one answer. ``score`` is 0..1 and doubles as a reward."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    score: float = Field(ge=0.0, le=1.0)
    feedback: str = ""
    """Plain text for the critic and hint-giver (e.g. failing test output)."""
    details: dict[str, Any] = Field(default_factory=dict)


class Verifier(Protocol):
    """Checks an answer (already extracted from the model's reply) against a spec."""

    async def verify(self, answer: str, spec: VerifierSpec) -> Verdict: ...
