"""The critic: explains in plain language what is wrong with a failed attempt.

A critique is a claim to check, not a fact (critics hallucinate bugs), which is why it
goes to the hint-giver as one input among others rather than straight to the generator.
"""

from __future__ import annotations

from agents.model import ChatModel, GenerationParams, Usage
from core.answer_format import MAX_FEEDBACK_CHARS, clip
from core.records import Attempt, Message, Task


async def critique(
    model: ChatModel, task: Task, attempt: Attempt, *, with_feedback: bool, max_tokens: int = 96
) -> tuple[str, Usage]:
    """Return the critique text (greedy, at most ``max_tokens``) and the call's usage."""
    completion = await model.complete(
        critic_messages(task, attempt, with_feedback=with_feedback),
        GenerationParams(temperature=0.0, max_tokens=max_tokens),
    )
    return completion.text.strip(), completion.usage


def critic_messages(task: Task, attempt: Attempt, *, with_feedback: bool) -> list[Message]:
    """Ask the critic what is wrong with a failed attempt. The critic never sees
    privileged material; with ``with_feedback`` it sees the verifier's own text."""
    parts = [
        f"Problem:\n{task.prompt}",
        f"Student's reply:\n{clip(attempt.reply, 2000)}",
        f"The student's answer ({clip(attempt.answer, 200) or 'none'}) was checked and is wrong.",
    ]
    if with_feedback and attempt.verdict.feedback:
        parts.append(f"Checker output:\n{clip(attempt.verdict.feedback, MAX_FEEDBACK_CHARS)}")
    parts.append("In one or two sentences, say what is wrong.")
    return [
        {"role": "system", "content": "You find mistakes in solutions. Be brief and concrete."},
        {"role": "user", "content": "\n\n".join(parts)},
    ]
