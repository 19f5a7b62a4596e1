"""Prompt building for every role: pure functions from records to chat messages.

The generator's instructions and ``critics.extract`` are designed together: short
answers end with an ``Answer: ...`` line, code comes in one fenced python block. The
evaluation prompt (``generator_messages`` with no lessons and no history) is exactly
what distillation trains on, so training and evaluation agree on format.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from agents.model import Message
from core.records import Attempt, HintPolicy, Task

GENERATOR_SYSTEM = {
    "short": (
        "You solve problems. Think in a few short steps, then write the final line "
        "exactly as:\nAnswer: <answer>"
    ),
    "code": (
        "You write Python. Reply with the complete function in one ```python code "
        "block, including the imports it needs."
    ),
}
FORMAT_REMINDER = {
    "short": "End with the line 'Answer: <answer>'.",
    "code": "Reply with the complete function in one ```python code block.",
}
MAX_FEEDBACK_CHARS = 1200


def generator_messages(
    task: Task, lessons: Sequence[str] = (), history: Sequence[Attempt] = ()
) -> list[Message]:
    """The generator's conversation: system, task (with lessons) and the format line,
    then for each earlier attempt its reply and the retry turn that followed it.

    The format line closes the user turn because the embedded model follows the last
    instruction it read far more often than the system prompt (measured on gcd and
    basic_arithmetic replies: with it, replies are short "The answer is 7." lines)."""
    system = GENERATOR_SYSTEM.get(task.answer_format, GENERATOR_SYSTEM["short"])
    user = task.prompt
    if lessons:
        advice = "\n".join(f"- {lesson}" for lesson in lessons)
        user = f"Advice from similar problems:\n{advice}\n\n{task.prompt}"
    user = f"{user}\n\n{FORMAT_REMINDER.get(task.answer_format, FORMAT_REMINDER['short'])}"
    messages: list[Message] = [
        {"role": "system", "content": system},
        {"role": "user", "content": user},
    ]
    for attempt in history:
        messages.append({"role": "assistant", "content": attempt.reply})
        messages.append({"role": "user", "content": retry_message(task, attempt)})
    return messages


def retry_message(task: Task, attempt: Attempt) -> str:
    """The user turn after a failed attempt: the verdict, the hint if any, the format."""
    shown = attempt.answer.strip() or "(no answer found)"
    if task.answer_format == "code":
        lines = ["Your code failed the tests."]
    else:
        lines = [f"Your answer {_clip(shown, 200)} is wrong."]
    if attempt.hint is not None and attempt.hint.text.strip():
        lines.append(f"Hint: {attempt.hint.text.strip()}")
    lines.append("Try again. " + FORMAT_REMINDER.get(task.answer_format, FORMAT_REMINDER["short"]))
    return "\n".join(lines)


# Phrases of the retry turn (``retry_message``) that a small model copies into its next
# reply ("7 - 8 = 1 is wrong.\nHint: ...\nTry again. End with the line ..."). The
# evaluation prompt never contains them, so they are never part of a useful answer.
_RETRY_ECHO = re.compile(r"\bis wrong\b|^\s*hint\s*:|\btry again\b|\bend with the line\b",
                         re.IGNORECASE | re.MULTILINE)


def cut_retry_echo(reply: str) -> str:
    """``reply`` up to the first phrase it copied from a retry turn (pure); all of it
    when it copied none."""
    match = _RETRY_ECHO.search(reply)
    return reply if match is None else reply[: match.start()].rstrip()


def critic_messages(task: Task, attempt: Attempt, *, with_feedback: bool) -> list[Message]:
    """Ask the critic what is wrong with a failed attempt. The critic never sees
    privileged material; with ``with_feedback`` it sees the verifier's own text."""
    parts = [
        f"Problem:\n{task.prompt}",
        f"Student's reply:\n{_clip(attempt.reply, 2000)}",
        f"The student's answer ({_clip(attempt.answer, 200) or 'none'}) was checked and is wrong.",
    ]
    if with_feedback and attempt.verdict.feedback:
        parts.append(f"Checker output:\n{_clip(attempt.verdict.feedback, MAX_FEEDBACK_CHARS)}")
    parts.append("In one or two sentences, say what is wrong.")
    return [
        {"role": "system", "content": "You find mistakes in solutions. Be brief and concrete."},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def hint_messages(
    task: Task, attempt: Attempt, critique: str | None, policy: HintPolicy
) -> list[Message]:
    """Ask the hint-giver for one short hint. Only the ``reference`` policy shows the
    privileged reference answer and tests; ``feedback`` adds the verifier's text."""
    parts = [f"Problem:\n{task.prompt}", f"Student's wrong answer: {_clip(attempt.answer, 200) or 'none'}"]
    if critique:
        parts.append(f"What is wrong:\n{critique}")
    if policy in ("feedback", "reference") and attempt.verdict.feedback:
        parts.append(f"Checker output:\n{_clip(attempt.verdict.feedback, MAX_FEEDBACK_CHARS)}")
    if policy == "reference":
        if task.privileged.reference_answer:
            parts.append(f"Correct answer: {_clip(task.privileged.reference_answer, 1500)}")
        if task.privileged.worked_solution:
            parts.append(f"Worked solution: {_clip(task.privileged.worked_solution, 1500)}")
        if task.privileged.tests:
            parts.append(f"Tests:\n{_clip(task.privileged.tests, MAX_FEEDBACK_CHARS)}")
    parts.append("Write one short hint that helps the student get it right.")
    return [
        {"role": "system", "content": "You are a helpful teacher. Reply with the hint only."},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."
