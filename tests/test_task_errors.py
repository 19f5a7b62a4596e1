"""Provider errors are errors, not verdicts; the per-task time cap is real; a run is owned
by one live process. Scripted models, a real SQLite store, real checkpoints.
(The real CLI against a fault-injecting server is in tests/test_reliability_cli.py.)"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import pytest

from agents.model import Completion
from agents.testing import ScriptedChatModel
from core.errors import ConfigError, ModelError, TransientModelError
from core.records import Privileged, RunRecord, Task, VerifierSpec
from memory.store import SQLiteStore
from orchestrator.config import Config, LoopConfig, RunConfig
from orchestrator.lifecycle import is_live, shown_status
from orchestrator.runner import RoleModels, execute_run

SECRET = "sk-" + "c4n4ry" * 6


def _task(task_id: str = "t1") -> Task:
    return Task(id=task_id, prompt=f"What is 2 + 2? ({task_id})",
                verifier=VerifierSpec(type="numeric", params={"expected": "4"}),
                privileged=Privileged(reference_answer="4"), family="arith")


def _setup(tmp_path, **loop):
    config = Config(home=tmp_path / "home", loop=LoopConfig(**{"hints": "none", **loop}),
                    run=RunConfig(concurrency=1))
    store = SQLiteStore(tmp_path / "t.db")
    return config, store


def _roles(generator, critic=None) -> RoleModels:
    critic = critic or ScriptedChatModel([], model_id="fake/critic")
    return RoleModels(generator=generator, critic=critic, hint_giver=critic, judge=critic)


async def _start(config, store, tasks, models, run_id="r1"):
    run = RunRecord(run_id=run_id, tasks_spec="test", settings={}, total=len(tasks))
    store.create_run(run)
    return run, await execute_run(config, tasks, store, run, models=models)


async def test_a_provider_error_leaves_the_task_unfinished_and_resume_continues_it(tmp_path):
    # Before: the failed call became a failed attempt and the task was stored unsolved,
    # so --resume never retried it and an outage turned tasks into "unsolved" for good.
    config, store = _setup(tmp_path, max_attempts=3)
    failing = ScriptedChatModel(["Answer: 5", ModelError(f"provider down (key {SECRET})"),
                                 "Answer: 4"])  # t1: wrong, then the provider fails; t2: right
    run, summary = await _start(config, store, [_task("t1"), _task("t2")], _roles(failing))

    assert store.finished_task_ids("r1") == {"t2"}
    assert (summary.solved, summary.unsolved, summary.unfinished) == (1, 0, 1)
    [line] = summary.errors
    assert line.startswith("t1: ModelError: provider down") and SECRET not in line
    [error] = store.task_errors("r1")
    assert (error.task_id, error.kind) == ("t1", "ModelError") and SECRET not in error.message
    assert store.get_run("r1").status == "failed"

    # The resume retries t1 from its checkpoint: attempt 1 is kept, not generated again.
    fresh = ScriptedChatModel(["Answer: 4"])
    summary = await execute_run(config, [_task("t1"), _task("t2")], store, run, models=_roles(fresh))
    assert summary.errors == [] and summary.unfinished == 0 and summary.solved == 2
    [t1] = store.trajectories(run_id="r1", task_id="t1")
    assert [a.answer for a in t1.attempts] == ["5", "4"] and t1.solved_at == 2
    assert len(fresh.calls) == 1 and fresh.calls[0].messages[2]["content"] == "Answer: 5"
    assert store.task_errors("r1") == []  # resolved: the task has its trajectory now
    assert len(store.task_errors("r1", open_only=False)) == 1  # history kept
    assert store.get_run("r1").status == "finished"


async def test_a_critic_error_is_a_task_error_and_resume_redoes_only_the_critique(tmp_path):
    config, store = _setup(tmp_path, hints="critique", max_attempts=2)
    generator = ScriptedChatModel(["Answer: 5"])
    critic = ScriptedChatModel([TransientModelError("critic: 503 after retries")], model_id="fake/critic")
    run, summary = await _start(config, store, [_task()], _roles(generator, critic))
    assert summary.unfinished == 1 and "TransientModelError" in summary.errors[0]
    assert store.count(run_id="r1") == 0

    generator2 = ScriptedChatModel(["Answer: 4"])
    critic2 = ScriptedChatModel(["Off by one.", "Add again."], model_id="fake/critic")
    summary = await execute_run(config, [_task()], store, run, models=_roles(generator2, critic2))
    [t] = store.trajectories(run_id="r1")
    assert summary.solved == 1 and [a.answer for a in t.attempts] == ["5", "4"]
    assert t.attempts[0].critique == "Off by one." and t.attempts[0].hint.text == "Add again."
    assert len(generator2.calls) == 1  # attempt 1 was not generated again


class _Faulty(ScriptedChatModel):
    """Replies like ScriptedChatModel and reports two faults it 'survived' per call."""

    async def complete(self, messages, params=None) -> Completion:
        done = await super().complete(messages, params)
        usage = done.usage.model_copy(update={"faults": ("try 1: 429 slow down", f"try 2: 500 {SECRET}")})
        return done.model_copy(update={"usage": usage})


async def test_faults_survived_by_retrying_are_recorded_on_the_attempt(tmp_path):
    config, store = _setup(tmp_path)
    await _start(config, store, [_task()], _roles(_Faulty(["Answer: 4"])))
    [t] = store.trajectories(run_id="r1")
    assert t.outcome == "solved"
    assert t.attempts[0].faults[0] == "try 1: 429 slow down"
    assert SECRET not in t.attempts[0].faults[1] and "[REDACTED]" in t.attempts[0].faults[1]


async def test_tasks_in_a_row_failing_stop_the_run_early(tmp_path):
    config = Config(home=tmp_path / "home", loop=LoopConfig(hints="none"),
                    run=RunConfig(concurrency=1, stop_after_errors=3))
    store = SQLiteStore(tmp_path / "t.db")
    down = ScriptedChatModel(lambda m, p: (_ for _ in ()).throw(TransientModelError("connection refused")))
    tasks = [_task(f"t{i}") for i in range(10)]
    _, summary = await _start(config, store, tasks, _roles(down))
    assert len(down.calls) == 3 and len(summary.errors) == 3
    assert summary.unfinished == 10 and "stop_after_errors" in summary.stopped


async def test_max_seconds_bounds_the_task_even_while_the_model_hangs(tmp_path):
    # Before: the cap was checked only after a verdict, so a task ran 823 s with 600.
    class Hanging(ScriptedChatModel):
        async def complete(self, messages, params=None):
            if self.calls:
                await asyncio.sleep(60)
            return await super().complete(messages, params)

    config, store = _setup(tmp_path, max_attempts=3, max_seconds=1.0)
    started = time.monotonic()
    _, summary = await _start(config, store, [_task()], _roles(Hanging(lambda m, p: "Answer: 5")))
    assert time.monotonic() - started < 10
    [t] = store.trajectories(run_id="r1")
    assert t.stop_reason == "max_seconds" and t.outcome == "unsolved"
    assert [a.answer for a in t.attempts] == ["5"]  # the finished attempt is kept
    assert 1.0 <= t.seconds < 5 and summary.errors == []


async def test_a_run_owned_by_a_live_process_is_refused_and_a_dead_one_is_interrupted(tmp_path):
    config, store = _setup(tmp_path)
    run = RunRecord(run_id="r1", tasks_spec="test", settings={}, total=1)
    store.create_run(run)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        store.claim_run("r1", pid=other.pid, host=socket.gethostname())
        assert is_live(store.get_run("r1")) and shown_status(store.get_run("r1")) == "running"
        with pytest.raises(ConfigError, match=f"still running \\(pid {other.pid}"):
            await execute_run(config, [_task()], store, run,
                              models=_roles(ScriptedChatModel(["Answer: 4"])))
        assert store.count(run_id="r1") == 0
    finally:
        other.kill()
        other.wait()
    assert shown_status(store.get_run("r1")) == "interrupted"  # its process is gone
    summary = await execute_run(config, [_task()], store, run,
                                models=_roles(ScriptedChatModel(["Answer: 4"])))
    assert summary.solved == 1
    finished = store.get_run("r1")
    assert finished.status == "finished" and finished.pid == os.getpid()
