"""The trainer stages of ``finetune.train.train_lora``: one TRL trainer run each (SFT,
DPO), from loading the base model to saving the adapter.

``train_sft`` and ``train_dpo`` take the base model directory, the rows of their kind
(metadata columns already dropped), the directory to save the adapter in and the run's
``TrainConfig``; each returns a ``StageResult``. Imported only when training (torch,
transformers, peft, TRL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from core.errors import ConfigError
from finetune.settings import StageResult, TrainConfig


def _load(base_dir: Path, bf16: bool):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"base model {base_dir} has no chat template; conversational training needs one "
            "(use an instruction-tuned model)"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        base_dir, dtype=torch.bfloat16 if bf16 else torch.float32, local_files_only=True
    )
    return model, tokenizer


def _lora_config(hyper: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=hyper.lora_r, lora_alpha=hyper.lora_alpha, lora_dropout=hyper.lora_dropout,
        target_modules=hyper.target_modules, bias="none", task_type="CAUSAL_LM",
    )


def _trainer_args(hyper: TrainConfig, work: Path, device: str, bf16: bool, lr: float) -> dict:
    return dict(
        output_dir=str(work),
        num_train_epochs=hyper.epochs,
        max_steps=hyper.max_steps or -1,
        per_device_train_batch_size=hyper.batch_size,
        gradient_accumulation_steps=hyper.grad_accum,
        learning_rate=lr,
        max_length=hyper.max_length,
        seed=hyper.seed,
        data_seed=hyper.seed,
        bf16=bf16,
        fp16=False,
        use_cpu=device == "cpu",
        **_checkpointing(hyper.gradient_checkpointing),
        logging_steps=hyper.logging_steps,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        push_to_hub=False,
        dataloader_pin_memory=device == "cuda",
    )


def _checkpointing(enabled: bool) -> dict:
    """transformers 5 renamed gradient checkpointing to activation checkpointing (the old
    name warns); TRL defaults it to on, so it is always set explicitly."""
    from transformers import TrainingArguments

    if "activation_checkpointing" in TrainingArguments.__dataclass_fields__:
        return {"activation_checkpointing": enabled}
    return {"gradient_checkpointing": enabled}


def _start(model, hyper: TrainConfig, start_from: Path | None):
    """(model, peft_config) for a trainer: a new LoRA adapter from ``hyper``, or the
    adapter at ``start_from`` loaded trainable (its own LoRA settings apply)."""
    if start_from is None:
        return model, _lora_config(hyper)
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(start_from), is_trainable=True), None


def train_sft(base_dir, rows, save_dir, hyper, device, bf16, callbacks, start_from=None) -> StageResult:
    """LoRA SFT on prompt-completion ``rows``; the loss covers the completions only. A new
    adapter, or, with ``start_from`` (an adapter directory), that adapter trained further."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = _load(base_dir, bf16)
    model, peft_config = _start(model, hyper, start_from)
    args = SFTConfig(
        **_trainer_args(hyper, save_dir.parent / "work-sft", device, bf16, hyper.learning_rate),
        completion_only_loss=True,  # TRL's default for prompt-completion; stated, not assumed
    )
    trainer = _lean_sft_trainer(SFTTrainer)(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        peft_config=peft_config, callbacks=list(callbacks),
    )
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    return run_stage("sft", trainer, save_dir, tokens)


def _lean_sft_trainer(base: type) -> type:
    """``SFTTrainer`` computing the loss with transformers' plain causal-LM loss on
    devices where TRL's fused LM head has no Triton kernel (CPU, MPS).

    Off Triton, the fused head scores every position (prompt included) in chunks and
    recomputes them in the backward pass, which makes a step markedly slower than with
    the plain loss. The labels are the same (TRL masks the prompt with
    -100 when it tokenizes), so the loss is the same; only TRL's entropy and token
    accuracy metrics are not logged there."""
    from transformers import Trainer

    class LeanSFTTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.accelerator.device.type in ("cuda", "xpu"):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return LeanSFTTrainer


def train_dpo(base_dir, rows, save_dir, hyper, device, bf16, callbacks, start_from) -> StageResult:
    """DPO on preference ``rows``: a new LoRA adapter, or, with ``start_from`` (an SFT
    adapter directory), that adapter trained further with itself as the reference."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = _load(base_dir, bf16)
    # From an adapter, DPOTrainer copies it into a frozen "ref" adapter: the SFT model is
    # both the starting point and the reference.
    model, peft_config = _start(model, hyper, start_from)
    args = DPOConfig(
        **_trainer_args(hyper, save_dir.parent / "work-dpo", device, bf16, hyper.dpo_learning_rate),
        beta=hyper.dpo_beta,
    )
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        peft_config=peft_config, callbacks=list(callbacks),
    )
    data = trainer.train_dataset
    columns = zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"], strict=True)
    tokens = sum(2 * len(p) + len(c) + len(r) for p, c, r in columns)
    return run_stage("dpo", trainer, save_dir, tokens)


def run_stage(stage: Literal["sft", "dpo"], trainer, save_dir: Path, dataset_tokens: int) -> StageResult:
    """Train, save the "default" adapter only (not DPO's "ref" copy) to ``save_dir``."""
    output = trainer.train()
    # Collective under DeepSpeed/FSDP (every rank must call it); a plain dict otherwise.
    state_dict = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.accelerator.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.save_pretrained(str(save_dir), state_dict=state_dict, selected_adapters=["default"])
    trainer.accelerator.wait_for_everyone()
    epochs = float(trainer.state.epoch or 0.0)
    seconds = float(output.metrics.get("train_runtime", 0.0))
    tokens = int(round(dataset_tokens * epochs))
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    last = logged[-1] if logged else {}
    return StageResult(
        stage=stage,
        examples=len(trainer.train_dataset),
        steps=int(trainer.state.global_step),
        epochs=epochs,
        tokens=tokens,
        seconds=seconds,
        tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        loss=float(last.get("loss", output.training_loss)),
        mean_loss=float(output.training_loss),
        metrics={k: float(v) for k, v in last.items() if isinstance(v, int | float)},
    )
