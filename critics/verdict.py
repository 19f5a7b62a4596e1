"""The verdict value and the verifier protocol.

``Verdict`` is defined with the other records in ``core.records`` (attempts store
it) and re-exported here, where judges use it.
"""

from __future__ import annotations

from typing import Protocol

from core.records import Verdict, VerifierSpec

__all__ = ["Verdict", "Verifier"]


class Verifier(Protocol):
    """Checks an answer (already extracted from the model's reply) against a spec."""

    async def verify(self, answer: str, spec: VerifierSpec) -> Verdict: ...
