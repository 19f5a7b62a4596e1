"""Generation throughput of the embedded model through the ChatModel seam.

Measures, with the real model and the real path (make_chat_model -> litellm -> local
provider -> batching worker):

* aggregate tokens/s for requests sent one at a time vs ``--concurrency`` at once
  (same prompts, greedy, fixed ``--max-tokens``);
* cold load (a new process with an empty cache: GGUF conversion + load) and warm load
  (a new process once the converted cache exists).

Usage: ``uv run python benchmarks/bench_generation.py [--skip-load] [--json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOPICS = [
    "a cat who learns to fly", "a lighthouse keeper", "a robot gardener", "a lost key",
    "the last train home", "a dragon who hates fire", "a library at midnight",
    "a snowman in summer", "an old map", "a talking teapot", "the moon's day off",
    "a shy volcano", "a city of bridges", "a clock that runs backwards", "a whale's song",
    "a forgotten birthday", "the first rain on Mars", "a detective mouse", "a paper boat",
    "a mountain that moves", "a baker's secret", "a storm in a bottle", "two rival bees",
    "a quiet astronaut", "a haunted bicycle", "the sea's memory", "a kite and a cloud",
    "a fox who counts stars", "a broken compass", "an island of clocks",
    "a violin in the attic", "a garden on a roof",
]


def prompts(n: int) -> list[list[dict[str, str]]]:
    return [
        [{"role": "user", "content": f"Write a short story about {TOPICS[i % len(TOPICS)]}."}]
        for i in range(n)
    ]


def cpu_busy_fraction(seconds: float = 2.0) -> float | None:
    """Share of all CPUs busy over ``seconds`` (Linux /proc/stat), None elsewhere."""
    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except OSError:
        return None
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def wait_for_idle_cpu(limit_s: float) -> float:
    """On a shared machine, wait (up to ``limit_s``) until other processes leave the
    CPU mostly idle: with 2 cores, one busy neighbour more than halves throughput.
    Returns the busy fraction seen last."""
    deadline = time.monotonic() + limit_s
    while True:
        busy = cpu_busy_fraction()
        if busy is None or busy < 0.15 or time.monotonic() > deadline:
            return busy or 0.0
        print(f"waiting for an idle CPU (busy {busy:.0%})", file=sys.stderr)
        time.sleep(10)


async def throughput(args) -> dict:
    from agents.litellm_model import make_chat_model
    from agents.model import GenerationParams

    model = make_chat_model(args.model)
    started = time.perf_counter()
    await model.complete(prompts(1)[0], GenerationParams(max_tokens=4))  # load + warm up
    warmup_s = time.perf_counter() - started
    rounds = []
    for _ in range(args.repeat):
        busy = wait_for_idle_cpu(args.wait_idle) if args.wait_idle else None
        rounds.append({**await one_round(args, model), "cpu_busy_before": busy})
    # The least disturbed round: neighbours slow either phase, so rank by both rates.
    best = max(rounds, key=lambda r: r["single"]["tokens_per_s"] * r["concurrent"]["tokens_per_s"])
    return {"first_call_s": round(warmup_s, 2), **best, "rounds": rounds}


async def one_round(args, model) -> dict:
    """Single requests then the concurrent burst, back to back, same prompts."""
    from agents.local.engine import get_engine
    from agents.model import GenerationParams

    params = GenerationParams(temperature=0.0, max_tokens=args.max_tokens)
    engine = get_engine(args.model)
    batch = prompts(args.concurrency)
    single_tokens, single_s = 0, 0.0
    for messages in batch[: args.single_requests]:
        t0 = time.perf_counter()
        completion = await model.complete(messages, params)
        single_s += time.perf_counter() - t0
        single_tokens += completion.usage.completion_tokens

    before = len(engine.batch_stats.recent)
    t0 = time.perf_counter()
    replies = await asyncio.gather(*(model.complete(m, params) for m in batch))
    concurrent_s = time.perf_counter() - t0
    sizes = [size for _, size in list(engine.batch_stats.recent)[before:]]
    concurrent_tokens = sum(r.usage.completion_tokens for r in replies)
    single_tps = single_tokens / single_s
    concurrent_tps = concurrent_tokens / concurrent_s
    return {
        "single": {
            "requests": args.single_requests, "tokens": single_tokens,
            "seconds": round(single_s, 2), "tokens_per_s": round(single_tps, 1),
        },
        "concurrent": {
            "requests": args.concurrency, "tokens": concurrent_tokens,
            "seconds": round(concurrent_s, 2), "tokens_per_s": round(concurrent_tps, 1),
            "batch_sizes": sizes,
        },
        "speedup": round(concurrent_tps / single_tps, 2),
    }


def load_probe(model_id: str) -> None:
    """Child process: time imports, model load and the first 1-token reply."""
    t0 = time.perf_counter()
    from agents.litellm_model import litellm_module, make_chat_model
    from agents.model import GenerationParams

    litellm_module()
    # Import what loading needs first, so model_load_s is the weights and tokenizer only.
    import torch  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401
    import transformers.tokenization_utils_tokenizers  # noqa: F401

    import agents.local.decode  # noqa: F401

    imported = time.perf_counter()
    model = make_chat_model(model_id)
    asyncio.run(model.complete(prompts(1)[0], GenerationParams(max_tokens=1)))
    done = time.perf_counter()
    from agents.local.engine import get_engine

    print(json.dumps({
        "imports_s": round(imported - t0, 2),
        "model_load_s": round(get_engine(model_id).stats.load_seconds, 2),
        "to_first_reply_s": round(done - imported, 2),
        "process_s": round(done - t0, 2),
    }))


def load_times(model_id: str) -> dict:
    """Cold and warm start in fresh processes sharing a new, empty cache dir; then warm
    again with Python's bytecode cached (a private PYTHONPYCACHEPREFIX, primed by one
    run), since imports dominate start-up where bytecode is not cached."""
    results = {}
    with (
        tempfile.TemporaryDirectory(prefix="selftaught-bench-cache-") as cache,
        tempfile.TemporaryDirectory(prefix="selftaught-bench-pyc-") as pyc,
    ):
        env = {**os.environ, "SELFTAUGHT_CACHE": cache}
        bytecode = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        bytecode["PYTHONPYCACHEPREFIX"] = pyc
        runs = [("cold", env), ("warm", env), ("prime", bytecode), ("warm+pyc", bytecode)]
        for label, run_env in runs:
            out = subprocess.run(
                [sys.executable, __file__, "--load-probe", "--model", model_id],
                env=run_env, capture_output=True, text=True, check=True, cwd=ROOT,
            )
            results[label] = json.loads(out.stdout.strip().splitlines()[-1])
    del results["prime"]
    return results


def table(report: dict) -> str:
    rows = [("measure", "value")]
    for label, probe in report.get("load", {}).items():
        rows.append((f"{label}: imports (s)", f"{probe['imports_s']:.1f}"))
        rows.append((f"{label}: model load (s)", f"{probe['model_load_s']:.1f}"))
        rows.append((f"{label}: process start to first reply (s)", f"{probe['process_s']:.1f}"))
    s, c = report["throughput"]["single"], report["throughput"]["concurrent"]
    rows += [
        (f"1 request at a time ({s['requests']} requests), tokens/s", f"{s['tokens_per_s']:.1f}"),
        (f"{c['requests']} concurrent requests, aggregate tokens/s", f"{c['tokens_per_s']:.1f}"),
        ("speed-up", f"{report['throughput']['speedup']:.1f}x"),
        ("batch sizes seen", " ".join(map(str, c["batch_sizes"]))),
    ]
    if len(report["throughput"]["rounds"]) > 1:
        rows.append(("all rounds (1 request / concurrent tokens/s)", ", ".join(
            f"{r['single']['tokens_per_s']:.1f} / {r['concurrent']['tokens_per_s']:.1f}"
            for r in report["throughput"]["rounds"])))
    width = max(len(r[0]) for r in rows)
    lines = [f"| {a:<{width}} | {b} |" for a, b in rows]
    lines.insert(1, f"|{'-' * (width + 2)}|-------|")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local/smollm2")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--single-requests", type=int, default=4,
                        help="how many of the same prompts to send one at a time")
    parser.add_argument("--skip-load", action="store_true", help="skip cold/warm load timing")
    parser.add_argument("--repeat", type=int, default=1,
                        help="throughput rounds; the table shows the least disturbed one")
    parser.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                        help="before each round, wait up to this long for other "
                             "processes to leave the CPU idle")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--load-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_probe:
        load_probe(args.model)
        return
    import torch

    report: dict = {
        "model": args.model, "max_tokens": args.max_tokens,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads "
                   f"{torch.get_num_threads()}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if not args.skip_load:
        if args.wait_idle:
            wait_for_idle_cpu(args.wait_idle)
        report["load"] = load_times(args.model)
    report["throughput"] = asyncio.run(throughput(args))
    print(json.dumps(report, indent=2) if args.json else table(report))


if __name__ == "__main__":
    main()
