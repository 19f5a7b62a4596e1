"""What a recorded trajectory gives the memory: a case when it ended verified, a lesson
when a hint turned a failure into the verified attempt. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass

from core.answer_format import cut_retry_echo, extract_answer, normalize_reply
from core.leakage import prompt_hash
from core.records import Attempt, Trajectory
from memory.items import Case, LessonOrigin, LessonSource
from memory.lessons import lesson_from_hint


def verified(t: Trajectory) -> Attempt | None:
    """The attempt that passed (and recorded no provider error), or None."""
    if t.outcome != "solved":
        return None
    return next((a for a in t.attempts if a.verdict.passed and a.error is None), None)


def case_from(t: Trajectory, case_id: str) -> Case | None:
    """``t`` as a case: its prompt and verified reply in the evaluation answer format.

    None when ``t`` is not verified, or its reply has no answer once what it copied
    from the retry turn is cut (it passed by repeating the hint, not by answering).
    ``revealed`` when a hint before the verified attempt saw the reference answer."""
    attempt = verified(t)
    if attempt is None:
        return None
    reply = attempt.reply
    if t.task.answer_format != "code":
        reply = cut_retry_echo(reply)
        if extract_answer(reply, t.task.answer_format).strip() != attempt.answer.strip():
            return None
    shown = normalize_reply(reply, t.task.answer_format, attempt.answer)
    if shown is None:
        return None
    earlier = [a for a in t.attempts if a.index < attempt.index]
    return Case(id=case_id, task_id=t.task.id, prompt=t.task.prompt, prompt_hash=prompt_hash(t.task.prompt),
                family=t.task.family, answer_format=t.task.answer_format, reply=shown,
                answer=attempt.answer, trajectory_id=t.id, run_id=t.run_id, model=attempt.model,
                adapter=attempt.adapter, hinted=attempt.index > 1,
                revealed=any(a.hint is not None and a.hint.used_privileged for a in earlier))


@dataclass(frozen=True)
class LessonDraft:
    """A lesson to store: its text, where it was learned, who wrote the hint, and the
    answers it must not contain (checked again when stored)."""

    text: str
    origin: LessonOrigin
    source: LessonSource
    author: str
    answers: tuple[str, ...]


def lesson_from(t: Trajectory) -> LessonDraft | None:
    """The lesson in the hint just before ``t``'s verified attempt, or None: no hint
    there, a hint that only revealed the reference answer, or no general advice in it
    (see :func:`memory.lessons.lesson_from_hint`)."""
    attempt = verified(t)
    if attempt is None or attempt.index == 1:
        return None
    before = next((a for a in t.attempts if a.index == attempt.index - 1), None)
    hint = before.hint if before is not None else None
    if hint is None or hint.source == "reference" or not hint.text.strip():
        return None
    answers = tuple(a for a in (t.task.privileged.reference_answer, attempt.answer) if a)
    text = lesson_from_hint(hint.text, prompt=t.task.prompt, answers=answers)
    if text is None:
        return None
    origin = LessonOrigin(trajectory_id=t.id, task_id=t.task.id, prompt=t.task.prompt,
                          prompt_hash=prompt_hash(t.task.prompt), family=t.task.family)
    return LessonDraft(text=text, origin=origin, source=hint.source, author=hint.author, answers=answers)
