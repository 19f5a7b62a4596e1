"""Self-improvement in the weights with the embedded model on CPU: holdout pass@1 per
family for the base model and after each ``improve`` round, the retention change, and
the wall time of each stage.

    uv run python benchmarks/bench_improve.py [--train-n 32] [--holdout-n 24] [--rounds 2]

One ``improve`` call over three families together (training tasks of all three in
one suite, holdout per family read from the evaluation), with a fourth suite for
retention; ``--set`` picks the families (see ``SETS``). Seeds are far apart so no training prompt is an evaluation prompt.
Prints a JSON report on stdout and markdown tables for benchmarks/RESULTS.md on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.leakage import prompt_hash, prompt_hashes  # noqa: E402
from finetune.registry import AdapterRegistry  # noqa: E402
from finetune.settings import TrainConfig  # noqa: E402
from orchestrator.config import (  # noqa: E402
    Config, DistillConfig, ImproveConfig, LoopConfig, RunConfig,
)
from orchestrator.improve import Suites, improve  # noqa: E402
from orchestrator.suites import load_tasks, pin_hash_seed  # noqa: E402

LEARNABLE = {
    "basic_arithmetic": 'rg:basic_arithmetic:operators=["+"]:min_terms=2:max_terms=2:min_digits=2:max_digits=2',
    "chain_sum": "rg:chain_sum:min_terms=2:max_terms=2:min_digits=2:max_digits=2",
    "decimal_chain_sum": "rg:decimal_chain_sum:min_terms=2:max_terms=2:min_digits=1:max_digits=1:min_decimal_places=1:max_decimal_places=1",
}
ONE_DIGIT_PRODUCTS = "rg:products:min_terms=2:max_terms=2:min_digits=1:max_digits=1"

SETS = {
    # Families that need arithmetic the 135M model cannot do alone; retention: 2-digit sums.
    "arithmetic": (
        {
            "basic_arithmetic": "rg:basic_arithmetic:min_terms=2:max_terms=2:min_digits=1:max_digits=1",
            "gcd": "rg:gcd:min_value=1:max_value=60",
            "chain_sum": "rg:chain_sum:min_terms=3:max_terms=3:min_digits=1:max_digits=1",
        },
        "rg:basic_arithmetic:min_terms=2:max_terms=2:min_digits=2:max_digits=2",
    ),
    # Families the model fails on by form or pattern (a True/False verdict, reversing or
    # sorting a short list); retention: ransom_note, which it answers 42% right alone.
    "patterns": (
        {
            "word_sequence_reversal": "rg:word_sequence_reversal:min_words=3:max_words=4",
            "isomorphic_strings": "rg:isomorphic_strings",
            "word_sorting": "rg:word_sorting:min_words=3:max_words=4",
        },
        "rg:ransom_note",
    ),
    # Families whose tasks carry a worked solution (reasoning-gym's ``expression``), which
    # reference hints show: the verified replies hold the working ``a op b = c``.
    "worked": (
        {
            "basic_arithmetic": "rg:basic_arithmetic:min_terms=2:max_terms=2:min_digits=1:max_digits=1",
            "chain_sum": "rg:chain_sum:min_terms=3:max_terms=3:min_digits=1:max_digits=1",
            "products": "rg:products:min_terms=2:max_terms=2:min_digits=1:max_digits=1",
        },
        "rg:ransom_note",
    ),
    # One of those families alone, to see what three times the rows per family buys.
    "worked-one": (
        {"basic_arithmetic": "rg:basic_arithmetic:min_terms=2:max_terms=2:min_digits=1:max_digits=1"},
        "rg:ransom_note",
    ),
    # Worked-solution families whose base pass@1 is under 10% and whose operation is one
    # the model can learn from ~100 rows (the addition benchmark: 0% -> 82%); retention:
    # one-digit products, which the base model gets ~78% right.
    "learnable": (LEARNABLE, ONE_DIGIT_PRODUCTS),
    # The same families; retention (and rehearsal) adds a family unlike the trained ones,
    # ransom_note (True/False, base ~44%), to see what training does to a distant skill.
    "learnable-wide": (LEARNABLE, {"products": ONE_DIGIT_PRODUCTS, "ransom_note": "rg:ransom_note"}),
}


def joined(families: dict[str, str], n: int, seed: int, n_for: dict[str, int] | None = None) -> str:
    """The families' specs as one suite: ``n`` tasks each (``n_for``: per family)."""
    n_for = n_for or {}
    return "+".join(f"{spec}:n={n_for.get(family, n)}:seed={seed}"
                    for family, spec in families.items())


def main() -> None:
    pin_hash_seed()  # the same tasks in every run (see orchestrator.suites.pin_hash_seed)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", choices=sorted(SETS), default="arithmetic",
                        help="which families to improve on (and their retention suite)")
    parser.add_argument("--only", action="append", default=[], metavar="FAMILY",
                        help="improve on these families of the set alone (repeatable)")
    parser.add_argument("--train-n", type=int, default=32, help="training tasks per family")
    parser.add_argument("--train-n-for", action="append", default=[], metavar="FAMILY=N",
                        help="training tasks for one family (repeatable; overrides --train-n)")
    parser.add_argument("--holdout-n", type=int, default=24, help="holdout tasks per family")
    parser.add_argument("--retention-n", type=int, default=24, help="retention tasks per family")
    parser.add_argument("--rehearsal-n", type=int, default=0,
                        help="rehearsal tasks per retention family (other seeds): the "
                             "champion's own right answers are replayed in training")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--reply-tokens", type=int, default=96)
    parser.add_argument("--feedback-tokens", type=int, default=64)
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--lr", type=float, default=TrainConfig().learning_rate)
    parser.add_argument("--completion", default=DistillConfig().completion,
                        help="reply (reasoning + answer line) or answer (answer line only)")
    parser.add_argument("--reference-hint", default=LoopConfig().reference_hint,
                        help="model, model+answer or answer (no critic/hint-giver calls)")
    parser.add_argument("--lora-dropout", type=float, default=TrainConfig().lora_dropout)
    parser.add_argument("--target-modules", default=None,
                        help="LoRA target modules, comma-separated (default: all linear layers)")
    parser.add_argument("--max-per-family", type=int, default=DistillConfig().max_per_family)
    parser.add_argument("--start", default=DistillConfig().start, choices=["base", "champion"],
                        help="distill.start: each round trains a new adapter, or continues the champion's")
    parser.add_argument("--home", type=Path, default=None,
                        help="keep the data directory here (default: a temporary one)")
    args = parser.parse_args()

    families, retained = SETS[args.set]
    retained = retained if isinstance(retained, dict) else {"retention": retained}
    unknown = set(args.only) - set(families)
    if unknown:
        parser.error(f"--only {sorted(unknown)}: not in --set {args.set} ({', '.join(families)})")
    families = {f: spec for f, spec in families.items() if not args.only or f in args.only}
    n_for = {family: int(n) for family, n in (item.split("=") for item in args.train_n_for)}
    train = joined(families, args.train_n, 100_000, n_for)
    holdout = joined(families, args.holdout_n, 200_000)
    retention = joined(retained, args.retention_n, 300_000)
    rehearsal = joined(retained, args.rehearsal_n, 400_000) if args.rehearsal_n else None
    # Small configs repeat prompts across seeds: train only on prompts no suite evaluates.
    evaluated = prompt_hashes([*load_tasks(holdout), *load_tasks(retention)])

    def unevaluated(spec: str, what: str) -> list:
        tasks = load_tasks(spec)
        kept = [t for t in tasks if prompt_hash(t.prompt) not in evaluated]
        print(f"{len(tasks) - len(kept)} {what} tasks dropped: their prompt is also an "
              "evaluation prompt", file=sys.stderr)
        return kept

    suites = Suites(train_spec=train, train=unevaluated(train, "training"), holdout_spec=holdout,
                    holdout=load_tasks(holdout), retention_spec=retention,
                    retention=load_tasks(retention), rehearsal_spec=rehearsal,
                    rehearsal=unevaluated(rehearsal, "rehearsal") if rehearsal else [])
    with tempfile.TemporaryDirectory() as scratch:
        home = args.home or Path(scratch)
        config = Config(
            home=Path(home), run=RunConfig(concurrency=args.concurrency),
            loop=LoopConfig(max_attempts=args.attempts, reply_max_tokens=args.reply_tokens,
                            feedback_max_tokens=args.feedback_tokens,
                            reference_hint=args.reference_hint),
            distill=DistillConfig(train=TrainConfig(
                                      epochs=args.epochs, learning_rate=args.lr,
                                      lora_dropout=args.lora_dropout,
                                      **({"target_modules": args.target_modules.split(",")}
                                         if args.target_modules else {})),
                                  completion=args.completion, start=args.start,
                                  max_per_family=args.max_per_family),
            improve=ImproveConfig(rounds=args.rounds))
        started = time.monotonic()

        def on_stage(round_no: int, what: str) -> None:
            print(f"[{time.monotonic() - started:7.1f}s] round {round_no}: {what}",
                  file=sys.stderr, flush=True)

        report = asyncio.run(improve(config, suites, on_stage=on_stage))
        manifests = {m.name: m for m in AdapterRegistry(home).list()}
    total = time.monotonic() - started

    rounds = []
    for r in report.rounds:
        evaluation = manifests[r.adapter].evaluation if r.adapter else {}
        holdout_eval = evaluation.get("holdout", {})
        retention_eval = evaluation.get("retention", {})
        rounds.append({**r.model_dump(mode="json"),
                       "holdout_per_family_before": holdout_eval.get("incumbent_per_family"),
                       "holdout_per_family_after": holdout_eval.get("per_family"),
                       "retention_per_family_before": retention_eval.get("incumbent_per_family"),
                       "retention_per_family_after": retention_eval.get("per_family"),
                       "train_rows": manifests[r.adapter].dataset.rows if r.adapter else 0,
                       "tokens_per_s": manifests[r.adapter].tokens_per_s if r.adapter else None})
    result = {"args": vars(args), "rounds": rounds, "promoted_any": report.promoted_any,
              "champion": report.champion, "seconds": round(total, 1)}
    print(json.dumps(result, default=str))

    print("| round | family | holdout before | holdout after | decision |", file=sys.stderr)
    print("|---|---|---|---|---|", file=sys.stderr)
    for r in rounds:
        before, after = r["holdout_per_family_before"] or {}, r["holdout_per_family_after"] or {}
        for family in families:
            print(f"| {r['round']} | {family} | {before.get(family, float('nan')):.2f} | "
                  f"{after.get(family, float('nan')):.2f} | "
                  f"{'promoted' if r['promoted'] else 'kept'} |", file=sys.stderr)
    print("\n| round | train solved | rehearsal kept | rows | retention before | retention after "
          "| collect s | rehearse s | distill s | eval s |", file=sys.stderr)
    print("|---|---|---|---|---|---|---|---|---|---|", file=sys.stderr)
    for r in rounds:
        sec = r["seconds"]
        print(f"| {r['round']} | {r['train_solved']}/{r['train_total']} | "
              f"{r['rehearsal_kept']}/{r['rehearsal_total']} | {r['train_rows']} | "
              f"{r['retention_before']} | {r['retention_after']} | {sec.get('collect')} | "
              f"{sec.get('rehearse')} | {sec.get('distill')} | {sec.get('eval')} |", file=sys.stderr)


if __name__ == "__main__":
    main()
