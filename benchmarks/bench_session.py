"""Sessions with the embedded model: how soon a person's hint reaches the screen, and
what a person's hint is worth against the model's own critique and hint.

    uv run python benchmarks/bench_session.py [--per-family 16] [--candidates 32]

1. For each family, one greedy attempt at ``--candidates`` tasks picks the first
   ``--per-family`` tasks the model fails; the autonomous loop (hint policy
   ``critique``: the model's own critique and hint, 3 attempts) then runs on them.
2. The same tasks go through a scripted session (``selftaught session --script``'s code
   path, one process, the model already loaded) whose script gives one general hint per
   family, written once (advice, never an answer), after every failed attempt. The
   session runs with hint policy ``none`` so the person's hint is the only feedback.
3. Every hint decision's time to the first streamed token is the latency a person sees
   from pressing Enter.

Prints markdown tables for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.records import RunRecord  # noqa: E402
from memory.store import SQLiteStore, open_store  # noqa: E402
from orchestrator.config import Config, LoopConfig, RunConfig  # noqa: E402
from orchestrator.runner import build_models, execute_run  # noqa: E402
from orchestrator.session import start_or_resume_session  # noqa: E402
from orchestrator.session_input import ScriptInput  # noqa: E402
from orchestrator.suites import load_tasks  # noqa: E402

FAMILIES = {
    "basic_arithmetic": "rg:basic_arithmetic:seed=11:min_terms=2:max_terms=2:min_digits=1:max_digits=1",
    "chain_sum": "rg:chain_sum:seed=11:min_terms=3:max_terms=3:min_digits=1:max_digits=1",
}
HINTS = {
    # Written once per family, before any run; general advice, no task's numbers.
    "basic_arithmetic": (
        "Handle the signs first: subtracting a negative number is adding it (a - -b = a + b), "
        "and a minus in front of brackets flips the sign of what is inside. Then compute, and "
        "write only the final number after 'Answer:'."),
    "chain_sum": (
        "Go left to right, one operation at a time, writing each running total "
        "(first and second give a total, then apply the third to that total). Write only the "
        "last total after 'Answer:'."),
}


class Quiet:
    """A session view that shows nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def run_loop(config: Config, tasks, store: SQLiteStore, run_id: str, models) -> dict:
    """The autonomous loop over ``tasks``; trajectories by task id."""
    run = RunRecord(run_id=run_id, tasks_spec=run_id, settings={}, total=len(tasks))
    store.create_run(run)
    asyncio.run(execute_run(config, tasks, store, run, models=models))
    return {t.task.id: t for t in store.trajectories(run_id=run_id)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-family", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=32)
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--reply-tokens", type=int, default=96)
    args = parser.parse_args()

    loop_rest = dict(reply_max_tokens=args.reply_tokens)
    loop = dict(max_attempts=args.attempts, **loop_rest)
    rows, latencies = [], []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        config = Config(home=home, run=RunConfig(concurrency=16, adapter="none", memory=False),
                        loop=LoopConfig(hints="critique", **loop))
        models = build_models(config)
        for family, spec in FAMILIES.items():
            tasks = load_tasks(f"{spec}:n={args.candidates}")
            store = SQLiteStore(home / f"{family}.db")
            screen = config.model_copy(update={"loop": LoopConfig(max_attempts=1, **loop_rest)})
            first = run_loop(screen, tasks, store, f"screen-{family}", models)
            failed = [t for t in tasks if first[t.id].outcome != "solved"][: args.per_family]
            started = time.perf_counter()
            by_id = run_loop(config, failed, store, f"model-{family}", models)
            model_seconds = time.perf_counter() - started
            model_solved = sum(t.outcome == "solved" for t in by_id.values())
            model_at_1 = sum(t.attempts[0].verdict.passed for t in by_id.values())

            task_file = home / f"{family}.jsonl"
            task_file.write_text("".join(json.dumps(t.model_dump(mode="json")) + "\n" for t in failed))
            script = home / f"{family}-script.jsonl"
            script.write_text("".join(json.dumps({"task": t.id, "hint": HINTS[family]}) + "\n"
                                      for t in failed for _ in range(args.attempts - 1)))
            person_config = config.model_copy(update={"loop": LoopConfig(hints="none", **loop)})
            started = time.perf_counter()
            result = start_or_resume_session(
                person_config, spec=str(task_file), resume=False, session_id=None, overrides={},
                inputs=ScriptInput(script), view=Quiet(), who="bench", models=models)
            person_seconds = time.perf_counter() - started
            latencies += result.first_token_s
            with open_store(home) as session_store:
                done = session_store.trajectories(run_id=result.session_id)
            person_solved = sum(t.outcome == "solved" for t in done)
            passed_at_1 = sum(t.attempts[0].verdict.passed for t in done)
            rows.append((family, len(failed), model_solved, person_solved,
                         f"{model_at_1} / {passed_at_1}", model_seconds, person_seconds))
            print(f"{family}: {len(failed)} tasks; model hints {model_solved}, person hints "
                  f"{person_solved} (attempt 1 passed on the rerun: {model_at_1} / {passed_at_1})",
                  file=sys.stderr, flush=True)

    print(f"| family | tasks failed at attempt 1 | solved within {args.attempts}: model's own "
          f"critique+hint | solved within {args.attempts}: person's hint | attempt 1 passed on "
          "the rerun (model run / session) | seconds (model run / session) |")
    print("|---|---|---|---|---|---|")
    for family, n, model, person, at1, ms, ps in rows:
        print(f"| {family} | {n} | {model}/{n} | {person}/{n} | {at1} | {ms:.0f} / {ps:.0f} |")
    if latencies:
        ordered = sorted(latencies)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        print("\n| hint decisions | p50 to first token | p90 | min | max |")
        print("|---|---|---|---|---|")
        print(f"| {len(ordered)} | {statistics.median(ordered):.2f} s | {p90:.2f} s | "
              f"{ordered[0]:.2f} s | {ordered[-1]:.2f} s |")


if __name__ == "__main__":
    main()
