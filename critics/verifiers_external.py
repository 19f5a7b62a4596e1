"""Verifiers that defer to someone else's judgement: ``reasoning_gym`` (the family's
own scorer) and ``llm_judge`` (a judge model through the ChatModel seam).

``reasoning_gym`` is slow to import (seconds), so it is imported lazily, in a worker
thread, and each family's scorer is built once.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import json
import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.answer_format import last_number
from critics.registry import ParamsVerifier, register
from critics.verdict import Verdict
from critics.verifiers_text import parse_number
from core.errors import ConfigError, ModelError

_STRICT = ConfigDict(extra="forbid", frozen=True)

# ---------------------------------------------------------------- reasoning_gym

_FORMAT_WORDS = re.compile(r"\b(answer|format|only|respond|reply|provide|return|write)\b",
                           re.IGNORECASE)


_PARTIAL = 0.1
"""Scores from here up to the threshold read as "partially right"."""


class ReasoningGymParams(BaseModel):
    model_config = _STRICT

    family: str = Field(min_length=1)
    """The reasoning-gym dataset name, e.g. ``gcd``."""
    entry: dict[str, Any]
    """The dataset entry (``question``, ``answer``, ``metadata``) the scorer reads."""
    threshold: float = Field(1.0 - 1e-9, ge=0.0, le=1.0)
    """Lowest scorer score that counts as passed."""
    config: dict[str, Any] = Field(default_factory=dict)
    """The family's config the entry was generated with (without seed/size); some
    scorers read it. Empty: the family's defaults."""
    fallback_last_number: bool = True
    """When the reference answer is a number and the answer as written fails, also score
    the last number written in it ("The GCD of 10 and 25 is 5." reads as 5)."""

    @model_validator(mode="after")
    def _entry_shape(self) -> ReasoningGymParams:
        missing = [k for k in ("question", "answer", "metadata") if k not in self.entry]
        if missing:
            raise ValueError(f"param 'entry' lacks {', '.join(missing)}")
        return self


@functools.lru_cache(maxsize=256)
def _scorer(family: str, config_json: str) -> Callable[[Any, dict[str, Any]], float]:
    """The family's ``score_answer``, built once per (family, config)."""
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    if family not in DATASETS:
        close = difflib.get_close_matches(family, list(DATASETS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"param 'family': unknown reasoning-gym family {family!r}{hint} "
                          f"({len(DATASETS)} families are registered in reasoning_gym)")
    config = json.loads(config_json)
    if not config:
        return reasoning_gym.get_score_answer_fn(family)
    try:
        return reasoning_gym.create_dataset(family, size=1, seed=0, **config).score_answer
    except (AssertionError, ValueError, TypeError, KeyError) as error:
        raise ConfigError(f"param 'config': reasoning-gym family {family!r} rejected "
                          f"{config}: {error or type(error).__name__}") from None


def format_hints(question: str, reference: Any) -> str:
    """Sentences of the question that state the expected answer format, minus any that
    mention the reference answer (pure)."""
    ref = str(reference).strip() if reference is not None else ""
    hints = []
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", question):
        sentence = sentence.strip()
        if not sentence or len(sentence) > 240 or not _FORMAT_WORDS.search(sentence):
            continue
        if ref and re.search(rf"(?<!\w){re.escape(ref)}(?!\w)", sentence):
            continue
        hints.append(sentence)
    return " ".join(hints[-2:])


async def _score(scorer: Callable[[Any, dict[str, Any]], float], answer: str,
                 entry: dict[str, Any]) -> tuple[float, str | None]:
    """``(score clamped to 0..1, the scorer's exception name or None)``."""
    try:
        score = float(await asyncio.to_thread(scorer, answer, entry))
    except Exception as error:  # a scorer choking on odd text is the answer's fault
        return 0.0, type(error).__name__
    return min(max(score, 0.0), 1.0), None


@register("reasoning_gym")
class ReasoningGymVerifier(ParamsVerifier):
    """Scores with the family's own ``score_answer``; feedback gives the score and the
    question's format instructions, never the reference answer."""

    Params = ReasoningGymParams

    async def check(self, answer: str, params: ReasoningGymParams) -> Verdict:
        config_json = json.dumps(params.config, sort_keys=True, default=str)
        scorer = await asyncio.to_thread(_scorer, params.family, config_json)
        score, crash = await _score(scorer, answer.strip(), params.entry)
        details = {"family": params.family, "reference": params.entry.get("answer"),
                   "scorer_error": crash, "used_fallback": False}
        last = last_number(answer) if params.fallback_last_number else None
        if (score < params.threshold and last is not None and last != answer.strip()
                and parse_number(str(params.entry.get("answer"))) is not None):
            fallback_score, _ = await _score(scorer, last, params.entry)
            if fallback_score > score:
                score, crash = fallback_score, None
                details.update(used_fallback=True, scorer_error=None, parsed=last)
        if score >= params.threshold:
            note = (" (read from the last number; reply with just the number)"
                    if details["used_fallback"] else "")
            return Verdict(passed=True, score=score, feedback="correct" + note, details=details)
        hints = format_hints(str(params.entry.get("question", "")), params.entry.get("answer"))
        if crash:
            verdict = "the scorer could not read the answer"
        elif score >= _PARTIAL:
            verdict = (f"partially right (score {score:.2f}): close, but not exactly the "
                       "expected answer or form")
        else:  # some families give 0.01 to any attempt: that is not "partially right"
            verdict = f"wrong (score {score:.2f})"
        feedback = verdict + (f". Format required: {hints}" if hints else
                              ". Give only the final answer, in the form the question asks.")
        return Verdict(passed=False, score=score, feedback=feedback, details=details)


# ---------------------------------------------------------------- llm_judge

_JUDGE_SYSTEM = (
    "You are a strict, fair grader. Grade the answer against the rubric. Reply in "
    "exactly this format and nothing else:\n"
    "SCORE: <integer from 0 to 10>\n"
    "REASON: <one or two sentences on what is right or wrong>\n"
    "Never quote the reference answer in your reason."
)
_SCORE = re.compile(
    r"\bscore\W{0,3}\s*(?:is|of|[:=])?\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+)|out\s+of\s+(\d+))?",
    re.IGNORECASE)
_RATIO = re.compile(r"(\d+(?:\.\d+)?)\s*(?:/|out\s+of)\s*(10|100|5)\b", re.IGNORECASE)
_REASON = re.compile(r"reason\W{0,3}\s*[:=]\s*(.+)", re.IGNORECASE | re.DOTALL)


class LlmJudgeParams(BaseModel):
    model_config = _STRICT

    rubric: str = Field(min_length=1)
    """What a good answer does; the judge grades against it."""
    question: str | None = None
    """The task the answer responds to, if the judge should see it."""
    reference: str | None = None
    """A reference answer shown to the judge only (feedback comes from its reason)."""
    pass_threshold: float = Field(0.7, ge=0.0, le=1.0)
    """Passing score on the 0..1 scale (the judge's 0-10 divided by 10)."""
    max_tokens: int = Field(256, ge=16)
    attempts: int = Field(2, ge=1, le=5)
    """Tries when the judge's reply has no readable score."""


def parse_judge_reply(text: str) -> tuple[float, str] | None:
    """``(score on 0..10, reason)`` from a judge reply, or None when it has no score.

    Reads ``SCORE: 8``, ``Score: 8/10``, ``**Score**: 7.5``, ``8 out of 10``; other
    denominators are rescaled to 10 and the result clamped to 0..10.
    """
    match = _SCORE.search(text)
    if match:
        value, denominator = float(match.group(1)), match.group(2) or match.group(3)
    else:
        ratio = _RATIO.search(text)
        if not ratio:
            return None
        value, denominator = float(ratio.group(1)), ratio.group(2)
    if denominator and float(denominator) > 0:
        value = value * 10.0 / float(denominator)
    value = min(max(value, 0.0), 10.0)
    reason_match = _REASON.search(text)
    reason = reason_match.group(1) if reason_match else (text[: match.start()] + text[match.end():]
                                                         if match else text)
    return value, " ".join(reason.split())[:500]


def judge_messages(answer: str, params: LlmJudgeParams) -> list[dict[str, str]]:
    """The prompt for the judge (pure)."""
    parts = [f"Rubric:\n{params.rubric}"]
    if params.question:
        parts.append(f"Question:\n{params.question}")
    if params.reference:
        parts.append(f"Reference answer (for you only; do not quote it):\n{params.reference}")
    parts.append(f"Answer to grade (between the markers):\n<<<\n{answer}\n>>>")
    return [{"role": "system", "content": _JUDGE_SYSTEM},
            {"role": "user", "content": "\n\n".join(parts)}]


@register("llm_judge")
class LlmJudgeVerifier(ParamsVerifier):
    """Asks the judge model for a 0-10 score; passes at ``pass_threshold``. A reply
    without a score is retried, then raises ``ModelError`` (the judge, not the answer,
    failed)."""

    Params = LlmJudgeParams

    async def check(self, answer: str, params: LlmJudgeParams) -> Verdict:
        if self.judge_model is None:
            raise ConfigError("verifier 'llm_judge' needs a judge model; pass judge_model= "
                              "to verify() (e.g. the critic model)")
        from agents.model import GenerationParams

        messages = judge_messages(answer, params)
        generation = GenerationParams(temperature=0.0, max_tokens=params.max_tokens)
        replies = []
        for _ in range(params.attempts):
            completion = await self.judge_model.complete(messages, generation)
            replies.append(completion.text)
            parsed = parse_judge_reply(completion.text)
            if parsed is not None:
                value, reason = parsed
                score = value / 10.0
                return Verdict(passed=score >= params.pass_threshold, score=score,
                               feedback=reason or f"judged {value:g}/10",
                               details={"judge": self.judge_model.model_id, "raw_score": value})
            messages = [*messages, {"role": "assistant", "content": completion.text},
                        {"role": "user", "content": "Reply again in exactly the format "
                         "SCORE: <0-10> then REASON: <sentence>."}]
        raise ModelError(f"judge model {self.judge_model.model_id!r} gave no readable score in "
                         f"{params.attempts} tries; last reply: {replies[-1][:200]!r}")
