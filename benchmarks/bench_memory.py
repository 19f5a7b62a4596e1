"""The vector memory: ingestion and query speed at scale, and its effect on pass@1.

    uv run python benchmarks/bench_memory.py scale [--sizes 10000,100000] [--queries 200]
    uv run python benchmarks/bench_memory.py effect [--families chain_sum,gcd,...]
        [--train-n 48] [--held-n 48]

``scale``: cases are written to ``memory.db`` unindexed, then indexed by the code path of
``memory reindex`` / the repair at start (batched embedding, batched chromadb upserts):
items per second. Then retrieval for held-out prompts, the way the loop's ``retrieve``
node does it (family-filtered index query, ``memory.db`` lookup, the admission rules),
p50/p95 in ms; the query's embedding is timed apart (a run embeds all its prompts in one
batch up front). A few hundred single ``add_case`` calls (one embedding each, as a run
learns) give the per-item write cost.

``effect``: per family, a ``run`` over training tasks builds the memory (2 attempts,
``reference`` hints by default: the embedded model's critique hints almost never turn a
failure into a success, so they would teach no lesson); then pass@1 (greedy, one attempt,
no hints) on held-out tasks of the same family without memory, with cases only, lessons
only, both (``eval --memory`` with ``memory.lessons_k`` / ``cases_k`` = 0), and cases
including those solved after the reference answer was revealed (supervised by the task
generator's answers: reported apart).
Prints markdown tables for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PYTHONHASHSEED", "0")

from core.leakage import prompt_hash  # noqa: E402
from memory.bank import MemoryBank, new_id  # noqa: E402
from memory.embed import embed  # noqa: E402
from memory.items import Case  # noqa: E402
from memory.retrieval import Query, RetrievalRule, retrieve  # noqa: E402

FAMILIES = 20
WORDS = ("apple river stone cloud maple tiger ocean violet copper lantern meadow falcon "
         "harbor ember willow glacier prairie summit canyon orchid").split()
TEMPLATES = (
    "What is {a} + {b} - {c}?",
    "Calculate {a} * {b}.",
    "Find the Greatest Common Divisor (GCD) of these numbers: {a}, {b}.",
    "How many times does the letter \"{l}\" appear in the text: \"{w1} {w2} {w3}\"?",
    "Sort these numbers in ascending order: {a}, {b}, {c}, {d}",
    "Reverse this list of words: {w1}, {w2}, {w3}, {w4}",
    "Given the ransom note {w1} and the magazine {w2}{w3}, can the note be built? Answer True or False.",
    "State the final answer to the following arithmetic problem: {a} + {b} + {c} =",
)


def synthetic_prompt(rng: random.Random) -> tuple[str, str]:
    """A short task prompt and its family (one of ``FAMILIES``), all distinct in practice."""
    template = rng.randrange(len(TEMPLATES))
    w = rng.sample(WORDS, 4)
    text = TEMPLATES[template].format(a=rng.randint(1, 999), b=rng.randint(1, 999), c=rng.randint(1, 99),
                                      d=rng.randint(1, 999), l=rng.choice("abcdefghij"), w1=w[0],
                                      w2=w[1], w3=w[2], w4=w[3])
    return text, f"f{template}-{rng.randrange(FAMILIES // len(TEMPLATES) + 1)}"


def _case(prompt: str, family: str, i: int) -> Case:
    return Case(id=new_id("case"), task_id=f"syn/{i}", prompt=prompt, prompt_hash=prompt_hash(prompt),
                family=family, reply="Answer: 1", answer="1", trajectory_id=f"t{i}", run_id="bench",
                model="bench")


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def scale(args: argparse.Namespace) -> None:
    rng = random.Random(0)
    rows = []
    embed(["warm up"])  # the model loads once per process; not part of ingestion
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as home:
            bank = MemoryBank(Path(home))
            items = [synthetic_prompt(rng) for _ in range(size)]
            with bank._write() as conn:  # stored, not yet indexed: what reindex/repair picks up
                for i, (prompt, family) in enumerate(items):
                    case = _case(prompt, family, i)
                    conn.execute("INSERT INTO items (id, kind, family, key, created_at, record)"
                                 " VALUES (?, 'case', ?, ?, ?, ?)",
                                 (case.id, family, case.id, case.created_at.isoformat(), case.model_dump_json()))
                    conn.execute("INSERT INTO entries (id, item_id, collection, text, family, trajectory_id)"
                                 " VALUES (?, ?, 'cases', ?, ?, ?)", (case.id, case.id, prompt, family, f"t{i}"))
            started = time.perf_counter()
            indexed = bank.repair()
            ingest_s = time.perf_counter() - started
            assert indexed == size, (indexed, size)
            queries = [synthetic_prompt(rng) for _ in range(args.queries)]
            started = time.perf_counter()
            vectors = embed([q for q, _ in queries])
            embed_ms = (time.perf_counter() - started) * 1000 / len(queries)
            rule = RetrievalRule(cases_k=2, lessons_k=3)
            latencies, found = [], 0
            for (prompt, family), vector in zip(queries, vectors):
                started = time.perf_counter()
                got = retrieve(bank, vector, Query("q", prompt_hash(prompt), family), rule)
                latencies.append((time.perf_counter() - started) * 1000)
                found += bool(got.cases)
            singles = min(args.singles, size)
            started = time.perf_counter()
            for i in range(singles):
                prompt, family = synthetic_prompt(rng)
                bank.add_case(_case(prompt, family, size + i))
            single_ms = (time.perf_counter() - started) * 1000 / max(singles, 1)
            bank.close()
        row = (size, size / ingest_s, ingest_s, statistics.median(latencies), _percentile(latencies, 0.95),
               embed_ms, single_ms, found / len(queries))
        rows.append(row)
        print(f"{size}: ingest {row[1]:.0f} items/s ({ingest_s:.0f} s), query p50 {row[3]:.1f} ms "
              f"p95 {row[4]:.1f} ms, embed {embed_ms:.1f} ms/query batched, add_case {single_ms:.0f} ms",
              file=sys.stderr, flush=True)
    print("| items | ingestion items/s (s) | retrieve p50 ms | retrieve p95 ms | query embedding ms (batched) "
          "| single add_case ms | queries with a case |")
    print("|---|---|---|---|---|---|---|")
    for size, rate, seconds, p50, p95, embed_ms, single_ms, share in rows:
        print(f"| {size:,} | {rate:.0f} ({seconds:.0f}) | {p50:.1f} | {p95:.1f} | {embed_ms:.1f} | "
              f"{single_ms:.0f} | {share:.2f} |")


EFFECT_FAMILIES = {
    "basic_arithmetic": "rg:basic_arithmetic:min_terms=2:max_terms=2:min_digits=1:max_digits=1",
    "chain_sum": "rg:chain_sum:min_terms=3:max_terms=3:min_digits=1:max_digits=1",
    "gcd": "rg:gcd:min_value=1:max_value=60",
    "ransom_note": "rg:ransom_note",
    "leg_counting": "rg:leg_counting",
}


def effect(args: argparse.Namespace) -> None:
    from orchestrator.config import Config, LoopConfig, RunConfig, with_overrides
    from orchestrator.evaluate import evaluate
    from orchestrator.recall import open_memory
    from orchestrator.runner import build_models, execute_run
    from orchestrator.suites import load_tasks
    from core.records import RunRecord
    from memory.store import open_store

    base = Config(home=Path(args.home or tempfile.mkdtemp(prefix="bench-memory-")),
                  loop=LoopConfig(max_attempts=args.attempts, hints=args.hints,
                                  reply_max_tokens=args.reply_tokens,
                                  feedback_max_tokens=args.feedback_tokens),
                  run=RunConfig(concurrency=args.concurrency))
    models = build_models(base)
    variants = {"none": None, "cases": {"memory.lessons_k": 0}, "lessons": {"memory.cases_k": 0}, "both": {},
                # Cases solved only after a hint showed the reference answer: supervised by
                # the task generator's gold answers, reported apart.
                "revealed": {"memory.lessons_k": 0, "memory.revealed_cases": True}}
    table = []
    for family in args.families.split(","):
        spec = EFFECT_FAMILIES[family]
        config = with_overrides(base, {"home": str(base.home / family)})
        train = load_tasks(f"{spec}:n={args.train_n}:seed={args.train_seed}")
        held = load_tasks(f"{spec}:n={args.held_n}:seed={args.held_seed}")
        overlap = {prompt_hash(t.prompt) for t in train} & {prompt_hash(t.prompt) for t in held}
        held = [t for t in held if prompt_hash(t.prompt) not in overlap]
        started = time.perf_counter()
        with open_store(config.home) as store:
            run = RunRecord(run_id=f"train-{family}", tasks_spec=spec, settings={}, total=len(train))
            store.create_run(run)
            memory = open_memory(config, learn=True)
            summary = asyncio.run(execute_run(config, train, store, run, models=models, memory=memory))
            memory.close()
        train_s = time.perf_counter() - started
        figures = summary.memory
        print(f"{family}: train {summary.solved}/{len(train)} solved (at 1: {summary.solved_at.get('1', 0)}), "
              f"{figures.cases_learned} cases, {figures.lessons_learned} lessons, {train_s:.0f} s",
              file=sys.stderr, flush=True)
        rates = {}
        for name, overrides in variants.items():
            started = time.perf_counter()
            cfg = config if overrides is None else with_overrides(config, overrides)
            result = asyncio.run(evaluate(cfg, held, spec=f"{spec}:held", adapter="none", models=models,
                                          memory=overrides is not None))
            rates[name] = result.pass_at_1
            print(f"  {name}: {result.passed}/{result.total} ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr, flush=True)
        table.append((family, len(train), summary.solved, summary.solved_at.get("1", 0), figures.cases_learned,
                      figures.lessons_learned, len(held), rates, train_s))
    print("| family | train tasks (solved, at attempt 1) | cases, lessons stored | held-out tasks "
          "| pass@1 no memory | cases only | lessons only | both | cases incl. revealed (supervised) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for family, n, solved, at1, cases, lessons, held_n, rates, _ in table:
        deltas = {k: f"{rates[k]:.2f} ({(rates[k] - rates['none']) * 100:+.0f})"
                  for k in ("cases", "lessons", "both", "revealed")}
        print(f"| {family} | {n} ({solved}, {at1}) | {cases}, {lessons} | {held_n} | {rates['none']:.2f} | "
              f"{deltas['cases']} | {deltas['lessons']} | {deltas['both']} | {deltas['revealed']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("scale")
    s.add_argument("--sizes", default="10000,100000")
    s.add_argument("--queries", type=int, default=200)
    s.add_argument("--singles", type=int, default=200)
    e = sub.add_parser("effect")
    e.add_argument("--families", default="basic_arithmetic,chain_sum,gcd")
    e.add_argument("--train-n", type=int, default=48)
    e.add_argument("--held-n", type=int, default=48)
    e.add_argument("--train-seed", type=int, default=4000)
    e.add_argument("--held-seed", type=int, default=90000)
    e.add_argument("--attempts", type=int, default=2)
    e.add_argument("--hints", default="reference")
    e.add_argument("--reply-tokens", type=int, default=64)
    e.add_argument("--feedback-tokens", type=int, default=48)
    e.add_argument("--concurrency", type=int, default=16)
    e.add_argument("--home", default=None)
    args = parser.parse_args()
    scale(args) if args.what == "scale" else effect(args)


if __name__ == "__main__":
    main()
