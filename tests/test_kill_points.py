"""kill -9 at points in ``run``, ``improve``, ``session`` and ``worker`` (real processes):
nothing stored is lost or doubled, the killed run is listed as interrupted (never left
running), the registry never lists a half-written adapter, and every resume works.
A handful of points here; benchmarks/bench_reliability.py sweeps 20 in each."""

from __future__ import annotations

import json
import random

import pytest

from memory.store import open_store
from orchestrator.config import Config
from orchestrator.evaluate import EVAL_STORE
from orchestrator.runs import list_runs
from orchestrator.schedule import show_job
from tests.fake_provider import FakeOpenAI
from tests.kill_harness import (JOB, add_worker_job, job_runs, kill_on_replace_env, lost,
                                registry_problems, rest_of_script, run_to_end,
                                run_worker_until_done, session_files, session_id,
                                start_and_kill, store_rows, tiny_improve)
from tests.support import jsonl

KEY = "sk-test-" + "k1ll" * 8


@pytest.mark.enable_socket
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_run_killed_at_random_points_then_resumed_loses_and_doubles_nothing(tmp_path):
    (tmp_path / "selftaught.toml").write_text(
        '[models]\ngenerator = "openai/fake"\n[loop]\nhints = "none"\nmax_attempts = 2\n'
        "[run]\nconcurrency = 2\n")
    tasks = jsonl(tmp_path / "tasks.jsonl", [
        {"id": f"q{i}", "prompt": f"Question {i}?", "answer": 42 if i % 2 else 41}
        for i in range(12)])
    db = tmp_path / "home" / "selftaught.db"
    rng = random.Random(15)
    with FakeOpenAI(delay_s=0.25) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": KEY,
               "SELFTAUGHT_HOME": str(tmp_path / "home")}
        args = ["run", str(tasks), "--json"]
        run_id = None
        for _ in range(3):
            before = store_rows(db)
            outcome = start_and_kill(args, cwd=tmp_path, env=env, stage="tasks (",
                                     delay_s=rng.uniform(0.2, 2.5))
            after = store_rows(db)
            assert lost(before, after) == 0
            if not outcome.killed:
                break
            run_id = run_id or outcome.stderr.split("run ", 1)[1].split(":", 1)[0].strip()
            args = ["run", "--resume", run_id, "--json"]
        final = run_to_end(args, cwd=tmp_path, env=env)
    assert final.returncode == 0, final.stderr[-3000:]
    summary = json.loads(final.stdout)
    assert summary["solved"] + summary["unsolved"] == 12 and summary["unfinished"] == 0
    rows = store_rows(db)
    assert len(rows) == 12 and len(set(rows.values())) == 12


def test_improve_killed_inside_promotion_keeps_a_whole_registry_and_reruns(tmp_path, tiny_base):
    args = tiny_improve(tmp_path, tiny_base, train=8, holdout=4)
    home = tmp_path / "home"
    db = home / "selftaught.db"
    env = {"SELFTAUGHT_HOME": str(home)}

    # The registry's third index write in a round is the promotion (add, set_eval, promote).
    hook = kill_on_replace_env(tmp_path / "hook", "registry.json", 3, "after")
    promoting = run_to_end(args, cwd=tmp_path, env={**env, **hook})
    assert promoting.killed and "evaluating candidate" in promoting.stderr, promoting.stderr[-2000:]
    assert registry_problems(home) == []
    before = store_rows(db)
    assert len(before) == 8
    index = json.loads((home / "adapters" / "registry.json").read_text())["adapters"]
    assert [m["status"] for m in index.values()].count("champion") == 1

    final = run_to_end(args, cwd=tmp_path, env=env)
    assert final.returncode == 0, final.stderr[-3000:]
    assert json.loads(final.stdout)["promoted_any"] is True
    after = store_rows(db)
    assert lost(before, after) == 0 and len(after) == 8 * 2  # two collection runs
    assert registry_problems(home) == []


@pytest.mark.enable_socket
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_session_killed_at_random_points_then_resumed_with_the_rest_of_its_script(tmp_path):
    tasks, lines = session_files(tmp_path, 6)
    home = tmp_path / "home"
    db = home / "selftaught.db"
    rng = random.Random(18)
    with FakeOpenAI(delay_s=0.2) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": KEY,
               "SELFTAUGHT_HOME": str(home)}
        args = ["session", str(tasks), "--script", str(jsonl(tmp_path / "script.jsonl", lines)),
                "--no-memory"]
        sid, kills = None, 0
        for point in range(2):
            before = store_rows(db)
            outcome = start_and_kill(args, cwd=tmp_path, env=env, stage="session ",
                                     delay_s=rng.uniform(0.3, 2.5))
            after = store_rows(db)
            assert lost(before, after) == 0
            if not outcome.killed:
                break
            kills += 1
            sid = sid or session_id(outcome.stdout)
            assert sid is not None, outcome.stdout[-2000:]
            # Listed as interrupted at once (its process is gone), not running.
            (listed,) = [r for r in list_runs(Config(home=home)) if r.run_id == sid]
            assert listed.kind == "session" and listed.status == "interrupted"
            recorded = {task for run, task in after if run == sid}
            rest = jsonl(tmp_path / f"rest{point}.jsonl", rest_of_script(lines, recorded))
            args = ["session", "--resume", sid, "--script", str(rest), "--no-memory"]
        assert kills, "no kill landed inside the session"
        before = store_rows(db)
        final = run_to_end(args, cwd=tmp_path, env=env)
    assert final.returncode == 0, final.stderr[-3000:]
    assert f"session {sid} finished" in " ".join(final.stdout.split()), final.stdout[-2000:]
    rows = store_rows(db)
    assert lost(before, rows) == 0
    assert sorted(task for run, task in rows if run == sid) == [f"q{i}" for i in range(6)]
    assert len(set(rows.values())) == len(rows)
    with open_store(home) as store:
        assert store.get_run(sid).status == "finished"
        by_task = {t.task.id: t for t in store.trajectories(run_id=sid)}
    # The script's decisions reached the records, once each: a person's hint on q0, the
    # proposed hint accepted on q2, a person's verdict on q4.
    assert by_task["q0"].attempts[0].hint.source == "person" and len(by_task["q0"].attempts) == 2
    assert by_task["q2"].attempts[0].hint.source == "model" and by_task["q2"].outcome == "unsolved"
    assert by_task["q4"].attempts[-1].verdict.source == "person" and by_task["q4"].outcome == "solved"
    assert by_task["q1"].outcome == "solved"


def test_worker_killed_mid_evaluation_and_inside_promotion_then_the_next_worker_completes(tmp_path, tiny_base):
    home = tmp_path / "home"
    env = {"SELFTAUGHT_HOME": str(home)}
    add_worker_job(tmp_path, tiny_base, env, train=4, holdout=2)
    # 1: a second into the first stage; 2: inside the round's third registry write, the
    # promotion (add, set_eval, promote), by the hook (if it never fired: after the run).
    points = [("evaluation", "evaluating the base model", 1.0, {}),
              ("promotion", f"job {JOB}: done;", 0.0,
               kill_on_replace_env(tmp_path / "hook", "registry.json", 3, "before"))]
    stores = [home / "selftaught.db", home / EVAL_STORE]
    for where, stage, delay, hook in points:
        before = [store_rows(db) for db in stores]
        outcome = start_and_kill(["worker"], cwd=tmp_path, env={**env, **hook}, stage=stage,
                                 delay_s=delay)
        assert outcome.killed, (where, outcome.stderr[-2000:])
        assert registry_problems(home) == [], where
        assert [lost(b, store_rows(db)) for b, db in zip(before, stores)] == [0, 0], where
        killed = job_runs(home)[0]
        assert killed.outcome == "running", where  # as stored: nobody could record it
        # ... but every listing shows it interrupted, and no run is left running.
        (shown,) = [r for r in show_job(Config(home=home), JOB).runs if r.run_id == killed.run_id]
        assert shown.outcome == "interrupted", where
        assert all(r.status != "running" for r in list_runs(Config(home=home))), where

    before = [store_rows(db) for db in stores]
    index = json.loads((home / "adapters" / "registry.json").read_text())["adapters"]
    assert [m["status"] for m in index.values()] == ["candidate"]  # killed before promoting
    final = run_worker_until_done(tmp_path, env)
    assert final.returncode == 0, final.stderr[-3000:]
    assert registry_problems(home) == []
    after = [store_rows(db) for db in stores]
    assert [lost(b, a) for b, a in zip(before, after)] == [0, 0]
    assert all(len(set(a.values())) == len(a) for a in after)
    assert len(after[0]) > len(before[0])  # the completed run collected
    runs = job_runs(home)
    assert "done" in [r.outcome for r in runs]
    assert sum(r.outcome == "interrupted" and r.reason == "the process running it died"
               for r in runs) >= 2  # both killed runs, recorded by the next worker
    assert all(r.outcome != "running" for r in runs)
    done = next(r for r in runs if r.outcome == "done")
    assert done.promoted and done.champion_after in done.promoted
