"""Lessons from hints, as pure functions: which part of a hint is general advice, and the
check that refuses a lesson which gives a task's answer away.

A lesson is taken from the hint that turned a failed attempt into a verified one. The
embedded 135M hint-giver writes hints that a model-written rewrite would only make
worse, so extraction is deterministic: the hint's sentences, minus the reveal of a
reference answer ("The correct answer is ..."), minus verdicts on the attempt ("Your
answer is wrong", "Well done"), minus talk about the hint itself ("The hint is:"), minus any sentence
with a number in it (advice about *this* task's numbers is no use for the next one, and
the 135M hint-giver's numbers are mostly wrong). What is left, if anything, goes
through :func:`leak_reason` before it may be stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_CHARS = 240
"""A lesson longer than this is cut at a sentence end (or not kept)."""
MAX_SENTENCES = 2
MIN_WORDS = 4

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[A-Za-z][A-Za-z']+")
_REVEAL = re.compile(
    r"\b(?:correct|right|final|expected)\s+(?:answer|result)\b|\bthe\s+answer\s+(?:is|should\s+be|=)"
    r"|\banswer\s*:", re.IGNORECASE)
_VERDICT = re.compile(
    r"\b(?:(?:in)?correct(?:ly)?|wrong(?:ly)?|mistaken|not\s+right)\b|\bis\s+right\b"
    r"|\bstudent'?s?\b|\bhints?\b|:$|\b(?:well|nicely)\s+done\b|\b(?:good|great|nice)\s+(?:job|work)\b"
    r"|\bkeep\s+it\s+up\b", re.IGNORECASE)
_DIGIT = re.compile(r"\d")
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
}
_STOP = {
    "the", "and", "for", "are", "but", "not", "you", "all", "any", "can", "has", "its", "was",
    "one", "two", "out", "use", "each", "with", "that", "this", "from", "then", "than", "into",
}


def _numbers(text: str) -> set[str]:
    """Number tokens of ``text``, canonical (``1,234`` -> ``1234``, ``-0.50`` -> ``-0.5``),
    with and without a sign, plus numbers spelled out as words."""
    found: set[str] = set()
    for token in _NUMBER.findall(text):
        plain = token.replace(",", "")
        try:
            value = float(plain)
        except ValueError:
            continue
        canonical = f"{value:g}" if value != int(value) else str(int(value))
        found.update({canonical, canonical.lstrip("-")})
    for word in _WORD.findall(text.lower()):
        if word in _NUMBER_WORDS:
            found.add(str(_NUMBER_WORDS[word]))
    return found


def _answer_words(answer: str) -> set[str]:
    """Words of a short, non-numeric answer ("True", "cat, dog"): each is specific to it."""
    words = {w.lower() for w in _WORD.findall(answer)}
    if len(words) > 6:  # a long answer (prose, code): its common words are not specific
        return set()
    return {w for w in words if w not in _STOP}


def _normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w.-]+", " ", text.lower()).split())


def leak_reason(lesson: str, answers: Iterable[str]) -> str | None:
    """Why ``lesson`` gives away one of ``answers`` (the task's reference answer, the
    verified answer), or None when it does not.

    Refused: a lesson containing an answer (up to case, spacing and punctuation), any
    number of an answer (also spelled out: "twelve" for 12), or any word of a short
    non-numeric answer ("True", "cat, dog")."""
    text = _normalized(lesson)
    lesson_numbers = _numbers(lesson)
    lesson_words = {w.lower() for w in _WORD.findall(lesson)}
    for answer in answers:
        answer = (answer or "").strip()
        if not answer:
            continue
        plain = _normalized(answer)
        if plain and len(plain) >= 2 and plain in text:
            return f"it contains the answer {answer!r}"
        shared = sorted(_numbers(answer) & lesson_numbers)
        if shared:
            return f"it contains {shared[0]}, a number of the answer {answer!r}"
        if not _numbers(answer):
            words = sorted(_answer_words(answer) & lesson_words)
            if words:
                return f"it contains {words[0]!r}, a word of the answer {answer!r}"
    return None


def lesson_from_hint(hint: str, *, prompt: str, answers: Iterable[str]) -> str | None:
    """The general advice in ``hint`` as a lesson, or None when it holds none.

    Kept: up to :data:`MAX_SENTENCES` sentences (at most :data:`MAX_CHARS` characters, at
    least :data:`MIN_WORDS` words) that neither reveal an answer, nor judge the attempt,
    nor talk about the hint, nor hold a digit or a number of the task's ``prompt`` or
    ``answers`` (spelled out). The result passes :func:`leak_reason` (checked again here)."""
    answers = [a for a in answers if a]
    specific = _numbers(prompt)
    for answer in answers:
        specific |= _numbers(answer)
    kept: list[str] = []
    for sentence in _SENTENCE_SPLIT.split(hint or ""):
        sentence = sentence.strip(" -*\t")
        if len(_WORD.findall(sentence)) < MIN_WORDS:
            continue
        if _REVEAL.search(sentence) or _VERDICT.search(sentence) or _DIGIT.search(sentence):
            continue
        if _numbers(sentence) & specific or leak_reason(sentence, answers):
            continue
        if len(" ".join([*kept, sentence])) > MAX_CHARS:
            break
        kept.append(sentence if sentence.endswith((".", "!", "?")) else sentence + ".")
        if len(kept) == MAX_SENTENCES:
            break
    lesson = " ".join(kept)
    if not lesson or leak_reason(lesson, answers):
        return None
    return lesson[0].upper() + lesson[1:]
