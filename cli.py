"""The ``selftaught`` command: parsing, rich output and exit codes. No logic.

Exit codes: 0 success; 1 the work ran but did not succeed; 2 bad input or
configuration. ``--json`` prints exactly one JSON object on stdout; progress and logs
go to stderr. Heavy modules are imported inside commands so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from core.errors import ConfigError, SelftaughtError

typer_app = typer.Typer(no_args_is_help=True, add_completion=False,
                        help="Agents that improve themselves from feedback.")
runs_app = typer.Typer(no_args_is_help=True, help="Runs and their state.")
memory_app = typer.Typer(no_args_is_help=True, help="Trajectories, and the vector memory of cases and lessons.")
config_app = typer.Typer(no_args_is_help=True, help="Configuration.")
adapters_app = typer.Typer(no_args_is_help=True, help="Trained LoRA adapters and the champion.")
typer_app.add_typer(runs_app, name="runs")
typer_app.add_typer(memory_app, name="memory")
typer_app.add_typer(config_app, name="config")
typer_app.add_typer(adapters_app, name="adapters")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="A selftaught.toml to use.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
StartOpt = Annotated[Optional[str], typer.Option(
    "--start", help="base|champion: train a new adapter on the base model, or continue training "
    "the champion's (distill.start).")]


def app() -> None:
    """Console entry point: turns selftaught's errors into messages and exit codes."""
    if os.environ.get("PYTHONHASHSEED") != "0":  # same rg: spec, same tasks, every process
        from orchestrator.suites import pin_hash_seed

        pin_hash_seed()
    try:
        typer_app()
    except ConfigError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except SelftaughtError as exc:
        err.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False)
        sys.exit(1)


def _config(path: Path | None, overrides: dict[str, Any] | None = None):
    from orchestrator.config import load_config, with_overrides

    config = load_config(path)
    return with_overrides(config, overrides or {})


def _print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")


@config_app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """Print the effective configuration as TOML-like sections."""
    cfg = _config(config)
    data = cfg.model_dump(mode="json")
    out.print(f'home = "{data.pop("home")}"', highlight=False)
    sections = list(data.items())
    while sections:
        section, values = sections.pop(0)
        out.print(f"\n[{section}]", highlight=False, markup=False)
        # Sub-tables (e.g. [distill.train]) come right after their parent's keys.
        sections[:0] = [(f"{section}.{k}", v) for k, v in values.items() if isinstance(v, dict)]
        for key, value in values.items():
            if isinstance(value, dict):
                continue
            elif value is None:  # TOML has no null: show the key as a comment
                out.print(f"# {key} is not set", highlight=False, markup=False)
            else:
                out.print(f"{key} = {json.dumps(value)}", highlight=False, markup=False)


@typer_app.command()
def tasks(
    spec: Annotated[str, typer.Argument(help="JSONL file, rg:FAMILY[:n=N][:seed=S][:K=V…] or humaneval[:n=N].")],
    as_json: JsonOpt = False,
) -> None:
    """Show what a task spec expands to."""
    from orchestrator.suites import load_tasks

    loaded = load_tasks(spec)
    if as_json:
        _print_json({"total": len(loaded), "tasks": [t.model_dump(mode="json") for t in loaded]})
        return
    table = Table(title=f"{spec}: {len(loaded)} tasks")
    for column in ("id", "family", "verifier", "prompt"):
        table.add_column(column, overflow="fold")
    for t in loaded:
        prompt = t.prompt if len(t.prompt) < 120 else t.prompt[:117] + "..."
        table.add_row(t.id, t.family, t.verifier.type, prompt)
    out.print(table)


@typer_app.command()
def verify(
    spec: Annotated[str, typer.Argument(help="The tasks the answers are for.")],
    answers: Annotated[Path, typer.Option("--answers", help='JSONL: {"id": ..., "answer": ...} per line.')],
    as_json: JsonOpt = False,
) -> None:
    """Grade answers someone already has (no model needed)."""
    from orchestrator.answers import grade_file

    report = grade_file(spec, answers)
    if as_json:
        _print_json(report.model_dump(mode="json"))
    else:
        table = Table(title=f"{report.passed}/{report.total} passed")
        for column in ("id", "passed", "score", "feedback"):
            table.add_column(column, overflow="fold")
        for r in report.results:
            mark = "[green]yes[/]" if r.passed else "[red]no[/]"
            table.add_row(r.id, mark, f"{r.score:.2f}", r.feedback[:200])
        out.print(table)


@typer_app.command()
def run(
    spec: Annotated[Optional[str], typer.Argument(help="Tasks: JSONL file or suite spec.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Generator model (litellm id).")] = None,
    critic_model: Annotated[Optional[str], typer.Option("--critic-model")] = None,
    hint_model: Annotated[Optional[str], typer.Option("--hint-model")] = None,
    max_attempts: Annotated[Optional[int], typer.Option("--max-attempts")] = None,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency")] = None,
    adapter: Annotated[Optional[str], typer.Option(
        "--adapter", help="NAME, champion (the default) or none.")] = None,
    hints: Annotated[Optional[str], typer.Option("--hints", help="none|critique|feedback|reference")] = None,
    no_memory: Annotated[bool, typer.Option("--no-memory")] = False,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue a run that was killed.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the refinement loop over a task suite."""
    from orchestrator.runs import start_or_resume

    if (spec is None) == (resume is None):
        raise ConfigError("give either TASKS (to start a run) or --resume RUN_ID (to continue one).")
    overrides = {
        "models.generator": model, "models.critic": critic_model, "models.hint": hint_model,
        "loop.max_attempts": max_attempts, "loop.hints": hints,
        "run.concurrency": concurrency, "run.adapter": adapter,
        "run.memory": False if no_memory else None,
    }
    cfg = _config(config, overrides)
    progress = RunProgress(err)
    try:
        with progress:
            summary = start_or_resume(cfg, spec=spec, resume=resume, overrides=overrides,
                                      on_start=progress.start, on_trajectory=progress.advance)
    except KeyboardInterrupt:
        err.print(f"interrupted; continue with: selftaught run --resume {progress.run_id}")
        raise typer.Exit(130) from None
    if as_json:
        _print_json(summary.model_dump(mode="json"))
    else:
        _print_run_summary(summary)
    if summary.errors:
        for line in summary.errors:
            err.print(f"[red]task failed:[/] {line}", highlight=False)
        raise typer.Exit(1)


@typer_app.command("eval")
def eval_(
    spec: Annotated[str, typer.Argument(help="Tasks: JSONL file or suite spec.")],
    adapter: Annotated[Optional[str], typer.Option(
        "--adapter", help="NAME, champion or none (default: run.adapter, i.e. champion).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Generator model (litellm id).")] = None,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency")] = None,
    memory: Annotated[bool, typer.Option(
        "--memory", help="Also retrieve from the vector memory (then it measures weights + memory).")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """pass@1 with no hints, no memory (unless --memory), one greedy attempt per task."""
    from orchestrator.evaluate import evaluate_spec

    cfg = _config(config, {"models.generator": model, "run.concurrency": concurrency})
    with err.status(f"evaluating {spec}" + (" with memory" if memory else "")):
        result = evaluate_spec(cfg, spec, adapter or cfg.run.adapter, memory=memory)
    if as_json:
        _print_json(result.model_dump(mode="json"))
        return
    if result.memory:
        out.print("with retrieved memory in the prompts (weights + memory, not the weights alone)",
                  highlight=False)
    out.print(f"adapter {result.adapter}: pass@1 {result.pass_at_1:.3f} "
              f"({result.passed}/{result.total}) in {result.seconds:.0f}s", highlight=False)
    if len(result.per_family) > 1:
        for family, rate in result.per_family.items():
            out.print(f"  {family}: {rate:.3f}", highlight=False)


@typer_app.command()
def distill(
    method: Annotated[Optional[str], typer.Option("--method", help="sft|dpo|sft+dpo")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Adapter name (default aNNNN).")] = None,
    run_ids: Annotated[Optional[list[str]], typer.Option(
        "--run", help="Learn from this run only (repeatable; default: every stored run).")] = None,
    holdout: Annotated[Optional[str], typer.Option(
        "--holdout", help="Evaluation tasks that must not be trained on (refused if present).")] = None,
    epochs: Annotated[Optional[float], typer.Option("--epochs")] = None,
    start: StartOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a LoRA adapter from verified trajectories; it joins the registry as a candidate."""
    from orchestrator.distill import distill_runs

    cfg = _config(config, {"distill.method": method, "distill.train.epochs": epochs,
                           "distill.start": start})
    manifest = distill_runs(cfg, run_ids=run_ids, holdout=holdout, name=name)
    if as_json:
        _print_json(manifest.model_dump(mode="json"))
        return
    data = manifest.dataset
    families = ", ".join(f"{f} {n}" for f, n in sorted(data.counts_per_family.items())) if data else ""
    origin = f", continuing {manifest.started_from}" if manifest.started_from else ""
    out.print(f"adapter {manifest.name} (candidate): {manifest.method}{origin} on "
              f"{data.rows if data else 0} examples ({families}); loss {manifest.train_loss:.3f}, "
              f"{manifest.tokens_per_s:.0f} tokens/s, {manifest.train_seconds:.0f}s", highlight=False)
    out.print(f"next: selftaught eval TASKS --adapter {manifest.name}; "
              f"selftaught adapters promote {manifest.name}", highlight=False)


@typer_app.command()
def improve(
    spec: Annotated[str, typer.Argument(help="Training tasks: JSONL file or suite spec.")],
    holdout: Annotated[str, typer.Option("--holdout", help="Held-out tasks the candidate must improve.")],
    retention: Annotated[Optional[str], typer.Option(
        "--retention", help="Tasks the candidate must not get worse at.")] = None,
    rehearsal: Annotated[Optional[str], typer.Option(
        "--rehearsal", help="Tasks of skills to keep: the champion's own right answers to "
        "them are replayed in training (no prompt may be a holdout or retention prompt).")] = None,
    rounds: Annotated[Optional[int], typer.Option("--rounds")] = None,
    margin: Annotated[Optional[float], typer.Option("--margin", help="Required holdout gain.")] = None,
    tolerance: Annotated[Optional[float], typer.Option(
        "--tolerance", help="Allowed retention loss.")] = None,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency")] = None,
    start: StartOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Collect with reference hints, distill, gate on holdout/retention; promote or not.
    Exits 1 when no round promoted its candidate."""
    from orchestrator.improve import improve_specs

    cfg = _config(config, {"improve.rounds": rounds, "improve.margin": margin,
                           "improve.tolerance": tolerance, "run.concurrency": concurrency,
                           "distill.start": start})
    def on_stage(round_no: int, what: str) -> None:
        label = f"round {round_no}: " if round_no else ""
        err.print(f"[bold]{label}{what}[/]", highlight=False)

    report = improve_specs(cfg, spec, holdout=holdout, retention=retention,
                           rehearsal=rehearsal, on_stage=on_stage)
    if as_json:
        _print_json(report.model_dump(mode="json"))
    else:
        _print_improve_report(report)
    if not report.promoted_any:
        raise typer.Exit(1)


def _print_improve_report(report) -> None:
    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    table = Table(title="improve")
    rehearsed = any(r.rehearsal_total for r in report.rounds)
    for column in ("round", "train solved", *(["rehearsal kept"] if rehearsed else []),
                   "holdout before", "holdout after", "retention before", "retention after",
                   "adapter", "decision"):
        table.add_column(column)
    for r in report.rounds:
        decision = "[green]promoted[/]" if r.promoted else "[yellow]kept champion[/]"
        kept = [f"{r.rehearsal_kept}/{r.rehearsal_total}" if r.rehearsal_total else "-"]
        table.add_row(str(r.round), f"{r.train_solved}/{r.train_total}",
                      *(kept if rehearsed else []), rate(r.holdout_before),
                      rate(r.holdout_after), rate(r.retention_before), rate(r.retention_after),
                      r.adapter or "-", decision)
    out.print(table)
    for r in report.rounds:
        out.print(f"round {r.round}: {r.reason}", highlight=False)
    out.print(f"champion: {report.champion or 'none (base model)'}", highlight=False)


class RunProgress:
    """A live line on stderr: tasks done, solved, attempts, tokens per second."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("[bold]run"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                                  console=console, transient=False)
        self._bar = None
        self.run_id: str | None = None
        self._solved = self._attempts = self._tokens = 0
        self._started = 0.0

    def __enter__(self) -> "RunProgress":
        import time

        self._started = time.monotonic()
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def start(self, run_id: str, total: int, done: int) -> None:
        self.run_id = run_id
        err.print(f"run [bold]{run_id}[/]: {total} tasks ({done} already done)", highlight=False)
        self._bar = self._progress.add_task("run", total=total, completed=done, stats="")

    def advance(self, trajectory) -> None:
        import time

        self._solved += trajectory.outcome == "solved"
        self._attempts += len(trajectory.attempts)
        self._tokens += trajectory.tokens
        rate = self._tokens / max(time.monotonic() - self._started, 1e-9)
        stats = f"solved {self._solved}  attempts {self._attempts}  {rate:,.0f} tok/s"
        self._progress.update(self._bar, advance=1, stats=stats)


def _print_run_summary(summary) -> None:
    hints = {"reference": "reference hints: they show the answer", "none": "no hints"}.get(
        summary.hint_policy, f"{summary.hint_policy} hints")
    table = Table(title=f"run {summary.run_id} ({hints})")
    table.add_column("")
    table.add_column("tasks", justify="right")
    for attempt, n in summary.solved_at.items():
        table.add_row(f"solved at attempt {attempt}", str(n))
    table.add_row("unsolved", str(summary.unsolved))
    table.add_row("[bold]solved[/]", f"[bold]{summary.solved}/{summary.total}[/]")
    table.add_row("tokens", str(summary.tokens))
    table.add_row("wall time", f"{summary.seconds:.1f} s")
    _memory_rows(table, summary.memory)
    out.print(table)


@runs_app.command("list")
def runs_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Show runs, newest first."""
    from orchestrator.runs import list_runs

    rows = [r.model_dump(mode="json") for r in list_runs(_config(config))]
    if as_json:
        _print_json({"runs": rows})
        return
    table = Table(title="runs")
    for column in ("run_id", "status", "tasks", "done", "created_at"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["run_id"], row["status"], row["tasks"], f'{row["done"]}/{row["total"]}',
                      row["created_at"][:19])
    out.print(table)


@memory_app.command("export")
def memory_export(
    file: Annotated[Path, typer.Argument(help="JSONL file to write.")],
    run_id: Annotated[Optional[str], typer.Option("--run")] = None,
    verified_only: Annotated[bool, typer.Option("--verified-only")] = False,
    config: ConfigOpt = None,
) -> None:
    """Write trajectories as chat-message JSONL (the format TRL reads)."""
    from orchestrator.memory_ops import export

    n = export(_config(config), file, run_id=run_id, verified_only=verified_only)
    err.print(f"wrote {n} trajectories to {file}")


# -- adapters ------------------------------------------------------------------------------


def _eval_summary(evaluation: dict[str, Any]) -> str:
    """``holdout 0.62 · retention 0.80``: the entries that carry a ``pass_at_1``."""
    parts = []
    for key, value in evaluation.items():
        score = value.get("pass_at_1") if isinstance(value, dict) else None
        if isinstance(score, (int, float)) and not isinstance(score, bool):
            parts.append(f"{key} {score:.2f}")
    return " · ".join(parts)


@adapters_app.command("list")
def adapters_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Show trained adapters, oldest first, and which one is champion."""
    from orchestrator.adapters import list_adapters

    listing = list_adapters(_config(config))
    manifests, champion = listing.adapters, listing.champion
    if as_json:
        _print_json(listing.model_dump(mode="json"))
        return
    if not manifests:
        out.print("no adapters yet; train one with `selftaught distill`", highlight=False)
        return
    table = Table(title=f"adapters (champion: {champion or 'none'})")
    for column in ("name", "status", "method", "base model", "loss", "created at", "evaluation"):
        table.add_column(column, overflow="fold", no_wrap=column in ("name", "status", "loss"))
    for m in manifests:
        status = "[bold green]champion[/]" if m.status == "champion" else m.status
        loss = "" if m.train_loss is None else f"{m.train_loss:.3f}"
        table.add_row(m.name, status, m.method, m.base_model, loss,
                      m.created_at.strftime("%Y-%m-%d %H:%M"), _eval_summary(m.evaluation))
    out.print(table)


@adapters_app.command("show")
def adapters_show(
    name: Annotated[str, typer.Argument(help="An adapter name, or `champion`.")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print one adapter's full manifest."""
    from rich.pretty import Pretty

    from orchestrator.adapters import show_adapter

    manifest = show_adapter(_config(config), name)
    data = manifest.model_dump(mode="json")
    if as_json:
        _print_json(data)
        return
    table = Table(title=f"adapter {manifest.name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in data.items():
        # Long lists (e.g. the dataset's trajectory ids) are cut here; --json has them all.
        shown = Pretty(value, max_length=20) if isinstance(value, (dict, list)) else str(value)
        table.add_row(key, shown)
    out.print(table)


@adapters_app.command("promote")
def adapters_promote(
    name: Annotated[str, typer.Argument(help="The adapter to make champion.")],
    config: ConfigOpt = None,
) -> None:
    """Make an adapter the champion; the old champion is retired."""
    from orchestrator.adapters import promote

    done = promote(_config(config), name)
    if done.before == done.champion.name:
        out.print(f"{done.champion.name} is already champion", highlight=False)
    else:
        out.print(f"{done.champion.name} is now champion (was {done.before or 'none'})",
                  highlight=False)


@adapters_app.command("rollback")
def adapters_rollback(config: ConfigOpt = None) -> None:
    """Retire the champion and restore the adapter it replaced."""
    from orchestrator.adapters import rollback

    done = rollback(_config(config))
    out.print(f"{done.champion.name} is champion again; {done.before} is retired", highlight=False)


# -- vector memory -------------------------------------------------------------------------


def _memory_rows(table: Table, figures) -> None:
    """The run summary's memory rows: how tasks with and without retrieved memory did."""
    if figures is None:
        table.add_row("memory", "off")
        return
    for label, n, first, solved in (
            ("with memory retrieved", figures.with_memory, figures.with_memory_solved_at_1,
             figures.with_memory_solved),
            ("without memory", figures.without_memory, figures.without_memory_solved_at_1,
             figures.without_memory_solved)):
        table.add_row(f"tasks {label}", f"{n} (solved {solved}, at attempt 1: {first})")
    table.add_row("memory learned", f"{figures.cases_learned} cases, {figures.lessons_learned} lessons")
    if figures.repaired:
        table.add_row("memory repaired", f"{figures.repaired} index entries")


@memory_app.command("search")
def memory_search(
    query: Annotated[str, typer.Argument(help="Text to search for (a task prompt, advice...).")],
    k: Annotated[int, typer.Option("-k", help="How many results.")] = 5,
    kind: Annotated[Optional[str], typer.Option("--kind", help="case|lesson (default: both).")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The stored cases and lessons nearest a text, whatever their family or status."""
    from orchestrator.memory_ops import search

    hits = search(_config(config), query, k=k, kind=kind)
    if as_json:
        _print_json({"query": query, "hits": [h.model_dump(mode="json") for h in hits]})
        return
    table = Table(title=f"memory search: {len(hits)} results")
    for column in ("id", "kind", "similarity", "family", "status", "text"):
        table.add_column(column, overflow="fold")
    for h in hits:
        text = h.text if h.reply is None else f"{h.text}\n[dim]-> {h.reply}[/]"
        table.add_row(h.id, h.kind, f"{h.similarity:.3f}", h.family, h.status, text)
    out.print(table)


@memory_app.command("stats")
def memory_stats(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """How many cases and lessons there are, per status and family, and the index's state."""
    from orchestrator.memory_ops import stats

    data = stats(_config(config))
    if as_json:
        _print_json(data)
        return
    table = Table(title="memory", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in data.items():
        shown = ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else str(value)
        table.add_row(key, shown or "0")
    out.print(table)


@memory_app.command("show")
def memory_show(
    item_id: Annotated[str, typer.Argument(help="A case or lesson id (c-... or l-...).")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One case or lesson, whole, with whether retrieving it helped."""
    from rich.pretty import Pretty

    from orchestrator.memory_ops import show

    data = show(_config(config), item_id)
    if as_json:
        _print_json(data)
        return
    table = Table(title=f"{data['kind']} {item_id} ({data['status']})", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in data["item"].items():
        table.add_row(key, Pretty(value, max_length=10) if isinstance(value, (dict, list)) else str(value))
    w = data["worth"]
    lift = "not judged yet" if w["lift"] is None else f"{w['lift']:+.3f}"
    table.add_row("retrieved", f"{w['uses']} times, solved at attempt 1: {w['wins']}")
    table.add_row("without it", f"expected {w['expected']:.2f} wins over {w['compared']} compared uses "
                  f"(baseline: {w['baseline_n']} trajectories)")
    table.add_row("lift per use", lift)
    out.print(table)


@memory_app.command("lessons")
def memory_lessons(
    family: Annotated[Optional[str], typer.Option("--family", help="A family, or `general`.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every lesson (of one scope), lessons from a person first."""
    from orchestrator.memory_ops import lessons

    rows = lessons(_config(config), family)
    if as_json:
        _print_json({"lessons": rows})
        return
    table = Table(title=f"lessons: {len(rows)}")
    for column in ("id", "scope", "source", "count", "status", "uses", "lift", "text"):
        table.add_column(column, overflow="fold")
    for row in rows:
        w = row["worth"]
        table.add_row(row["id"], row["scope"], row["source"], str(row["count"]), row["status"],
                      str(w["uses"]), "-" if w["lift"] is None else f"{w['lift']:+.2f}", row["text"])
    out.print(table)


@memory_app.command("prune")
def memory_prune(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Delete the retired items (those that did not help)."""
    from orchestrator.memory_ops import prune

    removed = prune(_config(config))
    if as_json:
        _print_json({"removed": removed})
        return
    out.print(f"removed {len(removed)} retired items" + (f": {', '.join(removed)}" if removed else ""),
              highlight=False)


@memory_app.command("reindex")
def memory_reindex(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Rebuild the vector index from memory.db (the source of truth)."""
    from orchestrator.memory_ops import reindex

    with err.status("re-embedding and indexing"):
        done = reindex(_config(config))
    if as_json:
        _print_json(done)
        return
    out.print(f"indexed {done['entries']} entries in {done['seconds']:.1f} s", highlight=False)


if __name__ == "__main__":
    app()
