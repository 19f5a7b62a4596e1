"""A scheduled improve job with the embedded model, through the real CLI: what one run
costs per stage, whether its ledger agrees with the stores, and what the report costs.

    uv run python benchmarks/bench_schedule.py [--train-n 4] [--holdout-n 3] [--steps 2]

Adds a job in a fresh data directory, runs it with ``schedule run`` (one round:
evaluate the base model, collect with reference-answer hints, distill, evaluate the
candidate), then draws ``report``. Prints the stage table, the ledger's tokens against
the tokens the trajectories recorded, and the wall seconds of each command (process
start and model load included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memory.store import open_store  # noqa: E402

SELFTAUGHT = str(Path(sys.executable).parent / "selftaught")
ARITH = "min_terms=2:max_terms=2:min_digits=1:max_digits=1"
CONFIG = """[loop]
max_attempts = 2
reply_max_tokens = 32
reference_hint = "answer"
[distill.train]
max_steps = {steps}
batch_size = 4
[improve]
margin = 0.0
tolerance = 0.5
confidence = 0.0
collect = "reference"
"""


def command(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([SELFTAUGHT, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "SELFTAUGHT_HOME": str(cwd / "home")})
    if done.returncode not in (0, 1):
        sys.exit(f"selftaught {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-n", type=int, default=4)
    parser.add_argument("--holdout-n", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "selftaught.toml").write_text(CONFIG.format(steps=opts.steps))
        _, add_s = command("schedule", "add", "bench", "--every", "1d", "--",
                           f"rg:basic_arithmetic:seed=1000:n={opts.train_n}:{ARITH}", "--holdout",
                           f"rg:basic_arithmetic:seed=2000:n={opts.holdout_n}:{ARITH}", cwd=root)
        ran, run_s = command("schedule", "run", "bench", "--json", cwd=root)
        run = json.loads(ran.stdout)
        drawn, report_s = command("report", "--json", cwd=root)
        figures = len(json.loads(drawn.stdout)["files"]) - 1
        with open_store(root / "home") as store, open_store(root / "home", "evals.db") as evals:
            stored = sum(t.tokens for s in (store, evals) for t in s.trajectories())
    print(f"load average at the end: {os.getloadavg()[0]:.1f}\n")
    print("| stage | seconds | tokens |\n| --- | ---: | ---: |")
    for stage in run["stages"]:
        print(f"| {stage['round']}: {stage['stage']} | {stage['seconds']:.1f} | {stage['tokens']} |")
    tokens = run["prompt_tokens"] + run["completion_tokens"]
    print(f"\noutcome {run['outcome']}, {run['calls']} calls, ledger {tokens} tokens, trajectories "
          f"{stored} tokens, cost ${run['cost_usd']:.4f}; run {run['seconds']:.1f} s inside the job")
    print(f"wall s: schedule add {add_s:.1f}, schedule run {run_s:.1f}, report {report_s:.1f} "
          f"({figures} figures)")


if __name__ == "__main__":
    main()
