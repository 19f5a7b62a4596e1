"""How long an ``improve`` round will take, from measured rates.

Every stage of a round records its rate (seconds per unit of work: per evaluated task,
per sampled reply, per loop task, per training row and epoch, per drift sequence) in
``<home>/rates.json``, keyed by generator and reply cap; the next estimate uses it. Until
a data directory has measured a rate, the defaults below apply: rates of the embedded
model with the ``fast`` profile on a 2-core CPU with nothing else running
(benchmarks/RESULTS.md, "Self-improvement from the model's own work"). An estimate is a
planning figure, not a promise: a busy CPU is slower, and the rows a round trains on
are guessed from the base model's pass@1 before they exist.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import BaseModel

from core.files import write_atomic

RATES_FILE = "rates.json"
DEFAULT_RATES = {
    "eval": 0.3,     # s per greedily evaluated task (48-token replies, 32 in flight)
    "sample": 0.25,  # s per sampled reply
    "loop": 1.5,     # s per task of a feedback/reference collection run
    "train": 0.75,   # s per training row and epoch (LoRA, batch 8)
    "drift": 0.1,    # s per sequence of the KL measurement
}
FIXED = {"train": 25.0, "drift": 10.0}
"""Seconds of model loading a stage pays once."""


class Rates:
    """Measured seconds per unit of work, per (generator, reply cap)."""

    def __init__(self, home: Path | str, key: str) -> None:
        self.path = Path(home).expanduser() / RATES_FILE
        self.key = key

    def _all(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, kind: str) -> float:
        measured = self._all().get(self.key, {}).get(kind)
        return float(measured) if isinstance(measured, (int, float)) else DEFAULT_RATES[kind]

    def record(self, kind: str, seconds: float, units: float) -> None:
        """Blend a new measurement (``seconds`` for ``units``) into the stored rate."""
        if units <= 0 or seconds <= 0:
            return
        data = self._all()
        entry = data.setdefault(self.key, {})
        new = seconds / units
        old = entry.get(kind)
        entry[kind] = round(new if old is None else (old + new) / 2, 4)
        write_atomic(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")


class Plan(BaseModel):
    """The work of one round, in units the rates are per."""

    collect: str
    train_tasks: int
    samples: int
    families: int
    max_per_family: int | None
    max_per_task: int
    epochs: float
    eval_tasks: int
    """Holdout + retention tasks the candidate answers."""
    holdout_tasks: int
    pass_k: int
    test_tasks: int
    rehearsal_tasks: int
    drift_sequences: int


def guess_rows(plan: Plan, solve_rate: float) -> int:
    """Training rows the round will likely have, guessed from ``solve_rate`` (the
    champion's pass@1 on the holdout)."""
    p = min(max(solve_rate, 0.02), 0.95)
    if plan.collect == "samples":
        found = 1 - (1 - p) ** plan.samples  # independent tries: an upper guess
        per_task = min(plan.max_per_task, max(1.0, plan.samples * p))
        rows = plan.train_tasks * min(found, 0.9) * per_task
    elif plan.collect == "feedback":
        rows = plan.train_tasks * min(1.0, 1.5 * p)
    elif plan.collect == "reference":
        rows = plan.train_tasks * 0.6
    else:
        rows = plan.train_tasks
    rows += plan.rehearsal_tasks * p
    if plan.max_per_family:
        rows = min(rows, plan.max_per_family * max(plan.families, 1))
    return max(1, round(rows))


def estimate_round(plan: Plan, rates: Rates, solve_rate: float) -> dict[str, float]:
    """Seconds per stage of one round (``collect``, ``rehearse``, ``distill``, ``eval``,
    ``drift``, ``test``)."""
    if plan.collect == "samples":
        collect = plan.train_tasks * plan.samples * rates.get("sample")
    elif plan.collect == "gold":
        collect = 0.0
    else:
        collect = plan.train_tasks * rates.get("loop")
    rows = guess_rows(plan, solve_rate)
    evaluate = plan.eval_tasks * rates.get("eval")
    if plan.pass_k and not plan.test_tasks:  # pass@k on the holdout when there is no test suite
        evaluate += plan.pass_k * plan.holdout_tasks * rates.get("sample")
    test = plan.test_tasks * (rates.get("eval") + plan.pass_k * rates.get("sample"))
    stages = {
        "collect": collect,
        "rehearse": plan.rehearsal_tasks * rates.get("eval"),
        "distill": FIXED["train"] + rows * plan.epochs * rates.get("train"),
        "eval": evaluate,
        "drift": FIXED["drift"] + plan.drift_sequences * rates.get("drift")
        if plan.drift_sequences else 0.0,
        "test": 2 * test,
    }
    return {k: round(v) for k, v in stages.items() if v > 0}


def minutes(seconds: float) -> str:
    return f"{math.ceil(seconds / 60)} min" if seconds >= 60 else f"{round(seconds)} s"
