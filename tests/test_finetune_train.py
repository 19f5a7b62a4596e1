"""LoRA training through TRL on a tiny model built from a config (CPU, seconds).

The tiny model is a 2-layer Llama with a 32-wide hidden state and a byte-level BPE
tokenizer trained here on the prompts, so nothing is downloaded or converted. One test
(marked ``model``) takes a single step on the real embedded model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.errors import ConfigError
from finetune.dataset import build_rows, write_dataset
from finetune.settings import TrainConfig
from finetune.train import main, resolve_base, train_lora
from core.answer_format import evaluation_messages
from tests.support import QUICK, make_task, make_trajectory

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    trajectories = [make_trajectory(i) for i in range(16)]
    paths = {}
    for method in ("sft", "dpo", "sft+dpo"):
        paths[method] = root / f"{method}.jsonl"
        write_dataset(build_rows(trajectories, method), paths[method])
    return paths


class Recorder:
    """A TrainerCallback that snapshots weights and the first batch."""

    def __init__(self, raise_at_step: int | None = None, error=KeyboardInterrupt):
        from transformers import TrainerCallback

        self.raise_at_step, self.error = raise_at_step, error
        self.before: dict = {}
        self.after: dict = {}
        self.batch = None
        recorder = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kw):
                recorder.before = _snapshot(model)
                recorder.batch = next(iter(train_dataloader))

            def on_step_end(self, args, state, control, **kw):
                stop = recorder.raise_at_step
                if stop is not None and state.global_step >= stop:
                    raise recorder.error("stop here")

            def on_train_end(self, args, state, control, model=None, **kw):
                recorder.after = _snapshot(model)

        self.callback = _Callback()


def _snapshot(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _logits(model, tokenizer):
    text = tokenizer.apply_chat_template(evaluation_messages(make_task(3)), tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return model(**ids).logits


def test_sft_trains_only_lora_weights_on_completions_and_saves_a_working_adapter(
    tiny_base, datasets, tmp_path
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recorder = Recorder()
    out = tmp_path / "adapters" / "a0001"
    result = train_lora(tiny_base, datasets["sft"], out, method="sft", hyper=QUICK,
                        callbacks=[recorder.callback])

    # LoRA weights moved; every base weight is bit-for-bit what it was.
    lora = [n for n in recorder.before if "lora_" in n]
    base = [n for n in recorder.before if "lora_" not in n]
    assert lora and base
    assert any(not torch.equal(recorder.before[n], recorder.after[n]) for n in lora)
    assert all(torch.equal(recorder.before[n], recorder.after[n]) for n in base)
    assert not any(p.requires_grad for n, p in recorder.after.items() if "lora_" not in n)

    # The loss covers only the completion: the prompt's labels are masked.
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    labels = recorder.batch["labels"][0]
    trained = tokenizer.decode(labels[labels != -100])
    assert "You solve problems" not in trained and "What is" not in trained
    assert "Answer:" in trained and trained.rstrip().endswith("<|im_end|>")
    assert labels[0] == -100

    # A finished adapter directory, nothing partial left beside it.
    assert result.adapter_dir == str(out) and result.method == "sft"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    assert [p.name for p in out.parent.iterdir()] == ["a0001"]
    stage = result.stages[0]
    assert (stage.stage, stage.steps, stage.examples) == ("sft", 3, 16)
    assert result.tokens > 0 and result.seconds > 0 and result.tokens_per_s > 0
    assert math.isfinite(result.loss) and result.device == "cpu" and not result.bf16
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == QUICK.lora_r and config["peft_type"] == "LORA"
    targets = {name.rsplit(".", 1)[-1] for name in config["target_modules"]}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

    # Reloaded with peft, the adapter changes the model's output.
    plain = AutoModelForCausalLM.from_pretrained(tiny_base)
    base_logits = _logits(plain, tokenizer)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), str(out))
    assert not torch.allclose(base_logits, _logits(adapted, tokenizer))
    with adapted.disable_adapter():
        assert torch.allclose(base_logits, _logits(adapted, tokenizer))


def test_the_cpu_loss_path_matches_trls_fused_loss(tiny_base, datasets, tmp_path, monkeypatch):
    from finetune import stages

    hyper = QUICK.model_copy(update={"lora_dropout": 0.0, "grad_accum": 2, "max_steps": 2})
    lean = train_lora(tiny_base, datasets["sft"], tmp_path / "lean", hyper=hyper)
    monkeypatch.setattr(stages, "_lean_sft_trainer", lambda base: base)  # TRL as shipped
    fused = train_lora(tiny_base, datasets["sft"], tmp_path / "fused", hyper=hyper)
    assert lean.stages[0].mean_loss == pytest.approx(fused.stages[0].mean_loss, rel=1e-5)
    assert "entropy" in fused.stages[0].metrics  # TRL's own metrics are only on its path


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_an_interruption_mid_training_leaves_no_adapter(tiny_base, datasets, tmp_path, error):
    recorder = Recorder(raise_at_step=1, error=error)
    out = tmp_path / "adapters" / "a0002"
    with pytest.raises(error):
        train_lora(tiny_base, datasets["sft"], out, hyper=QUICK, callbacks=[recorder.callback])
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no .partial directory either


def test_sft_then_dpo_starts_from_the_sft_adapter(tiny_base, datasets, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "a0003"
    hyper = QUICK.model_copy(update={"max_steps": 2})
    result = train_lora(tiny_base, datasets["sft+dpo"], out, method="sft+dpo", hyper=hyper)
    assert [s.stage for s in result.stages] == ["sft", "dpo"]
    dpo = result.stages[1]
    assert dpo.examples == 16 and dpo.steps == 2 and "rewards/accuracies" in dpo.metrics
    assert result.tokens == sum(s.tokens for s in result.stages)
    # Only the trained adapter is saved, not DPO's frozen reference copy.
    assert not (out / "ref").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a0003"]
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), str(out))
    assert list(adapted.peft_config) == ["default"]


def test_training_can_continue_an_adapter_and_leaves_that_adapter_as_it_was(tiny_base, datasets, tmp_path):
    from safetensors.torch import load_file

    fresh = Recorder()
    first = tmp_path / "a0001"
    train_lora(tiny_base, datasets["sft"], first, hyper=QUICK, callbacks=[fresh.callback])
    saved = {name.replace(".weight", ".default.weight"): tensor
             for name, tensor in load_file(first / "adapter_model.safetensors").items()}
    files = {p.name: p.read_bytes() for p in first.iterdir()}

    continued = Recorder()
    hyper = QUICK.model_copy(update={"lora_r": 4})  # the adapter's own rank (16) applies
    result = train_lora(tiny_base, datasets["sft"], tmp_path / "a0002", hyper=hyper,
                        init_adapter=first, callbacks=[continued.callback])

    # A new adapter starts with lora_B at zero; a continued one starts at a0001's weights.
    assert all(not fresh.before[n].any() for n in fresh.before if "lora_B" in n)
    start = {n: t for n, t in continued.before.items() if "lora_" in n}
    assert start.keys() == saved.keys()
    assert all(torch.equal(start[n], saved[n]) for n in saved)
    assert any(not torch.equal(continued.after[n], saved[n]) for n in saved)  # and trained on
    assert all(torch.equal(continued.before[n], continued.after[n])
               for n in continued.before if "lora_" not in n)  # the base stays frozen
    assert {p.name: p.read_bytes() for p in first.iterdir()} == files  # a0001 untouched
    config = json.loads((Path(result.adapter_dir) / "adapter_config.json").read_text())
    assert config["r"] == QUICK.lora_r


def test_dpo_alone_trains_on_pairs(tiny_base, datasets, tmp_path):
    hyper = QUICK.model_copy(update={"max_steps": 1, "dpo_learning_rate": 1e-3})
    result = train_lora(tiny_base, datasets["dpo"], tmp_path / "a0004", method="dpo", hyper=hyper)
    assert [s.stage for s in result.stages] == ["dpo"] and result.stages[0].steps == 1
    assert (tmp_path / "a0004" / "adapter_model.safetensors").is_file()


def test_bad_requests_are_config_errors_before_any_training(tiny_base, datasets, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        train_lora(tiny_base, datasets["sft"], taken)
    with pytest.raises(ConfigError, match="unknown training method"):
        train_lora(tiny_base, datasets["sft"], tmp_path / "x", method="ppo")
    with pytest.raises(ConfigError, match="preference pairs"):
        train_lora(tiny_base, datasets["sft"], tmp_path / "x", method="dpo")
    with pytest.raises(ConfigError, match="not a Hugging Face model directory"):
        train_lora(tmp_path, datasets["sft"], tmp_path / "x")
    with pytest.raises(ConfigError, match="not a LoRA adapter directory"):
        train_lora(tiny_base, datasets["sft"], tmp_path / "x", init_adapter=taken)
    with pytest.raises(ConfigError, match="distillation needs local weights"):
        resolve_base("openai/gpt-4o-mini")
    with pytest.raises(ValidationError):
        TrainConfig(lora_r=0)
    with pytest.raises(ValidationError):
        TrainConfig(unknown_field=1)  # extra="forbid"
    assert not (tmp_path / "x").exists()


def test_command_line_entry_point(tiny_base, datasets, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "--lora-dropout" in capsys.readouterr().out
    out = tmp_path / "cli-adapter"
    args = ["--base", str(tiny_base), "--data", str(datasets["sft"]), "--out", str(out)]
    code = main(args + ["--max-steps", "1", "--batch-size", "2", "--lora-r", "4",
                        "--no-gradient-checkpointing"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)  # stdout holds the result and nothing else
    assert printed["adapter_dir"] == str(out) and printed["hyper"]["lora_r"] == 4
    assert main(args) == 2  # out exists: ConfigError, exit 2
    assert main(args[:-1] + [str(tmp_path / "other"), "--lora-r", "0"]) == 2  # invalid setting
    capsys.readouterr()
    further = tmp_path / "continued"
    code = main(args[:-1] + [str(further), "--init-adapter", str(out), "--max-steps", "1",
                             "--batch-size", "2"])
    assert code == 0
    assert json.loads((further / "adapter_config.json").read_text())["r"] == 4  # out's rank
    assert main(args[:-1] + [str(tmp_path / "bad"), "--init-adapter", str(tmp_path)]) == 2
    assert "not a LoRA adapter directory" in capsys.readouterr().err


def test_python_dash_m_runs_the_entry_point(tiny_base, datasets, tmp_path):
    # The launch shape of `accelerate launch -m finetune.train` and `torchrun -m`.
    import os
    import subprocess
    import sys

    out = tmp_path / "module-adapter"
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "finetune.train", "--base", str(tiny_base), "--data",
         str(datasets["sft"]), "--out", str(out), "--max-steps", "1", "--batch-size", "2"],
        cwd=repo, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["adapter_dir"] == str(out)
    assert (out / "adapter_config.json").is_file()


@pytest.mark.model
def test_resolve_base_gives_the_embedded_model_and_one_step_trains(datasets, tmp_path):
    base = resolve_base("local/smollm2")
    assert (base / "config.json").is_file() and (base / "tokenizer.json").is_file()
    hyper = TrainConfig(max_steps=1, batch_size=2, max_length=128)
    result = train_lora("local/smollm2", datasets["sft"], tmp_path / "real", hyper=hyper)
    assert result.base == str(base) and result.stages[0].steps == 1
    assert math.isfinite(result.loss) and result.loss < 10
