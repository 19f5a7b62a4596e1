"""The vector memory end to end with the real embedded model, through the installed CLI:
``run`` on training tasks stores cases, ``run`` on similar held-out tasks retrieves them
(the ids are in the trajectories and in ``memory export``), ``--no-memory`` retrieves and
stores nothing."""

from __future__ import annotations

import json

import pytest

from memory.bank import MemoryBank
from memory.store import open_store
from tests.support import cli

pytestmark = pytest.mark.model
SPEC = "rg:basic_arithmetic:min_terms=2:max_terms=2:min_digits=1:max_digits=1"


def test_a_run_on_held_out_tasks_retrieves_what_a_training_run_stored(tmp_path):
    # Reference hints answer-only and revealed cases allowed: every training task ends
    # verified fast, so the held-out run is sure to find cases (what is measured with
    # the default settings is in benchmarks/RESULTS.md).
    (tmp_path / "selftaught.toml").write_text(
        '[loop]\nmax_attempts = 2\nreply_max_tokens = 32\nreference_hint = "answer"\n'
        "[run]\nconcurrency = 4\n[memory]\nrevealed_cases = true\n")
    train = cli("run", f"{SPEC}:n=4:seed=500", "--hints", "reference", "--json", cwd=tmp_path, timeout_s=900)
    assert train.returncode == 0, train.stderr[-3000:]
    trained = json.loads(train.stdout)
    assert trained["solved"] >= 1 and trained["memory"]["cases_learned"] >= 1

    held = cli("run", f"{SPEC}:n=3:seed=900", "--hints", "none", "--max-attempts", "1", "--json",
               cwd=tmp_path, timeout_s=900)
    assert held.returncode == 0, held.stderr[-3000:]
    summary = json.loads(held.stdout)
    assert summary["memory"]["with_memory"] == 3
    with open_store(tmp_path / "home") as store:
        trajectories = store.trajectories(run_id=summary["run_id"])
    with MemoryBank(tmp_path / "home") as bank:
        for t in trajectories:
            assert t.retrieved and all(bank.get(i) is not None for i in t.retrieved)
            shown = {c.prompt for c in map(bank.get, t.retrieved) if hasattr(c, "reply")}
            assert t.task.prompt not in shown  # never the task itself
            assert any(m["content"].startswith(tuple(shown)) for m in t.attempts[0].messages[1:-1])
        learned = bank.counts()

    export = tmp_path / "out.jsonl"
    done = cli("memory", "export", str(export), "--run", summary["run_id"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert sorted(line["retrieved"] for line in lines) == sorted(t.retrieved for t in trajectories)

    off = cli("run", f"{SPEC}:n=1:seed=950", "--no-memory", "--hints", "none", "--max-attempts", "1",
              "--json", cwd=tmp_path, timeout_s=900)
    assert off.returncode == 0, off.stderr[-3000:]
    assert json.loads(off.stdout)["memory"] is None
    with open_store(tmp_path / "home") as store:
        assert all(t.retrieved == [] for t in store.trajectories(run_id=json.loads(off.stdout)["run_id"]))
    with MemoryBank(tmp_path / "home") as bank:
        assert bank.counts() == learned  # nothing stored, nothing logged
