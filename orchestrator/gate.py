"""The promotion rule: a pure function from evaluation scores to a decision.

Reasons print scores with two decimals and differences with three, so a loss just over
the tolerance is not shown as equal to it."""

from __future__ import annotations

import math

from pydantic import BaseModel

_EPS = 1e-9  # pass@1 values are ratios of small integers; compare with a little slack


class GateDecision(BaseModel):
    promote: bool
    reason: str
    """One sentence a person can act on, with the numbers."""


def decide(
    *,
    holdout_before: float,
    holdout_after: float,
    retention_before: float | None,
    retention_after: float | None,
    margin: float,
    tolerance: float,
    retention_tasks: int | None = None,
) -> GateDecision:
    """Promote when the candidate beats the champion on the holdout by at least
    ``margin`` AND loses at most ``tolerance`` on retention (no retention suite: that
    half of the rule holds trivially). Scores are pass@1 in 0..1. ``retention_tasks``
    (the suite's size) lets a refusal say how many tasks the loss is, and when one task
    is already more than the tolerance."""
    gain = holdout_after - holdout_before
    if gain + _EPS < margin:
        return GateDecision(promote=False, reason=(
            f"holdout pass@1 {holdout_before:.2f} -> {holdout_after:.2f} "
            f"({gain:+.3f}) is below the required margin of +{margin:.2f}"))
    if retention_before is not None and retention_after is not None:
        loss = retention_before - retention_after
        if loss > tolerance + _EPS:
            return GateDecision(promote=False, reason=(
                f"retention pass@1 fell {retention_before:.2f} -> {retention_after:.2f} "
                f"({-loss:+.3f}{_in_tasks(loss, retention_tasks)}), more than the tolerance "
                f"of {tolerance:.2f}{_coarse(tolerance, retention_tasks)}"))
        kept = f"; retention {retention_before:.2f} -> {retention_after:.2f}"
    else:
        kept = "; no retention suite"
    return GateDecision(promote=True, reason=(
        f"holdout pass@1 {holdout_before:.2f} -> {holdout_after:.2f} ({gain:+.3f} >= "
        f"+{margin:.2f}){kept}"))


def _in_tasks(loss: float, tasks: int | None) -> str:
    return f": {round(loss * tasks)} of {tasks} tasks" if tasks else ""


def _coarse(tolerance: float, tasks: int | None) -> str:
    """A hint when one task of the suite weighs more than a nonzero tolerance: then a
    single task that flips by chance decides the gate."""
    if not tasks or tolerance <= 0 or 1 / tasks <= tolerance + _EPS:
        return ""
    enough = math.ceil(1 / tolerance - _EPS)  # the fewest tasks where one is <= tolerance
    return (f" (one of {tasks} tasks is already {1 / tasks:.3f}: use {enough}+ retention "
            "tasks or a larger improve.tolerance)")
