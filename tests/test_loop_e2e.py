"""The loop with the real embedded model: trajectories field by field, and a real
``selftaught run`` process killed with SIGKILL and resumed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.answer_format import evaluation_messages
from core.answer_format import extract_answer
from critics.registry import verify
from core.records import RunRecord
from memory.store import SQLiteStore
from orchestrator.config import Config, LoopConfig, RunConfig
from orchestrator.runner import build_models, execute_run
from orchestrator.suites import load_tasks
from tests.support import stored_count

pytestmark = pytest.mark.model
SELFTAUGHT = str(Path(sys.executable).parent / "selftaught")


async def test_real_model_run_stores_complete_trajectories(tmp_path):
    tasks = load_tasks("rg:basic_arithmetic:n=4:seed=3:min_terms=2:max_terms=2:min_digits=1:max_digits=1")
    config = Config(home=tmp_path, loop=LoopConfig(max_attempts=2, hints="critique", reply_max_tokens=48),
                    run=RunConfig(concurrency=4))
    store = SQLiteStore(tmp_path / "t.db")
    run = RunRecord(run_id="e2e", tasks_spec="rg:basic_arithmetic", settings={}, total=len(tasks))
    store.create_run(run)
    summary = await execute_run(config, tasks, store, run, models=build_models(config))

    trajectories = store.trajectories(run_id="e2e")
    assert sorted(t.task.id for t in trajectories) == sorted(t.id for t in tasks)
    assert summary.solved + summary.unsolved == 4 and summary.errors == []
    for t in trajectories:
        assert t.run_id == "e2e" and t.hint_policy == "critique"
        assert t.generator_model == t.critic_model == t.hint_model == "local/smollm2"
        assert 1 <= len(t.attempts) <= 2
        assert [a.index for a in t.attempts] == list(range(1, len(t.attempts) + 1))
        for a in t.attempts:
            assert a.error is None and a.model == "local/smollm2"
            assert a.messages[:2] == evaluation_messages(t.task)  # the evaluation prompt
            assert a.reply.strip(), "the raw reply is kept"
            assert a.answer == extract_answer(a.reply, answer_format="short")
            again = await verify(a.answer, t.task.verifier)
            assert again.passed == a.verdict.passed and again.score == a.verdict.score
            assert a.prompt_tokens > 0 and a.completion_tokens > 0 and a.latency_s > 0
        *failed, last = t.attempts
        for a in failed:
            assert not a.verdict.passed
            assert a.critique and a.critique_model == "local/smollm2"
            assert a.hint.text and a.hint.source == "model" and a.hint.author == "local/smollm2"
        assert (t.outcome == "solved") == last.verdict.passed
        assert t.stop_reason == ("verified" if last.verdict.passed else "max_attempts")
        assert t.tokens >= sum(a.prompt_tokens + a.completion_tokens for a in t.attempts)
        assert t.seconds > 0


def test_killed_run_resumes_without_losing_or_doubling(tmp_path):
    (tmp_path / "selftaught.toml").write_text(
        '[loop]\nmax_attempts = 2\nhints = "none"\nreply_max_tokens = 24\n[run]\nconcurrency = 2\n')
    env = {**os.environ, "SELFTAUGHT_HOME": str(tmp_path / "home")}
    spec = "rg:basic_arithmetic:n=8:seed=5:min_terms=2:max_terms=2:min_digits=1:max_digits=1"
    proc = subprocess.Popen([SELFTAUGHT, "run", spec, "--json"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = tmp_path / "home" / "selftaught.db"
    deadline = time.monotonic() + 300
    while stored_count(db) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {row[0]: row[1] for row in sqlite3.connect(db).execute("SELECT task_id, id FROM trajectories")}
    assert 2 <= len(before) < 8

    listed = subprocess.run([SELFTAUGHT, "runs", "list", "--json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, check=True)
    [run] = json.loads(listed.stdout)["runs"]
    assert run["status"] == "interrupted" and run["done"] == len(before)  # its process is gone

    resumed = subprocess.run([SELFTAUGHT, "run", "--resume", run["run_id"], "--json"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout)
    assert summary["run_id"] == run["run_id"] and summary["total"] == 8
    assert summary["solved"] + summary["unsolved"] == 8
    rows = sqlite3.connect(db).execute("SELECT task_id, id FROM trajectories").fetchall()
    assert len(rows) == 8 and len({task for task, _ in rows}) == 8
    assert all(dict(rows)[task] == tid for task, tid in before.items()), "finished tasks were not redone"
