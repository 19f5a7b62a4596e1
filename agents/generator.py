"""The generator: one attempt at a task, resampling answers that already failed.

Models often ignore feedback and repeat themselves (Feedback Friction), so a reply
whose answer equals one that already failed is thrown away and sampled again, hotter,
up to ``max_resamples`` times.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from agents.model import ChatModel, GenerationParams, Message
from core.records import Generation

RESAMPLE_MIN_TEMPERATURE = 0.7
"""Greedy decoding would repeat the same reply; resamples use at least this."""


async def generate_attempt(
    model: ChatModel,
    messages: list[Message],
    params: GenerationParams,
    *,
    extract: Callable[[str], str],
    failed_answers: Collection[str] = (),
    max_resamples: int = 0,
) -> Generation:
    """Generate until the extracted answer is new (or resamples run out).

    Token and latency figures, and the provider faults survived, add up every sample,
    the discarded ones included.
    Raises ``ModelError`` from the seam unchanged.
    """
    seen = {normalize_answer(a) for a in failed_answers}
    prompt_tokens = completion_tokens = 0
    latency = 0.0
    resamples = 0
    faults: list[str] = []
    while True:
        completion = await model.complete(messages, params)
        prompt_tokens += completion.usage.prompt_tokens
        completion_tokens += completion.usage.completion_tokens
        latency += completion.usage.latency_s
        faults.extend(completion.usage.faults)
        answer = extract(completion.text)
        if normalize_answer(answer) not in seen or resamples >= max_resamples:
            break
        resamples += 1
        hotter = max(params.temperature + 0.2, RESAMPLE_MIN_TEMPERATURE)
        params = params.model_copy(update={"temperature": min(hotter, 2.0), "seed": None})
    return Generation(
        messages=messages,
        reply=completion.text,
        answer=answer,
        model=completion.model,
        adapter=params.adapter,
        temperature=params.temperature,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency_s=latency,
        resamples=resamples,
        faults=faults,
    )


def normalize_answer(answer: str) -> str:
    """Case- and whitespace-insensitive form used to spot repeated answers."""
    return " ".join(answer.split()).strip().rstrip(".").lower()
