"""``run`` wall time with the embedded model at concurrency N versus 1, same tasks.

    uv run python benchmarks/bench_run_concurrency.py [--n 32] [--concurrency 16]
        [--attempts 1] [--hints none] [--reply-tokens 64] [--feedback-tokens 48] [--profile]
        [--repeat 1]

Both runs use the same reasoning-gym tasks in one process with the model already
loaded and no stored prompt prefixes. With one attempt (the default) both do the same
greedy generation work; with more, retries sample, so the two runs' work differs a
little and tokens per second are printed beside wall time. ``--profile`` also times
the engine's prefill (admission) and decode forwards in each run and prints where the
wall time went. ``--repeat K`` runs the pair K times, alternating, and reports each
pair's speed-up and their median: this machine's speed drifts by ~30% from one minute
to the next, so a ratio is only fair between runs made close together.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.local import decode  # noqa: E402
from agents.local.engine import loaded_engines  # noqa: E402
from core.records import RunRecord  # noqa: E402
from memory.store import SQLiteStore  # noqa: E402
from orchestrator.config import Config, LoopConfig, RunConfig  # noqa: E402
from orchestrator.runner import build_models, execute_run  # noqa: E402
from orchestrator.suites import load_tasks  # noqa: E402

SPEC = "rg:basic_arithmetic:seed=21:min_terms=2:max_terms=2:min_digits=1:max_digits=2"


def time_forwards() -> collections.Counter:
    """Wrap ``DecodeBatch.admit`` and ``step`` to add up their seconds and calls."""
    spent: collections.Counter = collections.Counter()

    def timed(name, method):
        def wrapper(self, *args):
            started = time.perf_counter()
            try:
                return method(self, *args)
            finally:
                spent[name] += time.perf_counter() - started
                spent[f"{name} calls"] += 1
        return wrapper

    decode.DecodeBatch.admit = timed("prefill", decode.DecodeBatch.admit)
    decode.DecodeBatch.step = timed("decode", decode.DecodeBatch.step)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--attempts", type=int, default=1)
    parser.add_argument("--hints", default="none")
    parser.add_argument("--reply-tokens", type=int, default=64)
    parser.add_argument("--feedback-tokens", type=int, default=48)
    parser.add_argument("--reference-hint", default="model+answer")
    parser.add_argument("--profile", action="store_true",
                        help="print prefill and decode time of each run")
    parser.add_argument("--repeat", type=int, default=1, help="pairs of runs, alternating")
    args = parser.parse_args()
    spent = time_forwards() if args.profile else collections.Counter()
    tasks = load_tasks(f"{SPEC}:n={args.n}")
    pairs = []
    with tempfile.TemporaryDirectory() as home:
        models = None
        for repeat, concurrency in [(r, c) for r in range(args.repeat) for c in (1, args.concurrency)]:
            config = Config(home=Path(home), run=RunConfig(concurrency=concurrency),
                            loop=LoopConfig(max_attempts=args.attempts, hints=args.hints,
                                            reply_max_tokens=args.reply_tokens,
                                            feedback_max_tokens=args.feedback_tokens,
                                            reference_hint=args.reference_hint))
            models = models or build_models(config)
            if concurrency == 1:  # load the model before timing anything
                asyncio.run(models.generator.complete([{"role": "user", "content": "hi"}]))
            for engine in loaded_engines().values():
                engine.forget_prefixes()  # both runs start cold: same tasks, same prompts
            name = f"c{concurrency}-{repeat}"
            store = SQLiteStore(Path(home) / f"{name}.db")
            run = RunRecord(run_id=name, tasks_spec=SPEC, settings={}, total=len(tasks))
            store.create_run(run)
            [engine] = loaded_engines().values()
            admissions = engine.batch_stats.batches
            spent.clear()
            computed = engine._decode.prefill_tokens
            started = time.perf_counter()
            summary = asyncio.run(execute_run(config, tasks, store, run, models=models))
            wall = time.perf_counter() - started
            if concurrency == 1:
                pairs.append({})
            pairs[-1][concurrency] = (wall, summary.tokens, summary.solved)
            print(f"concurrency {concurrency}: {wall:.1f} s, "
                  f"{engine.batch_stats.batches - admissions} admissions", file=sys.stderr)
            if args.profile:
                print(f"  prefill {spent['prefill']:.2f} s ({spent['prefill calls']} forwards, "
                      f"{engine._decode.prefill_tokens - computed} prompt tokens computed), "
                      f"decode {spent['decode']:.2f} s ({spent['decode calls']} steps), "
                      f"elsewhere {wall - spent['prefill'] - spent['decode']:.2f} s",
                      file=sys.stderr)
    print(f"| pair | concurrency 1: wall s, tokens, solved | concurrency {args.concurrency}: wall s, "
          "tokens, solved | speed-up (wall) | speed-up (tokens/s) |\n|---|---|---|---|---|")
    for i, pair in enumerate(pairs, start=1):
        (t1, tok1, s1), (tn, tokn, sn) = pair[1], pair[args.concurrency]
        print(f"| {i} | {t1:.1f}, {tok1}, {s1}/{args.n} | {tn:.1f}, {tokn}, {sn}/{args.n} | "
              f"{t1 / tn:.1f}x | {(tokn / tn) / (tok1 / t1):.1f}x |")
    ratios = [pair[1][0] / pair[args.concurrency][0] for pair in pairs]
    print(f"\nspeed-up, median of {len(pairs)}: {statistics.median(ratios):.1f}x wall time")


if __name__ == "__main__":
    main()
