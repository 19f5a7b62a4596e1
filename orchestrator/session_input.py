"""Where a session's decisions come from: the keyboard, or a script file.

Both turn what they read into :class:`~orchestrator.session_flow.Decision` values with
the same parser, and the session treats them alike (``orchestrator.session``), so a
script replays exactly what a person typing the same commands would do.

Script lines (JSONL, one object a line; ``task`` says which task the line is for)::

    {"task": "rg/chain_sum/0/3", "hint": "Add the negative numbers last."}
    {"task": "rg/chain_sum/0/3", "verdict": "wrong", "reason": "the sign is lost"}
    {"task": "rg/chain_sum/0/3", "command": "accept"}      # accept|retry|skip|quit
    {"task": "rg/chain_sum/0/3", "edit": "Watch the minus signs."}
    {"new": {"prompt": "What is 17 * 3?", "verifier": "numeric", "expected": "51"}}

When the session asks which task is next, the next line's ``task`` (or ``new``) answers.
When it asks about a task and the next line is for another task or a new one, or the
script has ended, the script has nothing more to say about it: the task is recorded as it stands
(``skip``). At the end of the script the session ends. A line that does not fit the
question gets the same one-line help as a typed one, and is passed over.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from core.errors import ConfigError
from orchestrator.jsonl_tasks import describe_validation_error
from orchestrator.session_flow import (
    EOF_HELP, Decision, Question, help_line, parse_command, typed_task,
)

ReadLine = Callable[[str, str], str]
"""``read_line(prompt, prefill)``: one line typed by the person (``prefill`` is put on
the line for editing first). Raises ``EOFError`` at end of input."""


class InputSource(Protocol):
    def next(self, question: Question) -> Decision:
        """The next decision for ``question`` (``help`` and ``eof`` included)."""
        ...


class KeyboardInput:
    """Decisions typed by a person, one command a line. ``hint`` or ``edit`` alone opens
    a multi-line text that an empty line ends; ``correct``/``wrong`` alone ask for the
    reason; ``new`` asks for the prompt, the verifier and the expected answer. The first
    end-of-file gives a line of help, a second one in a row gives ``eof``."""

    def __init__(self, read_line: ReadLine) -> None:
        self._read = read_line
        self._eofs = 0

    def next(self, question: Question) -> Decision:
        try:
            line = self._read(f"{question.kind}> ", "")
        except EOFError:
            self._eofs += 1
            return Decision(kind="eof") if self._eofs > 1 else Decision(kind="help", text=EOF_HELP)
        self._eofs = 0
        decision = parse_command(line, question)
        try:
            return self._complete(decision, question)
        except EOFError:
            return Decision(kind="help", text=f"input ended mid-command; {help_line(question)}")

    def _complete(self, decision: Decision, question: Question) -> Decision:
        kind, text = decision.kind, decision.text
        if kind == "hint" and not text:
            text = self._lines("hint (an empty line ends it)> ")
        elif kind == "edit" and question.proposed_hint and not text:
            first = " ".join(question.proposed_hint.split())
            text = self._lines("edit (an empty line ends it)> ", prefill=first)
        elif kind in ("correct", "wrong") and not text:
            text = self._read("reason> ", "").strip()
        elif kind == "new":
            return self._new_task()
        return decision.model_copy(update={"text": text})

    def _lines(self, prompt: str, prefill: str = "") -> str:
        lines: list[str] = []
        while True:
            try:
                line = self._read(prompt if not lines else "... ", prefill if not lines else "")
            except EOFError:
                break
            if not line.strip():
                break
            lines.append(line.rstrip())
        return "\n".join(lines)

    def _new_task(self) -> Decision:
        prompt = self._lines("task prompt (an empty line ends it)> ")
        verifier = self._read("verifier (exact, numeric, regex, contains, none)> ", "").strip()
        expected = ""
        if verifier.lower() not in ("none", ""):
            expected = self._read("expected answer, pattern or phrase> ", "")
        try:
            return Decision(kind="new", task=typed_task(prompt, verifier, expected))
        except ValueError as exc:
            return Decision(kind="help", text=f"{exc}; `new` starts again")


class _NewTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str
    verifier: str = "none"
    expected: str = ""


class ScriptLine(BaseModel):
    """One line of a session script: which task, and exactly one thing to do."""

    model_config = ConfigDict(extra="forbid")

    task: str | None = None
    hint: str | None = None
    edit: str | None = None
    verdict: Literal["correct", "wrong"] | None = None
    reason: str = ""
    command: Literal["accept", "retry", "skip", "quit"] | None = None
    new: _NewTask | None = None

    @model_validator(mode="after")
    def _one_action(self) -> ScriptLine:
        given = [k for k in ("hint", "edit", "verdict", "command", "new") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of hint, edit, verdict, command, new "
                             f"(this line has {', '.join(given) or 'none'})")
        return self

    def decision(self) -> Decision:
        if self.hint is not None:
            return Decision(kind="hint", text=self.hint)
        if self.edit is not None:
            return Decision(kind="edit", text=self.edit)
        if self.verdict is not None:
            return Decision(kind=self.verdict, text=self.reason)
        if self.new is not None:
            return Decision(kind="new", task=typed_task(self.new.prompt, self.new.verifier,
                                                        self.new.expected))
        assert self.command is not None
        return Decision(kind=self.command)


def read_script(path: Path) -> list[tuple[int, ScriptLine]]:
    """Every non-blank line of a session script with its line number; one ConfigError
    lists every bad line (nothing runs on a half-read script)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the session script {path}: {exc}") from None
    lines, bad = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = ScriptLine.model_validate(json.loads(raw))
            line.decision()  # a bad `new` task fails here, with its line number
            lines.append((number, line))
        except json.JSONDecodeError as exc:
            bad.append(f"line {number}: not JSON ({exc.msg})")
        except ValidationError as exc:
            bad.append(f"line {number}: {describe_validation_error(exc)}")
        except ValueError as exc:
            bad.append(f"line {number}: {exc}")
    if bad:
        raise ConfigError(f"bad session script {path}:\n" + "\n".join(bad)
                          + '\nEach line: {"task": ID, "hint": TEXT} or "verdict": "correct"|"wrong" '
                            'with "reason", or "command": accept|retry|skip|quit, or "edit", or "new".')
    return lines


class ScriptInput:
    """Decisions read from a script (see the module docstring). ``echo`` is told what
    each line said, so the terminal shows a script's session as it would a typed one."""

    def __init__(self, path: Path, echo: Callable[[str], None] = lambda _: None) -> None:
        self._lines = read_script(path)
        self._at = 0
        self._echo = echo

    def next(self, question: Question) -> Decision:
        line = self._lines[self._at][1] if self._at < len(self._lines) else None
        number = self._lines[self._at][0] if line is not None else None
        if question.kind == "choose":
            if line is None:
                return Decision(kind="quit")
            if line.new is not None or line.command == "quit":
                return self._take(number, line.decision())
            if line.task is None:
                return self._take(number, Decision(kind="help", text=(
                    "a line must name its task (or be new or quit) when the next task is chosen")))
            if line.task not in question.remaining:
                return self._take(number, Decision(kind="help", text=(
                    f"task {line.task!r} is not among the tasks left to do")))
            return Decision(kind="task", task_id=line.task)  # the line itself is for its first question
        if line is None or line.new is not None or (line.task is not None and line.task != question.task_id):
            self._echo(f"script: nothing more for {question.task_id}: skip")
            return Decision(kind="skip")
        return self._take(number, line.decision())

    def _take(self, number: int | None, decision: Decision) -> Decision:
        self._at += 1
        shown = decision.text if decision.kind != "new" else decision.task.prompt  # type: ignore[union-attr]
        self._echo(f"script line {number}: {decision.kind} {shown}".rstrip())
        return decision
