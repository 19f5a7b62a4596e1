"""The gate's false-promotion rate: candidates that cannot help, trained with different
seeds, judged by the paired gate and by the margin-only rule it replaced.

    uv run python benchmarks/bench_gate.py [--seeds 5] [--max-steps 8] [--holdout-n 16]

Each candidate is an ``improve`` round with ``collect = "gold"`` on a family unrelated to
the holdout (word sorting rows for arithmetic holdout tasks), so any holdout gain it
shows is noise: the adapter perturbs the model's replies, and some tasks flip each way.
Every seed trains a new adapter (``distill.train.seed``) in its own data directory; the
base model's evaluations are measured once and reused. Counts how many candidates each
rule promotes: ``promote`` (margin AND the paired test at ``improve.confidence``) and
``threshold_only`` (the margin and tolerance alone, the gate before the paired test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_improve import SEEDS, SETS, joined  # noqa: E402
from orchestrator.config import Config, with_overrides  # noqa: E402
from orchestrator.evaluate import CACHE_DIR, EVAL_STORE  # noqa: E402
from orchestrator.improve import Suites, improve  # noqa: E402
from orchestrator.suites import load_tasks, pin_hash_seed  # noqa: E402

UNRELATED = "rg:word_sorting:min_words=3:max_words=5"


def main() -> None:
    pin_hash_seed()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--set", choices=sorted(SETS), default="sampling")
    parser.add_argument("--holdout-n", type=int, default=16, help="holdout tasks per family")
    parser.add_argument("--retention-n", type=int, default=100)
    parser.add_argument("--train-n", type=int, default=64, help="unrelated training rows")
    parser.add_argument("--max-steps", type=int, default=8,
                        help="training steps per candidate (small: a perturbation, not a skill)")
    parser.add_argument("--home", type=Path, default=None)
    args = parser.parse_args()

    families, retained = SETS[args.set]
    holdout = joined(families, args.holdout_n, SEEDS["holdout"])
    retention = f"{retained}:n={args.retention_n}:seed={SEEDS['retention']}"
    train = f"{UNRELATED}:n={args.train_n}:seed={SEEDS['train']}"
    suites = Suites(train_spec=train, train=load_tasks(train), holdout_spec=holdout,
                    holdout=load_tasks(holdout), retention_spec=retention,
                    retention=load_tasks(retention))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = args.home or Path(scratch)
        first: Path | None = None
        for seed in range(1, args.seeds + 1):
            home = root / f"seed-{seed}"
            if first is not None:
                home.mkdir(parents=True, exist_ok=True)
                shutil.copy(first / EVAL_STORE, home / EVAL_STORE)
                shutil.copytree(first / CACHE_DIR, home / CACHE_DIR, dirs_exist_ok=True)
            config = with_overrides(Config(home=home), {
                "improve.collect": "gold", "distill.train.seed": seed,
                "distill.train.max_steps": args.max_steps})
            load = os.getloadavg()[0]
            started = time.monotonic()
            [r] = asyncio.run(improve(config, suites)).rounds
            rows.append({"seed": seed, "holdout_before": r.holdout_before,
                         "holdout_after": r.holdout_after, "wins": r.wins, "losses": r.losses,
                         "p_value": r.p_value, "retention_before": r.retention_before,
                         "retention_after": r.retention_after, "kl": r.kl,
                         "promoted": r.promoted, "threshold_only": r.threshold_only,
                         "labels": r.labels, "seconds": round(time.monotonic() - started, 1),
                         "load": round(load, 2)})
            first = first or home
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    promoted = sum(r["promoted"] for r in rows)
    threshold = sum(bool(r["threshold_only"]) for r in rows)
    print(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                      "promoted": promoted, "threshold_only_promoted": threshold}))
    print("\n| seed | holdout before -> after | won/lost | p | retention | KL | paired gate | "
          "margin only |\n|---|---|---|---|---|---|---|---|", file=sys.stderr)
    for r in rows:
        print(f"| {r['seed']} | {r['holdout_before']:.3f} -> {r['holdout_after']:.3f} | "
              f"{r['wins']}/{r['losses']} | {r['p_value']:.3f} | {r['retention_before']:.2f} -> "
              f"{r['retention_after']:.2f} | {r['kl']:.4f} | "
              f"{'promoted' if r['promoted'] else 'kept'} | "
              f"{'promoted' if r['threshold_only'] else 'kept'} |", file=sys.stderr)
    print(f"\npaired gate: {promoted} of {len(rows)} promoted; margin only: {threshold} of "
          f"{len(rows)}", file=sys.stderr)


if __name__ == "__main__":
    main()
