"""Answers files (all bad lines at once) and grading through the verifier registry."""

from __future__ import annotations

import asyncio
import json

import pytest

from core.errors import ConfigError, SandboxError
from core.records import Task, Verdict, VerifierSpec
from orchestrator.answers import GradeResult, grade, load_answers, unknown_answer_ids


def write_lines(tmp_path, lines):
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def make_task(task_id: str, expected: str) -> Task:
    return Task(id=task_id, prompt="?", verifier=VerifierSpec(type="exact", params={"expected": expected}))


@pytest.fixture
def fake_verify():
    """Stands in for ``critics.registry.verify``: exact match, recording concurrency."""
    state = {"calls": [], "in_flight": 0, "max_in_flight": 0}

    async def verify(answer, spec, *, judge_model=None):
        state["calls"].append((answer, spec))
        state["in_flight"] += 1
        state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        await asyncio.sleep(0.01)
        state["in_flight"] -= 1
        if answer == "boom":
            raise SandboxError("sandbox broke")
        ok = answer == spec.params["expected"]
        return Verdict(passed=ok, score=1.0 if ok else 0.0, feedback="" if ok else f"expected {spec.params['expected']}")

    state["verify"] = verify
    return state


def test_load_answers_happy_path(tmp_path):
    path = write_lines(tmp_path, [{"id": "a", "answer": "x"}, "", {"id": "b", "answer": 4}, {"id": "c", "answer": 1.5}])
    assert load_answers(path) == {"a": "x", "b": "4", "c": "1.5"}
    assert load_answers(str(path)) == load_answers(path)


def test_load_answers_lists_every_bad_line(tmp_path):
    path = write_lines(
        tmp_path,
        [
            {"id": "a", "answer": "x"},  # 1
            "not json",  # 2
            {"id": "b"},  # 3
            {"answer": "y"},  # 4
            {"id": "a", "answer": "z"},  # 5
            {"id": "c", "answer": "y", "model": "m"},  # 6
            {"id": "d", "answer": None},  # 7
            {"id": "e", "answer": ["x"]},  # 8
        ],
    )
    with pytest.raises(ConfigError) as caught:
        load_answers(path)
    message = str(caught.value)
    assert "7 bad line(s)" in message and "line 1:" not in message
    assert "line 2: invalid JSON" in message
    assert "line 3: missing field 'answer'" in message
    assert "line 4: missing field 'id'" in message
    assert "line 5: duplicate id 'a' (first on line 1)" in message
    assert "line 6: unknown field 'model'" in message
    assert "line 7: field 'answer': must be a string or a number" in message
    assert "line 8: field 'answer': must be a string or a number" in message


def test_load_answers_missing_or_empty(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_answers(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ConfigError, match="no answers"):
        load_answers(tmp_path / "empty.jsonl")


async def test_grade_in_task_order_with_missing_answers(fake_verify):
    tasks = [make_task(f"t{i}", str(i)) for i in range(6)]
    answers = {"t0": "0", "t1": "wrong", "t3": "3", "t4": "4", "t5": "5"}
    results = await grade(tasks, answers, concurrency=2, verify=fake_verify["verify"])
    assert [r.id for r in results] == [t.id for t in tasks]
    assert [r.passed for r in results] == [True, False, False, True, True, True]
    assert results[1] == GradeResult(id="t1", passed=False, score=0.0, feedback="expected 1")
    assert results[2] == GradeResult(id="t2", passed=False, score=0.0, feedback="no answer given")
    assert len(fake_verify["calls"]) == 5  # no verifier call for the missing answer
    assert fake_verify["calls"][0] == ("0", tasks[0].verifier)
    assert fake_verify["max_in_flight"] <= 2


async def test_grade_rejects_answers_for_unknown_tasks(fake_verify):
    tasks = [make_task("t0", "0")]
    answers = {"t0": "0", "ghost": "1", "rg/x/0/0": "2"}
    assert unknown_answer_ids(tasks, answers) == ["ghost", "rg/x/0/0"]
    with pytest.raises(ConfigError) as caught:
        await grade(tasks, answers, verify=fake_verify["verify"])
    assert "ghost" in str(caught.value) and "rg/x/0/0" in str(caught.value)
    assert fake_verify["calls"] == []


async def test_grade_propagates_verifier_errors_unwrapped(fake_verify):
    tasks = [make_task("t0", "0"), make_task("t1", "1")]
    with pytest.raises(SandboxError):
        await grade(tasks, {"t0": "boom", "t1": "1"}, verify=fake_verify["verify"])


async def test_grade_rejects_bad_concurrency(fake_verify):
    with pytest.raises(ConfigError, match="concurrency"):
        await grade([make_task("t0", "0")], {"t0": "0"}, concurrency=0, verify=fake_verify["verify"])
