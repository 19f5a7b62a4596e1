"""Training settings and results: pydantic records, no torch.

Light on purpose: the configuration (``orchestrator.config``) embeds ``TrainConfig``,
and loading a configuration must not import the trainer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Method = Literal["sft", "dpo", "sft+dpo"]
METHODS: tuple[str, ...] = ("sft", "dpo", "sft+dpo")


class TrainConfig(BaseModel):
    """LoRA and optimizer settings for one training run."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    lora_r: int = Field(16, ge=1)
    """LoRA rank."""
    lora_alpha: int = Field(32, ge=1)
    """LoRA scaling numerator (the update is scaled by ``lora_alpha / lora_r``)."""
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    """Dropout on the LoRA branch during training."""
    target_modules: str | list[str] = "all-linear"
    """Modules that get LoRA: ``"all-linear"`` (every linear layer but the output head)
    or a list of module names such as ``["q_proj", "v_proj"]``."""
    learning_rate: float = Field(2e-4, gt=0.0)
    """Peak learning rate for SFT (linear decay to zero)."""
    dpo_learning_rate: float = Field(5e-5, gt=0.0)
    """Peak learning rate for DPO; lower than SFT because DPO pushes on log-ratios."""
    epochs: float = Field(3.0, gt=0.0)
    """Passes over the dataset (per stage)."""
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimizer steps (overrides ``epochs``); for smoke tests."""
    batch_size: int = Field(8, ge=1)
    """Examples per device per forward pass."""
    grad_accum: int = Field(1, ge=1)
    """Forward passes per optimizer step."""
    max_length: int = Field(512, ge=8)
    """Tokens per example (prompt + completion); longer examples are cut at the end."""
    seed: int = 0
    """Seed for LoRA initialization and data order."""
    dpo_beta: float = Field(0.1, gt=0.0)
    """DPO's beta: how far the policy may move from the reference."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, ~20-30% slower. Worth it
    only for models that do not fit otherwise."""
    logging_steps: int = Field(10, ge=1)
    """Optimizer steps between loss reports on the progress bar."""


class StageResult(BaseModel):
    """One trainer run (SFT or DPO)."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["sft", "dpo"]
    examples: int
    steps: int
    epochs: float
    tokens: int
    """Tokens processed: dataset tokens (DPO: prompt twice + chosen + rejected) x epochs."""
    seconds: float
    """Training-loop seconds as the trainer measured them (excludes loading)."""
    tokens_per_s: float
    loss: float
    """The last logged training loss (the mean over the run when nothing was logged)."""
    mean_loss: float
    """Mean training loss over the whole run."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """The trainer's last log entry (e.g. DPO's ``rewards/accuracies``)."""


class TrainResult(BaseModel):
    """What ``train_lora`` produced."""

    model_config = ConfigDict(extra="forbid")

    adapter_dir: str
    """The finished PEFT adapter directory (adapter_config.json + adapter_model.safetensors)."""
    base: str
    """The base model directory the adapter applies to."""
    method: Method
    device: str
    bf16: bool
    hyper: TrainConfig
    stages: list[StageResult]
    loss: float
    """The final stage's last logged loss."""
    tokens: int
    seconds: float
    tokens_per_s: float
    """All stages' tokens over all stages' training seconds."""


Target = Literal["reply", "answer", "worked"]
"""What a short-answer training example teaches: ``reply``, the verified reply (its
reasoning, then the answer line); ``answer``, the answer line alone; ``worked``, the
task's worked solution then the answer line, for tasks that carry one (others: as
``reply``)."""


Label = Literal["self", "rationalized", "gold", "human"]
"""Where a training target came from (its supervision label): ``self``, the model's own
reply, found without seeing the answer; ``rationalized``, the model's reply after a hint
showed it the answer (or the tests); ``gold``, text the task's generator wrote (its
worked solution or answer), not the model; ``human``, the model's reply after a person's
hint. Only ``self`` rows are the model improving itself."""
LABELS: tuple[str, ...] = ("self", "rationalized", "gold", "human")
