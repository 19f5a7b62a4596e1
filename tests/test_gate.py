"""The promotion rule (pure)."""

from __future__ import annotations

import pytest

from orchestrator.gate import decide


def gate(hb, ha, rb=None, ra=None, margin=0.05, tolerance=0.02):
    return decide(holdout_before=hb, holdout_after=ha, retention_before=rb, retention_after=ra,
                  margin=margin, tolerance=tolerance)


def test_promotes_a_clear_gain_that_keeps_retention() -> None:
    decision = gate(0.25, 0.75, 0.8, 0.8)
    assert decision.promote
    assert "0.25 -> 0.75" in decision.reason and "retention 0.80 -> 0.80" in decision.reason


@pytest.mark.parametrize("after", [0.25, 0.29, 0.0])
def test_a_gain_below_the_margin_is_refused(after: float) -> None:
    decision = gate(0.25, after, 0.8, 0.8)
    assert not decision.promote and "margin" in decision.reason


def test_exactly_the_margin_passes_despite_float_noise() -> None:
    # 3/10 - 1/4 is 0.04999999999999999 in floating point.
    assert gate(1 / 4, 3 / 10, margin=0.05).promote


def test_retention_loss_beyond_tolerance_is_refused_even_with_a_big_gain() -> None:
    decision = gate(0.0, 1.0, 0.9, 0.85)
    assert not decision.promote
    assert "retention" in decision.reason and "0.90 -> 0.85" in decision.reason


def test_retention_loss_within_tolerance_passes() -> None:
    assert gate(0.0, 0.5, 0.90, 0.89).promote


def test_no_retention_suite() -> None:
    decision = gate(0.1, 0.5)
    assert decision.promote and "no retention suite" in decision.reason


def test_zero_margin_still_needs_no_loss() -> None:
    assert gate(0.5, 0.5, margin=0.0).promote
    assert not gate(0.5, 0.45, margin=0.0).promote


def test_a_loss_just_over_the_tolerance_reads_as_more_than_it():
    # One task in 48 lost: 0.4375 -> 0.4167 is -0.021, over a 0.02 tolerance.
    decision = decide(holdout_before=0.14, holdout_after=0.22, retention_before=21 / 48,
                      retention_after=20 / 48, margin=0.05, tolerance=0.02)
    assert not decision.promote and "(-0.021)" in decision.reason


def test_a_refusal_counts_the_tasks_and_flags_a_suite_too_small_for_the_tolerance():
    decision = decide(holdout_before=0.08, holdout_after=0.36, retention_before=38 / 48,
                      retention_after=36 / 48, margin=0.05, tolerance=0.02, retention_tasks=48)
    assert not decision.promote
    assert "(-0.042: 2 of 48 tasks)" in decision.reason
    assert "one of 48 tasks is already 0.021: use 50+ retention tasks" in decision.reason
    roomy = decide(holdout_before=0.08, holdout_after=0.36, retention_before=0.8,
                   retention_after=0.7, margin=0.05, tolerance=0.02, retention_tasks=100)
    assert "(-0.100: 10 of 100 tasks)" in roomy.reason and "use " not in roomy.reason
