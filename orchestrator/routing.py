"""Pure routing decisions and schedules for the loop."""

from __future__ import annotations

from orchestrator.config import LoopConfig

RECORD, GENERATE, CRITIQUE = "record", "generate", "critique"


def stop_reason(
    *, passed: bool, attempts: int, tokens: int, seconds: float, loop: LoopConfig
) -> str | None:
    """Why the loop must stop now, or None to try again. Checked after each verdict."""
    if passed:
        return "verified"
    if attempts >= loop.max_attempts:
        return "max_attempts"
    if tokens >= loop.max_tokens:
        return "max_tokens"
    if seconds >= loop.max_seconds:
        return "max_seconds"
    return None


def after_verify(stop: str | None, hint_policy: str) -> str:
    """Next node after a verdict: record when stopping; the bare "try again" policy
    skips the critic and hint-giver."""
    if stop is not None:
        return RECORD
    return GENERATE if hint_policy == "none" else CRITIQUE


def temperature_for(attempt_index: int, loop: LoopConfig) -> float:
    """Temperature for the 1-based ``attempt_index``: raised on later attempts so the
    model explores instead of repeating itself, capped at ``max_temperature``."""
    raised = loop.temperature + loop.temperature_step * (attempt_index - 1)
    return min(max(raised, loop.temperature), max(loop.max_temperature, loop.temperature))
