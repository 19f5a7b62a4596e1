"""Tasks from a user's JSONL file, and the all-or-nothing JSONL reading it shares.

A file is read whole before anything is built from it: every bad line is collected
and reported in one :class:`~core.errors.ConfigError` (line number and reason), so a user
fixes the file in one pass and nothing ever runs on a half-parsed file.

Line shapes (one JSON object a line; blank lines are ignored)::

    {"id", "prompt", "verifier": {"type", "params"},
     optional "family", "reference_answer", "tests", "worked_solution", "answer_format",
     "metadata"}
    {"id", "prompt", "answer", optional "family", "tests", "worked_solution",
     "answer_format", "metadata"}

The second is a convenience: ``answer`` becomes the reference answer and the verifier
is ``numeric`` (``{"expected": <number>}``) when the answer parses as a plain decimal
number, else ``exact`` (``{"expected": <answer>}``). A ``privileged`` object (the shape
``Task.model_dump()`` writes) is accepted instead of ``reference_answer``, ``tests`` and
``worked_solution``, so ``selftaught tasks --json`` output can be saved and loaded back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import ConfigError
from core.records import Privileged, Task, VerifierSpec

T = TypeVar("T")

# A plain decimal number, as a person writes one. float() alone would also accept
# "nan", "inf" and "1_000", which are not answers anyone means numerically.
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def parse_number(text: str) -> int | float | None:
    """The number ``text`` spells (int when integral in form, e.g. ``"4"``), or None."""
    stripped = text.strip()
    if not _NUMBER.fullmatch(stripped):
        return None
    try:
        return int(stripped)
    except ValueError:
        return float(stripped)


def describe_validation_error(error: ValidationError) -> str:
    """One short line per problem pydantic found: ``missing field 'prompt'`` and so on."""
    reasons = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        kind = item["type"]
        if kind == "missing":
            reasons.append(f"missing field '{where}'")
        elif kind == "extra_forbidden":
            reasons.append(f"unknown field '{where}'")
        else:
            message = item["msg"].removeprefix("Value error, ")
            reasons.append(f"field '{where}': {message}" if where else message)
    return "; ".join(reasons)


def read_jsonl(
    path: str | Path,
    parse: Callable[[dict[str, Any]], T],
    *,
    what: str,
    key: Callable[[T], str],
    expected: str,
) -> list[tuple[int, T]]:
    """Parse every non-blank line of ``path`` with ``parse``, or raise one ConfigError.

    ``parse`` gets the line's JSON object and returns the item or raises
    ``ValidationError`` / ``ValueError``. ``key`` names an item for the duplicate check.
    ``what`` (e.g. "tasks") and ``expected`` (a one-line description of a good line)
    go into the error message. Returns ``(line_number, item)`` pairs in file order.
    An unreadable file, a file with no items, and a file with any bad line all raise
    :class:`ConfigError`; the last lists every bad line with its number and reason.
    """
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {file}. Check the path.") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} file {file} is a directory; name a .jsonl file.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} file {file} is not UTF-8 text ({exc}); save it as UTF-8.") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {file}: {exc}") from None

    items: list[tuple[int, T]] = []
    bad: list[str] = []
    first_seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(f"  line {number}: invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(raw, dict):
            bad.append(f"  line {number}: expected a JSON object, got {type(raw).__name__}")
            continue
        try:
            item = parse(raw)
        except ValidationError as exc:
            bad.append(f"  line {number}: {describe_validation_error(exc)}")
            continue
        except ValueError as exc:
            bad.append(f"  line {number}: {exc}")
            continue
        name = key(item)
        if name in first_seen:
            bad.append(f"  line {number}: duplicate id {name!r} (first on line {first_seen[name]})")
            continue
        first_seen[name] = number
        items.append((number, item))

    if bad:
        lines = "\n".join(bad)
        raise ConfigError(
            f"{what} file {file} has {len(bad)} bad line(s); nothing was run:\n{lines}\n"
            f"Fix every line listed. Each line must be {expected}."
        )
    if not items:
        raise ConfigError(f"{what} file {file} has no {what}; add one JSON object per line.")
    return items


class _VerifierLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class _TaskLine(BaseModel):
    """One line of a tasks file, checked strictly before it becomes a :class:`Task`."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    verifier: _VerifierLine | None = None
    answer: Any = None
    family: str = Field("default", min_length=1)
    reference_answer: str | None = None
    tests: str | None = None
    worked_solution: str | None = None
    privileged: Privileged | None = None
    answer_format: Literal["short", "code"] = "short"
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_way_to_check(self) -> _TaskLine:
        if self.verifier is None and self.answer is None:
            raise ValueError("needs a 'verifier' object or an 'answer'")
        if self.verifier is not None and self.answer is not None:
            raise ValueError("give 'verifier' or 'answer', not both")
        if self.answer is not None:
            # bool is an int in Python; true/false is never meant as a numeric answer.
            if isinstance(self.answer, bool) or not isinstance(self.answer, str | int | float):
                raise ValueError("field 'answer' must be a string or a number")
            if self.reference_answer is not None:
                raise ValueError("'answer' is the reference answer; drop 'reference_answer'")
        if self.privileged is not None and (self.reference_answer or self.tests or self.worked_solution):
            raise ValueError(
                "give 'privileged' or 'reference_answer'/'tests'/'worked_solution', not both")
        return self

    def to_task(self) -> Task:
        """The :class:`Task` this line describes (see the module docstring)."""
        privileged = self.privileged or Privileged(
            reference_answer=self.reference_answer, tests=self.tests, worked_solution=self.worked_solution)
        if self.verifier is not None:
            verifier = VerifierSpec(type=self.verifier.type, params=self.verifier.params)
        else:
            answer = str(self.answer)
            number = self.answer if isinstance(self.answer, int | float) else parse_number(answer)
            kind = "exact" if number is None else "numeric"
            verifier = VerifierSpec(type=kind, params={"expected": answer if number is None else number})
            privileged = privileged.model_copy(update={"reference_answer": answer})
        return Task(
            id=self.id,
            prompt=self.prompt,
            verifier=verifier,
            privileged=privileged,
            family=self.family,
            answer_format=self.answer_format,
            metadata=self.metadata,
        )


_EXPECTED = (
    '{"id", "prompt", "verifier": {"type", "params"}} (optional "family", "reference_answer", '
    '"tests", "worked_solution", "answer_format", "metadata"), or {"id", "prompt", "answer"}'
)


def load_jsonl_tasks(path: str | Path) -> list[Task]:
    """Every task in the JSONL file at ``path``, in file order; ids are the ``id`` fields.

    Raises :class:`ConfigError` listing every bad line (invalid JSON, missing or unknown
    field, duplicate id, ...) if there is any, or if the file is missing or empty.
    """
    rows = read_jsonl(
        path,
        lambda raw: _TaskLine.model_validate(raw).to_task(),
        what="tasks",
        key=lambda task: task.id,
        expected=_EXPECTED,
    )
    return [task for _, task in rows]
