"""The answer-format contract: how the generator is asked to answer, how answers are
read back out of replies, and how a verified reply becomes a training target.

Generation, verification and distillation all go through this module, so the three
agree by construction:

* **Asking** (:func:`evaluation_messages`): short answers end with an ``Answer: X``
  line, code comes as one fenced python block. The evaluation prompt is the system turn
  and the task with its format reminder, nothing else; distillation trains on exactly
  this prompt, and the generator's prompt is this one plus retrieved memory and earlier
  attempts.
* **Retrying** (:func:`retry_message`): the user turn after a failed attempt, and the
  phrases of it that a small model copies into its next reply (:func:`cut_retry_echo`).
* **Reading** (:func:`extract_answer`): small models rarely follow the format exactly
  (they write "The correct answer is 3.", box the result, or ramble until the budget
  ends), so extraction tries the most explicit signal first and degrades gracefully;
  verifiers that compare numbers add :func:`last_number` as one more fallback.
* **Training targets** (:func:`normalize_reply`): a verified reply rewritten so that
  :func:`extract_answer` reads the same answer back from it.

Pure functions; imports nothing else from selftaught but ``core.records``.
"""

from __future__ import annotations

import re

from core.records import Attempt, Message, Task

SYSTEM = {
    "short": (
        "You solve problems. Think in a few short steps, then write the final line "
        "exactly as:\nAnswer: <answer>"
    ),
    "code": (
        "You write Python. Reply with the complete function in one ```python code "
        "block, including the imports it needs."
    ),
}
REMINDER = {
    "short": "End with the line 'Answer: <answer>'.",
    "code": "Reply with the complete function in one ```python code block.",
}


def system_instruction(answer_format: str) -> str:
    """The generator's system turn for ``answer_format`` (``short`` for unknown ones)."""
    return SYSTEM.get(answer_format, SYSTEM["short"])


def format_reminder(answer_format: str) -> str:
    """The line that closes every user turn to the generator."""
    return REMINDER.get(answer_format, REMINDER["short"])


def task_turn(task: Task) -> str:
    """The user turn that states ``task``: its prompt, then the format reminder.

    The reminder closes the turn because a small model follows the last instruction it
    read far more often than the system prompt."""
    return f"{task.prompt}\n\n{format_reminder(task.answer_format)}"


def evaluation_messages(task: Task) -> list[Message]:
    """The evaluation prompt: the system turn and the task turn. What ``eval`` asks and
    what distillation trains on."""
    return [{"role": "system", "content": system_instruction(task.answer_format)},
            {"role": "user", "content": task_turn(task)}]


def retry_message(task: Task, attempt: Attempt) -> str:
    """The user turn after a failed attempt: the verdict, the hint if any, the format."""
    shown = attempt.answer.strip() or "(no answer found)"
    if task.answer_format == "code":
        lines = ["Your code failed the tests."]
    else:
        lines = [f"Your answer {clip(shown, 200)} is wrong."]
    if attempt.hint is not None and attempt.hint.text.strip():
        lines.append(f"Hint: {attempt.hint.text.strip()}")
    lines.append("Try again. " + format_reminder(task.answer_format))
    return "\n".join(lines)


# The phrases of ``retry_message`` that a small model copies into its next reply
# ("7 - 8 = 1 is wrong.\nHint: ...\nTry again. End with the line ..."). The evaluation
# prompt never contains them, so they are never part of a useful answer.
_RETRY_ECHO = re.compile(r"\bis wrong\b|^\s*hint\s*:|\btry again\b|\bend with the line\b",
                         re.IGNORECASE | re.MULTILINE)


def cut_retry_echo(reply: str) -> str:
    """``reply`` up to the first phrase it copied from a retry turn; all of it when it
    copied none."""
    match = _RETRY_ECHO.search(reply)
    return reply if match is None else reply[: match.start()].rstrip()


MAX_FEEDBACK_CHARS = 1200
"""Verifier output (e.g. failing tests) shown in a critic's or hint-giver's prompt is cut
to this many characters."""


def clip(text: str, limit: int) -> str:
    """``text`` stripped and cut to ``limit`` characters (with ``...``)."""
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- reading answers ----------------------------------------------------------------------

ANSWER_LINE = re.compile(
    # The one answer-line grammar: extraction reads it, normalize_reply writes it.
    # "Answer: 42", "**Final answer:** 42", "Final Answer - 42", "#### 42" (GSM8K).
    r"^[ \t>*_#-]*(?:(?:the\s+)?(?:final|correct)\s+)?answer\s*(?:\*\*|__)?\s*[:：=-]"
    r"\s*(?:\*\*|__)?[ \t]*(?P<a>[^\n]*)"
    r"|^[ \t]*####[ \t]*(?P<b>[^\n]+)",
    re.IGNORECASE | re.MULTILINE,
)
_ANSWER_SENTENCE = re.compile(
    # "The correct answer is 3.", "so the final answer is: 12", "my answer would be 7",
    # "... and my final answer: 5" (mid-line).
    # "The answer to the problem is -3" (a short "to/for/of ..." phrase may intervene).
    r"\b(?:answer(?:\s+(?:to|for|of)\s+[^\n.:;]{1,40}?)?\s+(?:is|would\s+be|will\s+be|=)\s*:?"
    r"|final\s+answer\s*:)"
    # A lookahead, so a second "answer is" on the same line is still found.
    r"\s*(?=(?P<a>[^\n]*))",
    re.IGNORECASE,
)
_NOT_AN_ANSWER = {
    # "This answer is correct." judges an answer; it is not one.
    "correct", "incorrect", "right", "wrong", "not correct", "not right", "not wrong",
    "as follows", "below", "above", "simple", "easy", "clear", "obvious", "yes", "no",
}
_SENTENCE_END = re.compile(r"\.(?:\s|$)|[;!?](?:\s|$)")
_TRAILING_REASON = re.compile(r"[,;]?\s+(?:because|since|as|which|so|but)\b.*$", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = ("", "python", "python3", "py", "py3")
_CODE_START = re.compile(r"(?:def |async def |class |import |from \S+ import |@)")
_NUMBER = re.compile(
    r"(?<![\w.])[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?"
    r"(?:[eE][-+]?\d+)?(?![\w/])"
    r"|(?<![\w.])[-−]?\.\d+(?![\w/])"
)


def extract_answer(reply: str, answer_format: str = "short") -> str:
    """Return the answer inside ``reply``; ``""`` when there is none.

    ``short``: the last explicit final-answer line or "answer is X" sentence (case-
    insensitive; the last one in the reply wins), else the last ``\\boxed{X}``, else the
    last non-empty line; then markdown bold, backticks, ``$..$`` and a trailing period
    are stripped.

    ``code``: the last fenced block (an unclosed final fence counts, since replies get
    cut off), preferring the last one that defines a function; else the whole reply
    when it looks like code (has ``def `` or ``return``); else ``""``.
    """
    if answer_format == "code":
        return extract_code(reply)
    return _extract_short(reply or "")


def _extract_short(reply: str) -> str:
    candidates: list[tuple[int, str]] = []
    for match in ANSWER_LINE.finditer(reply):
        text = match.group("a") if match.group("a") is not None else match.group("b")
        if not text.strip():
            text = _next_nonempty_line(reply, match.end())
        candidates.append((match.start(), _first_sentence(text, drop_reason=False)))
    for match in _ANSWER_SENTENCE.finditer(reply):
        text = match.group("a").strip()
        if not text or text.endswith(":"):  # "The answer is as follows:\n42"
            text = _next_nonempty_line(reply, match.end("a"))
        text = _first_sentence(text, drop_reason=True)
        if _clean(text).lower() not in _NOT_AN_ANSWER:
            candidates.append((match.start(), text))
    candidates = [(pos, text) for pos, text in candidates if _clean(text)]
    if candidates:
        return _clean(max(candidates, key=lambda c: c[0])[1])
    boxed = last_boxed(reply)
    if boxed is not None:
        return _clean(boxed)
    lines = [line for line in reply.splitlines() if line.strip()]
    return _clean(lines[-1]) if lines else ""


def _next_nonempty_line(text: str, start: int) -> str:
    for line in text[start:].splitlines():
        if line.strip():
            return line
    return ""


def _first_sentence(text: str, *, drop_reason: bool) -> str:
    # "3. It is the gcd." -> "3"; "3.5." -> "3.5" (a decimal point is not an end).
    end = _SENTENCE_END.search(text)
    if end:
        text = text[: end.start()]
    # Only in free prose: an explicit "Answer: as soon as possible" keeps its words.
    return _TRAILING_REASON.sub("", text) if drop_reason else text


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (braces balanced), or None."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i]
    return None


def _clean(text: str) -> str:
    text = text.strip()
    for _ in range(3):  # wrappers nest: **`$\boxed{3}$`**
        before = text
        boxed = last_boxed(text)
        if boxed is not None and text.startswith(("\\boxed", "\\fbox")):
            text = boxed
        for left, right in (("**", "**"), ("__", "__"), ("`", "`"), ("$", "$"),
                            ("\\(", "\\)"), ("\\[", "\\]"), ("\\text{", "}")):
            if text.startswith(left) and text.endswith(right) and len(text) > len(left + right) - 1:
                text = text[len(left): len(text) - len(right)]
        text = text.strip().strip("*").strip()
        if text.endswith(".") and not text.endswith(".."):
            text = text[:-1].rstrip()
        if text == before:
            break
    return text


def last_number(text: str) -> str | None:
    """The last number written in ``text`` (``-12``, ``3.5``, ``1,234``, ``3/4``,
    ``1e-3``), with thousands separators removed and a unicode minus made ASCII;
    None when there is no number."""
    matches = _NUMBER.findall(text or "")
    if not matches:
        return None
    return matches[-1].replace(",", "").replace("−", "-")


def extract_code(reply: str) -> str:
    """The code in ``reply`` (see :func:`extract_answer` with ``code``)."""
    reply = reply or ""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(reply)]
    python_blocks = [body for lang, body in blocks if lang in _PYTHON_TAGS]
    candidates = python_blocks or [body for _, body in blocks]
    if candidates:
        with_def = [body for body in candidates if "def " in body]
        return (with_def or candidates)[-1].strip("\n")
    if "def " not in reply and "return" not in reply:
        return ""
    lines = reply.strip("\n").splitlines()
    # Unfenced code often follows a line of prose ("Here is the function:").
    for i, line in enumerate(lines):
        if _CODE_START.match(line):
            return "\n".join(lines[i:])
    return "\n".join(lines)


# -- training targets ---------------------------------------------------------------------

_BLANK_RUN = re.compile(r"\n{3,}")
_WORKED_NUMBER = re.compile(r"[^=\n]*\S\s*=\s*(-?\d+(?:\.\d+)?)")


def normalize_reply(
    reply: str, answer_format: str, answer: str | None = None, *, reasoning: bool = True
) -> str | None:
    """``reply`` rewritten into the evaluation answer format, or None when it holds no answer.

    ``short``: the reasoning before the last answer line (other answer lines and any text
    after the last one dropped; all of it when ``reasoning`` is False), then exactly one
    ``Answer: X`` line, X being ``answer`` (the verified answer) or else what
    ``extract_answer`` finds; an answer that is an equation ending in a number
    (``6 + 3 = 9``) stays as working and X is the number. ``code``: one fenced
    python block around ``answer`` or the extracted code. ``extract_answer`` on the
    result gives the answer back (up to its own cleaning, e.g. of ``**bold**``).
    """
    if answer_format == "code":
        code = (answer if answer and answer.strip() else extract_code(reply)).strip("\n")
        return f"```python\n{code}\n```" if code.strip() else None
    final = (answer if answer is not None else extract_answer(reply, "short")).strip()
    if not final or "\n" in final:
        return None
    worked = _WORKED_NUMBER.fullmatch(final)
    if worked:
        # "6 + 3 = 9" as the reply's last line is graded by its number (the numeric
        # verifiers read the last number): the equation is working, 9 the answer.
        final = worked.group(1)
    if not reasoning:
        return f"Answer: {final}"
    lines = (reply or "").strip().splitlines()
    answer_rows = [i for i, line in enumerate(lines) if ANSWER_LINE.match(line)]
    if answer_rows:
        # Text after the final answer is chatter; training on it teaches rambling.
        lines = [line for line in lines[: answer_rows[-1]] if not ANSWER_LINE.match(line)]
    kept = _BLANK_RUN.sub("\n\n", "\n".join(lines).strip())
    if kept.strip(" .*`$") == final:  # the reply was the bare answer
        kept = ""
    text = f"{kept}\nAnswer: {final}" if kept else f"Answer: {final}"
    if extract_answer(text, "short") != final:
        # The reasoning confuses extraction (e.g. an "answer is" sentence the extractor
        # prefers): the bare line is the only completion guaranteed to grade the same.
        text = f"Answer: {final}"
    return text
