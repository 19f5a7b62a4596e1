"""LoRA training on a dataset from ``finetune.dataset``, through TRL.

``train_lora`` runs TRL's ``SFTTrainer`` (prompt-completion rows: the loss covers only
the completion tokens, TRL's default for that format), ``DPOTrainer`` (preference
pairs), or both in turn (``sft+dpo``: DPO starts from the SFT adapter and uses it as its
reference). LoRA goes on every linear layer by default (peft's ``"all-linear"``). This
module is the entry point (``train_lora`` and the command line); the settings and
result records are in ``finetune.settings``, the trainer runs in ``finetune.stages``.

Guarantees:

* An adapter directory appears only when training finished: everything is written under
  ``.<out_dir name>.partial`` beside ``out_dir`` and renamed at the end, so Ctrl-C or an
  exception mid-training leaves no adapter (and the partial directory is removed).
* No checkpoints, no hub, no experiment trackers (``save_strategy="no"``,
  ``report_to="none"``); nothing is downloaded (``local_files_only``) and nothing is
  sent (hub offline mode and telemetry opt-out are set for the process: TRL pings the
  hub when a trainer is built).
* Device is chosen automatically (cuda, then mps, then cpu); bf16 only on a CUDA device
  that supports it (on CPUs without bf16 units it is slower than fp32).
* On CUDA the loss is TRL's fused LM head; on CPU/MPS (no Triton kernel, where it is
  slower per step) transformers' plain causal-LM loss on the same labels.
* Progress is transformers' own tqdm bar; stdout is redirected to stderr while
  training, so a ``--json`` caller's stdout stays clean.

Several GPUs: the same entry point runs under accelerate (data parallel; every process
loads the base, the main process writes the adapter)::

    accelerate launch --multi_gpu --num_processes 4 -m finetune.train \\
        --base local/smollm2 --data data.jsonl --out adapters/new --method sft

(``torchrun --nproc_per_node 4 -m finetune.train ...`` is the same launch without
accelerate's config). Data parallel (DDP) only: the adapter is saved from the main
process's copy. Not exercised here: the development machine has no GPU.
``batch_size`` is per device, so the effective batch is ``batch_size * grad_accum * GPUs``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.adapters import adapter_dir
from core.errors import ConfigError
from finetune.dataset import Row, read_dataset, row_kind
from finetune.settings import METHODS, Method, StageResult, TrainConfig, TrainResult

# -- base models ---------------------------------------------------------------------------


def resolve_base(model_id: str) -> Path:
    """A Hugging Face model directory for a ``local/...`` model id: the directory itself,
    or the converted copy of a GGUF file (converted once per machine, then cached).
    Any other id is ``ConfigError``: training needs the weights on this machine."""
    from agents.local.resolve import is_local, resolve_local_model

    if not is_local(model_id):
        raise ConfigError(
            f"distillation needs local weights: {model_id!r} is not a local model. Train on "
            "`local/smollm2` or `local/PATH` (a Hugging Face model directory on disk)."
        )
    source = resolve_local_model(model_id)
    if source.kind == "hf":
        return source.path
    from agents.local.cache import ensure_converted

    return ensure_converted(source.path)


def _base_dir(base: str | Path) -> Path:
    if isinstance(base, str) and base.startswith("local/"):
        return resolve_base(base)
    path = Path(base).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"base model {base}: {path} is not a Hugging Face model directory (no config.json). "
            "Pass a model id such as `local/smollm2` or a directory with config.json."
        )
    return path


def _stay_offline() -> None:
    """Keep training off the network: TRL's trainers send a usage ping to the Hugging
    Face Hub on construction, and the hub client fetches an "agent registry" for its
    user-agent header. selftaught never talks to the hub, so hub offline mode and
    telemetry opt-out are set for this process (and inherited by workers)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from huggingface_hub import constants

    # The hub reads these once at import; set the live values too.
    constants.HF_HUB_OFFLINE = True
    constants.HF_HUB_DISABLE_TELEMETRY = True


def pick_device() -> str:
    """``cuda`` when a GPU is visible, else ``mps`` (Apple), else ``cpu``."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _bf16_ok(device: str) -> bool:
    import torch

    return device == "cuda" and torch.cuda.is_bf16_supported()


# -- the entry point -------------------------------------------------------------------------


def train_lora(
    base: str | Path,
    dataset_path: str | Path,
    out_dir: str | Path,
    *,
    method: Method = "sft",
    hyper: TrainConfig | None = None,
    callbacks: Sequence[Any] = (),
    init_adapter: str | Path | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``base`` (a model directory or ``local/...`` id) from the
    JSONL rows at ``dataset_path`` and leave it at ``out_dir`` (which must not exist).

    ``sft`` trains on prompt-completion rows (or, when the file has only pairs, on each
    pair's prompt and chosen reply); ``dpo`` on preference pairs; ``sft+dpo`` does SFT,
    then DPO from the SFT adapter. ``callbacks`` are ``transformers.TrainerCallback``s
    added to every trainer. ``init_adapter``, a PEFT adapter directory for ``base``, is
    where training starts instead of a new adapter (its LoRA rank, alpha and modules
    apply; the directory is only read). Raises ``ConfigError`` for a bad method, base,
    dataset, init adapter or an existing ``out_dir``; on any exception or Ctrl-C nothing
    is left at ``out_dir``.
    """
    hyper = hyper or TrainConfig()
    if method not in METHODS:
        raise ConfigError(f"unknown training method {method!r}: use one of {', '.join(METHODS)}")
    base_dir = _base_dir(base)
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists():
        raise ConfigError(f"{out_dir} already exists; choose another adapter name or remove it")
    sft, dpo = split_rows(read_dataset(dataset_path), method)
    if init_adapter is not None:
        init_adapter = adapter_dir(init_adapter, fix="name an adapter that training saved")
    _stay_offline()

    from accelerate import PartialState

    from finetune.stages import train_dpo, train_sft  # torch, TRL: only when training

    state = PartialState()
    partial = out_dir.parent / f".{out_dir.name}.partial"
    if state.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)  # left by a killed run
        partial.mkdir(parents=True)
    state.wait_for_everyone()
    device = pick_device()
    bf16 = _bf16_ok(device)
    stages: list[StageResult] = []
    try:
        # Trainer logs go through tqdm.write (stdout); keep stdout for callers' results.
        with contextlib.redirect_stdout(sys.stderr):
            start_from = Path(init_adapter) if init_adapter is not None else None
            if sft:
                stages.append(train_sft(
                    base_dir, sft, partial / "sft", hyper, device, bf16, callbacks, start_from
                ))
                start_from = partial / "sft"
            if dpo:
                stages.append(train_dpo(
                    base_dir, dpo, partial / "dpo", hyper, device, bf16, callbacks, start_from
                ))
                start_from = partial / "dpo"
        if state.is_main_process:
            # The last stage's output (split_rows guarantees one ran): never init_adapter.
            os.rename(start_from, out_dir)  # same parent: atomic; the adapter appears whole
        state.wait_for_everyone()
    finally:
        if state.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
    tokens = sum(s.tokens for s in stages)
    seconds = sum(s.seconds for s in stages)
    return TrainResult(
        adapter_dir=str(out_dir), base=str(base_dir), method=method, device=device, bf16=bf16,
        hyper=hyper, stages=stages, loss=stages[-1].loss, tokens=tokens, seconds=seconds,
        tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
    )


def split_rows(rows: list[Row], method: Method) -> tuple[list[Row], list[Row]]:
    """(SFT rows, DPO rows) that ``method`` trains on, metadata columns dropped.

    ``sft`` without prompt-completion rows falls back to the pairs' chosen replies.
    A method whose rows are missing is ``ConfigError``."""
    sft = [
        {"prompt": r["prompt"], "completion": r["completion"]} for r in rows if row_kind(r) == "sft"
    ]
    pairs = [
        {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
        for r in rows if row_kind(r) == "dpo"
    ]
    if method in ("sft", "sft+dpo") and not sft:
        sft = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs]
    if method in ("dpo", "sft+dpo") and not pairs:
        raise ConfigError(
            f"method {method} needs preference pairs but the dataset has none (no failed attempt "
            "beside a verified one); build it with `--method dpo` or `sft+dpo`, or train with sft"
        )
    if not (sft or pairs):
        raise ConfigError("the dataset is empty; build it with `selftaught distill`")
    return (sft if method != "dpo" else []), (pairs if method != "sft" else [])


# -- command line (also the accelerate / torchrun entry point) ------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m finetune.train --base B --data D --out O [--method M] [--init-adapter A]
    [--lora-r 8 ...]`` (one flag per ``TrainConfig`` field); prints the ``TrainResult`` as JSON on stdout
    (main process only). Exit 2 on ``ConfigError``."""
    parser = argparse.ArgumentParser(
        prog="python -m finetune.train", description="Train a LoRA adapter with TRL."
    )
    parser.add_argument("--base", required=True, help="local/smollm2, local/PATH or a model dir")
    parser.add_argument("--data", required=True, help="JSONL dataset from finetune.dataset")
    parser.add_argument("--out", required=True, help="adapter directory to create")
    parser.add_argument("--method", choices=METHODS, default="sft")
    parser.add_argument("--init-adapter", help="a PEFT adapter directory to continue training")
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        text = (field.description or "").replace("%", "%%")  # argparse formats help with %
        if name == "target_modules":
            parser.add_argument(flag, nargs="+", help=text)
        elif field.annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        else:
            parser.add_argument(flag, type=float if field.annotation is float else int, help=text)
    args = parser.parse_args(argv)
    overrides = {
        n: getattr(args, n) for n in TrainConfig.model_fields if getattr(args, n) is not None
    }
    if overrides.get("target_modules") == ["all-linear"]:
        overrides["target_modules"] = "all-linear"
    try:
        hyper = TrainConfig(**overrides)
    except ValidationError as exc:
        print(f"error: invalid training setting: {exc}", file=sys.stderr)
        return 2
    try:
        result = train_lora(args.base, args.data, args.out, method=args.method, hyper=hyper,
                            init_adapter=args.init_adapter)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
    return 0


if __name__ == "__main__":
    # Run the importable module's ``main``, not this ``__main__`` copy's: finetune.stages
    # imports finetune.train, and results must be built from one set of classes.
    from finetune.train import main as module_main

    sys.exit(module_main())
