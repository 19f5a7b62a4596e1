"""An improve round with the real embedded model, through the real CLI: collection
with reference hints, LoRA training, evaluation, the gate, and what is left on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.registry import AdapterRegistry
from orchestrator.gate import decide
from tests.support import cli

pytestmark = pytest.mark.model

ARITH = "min_terms=2:max_terms=2:min_digits=1:max_digits=1"
CONFIG = """
[loop]
max_attempts = 2
reply_max_tokens = 40
feedback_max_tokens = 32
[run]
concurrency = 8
[distill.train]
max_steps = 4
batch_size = 4
[improve]
margin = 0.0
tolerance = 0.5
"""


def test_one_improve_round_with_the_embedded_model(tmp_path: Path) -> None:
    (tmp_path / "selftaught.toml").write_text(CONFIG)
    result = cli("improve", f"rg:basic_arithmetic:seed=1000:n=8:{ARITH}",
                 "--holdout", f"rg:basic_arithmetic:seed=2000:n=4:{ARITH}",
                 "--retention", "rg:gcd:seed=3000:n=3:max_value=20",
                 "--rehearsal", f"rg:products:seed=4000:n=4:{ARITH}", "--json",
                 cwd=tmp_path, timeout_s=900)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads(result.stdout)  # one JSON object, nothing else on stdout
    [round_] = report["rounds"]
    assert set(round_) >= {"round", "train_solved", "holdout_before", "holdout_after",
                           "retention_before", "retention_after", "promoted", "adapter"}
    assert result.returncode == (0 if report["promoted_any"] else 1)
    assert "round 1: distilling" in result.stderr
    # With reference hints the embedded model solves some training tasks (it is shown
    # the answer), so there is something to distill.
    assert round_["train_solved"] >= 1 and round_["adapter"] == "a0001"

    registry = AdapterRegistry(tmp_path / "home")
    [manifest] = registry.list()
    assert manifest.name == "a0001" and manifest.base_model == "local/smollm2"
    assert manifest.method == "sft" and manifest.train_loss is not None
    assert manifest.hyper["max_steps"] == 4
    assert manifest.dataset.rows == manifest.dataset.sft_rows >= 1
    # Rehearsal: the base model answered one-digit products alone (it gets most of them
    # right), and those it got right joined the training data.
    assert round_["rehearsal_total"] == 4 and 1 <= round_["rehearsal_kept"] <= 4
    assert "round 1: rehearsing" in result.stderr
    counts = manifest.dataset.counts_per_family
    assert set(counts) == {"basic_arithmetic", "products"}
    assert 1 <= counts["products"] <= round_["rehearsal_kept"]
    assert counts["basic_arithmetic"] <= round_["train_solved"]
    adapter_dir = registry.path("a0001")
    assert (adapter_dir / "adapter_model.safetensors").stat().st_size > 0
    on_disk = json.loads((adapter_dir / "manifest.json").read_text())
    assert on_disk["name"] == "a0001" and on_disk["evaluation"]["gate"]["promote"] == round_["promoted"]

    # The decision is the gate's rule applied to the reported numbers, and the registry
    # agrees with it.
    expected = decide(holdout_before=round_["holdout_before"], holdout_after=round_["holdout_after"],
                      retention_before=round_["retention_before"],
                      retention_after=round_["retention_after"], margin=0.0, tolerance=0.5)
    assert round_["promoted"] == expected.promote
    assert manifest.evaluation["holdout"]["total"] == 4
    assert manifest.evaluation["retention"]["total"] == 3
    assert manifest.evaluation["holdout"]["pass_at_1"] == round_["holdout_after"]
    assert manifest.status == ("champion" if round_["promoted"] else "candidate")
    assert (registry.champion() is not None) == round_["promoted"]

    listed = cli("adapters", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0
    assert json.loads(listed.stdout)["champion"] == ("a0001" if round_["promoted"] else None)

    # eval: pass@1 of a registered adapter is kept in its manifest, per spec.
    holdout = f"rg:basic_arithmetic:seed=2000:n=4:{ARITH}"
    scored = cli("eval", holdout, "--adapter", "a0001", "--json", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr[-2000:]
    result = json.loads(scored.stdout)
    assert (result["adapter"], result["total"]) == ("a0001", 4)
    assert result["pass_at_1"] == result["passed"] / 4
    assert registry.get("a0001").evaluation["eval"][holdout]["passed"] == result["passed"]
    base = json.loads(cli("eval", holdout, "--adapter", "none", "--json", cwd=tmp_path).stdout)
    assert base["adapter"] == "none" and base["total"] == 4
