"""The report as a self-contained page: each figure of ``orchestrator.plots`` as a PNG
and ``index.html`` beside them with the tables (no script, no stylesheet or font from
the network: the page opens offline)."""

from __future__ import annotations

import html
from pathlib import Path

from orchestrator.config import Config
from orchestrator.plots import figures
from orchestrator.report import Report, gather

REPORT_DIR = "report"


def write(report: Report, out: Path) -> Report:
    """Write the figures as PNGs and ``index.html`` into ``out``; returns ``report``
    with ``files`` filled in."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    images = []
    for name, title, figure in figures(report):
        path = out / f"{name}.png"
        figure.savefig(path, dpi=100)
        files[name] = str(path.resolve())
        images.append((name, title))
    page = out / "index.html"
    page.write_text(_html(report, images), encoding="utf-8")
    files["html"] = str(page.resolve())
    return report.model_copy(update={"files": files})


def build(config: Config, out: Path | None = None) -> Report:
    """``selftaught report``: gather and write (default ``<home>/report/``)."""
    return write(gather(config), out or config.home / REPORT_DIR)


_STYLE = """body{font-family:sans-serif;margin:2em;color:#222;max-width:70em}
table{border-collapse:collapse;margin:1em 0;font-size:90%}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.champion{font-weight:bold;color:#1a7f37}.muted{color:#777}"""


def _html(report: Report, images: list[tuple[str, str]]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>selftaught report</title>"
             f"<style>{_STYLE}</style></head><body>",
             "<h1>selftaught report</h1>",
             f"<p class='muted'>{e(report.home)} · {report.generated_at:%Y-%m-%d %H:%M UTC}</p>",
             f"<p>Champion: <span class='champion'>{e(report.champion or 'none (base model)')}"
             f"</span> · {len(report.adapters)} adapter(s) · {len(report.runs)} run(s) · "
             f"{len(report.job_runs)} job run(s)</p>"]
    for name, title in images:
        parts.append(f"<h2>{e(title)}</h2><img src='{e(name)}.png' alt='{e(title)}'>")
    parts.append(_table("Adapters", ["name", "status", "method", "holdout", "before", "retention",
                                     "before", "rows", "train s", "gate"],
                        [[a.adapter, a.status, a.method, _rate(a.holdout_after), _rate(a.holdout_before),
                          _rate(a.retention_after), _rate(a.retention_before), a.train_rows,
                          _num(a.train_seconds), a.reason] for a in report.adapters]))
    parts.append(_table("Job runs", ["run", "job", "outcome", "started", "minutes", "rounds",
                                     "promoted", "tokens", "cost $", "reason", "log"],
                        [[r.run_id, r.job, r.outcome, f"{r.started_at:%Y-%m-%d %H:%M}",
                          _num(r.seconds / 60), r.rounds, ", ".join(r.promoted) or "-", r.tokens,
                          f"{r.cost_usd:.4f}", r.reason, r.log] for r in report.job_runs]))
    parts.append(_table("Runs", ["run", "status", "tasks", "hints", "done", "solved", "tokens",
                                 "created"],
                        [[r.run_id, r.status, r.tasks, r.hints, f"{r.done}/{r.total}", r.solved,
                          r.tokens, f"{r.created_at:%Y-%m-%d %H:%M}"] for r in report.runs]))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _table(title: str, header: list[str], rows: list[list[object]]) -> str:
    e = html.escape
    if not rows:
        return f"<h2>{e(title)}</h2><p class='muted'>none yet</p>"
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e('' if c is None else str(c))}</td>" for c in row)
                   + "</tr>" for row in rows)
    return f"<h2>{e(title)}</h2><table><tr>{head}</tr>{body}</table>"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
