"""``run`` wall time with the embedded model at concurrency N versus 1, same tasks.

    uv run python benchmarks/bench_run_concurrency.py [--n 32] [--concurrency 16]

Both runs use the same 32 reasoning-gym tasks, one attempt each (so both do the same
generation work), greedy, in one process with the model already loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memory.records import RunRecord  # noqa: E402
from memory.store import SQLiteStore  # noqa: E402
from orchestrator.config import Config, LoopConfig, RunConfig  # noqa: E402
from orchestrator.runner import build_models, execute_run  # noqa: E402
from orchestrator.suites import load_tasks  # noqa: E402

SPEC = "rg:basic_arithmetic:seed=21:min_terms=2:max_terms=2:min_digits=1:max_digits=2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--reply-tokens", type=int, default=64)
    args = parser.parse_args()
    tasks = load_tasks(f"{SPEC}:n={args.n}")
    timings = {}
    with tempfile.TemporaryDirectory() as home:
        models = None
        for concurrency in (1, args.concurrency):
            config = Config(home=Path(home), run=RunConfig(concurrency=concurrency),
                            loop=LoopConfig(max_attempts=1, hints="none",
                                            reply_max_tokens=args.reply_tokens))
            models = models or build_models(config)
            if concurrency == 1:  # load the model before timing anything
                asyncio.run(models.generator.complete([{"role": "user", "content": "hi"}]))
            store = SQLiteStore(Path(home) / f"c{concurrency}.db")
            run = RunRecord(run_id=f"c{concurrency}", tasks_spec=SPEC, settings={}, total=len(tasks))
            store.create_run(run)
            started = time.perf_counter()
            summary = asyncio.run(execute_run(config, tasks, store, run, models=models))
            timings[concurrency] = (time.perf_counter() - started, summary.tokens, summary.solved)
            print(f"concurrency {concurrency}: {timings[concurrency][0]:.1f} s", file=sys.stderr)
    (t1, tok1, s1), (tn, tokn, sn) = timings[1], timings[args.concurrency]
    print(f"| concurrency | wall s | tokens | solved |\n|---|---|---|---|\n"
          f"| 1 | {t1:.1f} | {tok1} | {s1}/{args.n} |\n"
          f"| {args.concurrency} | {tn:.1f} | {tokn} | {sn}/{args.n} |\n\n"
          f"speed-up: {t1 / tn:.1f}x")


if __name__ == "__main__":
    main()
