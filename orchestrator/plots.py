"""The report's figures: pure functions from the report's numbers to matplotlib
``Figure`` objects (no pyplot, so no global state and no display; PNGs are drawn by
Agg). Each plotted series carries its label, so what is drawn can be read back and
checked against the recorded values."""

from __future__ import annotations

import math
from collections.abc import Iterator

from matplotlib.figure import Figure

from orchestrator.report import JobSpend, MemoryWorth, PassChart, Report, SolvedAt

CHAMPION_LABEL = "champion"


def figures(report: Report) -> Iterator[tuple[str, str, Figure]]:
    """(file stem, title, figure) for every panel that has data."""
    for chart in (report.holdout, report.retention):
        if chart is not None:
            yield chart.kind, f"{chart.kind.capitalize()} pass@1 per family", pass_figure(chart)
    if report.solved_at:
        yield "solved_at", "Solved at attempt, per hint policy", solved_at_figure(report.solved_at)
    if report.memory:
        yield "memory", "Memory worth: attempt-1 success with each item", memory_figure(report.memory)
    if report.spend:
        yield "spend", "Tokens and minutes per job run", spend_figure(report.spend)


def series_label(chart: PassChart, suite: str | None, family: str) -> str:
    """A family's line label; the suite is added when the chart has several suites."""
    suites = {s.suite for s in chart.series}
    return family if len(suites) == 1 else f"{family} ({suite})"


def pass_figure(chart: PassChart) -> Figure:
    """One line per (suite, family) across the points; the champion's values starred."""
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    ax = figure.add_subplot()
    xs = list(range(len(chart.points)))
    for s in chart.series:
        ys = [math.nan if v is None else v for v in s.values]
        ax.plot(xs, ys, marker="o", label=series_label(chart, s.suite, s.family))
    if chart.champion is not None:
        at = chart.points.index(chart.champion)
        ys = [s.values[at] for s in chart.series if s.values[at] is not None]
        ax.plot([at] * len(ys), ys, linestyle="none", marker="*", markersize=18,
                color="gold", markeredgecolor="black", label=CHAMPION_LABEL, zorder=5)
    ax.set_xticks(xs, chart.points, rotation=30 if len(xs) > 8 else 0)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("pass@1")
    ax.set_xlabel("base model, then adapters in training order")
    ax.set_title(f"{chart.kind} pass@1 per family")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return figure


def solved_at_outcomes(rows: list[SolvedAt]) -> list[str]:
    """The x categories: every attempt any policy solved at, then ``unsolved``."""
    attempts = sorted({int(k) for r in rows for k in r.solved_at})
    return [*(str(a) for a in attempts), "unsolved"]


def solved_at_figure(rows: list[SolvedAt]) -> Figure:
    """Grouped bars: per hint policy, the share of its trajectories ending at each outcome."""
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    ax = figure.add_subplot()
    outcomes = solved_at_outcomes(rows)
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        counts = [row.solved_at.get(o, 0) for o in outcomes[:-1]] + [row.unsolved]
        shares = [c / row.total if row.total else 0.0 for c in counts]
        ax.bar([x + i * width for x in range(len(outcomes))], shares, width,
               label=f"{row.policy} ({row.total})")
    ax.set_xticks([x + width * (len(rows) - 1) / 2 for x in range(len(outcomes))],
                  [f"attempt {o}" if o != "unsolved" else o for o in outcomes])
    ax.set_ylabel("share of the policy's trajectories")
    ax.set_ylim(0, 1)
    ax.legend(title="hint policy (trajectories)", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return figure


def memory_figure(items: list[MemoryWorth]) -> Figure:
    """Per retrieved item: attempt-1 success with it, and without memory (same families)."""
    figure = Figure(figsize=(8, 1.2 + 0.45 * len(items)), layout="constrained")
    ax = figure.add_subplot()
    ys = list(range(len(items)))
    ax.barh([y + 0.2 for y in ys], [i.first_attempt_with for i in items], 0.4, label="with the item")
    ax.barh([y - 0.2 for y in ys],
            [math.nan if i.first_attempt_without is None else i.first_attempt_without for i in items],
            0.4, label="same families, no memory")
    ax.set_yticks(ys, [f"{_short(i.item)} ({i.retrieved}x)" for i in items], fontsize="small")
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("solved at attempt 1")
    ax.legend(fontsize="small")
    return figure


def spend_figure(spend: list[JobSpend]) -> Figure:
    """Per job run: tokens (left), minutes stacked by kind of stage (right)."""
    figure = Figure(figsize=(10, 4.5), layout="constrained")
    tokens_ax, minutes_ax = figure.subplots(1, 2)
    xs = list(range(len(spend)))
    labels = [f"{s.job}\n{s.started_at:%m-%d %H:%M}\n{s.outcome}" for s in spend]
    tokens_ax.bar(xs, [s.tokens for s in spend], label="tokens")
    tokens_ax.set_xticks(xs, labels, fontsize="small")
    tokens_ax.set_ylabel("tokens (all roles)")
    bottom = [0.0] * len(spend)
    for stage in sorted({k for s in spend for k in s.minutes_by_stage}):
        heights = [s.minutes_by_stage.get(stage, 0.0) for s in spend]
        minutes_ax.bar(xs, heights, bottom=bottom, label=stage)
        bottom = [b + h for b, h in zip(bottom, heights)]
    minutes_ax.set_xticks(xs, labels, fontsize="small")
    minutes_ax.set_ylabel("minutes")
    if any(s.minutes_by_stage for s in spend):
        minutes_ax.legend(fontsize="small")
    return figure


def _short(text: str, limit: int = 48) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
