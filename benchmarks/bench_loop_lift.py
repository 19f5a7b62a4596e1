"""The loop's lift with the embedded model: share solved at attempt 1 vs within N
attempts, per reasoning-gym family and hint policy.

    uv run python benchmarks/bench_loop_lift.py [--n 16] [--attempts 3] [--concurrency 16]

Prints a markdown table for benchmarks/RESULTS.md. Attempt 1 is greedy with the same
prompt under every policy, so its column doubles as a consistency check.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.records import RunRecord  # noqa: E402
from memory.store import SQLiteStore  # noqa: E402
from orchestrator.config import Config, LoopConfig, RunConfig  # noqa: E402
from orchestrator.runner import build_models, execute_run  # noqa: E402
from orchestrator.suites import load_tasks  # noqa: E402

FAMILIES = {
    "basic_arithmetic": "rg:basic_arithmetic:seed=11:min_terms=2:max_terms=2:min_digits=1:max_digits=1",
    "gcd": "rg:gcd:seed=11:min_value=1:max_value=60",
    "word_sequence_reversal": "rg:word_sequence_reversal:seed=11:min_words=3:max_words=4",
    "chain_sum": "rg:chain_sum:seed=11:min_terms=3:max_terms=3:min_digits=1:max_digits=1",
}
POLICIES = ("none", "critique", "feedback", "reference")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--reply-tokens", type=int, default=96)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--policies", default=",".join(POLICIES))
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as home:
        models = None
        for family in args.families.split(","):
            tasks = load_tasks(f"{FAMILIES[family]}:n={args.n}")
            for policy in args.policies.split(","):
                config = Config(home=Path(home), run=RunConfig(concurrency=args.concurrency),
                                loop=LoopConfig(max_attempts=args.attempts, hints=policy,
                                                reply_max_tokens=args.reply_tokens))
                models = models or build_models(config)
                store = SQLiteStore(Path(home) / f"{family}-{policy}.db")
                run = RunRecord(run_id=f"{family}-{policy}", tasks_spec=family, settings={},
                                total=len(tasks))
                store.create_run(run)
                started = time.perf_counter()
                summary = asyncio.run(execute_run(config, tasks, store, run, models=models))
                seconds = time.perf_counter() - started
                at1 = summary.solved_at.get("1", 0)
                rows.append((family, policy, at1 / len(tasks), summary.solved / len(tasks),
                             summary.tokens, seconds))
                print(f"{family:24} {policy:9} @1 {at1}/{len(tasks)}  "
                      f"within {args.attempts}: {summary.solved}/{len(tasks)}  {seconds:.0f}s",
                      file=sys.stderr, flush=True)

    print(f"| family | policy | solved @1 | solved within {args.attempts} | tokens | seconds |")
    print("|---|---|---|---|---|---|")
    for family, policy, at1, within, tokens, seconds in rows:
        print(f"| {family} | {policy} | {at1:.2f} | {within:.2f} | {tokens} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
