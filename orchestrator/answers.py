"""Grade answers someone already has (``selftaught verify TASKS --answers FILE``).

The answers file is JSONL, one ``{"id": ..., "answer": ...}`` a line (blank lines
ignored), read all-or-nothing like a tasks file: any bad line and the whole file is
rejected with one :class:`~core.errors.ConfigError` listing every bad line. Answers are
final answers: they go to the verifier as they are, with no extraction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import ConfigError
from core.records import Task, Verdict, VerifierSpec
from orchestrator.config import LimitsConfig
from orchestrator.jsonl_tasks import read_jsonl

NO_ANSWER_FEEDBACK = "no answer given"


class GradeResult(BaseModel):
    """One task's grade: the verifier's verdict, without its details."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    passed: bool
    score: float = Field(ge=0.0, le=1.0)
    feedback: str = ""


class GradeReport(BaseModel):
    """What ``selftaught verify --json`` prints."""

    total: int
    passed: int
    results: list[GradeResult]


class _AnswerLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    answer: Any

    @field_validator("answer")
    @classmethod
    def _text(cls, value: Any) -> str:
        # A number is accepted for convenience ({"id": "t1", "answer": 4}); bool is an
        # int in Python but never meant as one.
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError("must be a string or a number")
        return str(value)


def load_answers(path: str | Path, limits: LimitsConfig | None = None) -> dict[str, str]:
    """Answers by task id from the JSONL file at ``path``, in file order.

    Raises :class:`ConfigError` listing every bad line (invalid JSON, missing or unknown
    field, non-text answer, duplicate id) if there is any, or if the file is missing
    or has no answers.
    """
    rows = read_jsonl(
        path,
        lambda raw: _AnswerLine.model_validate(raw),
        what="answers",
        key=lambda line: line.id,
        expected='{"id": TASK_ID, "answer": TEXT}',
        limits=limits,
    )
    return {line.id: line.answer for _, line in rows}


def unknown_answer_ids(tasks: Sequence[Task], answers: Mapping[str, str]) -> list[str]:
    """Ids in ``answers`` that match no task, in the answers' order."""
    known = {task.id for task in tasks}
    return [answer_id for answer_id in answers if answer_id not in known]


def check_answer_ids(tasks: Sequence[Task], answers: Mapping[str, str]) -> None:
    """Raise :class:`ConfigError` listing every answer id that matches no task.

    Such answers usually mean the TASKS spec differs from the one the answers were made
    for (another seed, n, or file); grading anyway would report a misleading score.
    """
    unknown = unknown_answer_ids(tasks, answers)
    if unknown:
        listed = "\n".join(f"  {answer_id}" for answer_id in unknown)
        raise ConfigError(
            f"{len(unknown)} answer id(s) match no task in TASKS:\n{listed}\n"
            "Use the same TASKS spec the answers were made for, or remove those lines."
        )


async def grade(
    tasks: Sequence[Task], answers: Mapping[str, str], *, concurrency: int = 4,
    verify: Callable[[str, VerifierSpec], Awaitable[Verdict]] | None = None,
) -> list[GradeResult]:
    """Grade each task's answer with its verifier; one result per task, in task order.

    A task with no answer fails with feedback ``"no answer given"`` (score 0). Answer ids
    that match no task raise :class:`ConfigError` before anything is verified (see
    :func:`check_answer_ids`). At most ``concurrency`` verifications run at once. An
    error raised by a verifier (e.g. ``SandboxError``, ``ModelError``) propagates and
    the verifications still running are cancelled. ``verify`` defaults to
    ``critics.registry.verify`` (tests hand in a stand-in).
    """
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {concurrency}.")
    check_answer_ids(tasks, answers)
    if verify is None:
        # Imported here so this module loads without critics (and its heavy imports).
        from critics.registry import verify

    gate = asyncio.Semaphore(concurrency)

    async def one(task: Task) -> GradeResult:
        answer = answers.get(task.id)
        if answer is None:
            return GradeResult(id=task.id, passed=False, score=0.0, feedback=NO_ANSWER_FEEDBACK)
        async with gate:
            verdict = await verify(answer, task.verifier)
        return GradeResult(id=task.id, passed=verdict.passed, score=verdict.score, feedback=verdict.feedback)

    # gather, not TaskGroup: the caller should see the verifier's own error, not an
    # ExceptionGroup wrapping it.
    running = [asyncio.ensure_future(one(task)) for task in tasks]
    try:
        return list(await asyncio.gather(*running))
    except BaseException:
        for job in running:
            job.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise


def grade_file(spec: str, answers_path: str | Path, *, limits: LimitsConfig | None = None) -> GradeReport:
    """Grade the answers in the JSONL file ``answers_path`` against the tasks of ``spec``
    (see :func:`grade`); both are read within ``limits``."""
    from orchestrator.suites import load_tasks

    tasks = load_tasks(spec, limits=limits)
    results = asyncio.run(grade(tasks, load_answers(answers_path, limits)))
    return GradeReport(total=len(results), passed=sum(r.passed for r in results), results=results)
