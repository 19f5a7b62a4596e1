"""LoRA SFT of the real embedded model (SmolLM2-135M-Instruct) through ``train_lora``.

    uv run python benchmarks/bench_training.py [--rows 128] [--holdout 50] [--epochs 3]
        [--lr 2e-4] [--batch-size 8] [--threads N] [--json]

Training data goes through the real pipeline: 2-digit additions become ``Task`` records,
each with a verified attempt ``"a + b = c\\nAnswer: c"``, then ``build_rows`` (the
evaluation prompt from ``evaluation_messages``, leakage-checked against the holdout) and
``write_dataset``. Exact match is measured before and after on held-out additions with
greedy generation through transformers directly (the answer taken with
``core.answer_format.extract_answer``, as the verifiers do).

Reports the tokens/s ``train_lora`` measured (dataset tokens x epochs / training
seconds), the wall time of training, and exact match before and after. The reference
from the issue: a plain PyTorch loop trained at ~130 tokens/s and took 2-digit addition
from 0% to 65% exact match in under 4 minutes on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.answer_format import extract_answer  # noqa: E402
from core.leakage import prompt_hashes  # noqa: E402
from finetune.dataset import build_rows, write_dataset  # noqa: E402
from finetune.settings import TrainConfig  # noqa: E402
from finetune.train import resolve_base, train_lora  # noqa: E402
from core.records import Attempt, Task, Trajectory, Verdict, VerifierSpec  # noqa: E402

MODEL = "local/smollm2"


def additions(n: int, rng: random.Random, exclude: set[tuple[int, int]]) -> list[tuple[int, int]]:
    pairs: list[tuple[int, int]] = []
    while len(pairs) < n:
        pair = (rng.randint(10, 99), rng.randint(10, 99))
        if pair not in exclude:
            exclude.add(pair)
            pairs.append(pair)
    return pairs


def task(a: int, b: int) -> Task:
    return Task(id=f"add/{a}+{b}", prompt=f"What is {a} + {b}?", family="addition",
                verifier=VerifierSpec(type="numeric", params={"expected": a + b}))


def verified(a: int, b: int) -> Trajectory:
    reply = f"{a} + {b} = {a + b}\nAnswer: {a + b}"
    attempt = Attempt(index=1, messages=[], reply=reply, answer=str(a + b),
                      verdict=Verdict(passed=True, score=1.0), model=MODEL)
    return Trajectory(run_id="bench", task=task(a, b), attempts=[attempt], outcome="solved",
                      hint_policy="none", generator_model=MODEL, critic_model=MODEL,
                      hint_model=MODEL, stop_reason="verified")


def exact_match(base: Path, adapter: Path | None, tasks: list[Task], max_new_tokens: int) -> dict:
    """Greedy replies for ``tasks`` (one left-padded batch); the share whose extracted
    answer equals a + b."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.answer_format import evaluation_messages

    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, local_files_only=True)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    texts = [tokenizer.apply_chat_template(evaluation_messages(t), tokenize=False,
                                           add_generation_prompt=True) for t in tasks]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    started = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id)
    replies = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    correct = [
        extract_answer(reply, "short") == str(t.verifier.params["expected"])
        for reply, t in zip(replies, tasks, strict=True)
    ]
    return {"exact_match": sum(correct) / len(tasks), "correct": sum(correct),
            "total": len(tasks), "seconds": time.perf_counter() - started,
            "sample": replies[0]}


def wait_idle(limit_s: float) -> float:
    """Sleep until the 1-minute load average is below 0.5 or ``limit_s`` passed; returns
    the load average found."""
    deadline = time.monotonic() + limit_s
    load = os.getloadavg()[0]
    while load >= 0.5 and time.monotonic() < deadline:
        time.sleep(5)
        load = os.getloadavg()[0]
    return load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--holdout", type=int, default=50)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--lr", type=float, default=TrainConfig().learning_rate)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to this long for the 1-minute load average to drop "
                             "below 0.5 (the CPU is shared; timings mean little otherwise)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args()
    waited = wait_idle(args.wait_idle)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    seen: set[tuple[int, int]] = set()
    holdout = [task(a, b) for a, b in additions(args.holdout, rng, seen)]
    train = [verified(a, b) for a, b in additions(args.rows, rng, seen)]
    base = resolve_base(MODEL)

    before = exact_match(base, None, holdout, args.max_new_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        rows = build_rows(train, "sft", eval_hashes=prompt_hashes(holdout))
        manifest = write_dataset(rows, Path(tmp) / "additions.jsonl")
        hyper = TrainConfig(epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                            seed=args.seed)
        started = time.perf_counter()
        result = train_lora(MODEL, manifest.path, Path(tmp) / "adapter", hyper=hyper)
        wall = time.perf_counter() - started
        after = exact_match(base, Path(result.adapter_dir), holdout, args.max_new_tokens)

    report = {
        "rows": manifest.rows, "holdout": len(holdout), "epochs": args.epochs,
        "learning_rate": args.lr, "batch_size": args.batch_size, "steps": result.stages[0].steps,
        "threads": torch.get_num_threads(), "device": result.device,
        "train_tokens": result.tokens, "train_seconds": round(result.seconds, 1),
        "train_wall_seconds": round(wall, 1), "tokens_per_s": round(result.tokens_per_s, 1),
        "final_loss": round(result.loss, 4), "mean_loss": round(result.stages[0].mean_loss, 4),
        "exact_match_before": before["exact_match"], "exact_match_after": after["exact_match"],
        "sample_before": before["sample"], "sample_after": after["sample"],
        "eval_seconds": round(before["seconds"] + after["seconds"], 1),
        "load_at_start": round(waited, 2), "load_at_end": round(os.getloadavg()[0], 2),
        "python": platform.python_version(), "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"{report['rows']} rows x {args.epochs} epochs, lr {args.lr}, batch {args.batch_size}, "
          f"{report['steps']} steps on {report['device']} ({report['threads']} threads)")
    print(f"training: {report['train_tokens']} tokens in {report['train_seconds']} s "
          f"({report['tokens_per_s']} tokens/s); "
          f"wall incl. loading {report['train_wall_seconds']} s; "
          f"final loss {report['final_loss']}")
    print(f"exact match on {len(holdout)} held-out additions: "
          f"{before['exact_match']:.0%} before -> {after['exact_match']:.0%} after")
    print(f"sample before: {before['sample']!r}\nsample after:  {after['sample']!r}")


if __name__ == "__main__":
    main()
