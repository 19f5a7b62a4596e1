"""An improve round with the real embedded model, through the real CLI, with the default
collection (``samples``: the model's own verified replies): sampling, LoRA training,
evaluation, drift, the paired gate, and what is left on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.answer_format import normalize_reply
from finetune.registry import AdapterRegistry
from memory.store import open_store
from orchestrator.gate import decide, pair
from tests.support import cli

pytestmark = pytest.mark.model

ONE_DIGIT = "min_terms=2:max_terms=2:min_digits=1:max_digits=1"
CONFIG = """
[distill.train]
max_steps = 3
batch_size = 4
[improve]
samples = 3
margin = 0.0
tolerance = 0.5
"""


def test_one_samples_round_with_the_embedded_model(tmp_path: Path) -> None:
    (tmp_path / "selftaught.toml").write_text(CONFIG)
    result = cli("improve", f"rg:products:seed=1000:n=6:{ONE_DIGIT}",
                 "--holdout", f"rg:products:seed=2000:n=4:{ONE_DIGIT}",
                 "--retention", "rg:gcd:seed=3000:n=3:max_value=20",
                 "--rehearsal", f"rg:basic_arithmetic:seed=4000:n=3:{ONE_DIGIT}", "--json",
                 cwd=tmp_path, timeout_s=900)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads(result.stdout)  # one JSON object, nothing else on stdout
    [round_] = report["rounds"]
    assert set(round_) >= {"round", "train_solved", "holdout_before", "holdout_after",
                           "retention_before", "retention_after", "promoted", "adapter"}
    assert result.returncode == (0 if report["promoted_any"] else 1)
    # Progress: the estimate before starting, then each stage.
    assert "estimate for the base evaluation and round 1: ~" in result.stderr
    for stage in ("collecting (samples)", "rehearsing", "distilling", "evaluating candidate",
                  "measuring drift"):
        assert f"round 1: {stage}" in result.stderr
    # One-digit products: the embedded model gets most right alone, so 3 samples per task
    # find right answers to learn from.
    assert round_["collect"] == "samples" and round_["train_solved"] >= 1
    assert round_["adapter"] == "a0001" and 0 < round_["train_pass_at_k"] <= 1

    registry = AdapterRegistry(tmp_path / "home")
    [manifest] = registry.list()
    dataset = manifest.dataset
    assert manifest.base_model == "local/smollm2" and manifest.hyper["max_steps"] == 3
    # Every row is the model's own: sampled or rehearsed without any hint, verified.
    assert dataset.counts_per_label == {"self": dataset.rows} == round_["labels"]
    rows = [json.loads(line) for line in open(dataset.path)]
    with open_store(tmp_path / "home") as store:
        collected = store.trajectories(run_id=round_["collect_run_id"])
        rehearsed = [t for run in manifest.evaluation["gate"]["rehearsal_runs"]
                     for t in store.trajectories(run_id=run)]
    assert {len(t.attempts) for t in collected} == {3}
    verified = {}
    for t in [*collected, *rehearsed]:
        assert all(a.hint is None for a in t.attempts)
        for a in t.attempts:
            if a.verdict.passed:
                verified.setdefault(t.task.id, set()).add(normalize_reply(a.reply, "short", a.answer))
    for row in rows:
        assert row["label"] == "self"
        assert row["completion"][0]["content"] in verified[row["task_id"]]
    assert max(sum(r["task_id"] == t for r in rows) for t in verified) <= 2  # distill.max_per_task

    # The gate: the paired rule applied to the stored per-task outcomes, KL measured.
    evaluation = manifest.evaluation
    holdout = pair(evaluation["holdout"]["incumbent_outcomes"], evaluation["holdout"]["outcomes"])
    retention = pair(evaluation["retention"]["incumbent_outcomes"], evaluation["retention"]["outcomes"])
    assert (holdout.wins, holdout.losses) == (round_["wins"], round_["losses"])
    expected = decide(holdout=holdout, retention=retention, margin=0.0, tolerance=0.5,
                      confidence=0.95, kl=round_["kl"])
    assert round_["promoted"] == expected.promote and round_["p_value"] == expected.p_value
    assert round_["kl"] >= 0 and evaluation["gate"]["kl"] == round_["kl"]
    assert manifest.status == ("champion" if round_["promoted"] else "candidate")

    shown = cli("adapters", "show", "a0001", cwd=tmp_path)
    assert shown.returncode == 0 and f"self {dataset.rows}" in shown.stdout

    # eval: pass@1 of a registered adapter is kept in its manifest, per spec.
    spec = f"rg:products:seed=2000:n=4:{ONE_DIGIT}"
    scored = cli("eval", spec, "--adapter", "a0001", "--json", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr[-2000:]
    result = json.loads(scored.stdout)
    assert (result["adapter"], result["total"]) == ("a0001", 4)
    assert registry.get("a0001").evaluation["eval"][spec]["passed"] == result["passed"]
