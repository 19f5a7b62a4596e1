"""The ``person`` verifier: for tasks that only a person can judge.

It never passes an answer by itself. In ``selftaught session`` the person then marks
the answer right or wrong (a verdict with ``source="person"``); in an autonomous run
such a task stays unsolved.
"""

from __future__ import annotations

from core.records import Verdict, VerifierSpec
from critics.registry import register

PERSON = "person"
AWAITING = "Not checked: a person judges this answer."


@register(PERSON)
class PersonVerifier:
    """Takes no params; every answer gets a failing verdict marked as awaiting a person."""

    def __init__(self, *, judge_model=None) -> None:
        del judge_model

    async def verify(self, answer: str, spec: VerifierSpec) -> Verdict:
        return Verdict(passed=False, score=0.0, feedback=AWAITING, details={"awaiting": PERSON})
