"""The refinement loop's logic, with scripted models, a real SQLite store and real
verifiers. (The real embedded model runs the loop in tests/test_loop_e2e.py.)"""

from __future__ import annotations

import pytest

from agents.testing import ScriptedChatModel
from core.records import Privileged, RunRecord, Task, VerifierSpec
from memory.store import SQLiteStore
from orchestrator.config import Config, LoopConfig
from orchestrator.runner import RoleModels, execute_run


def _task(task_id: str = "t1", expected: str = "4") -> Task:
    return Task(id=task_id, prompt="What is 2 + 2?",
                verifier=VerifierSpec(type="numeric", params={"expected": expected}),
                privileged=Privileged(reference_answer=expected), family="arith")


def _config(tmp_path, **loop) -> Config:
    return Config(home=tmp_path / "home", loop=LoopConfig(**loop))


async def _run(tmp_path, tasks, models, **loop):
    config = _config(tmp_path, **loop)
    store = SQLiteStore(tmp_path / "t.db")
    run = RunRecord(run_id="r1", tasks_spec="test", settings={}, total=len(tasks))
    store.create_run(run)
    summary = await execute_run(config, tasks, store, run, models=models)
    return summary, store


def _roles(generator, critic=None, hint=None) -> RoleModels:
    critic = critic or ScriptedChatModel([], model_id="fake/critic")
    hint = hint or ScriptedChatModel([], model_id="fake/hint")
    return RoleModels(generator=generator, critic=critic, hint_giver=hint, judge=critic)


async def test_critique_policy_records_every_step_with_provenance(tmp_path):
    generator = ScriptedChatModel(["I think it is 3.\nAnswer: 3", "2 + 2 = 4\nAnswer: 4"])
    critic = ScriptedChatModel(["The sum is off by one."], model_id="fake/critic")
    hint = ScriptedChatModel(["Count again: two and two."], model_id="fake/hint")
    summary, store = await _run(tmp_path, [_task()], _roles(generator, critic, hint),
                                hints="critique")

    assert (summary.total, summary.solved, summary.solved_at) == (1, 1, {"2": 1})
    [t] = store.trajectories(run_id="r1")
    assert t.outcome == "solved" and t.stop_reason == "verified" and t.solved_at == 2
    first, second = t.attempts
    assert (first.answer, first.verdict.passed, second.answer, second.verdict.passed) == ("3", False, "4", True)
    assert first.reply == "I think it is 3.\nAnswer: 3"
    assert first.critique == "The sum is off by one." and first.critique_model == "fake/critic"
    assert first.hint.text == "Count again: two and two."
    assert (first.hint.source, first.hint.author, first.hint.policy) == ("model", "fake/hint", "critique")
    assert first.hint.used_privileged is False
    # The second attempt saw the first reply and the hint, in order.
    roles = [m["role"] for m in second.messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert "Count again" in second.messages[-1]["content"]
    assert "3 is wrong" in second.messages[-1]["content"]
    # Temperature rises on the later attempt.
    assert first.temperature == 0.0 and second.temperature > 0.0
    # The critic saw no privileged material and no verifier output under `critique`.
    critic_prompt = critic.calls[0].messages[-1]["content"]
    assert "Checker output" not in critic_prompt and "Correct answer" not in critic_prompt
    # The critic's and hint-giver's tokens count toward the task, beside the generator's.
    assert t.tokens > sum(a.prompt_tokens + a.completion_tokens for a in t.attempts)


async def test_none_policy_calls_no_critic_or_hint(tmp_path):
    generator = ScriptedChatModel(["Answer: 5", "Answer: 4"])
    critic = ScriptedChatModel([], model_id="fake/critic")
    summary, store = await _run(tmp_path, [_task()], _roles(generator, critic), hints="none")
    assert summary.solved == 1 and critic.calls == []
    [t] = store.trajectories(run_id="r1")
    assert t.attempts[0].hint is None and t.attempts[0].critique is None
    assert t.attempts[1].messages[-1]["content"].startswith("Your answer 5 is wrong.\nTry again.")


async def test_reference_policy_shows_the_reference_only_to_the_hint_giver(tmp_path):
    generator = ScriptedChatModel(["Answer: 5", "Answer: 4"])
    critic = ScriptedChatModel(["Wrong sum."], model_id="fake/critic")
    hint = ScriptedChatModel(["The answer is four."], model_id="fake/hint")
    await _run(tmp_path, [_task()], _roles(generator, critic, hint), hints="reference")
    assert "Correct answer: 4" in hint.calls[0].messages[-1]["content"]
    assert "Correct answer" not in critic.calls[0].messages[-1]["content"]
    for call in generator.calls:
        assert all("Correct answer" not in m["content"] for m in call.messages)
    # By default the hint ends with the reference answer (rationalization).
    retry = generator.calls[1].messages[-1]["content"]
    assert "Hint: The answer is four.\nThe correct answer is 4." in retry


async def test_reference_is_not_revealed_when_switched_off_or_under_other_policies(tmp_path):
    for policy, mode in (("reference", "model"), ("critique", "answer"), ("feedback", "model+answer")):
        generator = ScriptedChatModel(["Answer: 5", "Answer: 4"])
        critic = ScriptedChatModel(["Wrong sum."], model_id="fake/critic")
        hint = ScriptedChatModel(["Add again."], model_id="fake/hint")
        where = tmp_path / f"{policy}-{mode}"
        where.mkdir()
        await _run(where, [_task()], _roles(generator, critic, hint), hints=policy,
                   reference_hint=mode)
        retry = generator.calls[1].messages[-1]["content"]
        assert "Hint: Add again." in retry and "The correct answer" not in retry
        assert len(critic.calls) == 1 and len(hint.calls) == 1


async def test_answer_only_reference_hints_call_neither_critic_nor_hint_giver(tmp_path):
    generator = ScriptedChatModel(["Answer: 5", "Answer: 4"])
    critic = ScriptedChatModel(["Wrong sum."], model_id="fake/critic")
    hint = ScriptedChatModel(["Add again."], model_id="fake/hint")
    summary, store = await _run(tmp_path, [_task()], _roles(generator, critic, hint),
                                hints="reference", reference_hint="answer")
    assert summary.solved == 1 and critic.calls == [] and hint.calls == []
    [t] = store.trajectories(run_id="r1")
    given = t.attempts[0].hint
    assert (given.source, given.author, given.used_privileged) == ("reference", "reference answer", True)
    assert t.attempts[0].critique is None
    assert "Hint: The correct answer is 4." in generator.calls[1].messages[-1]["content"]


async def test_reference_hints_carry_the_worked_solution(tmp_path):
    task = _task().model_copy(update={"privileged": Privileged(reference_answer="4",
                                                               worked_solution="2 + 2 = 4")})
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    # answer-only hints: the sentence gives the working as the reason.
    generator = ScriptedChatModel(["Answer: 5", "2 + 2 = 4\nAnswer: 4"])
    await _run(tmp_path / "a", [task], _roles(generator), hints="reference", reference_hint="answer")
    retry = generator.calls[1].messages[-1]["content"]
    assert "Hint: The correct answer is 4, because 2 + 2 = 4." in retry
    # model hints: the hint-giver sees the working as privileged material, the critic does not.
    generator = ScriptedChatModel(["Answer: 5", "Answer: 4"])
    critic = ScriptedChatModel(["Wrong sum."], model_id="fake/critic")
    hint = ScriptedChatModel(["Add the twos."], model_id="fake/hint")
    await _run(tmp_path / "b", [task], _roles(generator, critic, hint), hints="reference",
               reference_hint="model")
    assert "Worked solution: 2 + 2 = 4" in hint.calls[0].messages[-1]["content"]
    assert "2 + 2 = 4" not in critic.calls[0].messages[-1]["content"]
    assert "Hint: Add the twos." in generator.calls[1].messages[-1]["content"]


async def test_repeated_failed_answer_is_resampled_hotter(tmp_path):
    generator = ScriptedChatModel(["Answer: 3", "Answer: 3", "Answer: 4"])
    summary, store = await _run(tmp_path, [_task()], _roles(generator), hints="none",
                                max_resamples=2)
    [t] = store.trajectories(run_id="r1")
    assert summary.solved == 1 and len(t.attempts) == 2
    assert t.attempts[1].resamples == 1 and t.attempts[1].answer == "4"
    assert generator.calls[2].params.temperature >= 0.7


async def test_caps_end_the_loop_unsolved(tmp_path):
    generator = ScriptedChatModel(lambda messages, params: "Answer: 7")
    summary, store = await _run(tmp_path, [_task()], _roles(generator), hints="none",
                                max_attempts=3, max_resamples=0)
    [t] = store.trajectories(run_id="r1")
    assert (summary.solved, summary.unsolved, len(t.attempts), t.stop_reason) == (0, 1, 3, "max_attempts")

    generator = ScriptedChatModel(lambda messages, params: "long reply " * 50 + "Answer: 7")
    (tmp_path / "b").mkdir()
    summary, store = await _run(tmp_path / "b", [_task()], _roles(generator), hints="none",
                                max_attempts=10, max_tokens=120, max_resamples=0)
    [t] = store.trajectories(run_id="r1")
    assert t.stop_reason == "max_tokens" and len(t.attempts) < 10


async def test_a_task_that_crashes_does_not_end_the_run(tmp_path):
    bad = Task(id="bad", prompt="x", verifier=VerifierSpec(type="no_such_verifier"))
    generator = ScriptedChatModel(lambda messages, params: "Answer: 4")
    summary, store = await _run(tmp_path, [bad, _task("good")], _roles(generator), hints="none")
    assert summary.solved == 1 and len(summary.errors) == 1 and "bad" in summary.errors[0]
    assert store.finished_task_ids("r1") == {"good"}


async def test_running_again_skips_finished_tasks(tmp_path):
    generator = ScriptedChatModel(lambda messages, params: "Answer: 4")
    config = _config(tmp_path, hints="none")
    store = SQLiteStore(tmp_path / "t.db")
    run = RunRecord(run_id="r1", tasks_spec="test", settings={}, total=2)
    store.create_run(run)
    tasks = [_task("a"), _task("b")]
    await execute_run(config, tasks[:1], store, run, models=_roles(generator))
    calls = len(generator.calls)
    summary = await execute_run(config, tasks, store, run, models=_roles(generator))
    assert len(generator.calls) == calls + 1
    assert summary.solved == 2 and store.count(run_id="r1") == 2


@pytest.mark.parametrize("policy", ["critique", "feedback"])
async def test_feedback_policy_passes_verifier_output_to_the_critic(tmp_path, policy):
    generator = ScriptedChatModel(["Answer: 5", "Answer: 4"])
    critic = ScriptedChatModel(["Wrong."], model_id="fake/critic")
    hint = ScriptedChatModel(["Recount."], model_id="fake/hint")
    await _run(tmp_path, [_task()], _roles(generator, critic, hint), hints=policy)
    assert ("Checker output" in critic.calls[0].messages[-1]["content"]) == (policy == "feedback")


class _Killed(BaseException):
    """Stands in for the process dying: not an Exception, so nothing catches it."""


@pytest.mark.parametrize("durability", ["async", "sync"])
async def test_resume_continues_a_task_from_its_last_checkpoint(tmp_path, durability):
    config = Config(home=tmp_path / "home", loop=LoopConfig(hints="none", max_attempts=3),
                    run={"durability": durability})
    store = SQLiteStore(tmp_path / "t.db")
    run = RunRecord(run_id="r1", tasks_spec="test", settings={}, total=1)
    store.create_run(run)
    dying = ScriptedChatModel(["first try\nAnswer: 5", _Killed()])
    with pytest.raises(_Killed):
        await execute_run(config, [_task()], store, run, models=_roles(dying))
    assert store.count(run_id="r1") == 0

    fresh = ScriptedChatModel(["Answer: 4"])
    summary = await execute_run(config, [_task()], store, run, models=_roles(fresh))
    [t] = store.trajectories(run_id="r1")
    assert summary.solved_at == {"2": 1}
    assert t.attempts[0].reply == "first try\nAnswer: 5", "attempt 1 came back from the checkpoint"
    assert len(fresh.calls) == 1 and fresh.calls[0].messages[2]["content"] == "first try\nAnswer: 5"
