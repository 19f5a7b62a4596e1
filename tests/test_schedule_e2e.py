"""A scheduled improve job with the real embedded model, through the real CLI: added,
run in the foreground, recorded with every token the model spent, and drawn by
``selftaught report``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from finetune.registry import AdapterRegistry
from memory.store import open_store
from orchestrator.evaluate import EVAL_STORE
from tests.support import cli

pytestmark = pytest.mark.model

ARITH = "min_terms=2:max_terms=2:min_digits=1:max_digits=1"
CONFIG = """
[loop]
max_attempts = 2
reply_max_tokens = 32
feedback_max_tokens = 32
reference_hint = "answer"
[distill.train]
max_steps = 2
batch_size = 4
[improve]
margin = 0.0
tolerance = 0.5
confidence = 0.0
collect = "reference"
"""


def test_a_scheduled_job_with_the_embedded_model_is_recorded_and_reported(tmp_path: Path) -> None:
    (tmp_path / "selftaught.toml").write_text(CONFIG)
    added = cli("schedule", "add", "nightly", "--cron", "0 3 * * *", "--max-tokens", "200000", "--",
                f"rg:basic_arithmetic:seed=1000:n=4:{ARITH}",
                "--holdout", f"rg:basic_arithmetic:seed=2000:n=3:{ARITH}", cwd=tmp_path)
    assert added.returncode == 0, added.stderr[-2000:]

    ran = cli("schedule", "run", "nightly", "--json", cwd=tmp_path, timeout_s=900)
    run = json.loads(ran.stdout)
    assert ran.returncode == 0 and run["outcome"] == "done", ran.stderr[-3000:]
    assert "round 1: distilling" in ran.stderr and run["rounds"] == 1 and run["cause"] == "manual"
    home = tmp_path / "home"
    registry = AdapterRegistry(home)
    [candidate] = registry.list()
    [result] = run["adapters"]
    assert result["adapter"] == candidate.name == "a0001"
    assert result["holdout_after"] == candidate.evaluation["holdout"]["pass_at_1"]
    assert result["promoted"] == (candidate.status == "champion") == (run["promoted"] == ["a0001"])
    # The local model's usage, counted call by call, is exactly what the trajectories
    # recorded (collection in the store, evaluation in evals.db); it costs nothing.
    with open_store(home) as store, open_store(home, EVAL_STORE) as evals:
        stored = sum(t.tokens for s in (store, evals) for t in s.trajectories())
    assert run["prompt_tokens"] + run["completion_tokens"] == stored > 0
    assert run["cost_usd"] == 0.0 and run["calls"] >= 4 + 3 * 2  # collection, two evaluations
    assert Path(run["log"]).is_file() and "done; 1 round(s)" in Path(run["log"]).read_text()

    drawn = cli("report", "--json", cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    report = json.loads(drawn.stdout)
    page = Path(report["files"]["html"]).read_text()
    pngs = {Path(p).name for k, p in report["files"].items() if k != "html"}
    assert set(re.findall(r"<img src='([^']+)'", page)) == pngs
    assert {"holdout.png", "solved_at.png", "spend.png"} == pngs  # no retention suite
    holdout = report["holdout"]
    assert holdout["points"] == ["base", "a0001"]
    [series] = holdout["series"]
    assert series["values"] == [candidate.evaluation["holdout"]["incumbent_per_family"]["basic_arithmetic"],
                                candidate.evaluation["holdout"]["per_family"]["basic_arithmetic"]]
    assert [j["run_id"] for j in report["job_runs"]] == [run["run_id"]]
    assert report["spend"][0]["tokens"] == stored
