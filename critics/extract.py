"""Pull the answer out of a model's reply. Pure functions, no I/O.

Small models rarely follow the requested format: they write "The correct answer is 3.",
box the result, or ramble until the token budget ends. Extraction therefore tries the
most explicit signal first and degrades gracefully; verifiers that compare numbers add
one more fallback (:func:`last_number`) of their own.
"""

from __future__ import annotations

import re

_ANSWER_LINE = re.compile(
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
    for match in _ANSWER_LINE.finditer(reply):
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
