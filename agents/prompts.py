"""Prompt building for every role: pure functions from records to chat messages.

The generator's prompt is the evaluation prompt of ``core.answer_format`` plus what
the loop adds around it (lessons, worked examples, earlier attempts and their retry
turns), so with nothing added it is exactly what evaluation asks and distillation
trains on.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.answer_format import MAX_FEEDBACK_CHARS, clip, evaluation_messages, format_reminder, retry_message
from core.records import Attempt, HintPolicy, Message, Task

LESSONS_HEADER = "Advice from similar problems:"


def generator_messages(
    task: Task, lessons: Sequence[str] = (), history: Sequence[Attempt] = (),
    examples: Sequence[tuple[str, str]] = (),
) -> list[Message]:
    """The generator's conversation: the evaluation prompt, with ``lessons`` (when there
    are any) listed at the end of the system turn and each ``examples`` pair (a solved
    prompt and its reply in the answer format) as a user/assistant exchange before the
    task; then for each earlier attempt its reply and the retry turn that followed it.
    With no lessons and no examples the first two messages are exactly the evaluation
    prompt."""
    system, task_message = evaluation_messages(task)
    if lessons:
        advice = "\n".join(f"- {lesson}" for lesson in lessons)
        system = {"role": "system", "content": f"{system['content']}\n\n{LESSONS_HEADER}\n{advice}"}
    messages = [system]
    for prompt, reply in examples:
        messages.append({"role": "user", "content": f"{prompt}\n\n{format_reminder(task.answer_format)}"})
        messages.append({"role": "assistant", "content": reply})
    messages.append(task_message)
    for attempt in history:
        messages.append({"role": "assistant", "content": attempt.reply})
        messages.append({"role": "user", "content": retry_message(task, attempt)})
    return messages


def hint_messages(
    task: Task, attempt: Attempt, critique: str | None, policy: HintPolicy
) -> list[Message]:
    """Ask the hint-giver for one short hint. Only the ``reference`` policy shows the
    privileged reference answer and tests; ``feedback`` adds the verifier's text."""
    parts = [f"Problem:\n{task.prompt}", f"Student's wrong answer: {clip(attempt.answer, 200) or 'none'}"]
    if critique:
        parts.append(f"What is wrong:\n{critique}")
    if policy in ("feedback", "reference") and attempt.verdict.feedback:
        parts.append(f"Checker output:\n{clip(attempt.verdict.feedback, MAX_FEEDBACK_CHARS)}")
    if policy == "reference":
        if task.privileged.reference_answer:
            parts.append(f"Correct answer: {clip(task.privileged.reference_answer, 1500)}")
        if task.privileged.worked_solution:
            parts.append(f"Worked solution: {clip(task.privileged.worked_solution, 1500)}")
        if task.privileged.tests:
            parts.append(f"Tests:\n{clip(task.privileged.tests, MAX_FEEDBACK_CHARS)}")
    parts.append("Write one short hint that helps the student get it right.")
    return [
        {"role": "system", "content": "You are a helpful teacher. Reply with the hint only."},
        {"role": "user", "content": "\n\n".join(parts)},
    ]
