"""Tasks from a user's JSONL file, and the all-or-nothing JSONL reading it shares.

A file is read whole before anything is built from it: every bad line is collected
and reported in one :class:`~core.errors.ConfigError` (line number and reason), so a user
fixes the file in one pass and nothing ever runs on a half-parsed file. Reading is
bounded (``[limits]``): the file's size, each line's bytes (a longer line is skipped
unread and reported), the number of items and each prompt's length; a line that is not
UTF-8 is reported with the byte at fault. Memory stays within the limits whatever the file.

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
from orchestrator.config import LimitsConfig

T = TypeVar("T")

MAX_LISTED = 50
"""Bad lines listed one by one in the error; the rest are counted."""

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
    limits: LimitsConfig | None = None,
) -> list[tuple[int, T]]:
    """Parse every non-blank line of ``path`` with ``parse``, or raise one ConfigError.

    ``parse`` gets the line's JSON object and returns the item or raises
    ``ValidationError`` / ``ValueError``. ``key`` names an item for the duplicate check.
    ``what`` (e.g. "tasks") and ``expected`` (a one-line description of a good line)
    go into the error message. Returns ``(line_number, item)`` pairs in file order.
    An unreadable file, a file with no items, a file over ``limits`` (size, item count),
    and a file with any bad line (too long, not UTF-8, not JSON, rejected by ``parse``,
    duplicate) all raise :class:`ConfigError`; the last lists the bad lines with their
    numbers and reasons (the first ``MAX_LISTED``, then a count).
    """
    limits = limits or LimitsConfig()
    file = Path(path).expanduser()
    try:
        size = file.stat().st_size
        if file.is_dir():
            raise IsADirectoryError(file)
        handle = file.open("rb")
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {file}. Check the path.") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} file {file} is a directory; name a .jsonl file.") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {file}: {exc}") from None
    if size > limits.max_file_bytes:
        handle.close()
        raise ConfigError(
            f"{what} file {file} is {size:,} bytes, more than limits.max_file_bytes = "
            f"{limits.max_file_bytes:,}; split the file, or raise [limits] max_file_bytes in "
            "selftaught.toml.")

    items: list[tuple[int, T]] = []
    bad: list[str] = []
    bad_count = 0
    first_seen: dict[str, int] = {}

    def reject(number: int, reason: str) -> None:
        nonlocal bad_count
        bad_count += 1
        if len(bad) < MAX_LISTED:
            bad.append(f"  line {number}: {reason}")

    with handle:
        for number, data in enumerate(_lines(handle, limits.max_line_bytes), start=1):
            if data is None:
                reject(number, f"longer than limits.max_line_bytes = {limits.max_line_bytes:,} "
                               "bytes (not read)")
                continue
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                reject(number, f"not UTF-8 (byte 0x{data[exc.start]:02x} at byte {exc.start + 1}); "
                               "save the file as UTF-8")
                continue
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                reject(number, f"invalid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(raw, dict):
                reject(number, f"expected a JSON object, got {type(raw).__name__}")
                continue
            try:
                item = parse(raw)
            except ValidationError as exc:
                reject(number, describe_validation_error(exc))
                continue
            except (ValueError, ConfigError) as exc:
                reject(number, str(exc))
                continue
            name = key(item)
            if name in first_seen:
                reject(number, f"duplicate id {name!r} (first on line {first_seen[name]})")
                continue
            first_seen[name] = number
            items.append((number, item))
            if len(items) > limits.max_tasks:
                raise ConfigError(
                    f"{what} file {file} has more than limits.max_tasks = {limits.max_tasks:,} "
                    f"{what}; split it, or raise [limits] max_tasks in selftaught.toml.")

    if bad_count:
        lines = "\n".join(bad)
        more = f"\n  ... and {bad_count - len(bad)} more" if bad_count > len(bad) else ""
        raise ConfigError(
            f"{what} file {file} has {bad_count} bad line(s); nothing was run:\n{lines}{more}\n"
            f"Fix every line listed. Each line must be {expected}."
        )
    if not items:
        raise ConfigError(f"{what} file {file} has no {what}; add one JSON object per line.")
    return items


def _lines(handle, limit: int):
    """The lines of a binary file without their line ending; None for a line longer than
    ``limit`` bytes, which is skipped without being held in memory."""
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = handle.readline(1 << 20)
            yield None
            continue
        yield line.rstrip(b"\r\n")


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


def load_jsonl_tasks(path: str | Path, limits: LimitsConfig | None = None) -> list[Task]:
    """Every task in the JSONL file at ``path``, in file order; ids are the ``id`` fields.

    Raises :class:`ConfigError` listing every bad line (invalid JSON, missing or unknown
    field, a verifier spec ``verify`` would refuse, a prompt over
    ``limits.max_prompt_chars``, duplicate id, ...) if there is any, or if the file is
    missing, empty, or over ``limits``.
    """
    limits = limits or LimitsConfig()
    from critics.registry import check_spec

    def parse(raw: dict[str, Any]) -> Task:
        task = _TaskLine.model_validate(raw).to_task()
        if len(task.prompt) > limits.max_prompt_chars:
            raise ValueError(f"prompt is {len(task.prompt):,} characters, more than "
                             f"limits.max_prompt_chars = {limits.max_prompt_chars:,}")
        check_spec(task.verifier)
        return task

    rows = read_jsonl(path, parse, what="tasks", key=lambda task: task.id, expected=_EXPECTED,
                      limits=limits)
    return [task for _, task in rows]
