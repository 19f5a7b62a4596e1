"""Per-model generation budgets for ``improve`` and ``eval`` (``improve.profile``)."""

from __future__ import annotations

from orchestrator.config import DEFAULT_MODEL, Config, with_overrides

FAST_PROFILE = {
    "loop.reply_max_tokens": 48, "loop.feedback_max_tokens": 32, "loop.max_attempts": 2,
    "loop.reference_hint": "answer", "run.concurrency": 32,
}
"""``improve.profile = "fast"``: what a round with the embedded 135M model on a 2-core CPU
can afford (its replies otherwise ramble to the cap, and every reply is paid for k times
in sampling and once per evaluated task)."""


def improve_config(config: Config) -> Config:
    """``config`` with ``improve.profile`` applied (``auto``: ``fast`` for the embedded
    model ``local/smollm2``, the configured ``[loop]``/``[run]`` for any other)."""
    profile = config.improve.profile
    if profile == "auto":
        profile = "fast" if config.models.generator == DEFAULT_MODEL else "loop"
    return with_overrides(config, FAST_PROFILE) if profile == "fast" else config
