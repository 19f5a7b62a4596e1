"""Answer extraction, table-driven, on replies the way small models really write them."""

from __future__ import annotations

import pytest

from core.answer_format import extract_answer, extract_code, last_boxed, last_number

SHORT_CASES = [
    # (reply, expected answer)
    ("Answer: 42", "42"),
    ("answer: 42", "42"),
    ("ANSWER:42", "42"),
    ("Final answer: 7", "7"),
    ("**Final Answer:** 12", "12"),
    ("**Answer:** `blue`", "blue"),
    ("The correct answer is 3.", "3"),
    ("The correct answer is 3. It is the largest number dividing both.", "3"),
    ("So the final answer is 12", "12"),
    # Real replies of the embedded model to reasoning-gym tasks.
    ("The answer to the problem is -3.", "-3"),
    ("The answer for this sum is 15.", "15"),
    ("Therefore the answer is: 3.5.", "3.5"),
    ("The answer is 6 because 6 divides 12 and 18.", "6"),
    ("The answer is 4, because 1 + 3 = 4.", "4"),
    ("I think the answer would be 19.", "19"),
    # Last explicit answer wins.
    ("Answer: 4\nWait, let me recheck.\nAnswer: 5", "5"),
    ("The answer is 8. Hmm, no. The answer is 9.", "9"),
    # An explicit answer beats a later box and a later last line.
    ("Answer: 10\nSo we have \\boxed{11}", "10"),
    # Minerva style.
    ("Final Answer: The final answer is $5$. I hope it is correct.", "5"),
    # Boxed, with nested braces.
    ("We compute the sum. Thus $\\boxed{\\frac{3}{4}}$", "\\frac{3}{4}"),
    ("x = 2 so \\boxed{2} and then \\boxed{17}", "17"),
    ("Therefore the answer is $\\boxed{5}$.", "5"),
    # Answer on the line after the marker.
    ("Answer:\n\n  31\n", "31"),
    ("The answer is as follows:\n**27**", "27"),
    # GSM8K style.
    ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),
    # Mid-line "final answer:".
    ("After adding everything my final answer: 15", "15"),
    # Judgements of an answer are not answers.
    ("Answer: 6\nThis answer is correct.", "6"),
    # Falls back to the last non-empty line.
    ("Let me think.\nThe GCD of 12 and 18 is 6.\n\n", "The GCD of 12 and 18 is 6"),
    ("blue", "blue"),
    ("  **cat**.  ", "cat"),
    ("`print`", "print"),
    # Lists and multi-word answers survive.
    ("Answer: apple, banana, cherry", "apple, banana, cherry"),
    ("Answer: as soon as possible", "as soon as possible"),
    ("Answer: -3/4", "-3/4"),
    ("", ""),
    ("   \n  ", ""),
]


@pytest.mark.parametrize(("reply", "expected"), SHORT_CASES)
def test_extract_short(reply: str, expected: str) -> None:
    assert extract_answer(reply) == expected
    assert extract_answer(reply, "short") == expected


RAMBLE = (
    "To find the greatest common divisor of 48 and 180 we list the factors.\n"
    "Factors of 48: 1, 2, 3, 4, 6, 8, 12, 16, 24, 48.\n"
    "Factors of 180: 1, 2, 3, 4, 5, 6, 9, 10, 12, 15, 18, 20, 30, 36, 45, 60, 90, 180.\n"
    "The common factors are 1, 2, 3, 4, 6 and 12. So the greatest is 12"
)


def test_ramble_cut_off_keeps_last_line_for_the_numeric_fallback() -> None:
    answer = extract_answer(RAMBLE)
    assert answer.startswith("The common factors")
    assert last_number(answer) == "12"


NUMBER_CASES = [
    ("The answer is 42", "42"),
    ("-7 apples", "-7"),
    ("it costs 1,234,567 dollars", "1234567"),
    ("pi is about 3.14159.", "3.14159"),
    ("three quarters: 3/4", "3/4"),
    ("tiny: 1e-3", "1e-3"),
    ("minus −5", "-5"),
    ("from 2 to 10, then 11", "11"),
    ("value .5", ".5"),
    ("x2 and y3", None),
    ("no numbers here", None),
    ("", None),
    ("first 12, last 13.", "13"),
]


@pytest.mark.parametrize(("text", "expected"), NUMBER_CASES)
def test_last_number(text: str, expected: str | None) -> None:
    assert last_number(text) == expected


def test_last_boxed_balanced() -> None:
    assert last_boxed("\\boxed{a{b}c}") == "a{b}c"
    assert last_boxed("\\boxed{unclosed") is None
    assert last_boxed("nothing") is None


DEF_F = "def f(x):\n    return x + 1"

CODE_CASES = [
    (f"Here you go:\n```python\n{DEF_F}\n```\nHope this helps!", DEF_F),
    (f"```\n{DEF_F}\n```", DEF_F),
    (f"```py\n{DEF_F}\n```", DEF_F),
    # The last fenced block wins ...
    (f"```python\ndef f(x):\n    return x\n```\nFixed:\n```python\n{DEF_F}\n```", DEF_F),
    # ... but a trailing usage example does not replace the definition.
    (f"```python\n{DEF_F}\n```\nExample:\n```python\nprint(f(1))\n```", DEF_F),
    # A reply cut off inside its fence still yields the code written so far.
    (f"Sure!\n```python\n{DEF_F}\n", DEF_F),
    # No fence: the whole reply when it looks like code, minus leading prose.
    (DEF_F, DEF_F),
    (f"Here is the function:\n{DEF_F}", DEF_F),
    ("    return sorted(xs)", "    return sorted(xs)"),
    ("I am not sure how to solve this.", ""),
    ("", ""),
]


@pytest.mark.parametrize(("reply", "expected"), CODE_CASES)
def test_extract_code(reply: str, expected: str) -> None:
    assert extract_answer(reply, "code") == expected
    assert extract_code(reply) == expected
