"""kill -9 at points in ``run`` and ``improve`` (real processes): nothing stored is lost
or doubled, the registry never lists a half-written adapter, and every resume works.
A handful of points here; benchmarks/bench_reliability.py sweeps 20 in each."""

from __future__ import annotations

import json
import random

import pytest

from tests.fake_provider import FakeOpenAI
from tests.kill_harness import (kill_on_replace_env, lost, registry_problems, run_to_end,
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
