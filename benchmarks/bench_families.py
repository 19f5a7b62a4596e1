"""Which families can the embedded model improve on by itself? Base greedy pass@1 and
sampled pass@k per reasoning-gym family, with improve's evaluation settings (the
``fast`` profile: 48-token replies).

Expert iteration (``improve --collect samples``) needs families where the model is
sometimes right: pass@1 low enough to leave room, pass@k high enough that sampling finds
right answers to train on.

    uv run python benchmarks/bench_families.py [--n 48] [--k 8] [--family NAME=SPEC ...]

Prints one JSON object on stdout and a markdown table on stderr.
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

from orchestrator.profiles import improve_config  # noqa: E402
from orchestrator.config import Config, ImproveConfig  # noqa: E402
from orchestrator.evaluate import evaluate  # noqa: E402
from orchestrator.runner import build_models  # noqa: E402
from orchestrator.suites import load_tasks, pin_hash_seed  # noqa: E402

FAMILIES = {
    "basic_arithmetic": "rg:basic_arithmetic:min_terms=2:max_terms=2:min_digits=1:max_digits=1",
    "gcd": "rg:gcd:min_value=1:max_value=60",
    "chain_sum": "rg:chain_sum:min_terms=2:max_terms=2:min_digits=2:max_digits=2",
    "decimal_chain_sum": "rg:decimal_chain_sum:min_terms=2:max_terms=2:min_digits=1:max_digits=1:min_decimal_places=1:max_decimal_places=1",
    "lcm": "rg:lcm:min_value=1:max_value=20",
    "isomorphic_strings": "rg:isomorphic_strings",
    "products": "rg:products:min_terms=2:max_terms=2:min_digits=1:max_digits=2",
}


def main() -> None:
    pin_hash_seed()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=48, help="tasks per family")
    parser.add_argument("--k", type=int, default=8, help="samples per task for pass@k")
    parser.add_argument("--seed", type=int, default=200_000)
    parser.add_argument("--temperature", type=float, default=ImproveConfig().temperature)
    parser.add_argument("--family", action="append", default=[], metavar="NAME=SPEC",
                        help="families to probe (default: a built-in list)")
    args = parser.parse_args()
    families = dict(item.split("=", 1) for item in args.family) if args.family else FAMILIES
    rows = []
    with tempfile.TemporaryDirectory() as home:
        config = improve_config(Config(home=Path(home)))
        models = build_models(config)
        for name, spec in families.items():
            full = f"{spec}:n={args.n}:seed={args.seed}"
            started = time.monotonic()
            result = asyncio.run(evaluate(config, load_tasks(full), spec=full, adapter="none",
                                          models=models, samples=args.k,
                                          temperature=args.temperature))
            rows.append({"family": name, "spec": full, "pass_at_1": result.pass_at_1,
                         "pass_at_k": result.pass_at_k,
                         "sampled_pass_at_1": result.sampled_pass_at_1,
                         "seconds": round(time.monotonic() - started, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"args": vars(args), "families": rows}))
    print(f"\n| family | greedy pass@1 | sampled pass@1 (T={args.temperature}) | "
          f"pass@{args.k} | seconds |\n|---|---|---|---|---|", file=sys.stderr)
    for r in rows:
        print(f"| {r['family']} | {r['pass_at_1']:.2f} | {r['sampled_pass_at_1']:.2f} | "
              f"{r['pass_at_k']:.2f} | {r['seconds']} |", file=sys.stderr)


if __name__ == "__main__":
    main()
