"""Helpers shared by the test modules: plain functions and constants (fixtures are in
``conftest.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core.records import Attempt, Task, Trajectory, Verdict, VerifierSpec
from finetune.dataset import DatasetManifest
from finetune.registry import AdapterManifest
from finetune.settings import TrainConfig

SELFTAUGHT = str(Path(sys.executable).parent / "selftaught")


def cli(*args: str, cwd: Path, timeout_s: float = 300, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "SELFTAUGHT_HOME": str(cwd / "home"), **env}
    return subprocess.run([SELFTAUGHT, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout_s)


def stored_count(db: Path) -> int:
    """Trajectories in the SQLite file ``db`` (0 while it does not exist yet)."""
    import sqlite3

    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT COUNT(*) FROM trajectories").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QUICK = TrainConfig(max_steps=3, batch_size=4, learning_rate=5e-3, logging_steps=1)


def make_task(i: int) -> Task:
    return Task(id=f"add/{i}", prompt=f"What is {i} + {i + 7}?", family="add",
                verifier=VerifierSpec(type="exact", params={"expected": str(2 * i + 7)}))


def make_trajectory(i: int) -> Trajectory:
    right, wrong = 2 * i + 7, 2 * i + 8
    attempts = [
        Attempt(index=1, messages=[], reply=f"Maybe {wrong}.\nAnswer: {wrong}", answer=str(wrong),
                verdict=Verdict(passed=False, score=0.0), model="m"),
        Attempt(index=2, messages=[], reply=f"{i} + {i + 7} = {right}\nAnswer: {right}",
                answer=str(right), verdict=Verdict(passed=True, score=1.0), model="m"),
    ]
    return Trajectory(run_id="r", task=make_task(i), attempts=attempts, outcome="solved",
                      hint_policy="critique", generator_model="m", critic_model="m",
                      hint_model="m", stop_reason="verified")


def trained_dir(root: Path, label: str) -> Path:
    """A directory shaped like peft's save_pretrained output."""
    directory = root / f"trained-{label}"
    directory.mkdir(parents=True)
    (directory / "adapter_config.json").write_text(json.dumps({"r": 16, "label": label}))
    (directory / "adapter_model.safetensors").write_bytes(b"weights-" + label.encode())
    return directory


def manifest(name: str = "ignored") -> AdapterManifest:
    dataset = DatasetManifest(
        method="sft", path="/data/d.jsonl", sha256="0" * 64, rows=3, sft_rows=3,
        trajectory_ids=["x", "y"], task_ids=["t1"], counts_per_family={"add": 3},
    )
    return AdapterManifest(
        name=name, base_model="local/smollm2", method="sft", dataset=dataset,
        hyper={"lora_r": 16}, train_loss=0.5, tokens_per_s=120.0,
    )


def build_tiny_base(out: Path) -> Path:
    """Save a tiny Llama + tokenizer with a ChatML template into ``out`` (seconds on a
    CPU): a real model for tests of training, loading and kill points."""
    from core.answer_format import evaluation_messages

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [m["content"] for i in range(40) for m in evaluation_messages(make_task(i))]
    corpus += [a.reply for i in range(40) for a in make_trajectory(i).attempts]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    ))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|im_end|>", unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    config = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, vocab_size=len(tokenizer), max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    return out
