"""The critic: explains in plain language what is wrong with a failed attempt.

A critique is a claim to check, not a fact (critics hallucinate bugs), which is why it
goes to the hint-giver as one input among others rather than straight to the generator.
"""

from __future__ import annotations

from agents.model import ChatModel, GenerationParams, Usage
from agents.prompts import critic_messages
from core.records import Attempt, Task

async def critique(
    model: ChatModel, task: Task, attempt: Attempt, *, with_feedback: bool, max_tokens: int = 96
) -> tuple[str, Usage]:
    """Return the critique text (greedy, at most ``max_tokens``) and the call's usage."""
    completion = await model.complete(
        critic_messages(task, attempt, with_feedback=with_feedback),
        GenerationParams(temperature=0.0, max_tokens=max_tokens),
    )
    return completion.text.strip(), completion.usage
