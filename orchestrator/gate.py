"""The promotion rule: pure functions from per-task evaluation outcomes to a decision.

Candidate and champion answer the same tasks, so the evidence is paired: what counts
is the tasks whose outcome differs (the discordant pairs). ``wins`` are tasks the
candidate gets right and the champion wrong, ``losses`` the reverse. Under "no
difference" each discordant task is a fair coin, so ``wins`` is Binomial(wins +
losses, 1/2), and the exact one-sided McNemar p-value is the chance of at least that
many wins (:func:`mcnemar_p`).

Promotion needs all of: a holdout gain of at least ``margin`` AND a gain that is
significant at ``confidence`` (p <= 1 - confidence); no retention loss that is both
larger than ``tolerance`` and significant (the same test, the other way round); and,
with ``max_kl`` set, a drift from the base model of at most ``max_kl``.

Reasons print scores with two decimals and differences with three, so a loss just over
the tolerance is not shown as equal to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel

_EPS = 1e-9  # pass@1 values are ratios of small integers; compare with a little slack


class Paired(BaseModel):
    """Two adapters' outcomes on the same tasks, as a 2x2 contingency table."""

    wins: int
    """Tasks the candidate gets right and the champion wrong."""
    losses: int
    """Tasks the champion gets right and the candidate wrong."""
    both: int
    """Tasks both get right."""
    neither: int
    """Tasks both get wrong."""

    @property
    def total(self) -> int:
        return self.wins + self.losses + self.both + self.neither

    @property
    def before(self) -> float:
        """The champion's pass@1."""
        return (self.losses + self.both) / self.total if self.total else 0.0

    @property
    def after(self) -> float:
        """The candidate's pass@1."""
        return (self.wins + self.both) / self.total if self.total else 0.0

    @property
    def p_gain(self) -> float:
        """One-sided exact McNemar p-value for "the candidate is better"."""
        return mcnemar_p(self.wins, self.losses)

    @property
    def p_loss(self) -> float:
        """One-sided exact McNemar p-value for "the candidate is worse"."""
        return mcnemar_p(self.losses, self.wins)


def pair(before: Mapping[str, bool], after: Mapping[str, bool]) -> Paired:
    """The contingency table of two outcome maps (task id -> passed) over the same
    tasks; ``ValueError`` when they cover different tasks (the comparison would not be
    paired)."""
    if set(before) != set(after):
        missing = sorted(set(before) ^ set(after))[:3]
        raise ValueError(f"the two evaluations cover different tasks (e.g. {missing})")
    cells = [(after[t], before[t]) for t in before]
    return Paired(wins=cells.count((True, False)), losses=cells.count((False, True)),
                  both=cells.count((True, True)), neither=cells.count((False, False)))


def mcnemar_p(wins: int, losses: int) -> float:
    """P(X >= wins) for X ~ Binomial(wins + losses, 1/2): the exact one-sided McNemar
    test that the first of two paired classifiers is better. 1.0 when there is no
    discordant pair (no evidence either way)."""
    if wins < 0 or losses < 0:
        raise ValueError("counts cannot be negative")
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(math.comb(n, i) for i in range(wins, n + 1)) / 2**n


class GateDecision(BaseModel):
    promote: bool
    reason: str
    """One sentence a person can act on, with the numbers."""
    p_value: float
    """One-sided p-value of the holdout gain (exact McNemar)."""
    wins: int
    """Holdout tasks the candidate gets right and the champion wrong."""
    losses: int
    """Holdout tasks the champion gets right and the candidate wrong."""
    retention_p_value: float | None = None
    """One-sided p-value of the retention loss (None: no retention suite)."""
    retention_wins: int | None = None
    retention_losses: int | None = None
    threshold_only: bool
    """What the margin-and-tolerance rule alone (no significance test, no drift limit)
    would have decided: kept to count how often it promotes noise."""


def decide(
    *,
    holdout: Paired,
    retention: Paired | None,
    margin: float,
    tolerance: float,
    confidence: float,
    kl: float | None = None,
    max_kl: float | None = None,
) -> GateDecision:
    """Promote when the holdout gain is at least ``margin`` and significant at
    ``confidence``, retention shows no significant loss larger than ``tolerance``, and
    the drift ``kl`` is at most ``max_kl`` (when both are given)."""
    alpha = 1.0 - confidence
    gain = holdout.after - holdout.before
    counts = dict(p_value=holdout.p_gain, wins=holdout.wins, losses=holdout.losses)
    if retention is not None:
        counts.update(retention_p_value=retention.p_loss, retention_wins=retention.wins,
                      retention_losses=retention.losses)
    loss = retention.before - retention.after if retention is not None else 0.0
    counts["threshold_only"] = gain + _EPS >= margin and loss <= tolerance + _EPS
    evidence = (f"p={holdout.p_gain:.3f}, {holdout.wins} won / {holdout.losses} lost of "
                f"{holdout.total}")
    score = f"holdout pass@1 {holdout.before:.2f} -> {holdout.after:.2f} ({gain:+.3f}; {evidence})"

    def refuse(why: str) -> GateDecision:
        return GateDecision(promote=False, reason=why, **counts)

    if gain + _EPS < margin:
        return refuse(f"{score} is below the required margin of +{margin:.2f}")
    if holdout.p_gain > alpha + _EPS:
        return refuse(f"{score} is not significant at confidence {confidence:.2f} "
                      f"(needs p <= {alpha:.3f}): within noise")
    if retention is not None:
        kept = (f"retention {retention.before:.2f} -> {retention.after:.2f} "
                f"({-loss:+.3f}{_in_tasks(retention)}; p={retention.p_loss:.3f} for a loss)")
        if loss > tolerance + _EPS and retention.p_loss <= alpha + _EPS:
            return refuse(f"{kept}: a significant loss, more than the tolerance of "
                          f"{tolerance:.2f}")
    else:
        kept = "no retention suite"
    if kl is not None and max_kl is not None and kl > max_kl + _EPS:
        return refuse(f"{score}; {kept}; but drift from the base model is KL {kl:.4f} per "
                      f"token, over improve.max_kl = {max_kl:.4f}")
    drift = f"; KL {kl:.4f}/token" if kl is not None else ""
    return GateDecision(promote=True, reason=f"{score} >= +{margin:.2f}; {kept}{drift}",
                        **counts)


def _in_tasks(retention: Paired) -> str:
    net = retention.losses - retention.wins
    if net <= 0:
        return f": {retention.wins} won / {retention.losses} lost of {retention.total}"
    return f": {net} of {retention.total} tasks net, {retention.losses} lost / {retention.wins} won"

