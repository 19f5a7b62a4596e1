"""Orchestration overhead per attempt: graph, checkpoints, store and verifier, with
models that answer instantly.

    uv run python benchmarks/bench_loop_overhead.py [--tasks 200] [--attempts 3] [--durability async]

Each task fails every attempt (so it runs generate, verify, critique and hint each
time) with the ``critique`` policy and an ``exact`` verifier. At concurrency 1 the
time between two finished tasks is one task's whole cost (graph, checkpoint writes,
store); the median and p90 of that divided by attempts are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.testing import ScriptedChatModel  # noqa: E402
from core.records import RunRecord, Task, VerifierSpec  # noqa: E402
from memory.store import SQLiteStore  # noqa: E402
from orchestrator.config import Config, LoopConfig, RunConfig  # noqa: E402
from orchestrator.runner import RoleModels, execute_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--durability", choices=["exit", "async", "sync"], default="async")
    args = parser.parse_args()

    per_attempt: list[float] = []
    last = [0.0]
    model = ScriptedChatModel(lambda messages, params: "Answer: wrong")
    roles = RoleModels(generator=model, critic=model, hint_giver=model, judge=model)

    with tempfile.TemporaryDirectory() as home:
        config = Config(home=Path(home), run=RunConfig(concurrency=1, durability=args.durability),
                        loop=LoopConfig(max_attempts=args.attempts, hints="critique", max_resamples=0))
        store = SQLiteStore(Path(home) / "selftaught.db")
        tasks = [Task(id=f"t{i}", prompt=f"Say {i}.", verifier=VerifierSpec(
            type="exact", params={"expected": str(i)})) for i in range(args.tasks)]
        run = RunRecord(run_id="bench", tasks_spec="bench", settings={}, total=len(tasks))
        store.create_run(run)

        def timed(trajectory) -> None:
            now = time.perf_counter()
            per_attempt.append((now - last[0]) / len(trajectory.attempts))
            last[0] = now

        started = last[0] = time.perf_counter()
        asyncio.run(execute_run(config, tasks, store, run, models=roles, on_trajectory=timed))
        wall = time.perf_counter() - started

    attempts = args.tasks * args.attempts
    per_attempt.sort()
    print(f"tasks={args.tasks} attempts/task={args.attempts} (generate+verify+critique+hint each), "
          f"durability={args.durability}")
    print(f"per attempt: median {statistics.median(per_attempt) * 1e3:.2f} ms, "
          f"p90 {per_attempt[int(0.9 * len(per_attempt))] * 1e3:.2f} ms")
    print(f"mean over the whole run (start-up included): {wall / attempts * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
