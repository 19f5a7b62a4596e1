"""Datasets from trajectories: verified-only, evaluation format, dedup, caps, leakage."""

from __future__ import annotations

import json

import pytest

from core.answer_format import evaluation_messages
from core.answer_format import extract_answer, normalize_reply
from core.errors import ConfigError
from core.leakage import prompt_hash, prompt_hashes
from finetune.dataset import (
    DatasetManifest,
    build_rows,
    dpo_rows,
    gold_rows,
    read_dataset,
    sft_rows,
    write_dataset,
)
from core.records import Attempt, Hint, Privileged, Task, Trajectory, Verdict, VerifierSpec

PASS = Verdict(passed=True, score=1.0)
FAIL = Verdict(passed=False, score=0.0, feedback="wrong")


def task(i: int, family: str = "add", prompt: str | None = None, fmt: str = "short") -> Task:
    return Task(
        id=f"t{i}", prompt=prompt or f"What is {i} + 3?", family=family, answer_format=fmt,
        verifier=VerifierSpec(type="exact", params={"expected": str(i + 3)}),
    )


def attempt(index: int, reply: str, answer: str, verdict: Verdict, **extra) -> Attempt:
    return Attempt(index=index, messages=[{"role": "user", "content": "x"}], reply=reply,
                   answer=answer, verdict=verdict, model="local/smollm2", **extra)


def trajectory(t: Task, attempts: list[Attempt], outcome: str = "solved", tid: str | None = None):
    extra = {"id": tid} if tid else {}
    return Trajectory(run_id="r1", task=t, attempts=attempts, outcome=outcome,
                      hint_policy="critique", generator_model="local/smollm2",
                      critic_model="local/smollm2", hint_model="local/smollm2",
                      stop_reason="verified" if outcome == "solved" else "max_attempts", **extra)


def hinted(i: int, family: str = "add", tid: str | None = None) -> Trajectory:
    """Wrong first, then right after a hint: the case distillation exists for."""
    t = task(i, family)
    hint = Hint(text="Add the ones digits first.", source="model", author="m", policy="critique")
    return trajectory(t, [
        attempt(1, f"It is {i + 4}.\nAnswer: {i + 4}", str(i + 4), FAIL, hint=hint),
        attempt(2, f"{i} + 3 = {i + 3}\nAnswer: {i + 3}\nHope that helps!", str(i + 3), PASS),
    ], tid=tid)


def test_sft_rows_use_the_evaluation_prompt_and_the_verified_reply():
    rows = sft_rows([hinted(1, tid="traj-1")])
    assert len(rows) == 1
    row = rows[0]
    # Exactly what the generator sees at evaluation: no lessons, no history, no hint.
    assert row["prompt"] == evaluation_messages(task(1))
    assert "hint" not in json.dumps(row["prompt"]).lower()
    assert row["completion"] == [{"role": "assistant", "content": "1 + 3 = 4\nAnswer: 4"}]
    assert (row["trajectory_id"], row["task_id"], row["family"]) == ("traj-1", "t1", "add")


def test_answer_only_completions_drop_the_reasoning():
    [row] = sft_rows([hinted(1)], completion="answer")
    assert row["completion"] == [{"role": "assistant", "content": "Answer: 4"}]
    [pair] = dpo_rows([hinted(1)], completion="answer")
    assert [pair["chosen"][0]["content"], pair["rejected"][0]["content"]] == ["Answer: 4", "Answer: 5"]
    code = task(2, fmt="code")
    reply = "Here:\n```python\ndef f():\n    return 1\n```"
    [row] = sft_rows([trajectory(code, [attempt(1, reply, extract_answer(reply, "code"), PASS)])],
                     completion="answer")
    assert row["completion"][0]["content"] == "```python\ndef f():\n    return 1\n```"


def test_worked_completions_teach_the_tasks_worked_solution():
    worked = task(1).model_copy(update={"privileged": Privileged(reference_answer="4",
                                                                 worked_solution="1 + 3 = 4")})
    solved = trajectory(worked, [attempt(1, "Answer: 5", "5", FAIL),
                                 attempt(2, "The answer is 4.", "4", PASS)])
    [row] = sft_rows([solved], completion="worked")
    assert row["completion"][0]["content"] == "1 + 3 = 4\nAnswer: 4"
    # Tasks without one keep the verified reply; unverified tasks still give nothing.
    unsolved = trajectory(worked.model_copy(update={"id": "t9"}),
                          [attempt(1, "Answer: 5", "5", FAIL)], outcome="unsolved")
    rows = sft_rows([hinted(2), unsolved], completion="worked")
    assert [r["completion"][0]["content"] for r in rows] == ["2 + 3 = 5\nAnswer: 5"]


def test_replies_that_copy_the_retry_turn_lose_the_copy_or_are_dropped():
    def solved_after(reply: str, i: int) -> Trajectory:
        return trajectory(task(i), [attempt(1, "Answer: 0", "0", FAIL),
                                    attempt(2, reply, extract_answer(reply), PASS)])

    # Real replies of the embedded model after a reference hint.
    kept = solved_after("The answer is 4, because 1 + 3 = 4.\nTry again. End with the line "
                        "'Answer: <answer>'.", 1)
    parroted = solved_after("5 + 3 = 9 is wrong.\nHint: The correct answer is 8.\n"
                            "End with the line 'Answer: <answer>'.", 5)
    clean = solved_after("6 + 3 = 9", 6)
    rows = sft_rows([kept, parroted, clean])
    assert [r["task_id"] for r in rows] == ["t1", "t6"]
    assert rows[0]["completion"][0]["content"] == "The answer is 4, because 1 + 3 = 4.\nAnswer: 4"
    assert rows[1]["completion"][0]["content"] == "6 + 3 = 9\nAnswer: 9"


def test_only_verified_trajectories_become_examples():
    unsolved = trajectory(task(2), [attempt(1, "Answer: 9", "9", FAIL)], outcome="unsolved")
    errored = trajectory(task(3), [attempt(1, "", "", PASS, error="provider down")])
    lying = trajectory(task(4), [attempt(1, "Answer: 9", "9", FAIL)])  # "solved", no pass
    rows = sft_rows([unsolved, errored, lying, hinted(5)])
    assert [r["task_id"] for r in rows] == ["t5"]


@pytest.mark.parametrize(
    ("reply", "answer", "expected"),
    [
        ("3 + 4 = 7\nAnswer: 7", "7", "3 + 4 = 7\nAnswer: 7"),
        # An earlier answer line goes, and so does the chatter after the last one.
        ("Answer: 6\nWait, 3 + 4 = 7.\n**Final answer:** 7\nmore chatter", "7",
         "Wait, 3 + 4 = 7.\nAnswer: 7"),
        ("The correct answer is 7.", "7", "The correct answer is 7.\nAnswer: 7"),
        ("7", "7", "Answer: 7"),
        ("#### 7", "7", "Answer: 7"),
    ],
)
def test_short_replies_end_with_exactly_one_answer_line(reply, answer, expected):
    text = normalize_reply(reply, "short", answer)
    assert text == expected
    assert sum(line.lower().startswith("answer") for line in text.splitlines()) == 1
    assert text.splitlines()[-1] == f"Answer: {answer}"
    assert extract_answer(text, "short") == answer


def test_code_replies_become_one_python_block():
    reply = "Here you go:\n```python\ndef f(x):\n    return x + 1\n```\nThis adds one."
    text = normalize_reply(reply, "code", extract_answer(reply, "code"))
    assert text == "```python\ndef f(x):\n    return x + 1\n```"
    assert extract_answer(text, "code") == "def f(x):\n    return x + 1"
    t = task(7, fmt="code", prompt="Write f(x) returning x + 1.")
    rows = sft_rows([trajectory(t, [attempt(1, reply, "def f(x):\n    return x + 1", PASS)])])
    assert rows[0]["completion"][0]["content"] == text
    assert rows[0]["prompt"][0]["content"].startswith("You write Python")


def test_replies_without_an_answer_are_skipped():
    assert normalize_reply("", "short", "") is None
    assert normalize_reply("no code here", "code", "") is None


def test_dedup_by_task_id_and_by_prompt_and_completion():
    first, again = hinted(1, tid="first"), hinted(1, tid="again")
    # A different id with the same prompt and the same verified reply: one example.
    twin = trajectory(task(99, prompt="What is 1 + 3?"),
                      [attempt(1, "1 + 3 = 4\nAnswer: 4", "4", PASS)], tid="twin")
    rows = sft_rows([first, again, twin, hinted(2)])
    assert [r["task_id"] for r in rows] == ["t1", "t2"]
    assert rows[0]["trajectory_id"] == "first"  # the first in input order is kept


def test_family_cap_is_deterministic_and_independent_of_order():
    trajectories = [hinted(i, "big") for i in range(20)]
    trajectories += [hinted(100 + i, "small") for i in range(3)]
    rows = sft_rows(trajectories, max_per_family=5)
    counts = {f: sum(r["family"] == f for r in rows) for f in ("big", "small")}
    assert counts == {"big": 5, "small": 3}
    again = sft_rows(list(reversed(trajectories)), max_per_family=5)
    assert {r["task_id"] for r in again} == {r["task_id"] for r in rows}
    other_seed = sft_rows(trajectories, max_per_family=5, seed=1)
    assert {r["task_id"] for r in other_seed} != {r["task_id"] for r in rows}
    with pytest.raises(ConfigError):
        sft_rows(trajectories, max_per_family=0)


def test_leakage_is_refused_naming_the_overlap():
    trajectories = [hinted(i) for i in range(5)]
    # Same prompts as t1 and t3 up to case and whitespace: still the same question.
    holdout = [task(50, prompt="what  is 1 +\n3?"), task(51, prompt="WHAT IS 3 + 3?"),
               task(52, prompt="something else")]
    assert prompt_hash("What is 1 + 3?") == prompt_hash("  what IS 1\t+ 3? ")
    assert prompt_hash("What is 1 + 3?") != prompt_hash("What is 1 + 4?")
    with pytest.raises(ConfigError) as err:
        sft_rows(trajectories, eval_hashes=prompt_hashes(holdout))
    message = str(err.value)
    assert "2 training task(s)" in message and "t1" in message and "t3" in message
    assert "t2" not in message
    with pytest.raises(ConfigError):
        dpo_rows(trajectories, eval_hashes=prompt_hashes(holdout))
    assert len(sft_rows(trajectories, eval_hashes=prompt_hashes([task(60, prompt="other")]))) == 5


def test_dpo_pairs_prefer_the_verified_reply_over_a_failed_one():
    rows = dpo_rows([hinted(1)])
    assert len(rows) == 1
    row = rows[0]
    assert row["prompt"] == evaluation_messages(task(1))
    assert row["chosen"] == [{"role": "assistant", "content": "1 + 3 = 4\nAnswer: 4"}]
    assert row["rejected"] == [{"role": "assistant", "content": "It is 5.\nAnswer: 5"}]
    assert row["rejected_trajectory_id"] == row["trajectory_id"]


def test_dpo_takes_failures_from_other_trajectories_and_skips_tasks_without_any():
    solved_first_try = trajectory(task(1), [attempt(1, "Answer: 4", "4", PASS)], tid="good")
    earlier_failure = trajectory(task(1), [attempt(1, "Answer: 8", "8", FAIL)],
                                 outcome="unsolved", tid="bad")
    same_as_chosen = trajectory(task(2), [attempt(1, "Answer: 5", "5", FAIL),
                                          attempt(2, "Answer: 5", "5", PASS)])
    rows = dpo_rows([solved_first_try, earlier_failure, same_as_chosen])
    assert [(r["task_id"], r["rejected_trajectory_id"]) for r in rows] == [("t1", "bad")]
    assert rows[0]["rejected"][0]["content"] == "Answer: 8"


def test_build_rows_for_sft_plus_dpo_holds_both_kinds():
    rows = build_rows([hinted(1), hinted(2)], "sft+dpo")
    assert sum("completion" in r for r in rows) == 2 and sum("chosen" in r for r in rows) == 2
    with pytest.raises(ConfigError):
        build_rows([hinted(1)], "ppo")


def test_write_dataset_is_atomic_and_its_hash_is_stable(tmp_path):
    rows = build_rows([hinted(1, tid="a"), hinted(2, "mul", tid="b")], "sft+dpo")
    first = write_dataset(rows, tmp_path / "one.jsonl")
    second = write_dataset(list(rows), tmp_path / "two.jsonl")
    assert isinstance(first, DatasetManifest)
    assert first.sha256 == second.sha256 and first.created_at <= second.created_at
    assert (first.method, first.rows, first.sft_rows, first.dpo_rows) == ("sft+dpo", 4, 2, 2)
    assert first.trajectory_ids == ["a", "b"] and first.task_ids == ["t1", "t2"]
    assert first.counts_per_family == {"add": 2, "mul": 2}
    assert read_dataset(tmp_path / "one.jsonl") == json.loads(json.dumps(rows))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.jsonl", "two.jsonl"]
    changed = write_dataset(rows[:1], tmp_path / "one.jsonl")
    assert changed.sha256 != first.sha256 and changed.method == "sft"
    DatasetManifest.model_validate_json(first.model_dump_json())  # round-trips
    with pytest.raises(ConfigError):
        write_dataset([], tmp_path / "empty.jsonl")


def test_read_dataset_rejects_files_it_did_not_write(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hello"}\n')
    with pytest.raises(ConfigError):
        read_dataset(bad)
    with pytest.raises(ConfigError):
        read_dataset(tmp_path / "missing.jsonl")


# -- supervision labels ---------------------------------------------------------------------


def with_reference(i: int, worked: str | None = None) -> Task:
    return task(i).model_copy(update={"privileged": Privileged(
        reference_answer=str(i + 3), worked_solution=worked)})


def sampled(i: int, replies: list[tuple[str, bool]]) -> Trajectory:
    """A ``samples`` trajectory: independent replies to the evaluation prompt, no hints."""
    t = with_reference(i)
    prompt = evaluation_messages(t)
    attempts = [Attempt(index=n, messages=prompt, reply=reply,
                        answer=extract_answer(reply, "short"), verdict=PASS if ok else FAIL,
                        model="local/smollm2", temperature=0.7)
                for n, (reply, ok) in enumerate(replies, start=1)]
    return trajectory(t, attempts, "solved" if any(ok for _, ok in replies) else "unsolved")


def test_self_rows_are_the_models_own_verified_replies_and_nothing_else():
    samples = sampled(1, [("1 + 3 = 5\nAnswer: 5", False), ("1 + 3 = 4\nAnswer: 4", True),
                          ("Four.\nAnswer: 4", True), ("1 + 3 = 4\nAnswer: 4", True)])
    rows = sft_rows([samples], max_per_task=3)
    # Two different verified replies (the third repeats the first); the wrong one never.
    assert [r["completion"][0]["content"] for r in rows] == ["1 + 3 = 4\nAnswer: 4", "Four.\nAnswer: 4"]
    assert all(r["label"] == "self" for r in rows)
    model_text = {a.reply for a in samples.attempts if a.verdict.passed}
    assert all(r["completion"][0]["content"] in model_text for r in rows)
    assert "4" not in json.dumps(rows[0]["prompt"]).replace("Answer: <answer>", "")
    # The cap per task keeps the first verified replies.
    assert len(sft_rows([samples], max_per_task=1)) == 1
    with pytest.raises(ConfigError, match="max_per_task"):
        sft_rows([samples], max_per_task=0)


def test_a_reply_after_a_critique_is_self_after_the_answer_is_rationalized_after_a_person_human():
    assert sft_rows([hinted(1)])[0]["label"] == "self"  # a model critique, no answer in it

    def after(hint: Hint) -> Trajectory:
        t = with_reference(2)
        return trajectory(t, [attempt(1, "Answer: 9", "9", FAIL, hint=hint),
                              attempt(2, "2 + 3 = 5\nAnswer: 5", "5", PASS)])

    shown = Hint(text="The correct answer is 5.", source="reference", author="reference answer",
                 policy="reference", used_privileged=True)
    model_saw_it = Hint(text="Think of 5.", source="model", author="m", policy="reference",
                        used_privileged=True)
    person = Hint(text="Count on from 2.", source="person", author="ada", policy="session")
    assert sft_rows([after(shown)])[0]["label"] == "rationalized"
    assert sft_rows([after(model_saw_it)])[0]["label"] == "rationalized"
    assert sft_rows([after(person)])[0]["label"] == "human"
    # A person's verdict that overruled the verifier is a failing attempt: never a target.
    overruled = trajectory(with_reference(3), [attempt(1, "Answer: 6", "6", FAIL, hint=person)],
                           "unsolved")
    assert sft_rows([overruled]) == []


def test_gold_rows_hold_only_the_task_generators_text():
    worked = with_reference(4, worked="4 + 3 = 7")
    bare = with_reference(5)
    no_answer = task(6)
    rows = gold_rows([worked, bare, no_answer, worked])
    assert [(r["task_id"], r["completion"][0]["content"]) for r in rows] == [
        ("t4", "4 + 3 = 7\nAnswer: 7"), ("t5", "Answer: 8")]
    assert {r["label"] for r in rows} == {"gold"} and all(r["trajectory_id"] is None for r in rows)
    assert rows[0]["prompt"] == evaluation_messages(worked)
    assert gold_rows([worked], completion="answer")[0]["completion"][0]["content"] == "Answer: 7"
    # A verified reply trained as the task's worked solution is gold, not the model's.
    solved = trajectory(worked, [attempt(1, "Seven.\nAnswer: 7", "7", PASS)])
    [row] = sft_rows([solved], completion="worked")
    assert row["label"] == "gold" and row["completion"][0]["content"] == "4 + 3 = 7\nAnswer: 7"


def test_manifests_count_rows_per_label(tmp_path):
    rows = (sft_rows([sampled(7, [("Answer: 10", True)]), hinted(8)])
            + gold_rows([with_reference(9, worked="9 + 3 = 12")]))
    manifest = write_dataset(rows, tmp_path / "d.jsonl")
    assert manifest.counts_per_label == {"self": 2, "gold": 1}
    assert list(manifest.counts_per_label) == ["self", "gold"]  # the labels' own order
    assert [r["label"] for r in read_dataset(manifest.path)] == ["self", "self", "gold"]
    # Manifests written before labels existed still load, with no counts.
    old = json.loads(manifest.model_dump_json())
    del old["counts_per_label"]
    assert DatasetManifest.model_validate(old).counts_per_label == {}


def test_rows_after_a_persons_hint_count_human_weight_times():
    person = Hint(text="Count on from 2.", source="person", author="ada", policy="session")
    by_person = trajectory(with_reference(2), [attempt(1, "Answer: 9", "9", FAIL, hint=person),
                                               attempt(2, "2 + 3 = 5\nAnswer: 5", "5", PASS)])
    rows = build_rows([by_person, hinted(1)], "sft", human_weight=3)
    assert [row["label"] for row in rows].count("human") == 3
    assert [row["label"] for row in rows].count("self") == 1
    assert [row["label"] for row in build_rows([by_person], "sft")] == ["human"]
