"""The promotion rule and its paired test (pure)."""

from __future__ import annotations

import pytest

from orchestrator.gate import Paired, decide, mcnemar_p, pair


def table(wins: int, losses: int, both: int = 0, neither: int = 0) -> Paired:
    return Paired(wins=wins, losses=losses, both=both, neither=neither)


def gate(holdout: Paired, retention: Paired | None = None, *, margin=0.05, tolerance=0.02,
         confidence=0.95, kl=None, max_kl=None):
    return decide(holdout=holdout, retention=retention, margin=margin, tolerance=tolerance,
                  confidence=confidence, kl=kl, max_kl=max_kl)


@pytest.mark.parametrize(("wins", "losses", "p"), [
    (0, 0, 1.0),                       # no discordant pair: no evidence
    (1, 0, 0.5),
    (2, 0, 0.25),
    (5, 0, 1 / 32),
    (3, 3, 42 / 64),                   # P(X >= 3), X ~ Bin(6, 1/2) = (20 + 15 + 6 + 1) / 64
    (8, 2, 56 / 1024),                 # (45 + 10 + 1) / 1024
    (10, 3, 378 / 8192),               # (286 + 78 + 13 + 1) / 8192
    (0, 4, 1.0),
])
def test_exact_one_sided_mcnemar_p_values(wins: int, losses: int, p: float) -> None:
    assert mcnemar_p(wins, losses) == pytest.approx(p, abs=1e-12)


def test_mcnemar_rejects_negative_counts() -> None:
    with pytest.raises(ValueError):
        mcnemar_p(-1, 2)


def test_pairing_counts_the_four_cells_and_needs_the_same_tasks() -> None:
    before = {"a": True, "b": True, "c": False, "d": False, "e": False}
    after = {"a": True, "b": False, "c": True, "d": True, "e": False}
    paired = pair(before, after)
    assert (paired.wins, paired.losses, paired.both, paired.neither) == (2, 1, 1, 1)
    assert (paired.before, paired.after) == (0.4, 0.6)
    with pytest.raises(ValueError, match="different tasks"):
        pair(before, {**after, "f": True})


def test_a_gain_within_noise_is_refused_though_it_clears_the_margin() -> None:
    # 2 discordant tasks of 20, both won: +0.10 passes the 0.05 margin, but two coin
    # flips coming up heads has p = 0.25.
    decision = gate(table(2, 0, both=4, neither=14))
    assert not decision.promote
    assert "not significant" in decision.reason and "p=0.250, 2 won / 0 lost of 20" in decision.reason
    assert decision.threshold_only  # what the margin-only gate would have done
    # 3 won, none lost, of 48: +0.0625 and p = 0.125: still noise.
    assert not gate(table(3, 0, both=10, neither=35)).promote


def test_a_clear_paired_win_is_promoted() -> None:
    decision = gate(table(12, 1, both=6, neither=29), table(3, 2, both=80, neither=15))
    assert decision.promote
    assert (decision.wins, decision.losses) == (12, 1)
    assert decision.p_value == pytest.approx(14 / 8192)
    assert "0.15 -> 0.38" in decision.reason and "retention 0.82 -> 0.83" in decision.reason


def test_a_gain_below_the_margin_is_refused_however_significant() -> None:
    decision = gate(table(20, 0, neither=480), margin=0.05)  # +0.04, p ~ 1e-6
    assert not decision.promote and "margin" in decision.reason


def test_exactly_the_margin_passes_despite_float_noise() -> None:
    # 0.30 - 0.25 is 0.04999999999999999 in floating point.
    decision = gate(table(5, 0, both=25, neither=70), margin=0.05)
    assert decision.promote, decision.reason


def test_a_significant_retention_loss_beyond_the_tolerance_is_refused() -> None:
    decision = gate(table(12, 0, neither=36), table(0, 5, both=80, neither=15))
    assert not decision.promote
    assert "significant loss" in decision.reason and "0.85 -> 0.80" in decision.reason
    assert decision.retention_p_value == pytest.approx(1 / 32)


def test_a_retention_loss_within_noise_is_not_held_against_the_candidate() -> None:
    # One task of 48 lost: over the 0.02 tolerance, but p = 0.5 (the old rule refused this).
    decision = gate(table(12, 0, neither=36), table(0, 1, both=20, neither=27))
    assert decision.promote and not decision.threshold_only


def test_a_small_significant_loss_within_the_tolerance_passes() -> None:
    assert gate(table(12, 0, neither=36), table(0, 6, both=400, neither=94),
                tolerance=0.02).promote  # -0.012, p = 1/64


def test_drift_over_max_kl_is_refused_and_reported_otherwise() -> None:
    win = table(12, 0, neither=36)
    refused = gate(win, kl=0.31, max_kl=0.2)
    assert not refused.promote and "KL 0.3100" in refused.reason and "max_kl" in refused.reason
    kept = gate(win, kl=0.05, max_kl=0.2)
    assert kept.promote and "KL 0.0500/token" in kept.reason
    assert gate(win, kl=5.0).promote  # without max_kl, drift is reported only


def test_confidence_sets_the_bar() -> None:
    holdout = table(4, 0, neither=16)  # p = 1/16
    assert not gate(holdout, confidence=0.95).promote
    assert gate(holdout, confidence=0.9).promote
