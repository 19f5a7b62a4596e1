"""Self-improvement in the weights with the embedded model on CPU: the collection modes
side by side on the same families, tasks and budget.

    uv run python benchmarks/bench_improve.py --collect samples --rounds 3 \\
        --collect-once gold --collect-once feedback [--train-n 128] [--holdout-n 48] ...

For each ``--collect MODE`` (``--rounds`` rounds) and each ``--collect-once MODE`` (one
round), one ``improve`` call on the same suites in its own data directory: training
tasks of every family of ``--set`` in one suite, holdout and test suites per family
(read per family from the evaluation), and a retention suite. Every mode starts from the
base model; the base model's evaluations are measured once and reused (the evaluation
cache is copied into each mode's directory). Defaults are ``improve``'s own (``samples``
collection, the ``fast`` profile, the paired gate), with pass@k on holdout and test.

Reports per mode and round: holdout and test pass@1 and pass@k per family, retention,
KL from the base, rows per supervision label, the gate's decision (p-value, won/lost),
wall time per stage and the machine load; and each mode's gain as a share of the
``gold`` gain (how much of supervised fine-tuning the model got by itself). Prints a
JSON report on stdout and markdown tables on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.leakage import prompt_hash, prompt_hashes  # noqa: E402
from finetune.registry import AdapterRegistry  # noqa: E402
from orchestrator.config import Config, with_overrides  # noqa: E402
from orchestrator.evaluate import CACHE_DIR, EVAL_STORE  # noqa: E402
from orchestrator.improve import Progress, Suites, improve  # noqa: E402
from orchestrator.suites import load_tasks, pin_hash_seed  # noqa: E402

SETS = {
    # Families where the embedded model's greedy pass@1 is 5-40% and sampling finds more
    # (benchmarks/bench_families.py); retention: one-digit products, which it mostly knows.
    "sampling": (
        {
            "basic_arithmetic": "rg:basic_arithmetic:min_terms=2:max_terms=2:min_digits=1:max_digits=1",
            "gcd": "rg:gcd:min_value=1:max_value=60",
            "chain_sum": "rg:chain_sum:min_terms=2:max_terms=2:min_digits=2:max_digits=2",
        },
        "rg:products:min_terms=2:max_terms=2:min_digits=1:max_digits=1",
    ),
    "one": (
        {"basic_arithmetic": "rg:basic_arithmetic:min_terms=2:max_terms=2:min_digits=1:max_digits=1"},
        "rg:products:min_terms=2:max_terms=2:min_digits=1:max_digits=1",
    ),
}
SEEDS = {"train": 100_000, "holdout": 200_000, "retention": 300_000, "test": 500_000}


def joined(families: dict[str, str], n: int, seed: int) -> str:
    return "+".join(f"{spec}:n={n}:seed={seed}" for spec in families.values())


class Log(Progress):
    def __init__(self, mode: str) -> None:
        self.mode, self.started = mode, time.monotonic()

    def stage(self, round_no: int, what: str, total: int | None = None) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s {self.mode}] round {round_no}: {what} "
              f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)

    def estimate(self, round_no: int, seconds: dict[str, float]) -> None:
        print(f"[{self.mode}] estimate for round {round_no or 1}: {seconds}", file=sys.stderr,
              flush=True)


def main() -> None:
    pin_hash_seed()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", choices=sorted(SETS), default="sampling")
    parser.add_argument("--collect", action="append", default=[],
                        help="a mode run for --rounds rounds (repeatable; default samples)")
    parser.add_argument("--collect-once", action="append", default=[],
                        help="a mode run for one round (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--start", default="champion", choices=["base", "champion"],
                        help="distill.start for multi-round modes")
    parser.add_argument("--train-n", type=int, default=128, help="training tasks per family")
    parser.add_argument("--holdout-n", type=int, default=48, help="holdout tasks per family")
    parser.add_argument("--test-n", type=int, default=48, help="test tasks per family")
    parser.add_argument("--retention-n", type=int, default=100)
    parser.add_argument("--pass-k", type=int, default=8)
    parser.add_argument("--set-config", action="append", default=[], metavar="KEY=JSON",
                        help="a config override, e.g. improve.samples=4 (repeatable)")
    parser.add_argument("--home", type=Path, default=None,
                        help="keep the data directories here (default: temporary)")
    args = parser.parse_args()

    families, retained = SETS[args.set]
    train = joined(families, args.train_n, SEEDS["train"])
    holdout = joined(families, args.holdout_n, SEEDS["holdout"])
    test = joined(families, args.test_n, SEEDS["test"])
    retention = f"{retained}:n={args.retention_n}:seed={SEEDS['retention']}"
    evaluated = prompt_hashes([*load_tasks(holdout), *load_tasks(retention), *load_tasks(test)])
    train_tasks = [t for t in load_tasks(train) if prompt_hash(t.prompt) not in evaluated]
    print(f"{len(load_tasks(train)) - len(train_tasks)} training tasks dropped: their prompt "
          "is also an evaluation prompt", file=sys.stderr)
    suites = Suites(train_spec=train, train=train_tasks, holdout_spec=holdout,
                    holdout=load_tasks(holdout), retention_spec=retention,
                    retention=load_tasks(retention), test_spec=test, test=load_tasks(test))
    overrides = {key: json.loads(value) for key, value in
                 (item.split("=", 1) for item in args.set_config)}
    plans = [(m, args.rounds) for m in args.collect or ["samples"]] + [(m, 1) for m in args.collect_once]

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        root = args.home or Path(scratch)
        first_home: Path | None = None
        for mode, rounds in plans:
            home = root / f"{mode}-{rounds}"
            if first_home is not None:  # reuse the base model's evaluations
                home.mkdir(parents=True, exist_ok=True)
                shutil.copy(first_home / EVAL_STORE, home / EVAL_STORE)
                shutil.copytree(first_home / CACHE_DIR, home / CACHE_DIR, dirs_exist_ok=True)
            config = with_overrides(Config(home=home), {
                "improve.collect": mode, "improve.rounds": rounds, "improve.pass_k": args.pass_k,
                "distill.start": args.start if rounds > 1 else "base", **overrides})
            load = os.getloadavg()
            started = time.monotonic()
            report = asyncio.run(improve(config, suites, progress=Log(mode)))
            seconds = time.monotonic() - started
            manifests = {m.name: m for m in AdapterRegistry(home).list()}
            results.append(summarize(mode, report, manifests, seconds, load, os.getloadavg()))
            first_home = first_home or home
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}))
    tables(results, list(families))


def summarize(mode: str, report, manifests: dict, seconds: float, load_before, load_after) -> dict:
    rounds = []
    for r in report.rounds:
        evaluation = manifests[r.adapter].evaluation if r.adapter else {}
        entry = {**r.model_dump(mode="json")}
        for suite in ("holdout", "test", "retention"):
            scores = evaluation.get(suite, {})
            entry[f"{suite}_per_family_before"] = scores.get("incumbent_per_family")
            entry[f"{suite}_per_family_after"] = scores.get("per_family")
        rounds.append(entry)
    return {"mode": mode, "rounds": rounds, "champion": report.champion,
            "base_seconds": report.base_seconds, "seconds": round(seconds, 1),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in load_after]}


def tables(results: list[dict], families: list[str]) -> None:
    def f(x) -> str:
        return "-" if x is None else f"{x:.2f}"

    err = sys.stderr
    print("\n| mode | round | labels | holdout pass@1 | holdout pass@k | test pass@1 | "
          "test pass@k | retention | KL | p (won/lost) | decision | round min |", file=err)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|", file=err)
    for res in results:
        for r in res["rounds"]:
            labels = ", ".join(f"{k} {v}" for k, v in r["labels"].items()) or "-"
            minutes = sum(r["seconds"].values()) / 60
            p = "-" if r["p_value"] is None else f"{r['p_value']:.3f} ({r['wins']}/{r['losses']})"
            print(f"| {res['mode']} | {r['round']} | {labels} | {f(r['holdout_before'])} -> "
                  f"{f(r['holdout_after'])} | {f(r['holdout_pass_at_k_before'])} -> "
                  f"{f(r['holdout_pass_at_k_after'])} | {f(r['test_before'])} -> "
                  f"{f(r['test_after'])} | {f(r['test_pass_at_k_before'])} -> "
                  f"{f(r['test_pass_at_k_after'])} | {f(r['retention_before'])} -> "
                  f"{f(r['retention_after'])} | {f(r['kl'])} | {p} | "
                  f"{'promoted' if r['promoted'] else 'kept'} | {minutes:.1f} |", file=err)
    print("\n| mode | round | family | holdout | test |", file=err)
    print("|---|---|---|---|---|", file=err)
    for res in results:
        for r in res["rounds"]:
            for fam in families:
                hb, ha = (r["holdout_per_family_before"] or {}), (r["holdout_per_family_after"] or {})
                tb, ta = (r["test_per_family_before"] or {}), (r["test_per_family_after"] or {})
                print(f"| {res['mode']} | {r['round']} | {fam} | {f(hb.get(fam))} -> "
                      f"{f(ha.get(fam))} | {f(tb.get(fam))} -> {f(ta.get(fam))} |", file=err)
    gold = next((res for res in results if res["mode"] == "gold"), None)
    if gold and gold["rounds"] and gold["rounds"][0]["test_after"] is not None:
        g = gold["rounds"][0]
        gold_gain = g["test_after"] - g["test_before"]
        print(f"\ngold test gain: {gold_gain:+.3f}", file=err)
        for res in results:
            if res is gold or not res["rounds"] or res["rounds"][0]["test_before"] is None:
                continue
            # The champion after the last round (the last promoted candidate; the base
            # model when none was promoted) against the base, on the test suite.
            promoted = [r for r in res["rounds"] if r["promoted"]]
            base = res["rounds"][0]["test_before"]
            gain = (promoted[-1]["test_after"] if promoted else base) - base
            share = gain / gold_gain if gold_gain > 0 else float("nan")
            print(f"{res['mode']}: champion's test gain {gain:+.3f}, share of gold {share:.2f}",
                  file=err)


if __name__ == "__main__":
    main()
