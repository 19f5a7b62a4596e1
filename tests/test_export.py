"""Export: the conversation shape TRL reads, filters, scrubbing, atomic writes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import ConfigError
from memory import export as export_module
from memory.export import export_trajectories, trajectory_to_messages
from core.records import Attempt, Hint, RunRecord, Task, Trajectory, Verdict, VerifierSpec
from memory.store import SQLiteStore

SYSTEM = {"role": "system", "content": "You solve problems. End with 'Answer: <answer>'."}
OPENAI_KEY = "sk-proj-" + "Q1w2E3r4T5y6U7i8O9p0A1s2D3f4G5h6"


def make_task(task_id: str = "t1", prompt: str = "What is 2 + 2?") -> Task:
    return Task(id=task_id, prompt=prompt, verifier=VerifierSpec(type="exact", params={"expected": "4"}),
                family="arith")


def retry_turn(answer: str, hint: Hint | None) -> dict[str, str]:
    text = f"Your answer {answer} is wrong."
    if hint:
        text += f"\nHint: {hint.text}"
    return {"role": "user", "content": text + "\nTry again."}


def make_trajectory(
    replies: list[str], *, task: Task | None = None, run_id: str = "run-1", solved: bool = True,
    hints: list[Hint | None] | None = None,
) -> Trajectory:
    """Attempts whose ``messages`` grow the way the generator's prompt builder grows them."""
    task = task or make_task()
    hints = hints or [None] * len(replies)
    messages = [SYSTEM, {"role": "user", "content": task.prompt}]
    attempts = []
    for i, reply in enumerate(replies, start=1):
        passed = solved and i == len(replies)
        hint = None if passed else hints[i - 1]
        attempts.append(Attempt(
            index=i, messages=list(messages), reply=reply, answer=reply[-1:],
            verdict=Verdict(passed=passed, score=float(passed)), model="local/smollm2", hint=hint,
        ))
        messages += [{"role": "assistant", "content": reply}, retry_turn(reply[-1:], hint)]
    return Trajectory(
        run_id=run_id, task=task, attempts=attempts, outcome="solved" if solved else "unsolved",
        hint_policy="critique", generator_model="local/smollm2", critic_model="m", hint_model="m",
        stop_reason="verified" if solved else "max_attempts",
    )


def hint(text: str, source: str = "model", author: str = "openai/gpt-4o-mini") -> Hint:
    return Hint(text=text, source=source, author=author, policy="critique")  # type: ignore[arg-type]


# -- trajectory_to_messages ------------------------------------------------------------


def test_one_attempt_is_system_user_assistant() -> None:
    t = make_trajectory(["Answer: 4"])
    assert trajectory_to_messages(t) == [SYSTEM, {"role": "user", "content": "What is 2 + 2?"},
                                         {"role": "assistant", "content": "Answer: 4"}]


def test_later_attempts_add_only_their_hint_turn() -> None:
    h1, h2 = hint("Count again."), hint("Two plus two.", source="person", author="ada")
    t = make_trajectory(["Answer: 5", "Answer: 3", "Answer: 4"], hints=[h1, h2, None])
    assert trajectory_to_messages(t) == [
        SYSTEM,
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "Answer: 5"},
        retry_turn("5", h1),
        {"role": "assistant", "content": "Answer: 3"},
        retry_turn("3", h2),
        {"role": "assistant", "content": "Answer: 4"},
    ]


def test_the_conversation_alternates_after_the_system_turn() -> None:
    t = make_trajectory(["a1", "a2", "a3", "a4"], solved=False)
    roles = [m["role"] for m in trajectory_to_messages(t)]
    assert roles[0] == "system"
    assert roles[1:] == ["user", "assistant"] * 4


def test_rebuilt_prompt_contributes_only_turns_after_its_last_reply() -> None:
    t = make_trajectory(["Answer: 5", "Answer: 4"])
    second = t.attempts[1]
    # The second prompt was rebuilt with different lessons: not an extension of the first.
    changed = [SYSTEM, {"role": "user", "content": "Advice: add.\n\nWhat is 2 + 2?"}, *second.messages[2:]]
    t = t.model_copy(update={"attempts": [t.attempts[0], second.model_copy(update={"messages": changed})]})
    messages = trajectory_to_messages(t)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[3] == second.messages[-1]


def test_fresh_prompt_per_attempt_does_not_repeat_the_system_turn() -> None:
    t = make_trajectory(["Answer: 5", "Answer: 4"])
    fresh = [SYSTEM, {"role": "user", "content": "What is 2 + 2? Hint: it is even."}]
    t = t.model_copy(update={"attempts": [t.attempts[0], t.attempts[1].model_copy(update={"messages": fresh})]})
    messages = trajectory_to_messages(t)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[3]["content"].endswith("it is even.")


def test_extra_message_keys_are_dropped_and_order_is_by_index() -> None:
    t = make_trajectory(["Answer: 5", "Answer: 4"])
    first = t.attempts[0].model_copy(update={"messages": [{**SYSTEM, "name": "x"}, t.attempts[0].messages[1]]})
    t = t.model_copy(update={"attempts": [t.attempts[1], first]})
    messages = trajectory_to_messages(t)
    assert all(set(m) == {"role", "content"} for m in messages)
    assert [m["content"] for m in messages if m["role"] == "assistant"] == ["Answer: 5", "Answer: 4"]


def test_no_attempts_no_messages() -> None:
    t = make_trajectory([]).model_copy(update={"outcome": "unsolved"})
    assert trajectory_to_messages(t) == []


# -- export_trajectories ---------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "s.db") as opened:
        for run_id in ("run-1", "run-2"):
            opened.create_run(RunRecord(run_id=run_id, tasks_spec="x.jsonl", settings={}, total=2))
        yield opened


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_export_writes_one_line_per_trajectory(store: SQLiteStore, tmp_path: Path) -> None:
    h = hint("Count again.")
    solved = make_trajectory(["Answer: 5", "Answer: 4"], hints=[h, None], task=make_task("t1", "2+2? ✓"))
    unsolved = make_trajectory(["Answer: 7"], task=make_task("t2"), solved=False)
    store.add_trajectory(solved)
    store.add_trajectory(unsolved)
    out = tmp_path / "nested" / "dir" / "export.jsonl"

    assert export_trajectories(store, out) == 2
    first, second = read_lines(out)
    assert set(first) == {"messages", "id", "task_id", "family", "outcome", "solved_at", "hint_policy",
                          "provenance", "kind", "verdicts", "retrieved"}
    assert (first["kind"], first["verdicts"]) == ("run", [])  # no person judged anything
    assert first["messages"] == trajectory_to_messages(solved)
    assert first["messages"][1]["content"] == "2+2? ✓"
    assert "✓" in out.read_text(encoding="utf-8")  # written as UTF-8, not \u escapes
    assert (first["id"], first["task_id"], first["family"]) == (solved.id, "t1", "arith")
    assert (first["outcome"], first["solved_at"], first["hint_policy"]) == ("solved", 2, "critique")
    assert first["provenance"] == [{"attempt": 1, "source": "model", "author": "openai/gpt-4o-mini",
                                    "policy": "critique", "used_privileged": False}]
    assert (second["outcome"], second["solved_at"], second["provenance"]) == ("unsolved", None, [])


def test_export_filters(store: SQLiteStore, tmp_path: Path) -> None:
    store.add_trajectory(make_trajectory(["4"], task=make_task("a"), run_id="run-1"))
    store.add_trajectory(make_trajectory(["5"], task=make_task("b"), run_id="run-1", solved=False))
    store.add_trajectory(make_trajectory(["4"], task=make_task("c"), run_id="run-2"))
    out = tmp_path / "e.jsonl"
    assert export_trajectories(store, out, run_id="run-1") == 2
    assert [line["task_id"] for line in read_lines(out)] == ["a", "b"]
    assert export_trajectories(store, out, only_verified=True) == 2
    assert [line["task_id"] for line in read_lines(out)] == ["a", "c"]
    assert export_trajectories(store, out, run_id="run-1", only_verified=True) == 1
    assert [line["task_id"] for line in read_lines(out)] == ["a"]


def test_empty_export_writes_an_empty_file(store: SQLiteStore, tmp_path: Path) -> None:
    out = tmp_path / "e.jsonl"
    assert export_trajectories(store, out) == 0
    assert out.read_text() == ""


def test_secrets_never_reach_the_export(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_API_KEY", "acme-plain-value-123")
    leaky = make_trajectory(
        [f"I will call the API with {OPENAI_KEY}", 'Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345\nAnswer: 4'],
        task=make_task("t1", 'Use api_key="acme-plain-value-123" to solve 2+2'),
        hints=[hint("Try key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv", author=OPENAI_KEY), None],
    )
    store.add_trajectory(leaky)
    out = tmp_path / "e.jsonl"
    export_trajectories(store, out)
    text = out.read_text(encoding="utf-8")
    for secret in (OPENAI_KEY, "acme-plain-value-123", "abcdefghijklmnopqrstuvwxyz012345", "sk-ant-api03"):
        assert secret not in text
    assert "[REDACTED]" in text
    (line,) = read_lines(out)
    assert line["messages"][2]["content"] == "I will call the API with [REDACTED]"
    assert line["provenance"][0]["author"] == "[REDACTED]"


def test_export_is_atomic(store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for task_id in ("a", "b", "c"):
        store.add_trajectory(make_trajectory(["4"], task=make_task(task_id)))
    out = tmp_path / "e.jsonl"
    out.write_text("previous export\n")
    calls = {"n": 0}

    class FailingJson:
        """json whose second dumps fails, i.e. the write dies after the first line."""

        @staticmethod
        def dumps(value: object, **kwargs: object) -> str:
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("disk on fire")
            return json.dumps(value, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(export_module, "json", FailingJson)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_trajectories(store, out)
    assert calls["n"] == 2
    assert out.read_text() == "previous export\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".e.jsonl")] == []

    monkeypatch.setattr(export_module, "json", json)
    assert export_trajectories(store, out) == 3
    assert len(read_lines(out)) == 3
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_unwritable_path_is_a_config_error(store: SQLiteStore, tmp_path: Path) -> None:
    store.add_trajectory(make_trajectory(["4"]))
    target = tmp_path / "a-directory"
    target.mkdir()
    with pytest.raises(ConfigError, match="a-directory"):
        export_trajectories(store, target)
    assert list(tmp_path.glob(".a-directory.*")) == []
