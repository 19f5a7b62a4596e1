"""The vector memory inside the loop: scripted models, the real embedding model, a real
``memory.db`` and chromadb. A run learns from one task and a later similar task
retrieves it; ``run.memory = false`` retrieves and stores nothing; ``eval`` uses memory
only when asked and never writes it; a run killed before learning catches up; the
dataset manifest counts rows collected with memory."""

from __future__ import annotations

import re

import pytest

from agents.testing import ScriptedChatModel
from core.answer_format import evaluation_messages
from core.records import Privileged, RunRecord, Task, VerifierSpec
from memory.export import trajectory_to_line
from memory.store import open_store
from orchestrator.config import Config, LoopConfig, RunConfig, with_overrides
from orchestrator.evaluate import evaluate
from orchestrator.memory_ops import bank_session
from orchestrator.recall import open_memory
from orchestrator.runner import RoleModels, execute_run

HINT = "Add the ones digits first, then the tens. The correct answer is 19."


def _task(i: int, a: int, b: int) -> Task:
    return Task(id=f"add/{i}", prompt=f"What is {a} + {b}?", family="add",
                verifier=VerifierSpec(type="numeric", params={"expected": str(a + b)}),
                privileged=Privileged(reference_answer=str(a + b)))


def _student() -> ScriptedChatModel:
    """Right at once about ``15 + 4`` and ``13 + 6``; about ``12 + 7`` only after a hint."""
    def reply(messages, params) -> str:
        # The task is the last user turn that is not a retry turn (worked examples come before it).
        *_, task_turn = (m["content"] for m in messages
                         if m["role"] == "user" and not m["content"].startswith("Your answer"))
        a, b = map(int, re.search(r"What is (\d+) \+ (\d+)", task_turn).groups())
        hinted = any("Hint:" in m["content"] for m in messages if m["role"] == "user")
        return f"{a} + {b} = {a + b}\nAnswer: {a + b}" if hinted or a != 12 else f"Answer: {a + b - 1}"

    return ScriptedChatModel(reply, model_id="fake/student")


def _roles(generator: ScriptedChatModel) -> RoleModels:
    teacher = ScriptedChatModel(lambda messages, params: HINT, model_id="fake/teacher")
    return RoleModels(generator=generator, critic=teacher, hint_giver=teacher, judge=teacher)


def _config(tmp_path, **run) -> Config:
    return Config(home=tmp_path / "home", loop=LoopConfig(max_attempts=2, max_resamples=0),
                  run=RunConfig(concurrency=1, **run))


async def _run(config: Config, tasks: list[Task], generator: ScriptedChatModel, run_id: str):
    with open_store(config.home) as store:
        run = RunRecord(run_id=run_id, tasks_spec="t", settings={}, total=len(tasks))
        store.create_run(run)
        memory = open_memory(config, learn=True)
        try:
            summary = await execute_run(config, tasks, store, run, models=_roles(generator), memory=memory)
        finally:
            if memory is not None:
                memory.close()
        return summary, {t.task.id: t for t in store.trajectories(run_id=run_id)}


async def test_a_run_learns_from_a_task_and_a_later_similar_task_retrieves_it(tmp_path):
    config = _config(tmp_path)
    generator = _student()
    summary, stored = await _run(config, [_task(1, 12, 7), _task(2, 15, 4)], generator, "r1")

    first, second = stored["add/1"], stored["add/2"]
    assert first.solved_at == 2 and first.retrieved == []  # memory was empty
    assert second.solved_at == 1 and len(second.retrieved) == 2
    case_id, lesson_id = second.retrieved
    messages = second.attempts[0].messages
    assert messages[0]["content"].endswith("- Add the ones digits first, then the tens.")
    assert "19" not in messages[0]["content"]  # the lesson never carries the answer
    assert messages[1]["content"].startswith("What is 12 + 7?")
    assert messages[2] == {"role": "assistant", "content": "12 + 7 = 19\nAnswer: 19"}
    assert messages[-1] == evaluation_messages(second.task)[-1]
    assert trajectory_to_line(second)["retrieved"] == [case_id, lesson_id]

    figures = summary.memory
    assert (figures.with_memory, figures.with_memory_solved_at_1, figures.without_memory) == (1, 1, 1)
    assert (figures.cases_learned, figures.lessons_learned) == (2, 1)
    with bank_session(config) as bank:
        assert bank.worth(case_id).uses == 1 and bank.worth(case_id).wins == 1
        assert bank.counts()["trajectories_logged"] == 2


async def test_memory_off_retrieves_nothing_and_stores_nothing(tmp_path):
    config = _config(tmp_path)
    await _run(config, [_task(1, 12, 7)], _student(), "r1")
    with bank_session(config) as bank:
        before = bank.counts()

    off = with_overrides(config, {"run.memory": False})  # what --no-memory sets
    assert open_memory(off, learn=True) is None
    generator = _student()
    summary, stored = await _run(off, [_task(2, 15, 4), _task(3, 12, 8)], generator, "r2")
    assert summary.memory is None
    assert all(t.retrieved == [] for t in stored.values())
    assert all(call.messages[:2] == evaluation_messages(_task(2, 15, 4)) or
               call.messages[:2] == evaluation_messages(_task(3, 12, 8)) for call in generator.calls)
    with bank_session(config) as bank:
        assert bank.counts() == before


async def test_eval_uses_memory_only_when_asked_and_never_writes_it(tmp_path):
    config = _config(tmp_path)
    await _run(config, [_task(1, 12, 7)], _student(), "r1")
    with bank_session(config) as bank:
        before = bank.counts()
    tasks = [_task(7, 13, 6)]
    plain = await evaluate(config, tasks, spec="held", adapter="none", models=_roles(_student()))
    assert not plain.memory
    generator = _student()
    with_memory = await evaluate(config, tasks, spec="held", adapter="none", models=_roles(generator),
                                 memory=True)
    assert with_memory.memory and with_memory.passed == 1
    assert generator.calls[0].messages[2]["content"] == "12 + 7 = 19\nAnswer: 19"
    with open_store(config.home, "evals.db") as evals:
        by_run = {t.run_id: t for t in evals.trajectories()}
    assert by_run[plain.run_id].retrieved == [] and len(by_run[with_memory.run_id].retrieved) == 2
    with bank_session(config) as bank:
        assert bank.counts() == before


async def test_a_run_killed_before_learning_catches_up_when_resumed(tmp_path):
    config = _config(tmp_path)
    task = _task(1, 12, 7)
    with open_store(config.home) as store:  # what a run killed after storing left behind
        run = RunRecord(run_id="r1", tasks_spec="t", settings={}, total=2)
        store.create_run(run)
        await execute_run(config, [task], store, run, models=_roles(_student()))
        assert store.count("r1") == 1
    with bank_session(config) as bank:
        assert bank.counts()["cases"] == {}
    summary, stored = await _run_resumed(config, [task, _task(2, 15, 4)])
    assert summary.memory.cases_learned == 2 and summary.memory.with_memory == 1
    assert stored["add/2"].retrieved


async def _run_resumed(config: Config, tasks: list[Task]):
    with open_store(config.home) as store:
        run = store.get_run("r1")
        memory = open_memory(config, learn=True)
        try:
            summary = await execute_run(config, tasks, store, run, models=_roles(_student()), memory=memory)
        finally:
            memory.close()
        return summary, {t.task.id: t for t in store.trajectories(run_id="r1")}


@pytest.mark.usefixtures("one_thread")
async def test_the_dataset_manifest_counts_rows_collected_with_memory(tmp_path, tiny_base):
    from orchestrator.config import DistillConfig, ModelsConfig
    from orchestrator.distill import distill
    from tests.support import QUICK

    config = _config(tmp_path).model_copy(update={
        "models": ModelsConfig(generator=f"local/{tiny_base}"), "distill": DistillConfig(train=QUICK)})
    _, stored = await _run(config, [_task(1, 12, 7), _task(2, 15, 4), _task(3, 13, 6)], _student(), "r1")
    manifest = distill(config, stored.values(), name="m1")
    assert manifest.dataset.rows == 3 and manifest.dataset.memory_rows == 2
    rows = [line for line in open(manifest.dataset.path)]
    assert all("Advice from similar problems" not in row and row.count("What is") == 1 for row in rows)
