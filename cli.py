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
memory_app = typer.Typer(no_args_is_help=True, help="Trajectories and lessons.")
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
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """pass@1 with no hints, no memory, one greedy attempt per task (replies capped as in
    improve: improve.profile)."""
    from orchestrator.evaluate import evaluate_spec

    cfg = _config(config, {"models.generator": model, "run.concurrency": concurrency})
    with err.status(f"evaluating {spec}"):
        result = evaluate_spec(cfg, spec, adapter or cfg.run.adapter)
    if as_json:
        _print_json(result.model_dump(mode="json"))
        return
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
    test: Annotated[Optional[str], typer.Option(
        "--test", help="Tasks scored only after each decision: a gain not used to select.")] = None,
    collect: Annotated[Optional[str], typer.Option(
        "--collect", help="samples|feedback|reference|gold: the model's own verified samples "
        "(default), feedback hints, the answer in the hints, or the tasks' own answers.")] = None,
    samples: Annotated[Optional[int], typer.Option(
        "--samples", help="Replies per training task for --collect samples (k).")] = None,
    rounds: Annotated[Optional[int], typer.Option("--rounds")] = None,
    margin: Annotated[Optional[float], typer.Option("--margin", help="Required holdout gain.")] = None,
    tolerance: Annotated[Optional[float], typer.Option(
        "--tolerance", help="Allowed retention loss.")] = None,
    confidence: Annotated[Optional[float], typer.Option(
        "--confidence", help="Significance the holdout gain needs (paired test).")] = None,
    max_kl: Annotated[Optional[float], typer.Option(
        "--max-kl", help="Refuse candidates drifting more from the base (KL per token).")] = None,
    pass_k: Annotated[Optional[int], typer.Option(
        "--pass-k", help="Also measure pass@k on the test suite (else the holdout), k samples per task.")] = None,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency")] = None,
    start: StartOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Collect (by default the model's own verified samples), distill, gate on a paired
    test over holdout/retention; promote or not. Exits 1 when no round promoted."""
    from orchestrator.improve import improve_specs

    cfg = _config(config, {"improve.rounds": rounds, "improve.margin": margin,
                           "improve.tolerance": tolerance, "run.concurrency": concurrency,
                           "distill.start": start, "improve.collect": collect,
                           "improve.samples": samples, "improve.confidence": confidence,
                           "improve.max_kl": max_kl, "improve.pass_k": pass_k})
    with ImproveProgress(err) as progress:
        report = improve_specs(cfg, spec, holdout=holdout, retention=retention,
                               rehearsal=rehearsal, test=test, progress=progress)
    if as_json:
        _print_json(report.model_dump(mode="json"))
    else:
        _print_improve_report(report)
    if not report.promoted_any:
        raise typer.Exit(1)


def _labels(labels: dict[str, int]) -> str:
    """``self 40 · gold 0``: rows per supervision label."""
    return " · ".join(f"{label} {n}" for label, n in labels.items()) or "-"


def _print_improve_report(report) -> None:
    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    table = Table(title="improve")
    rehearsed = any(r.rehearsal_total for r in report.rounds)
    tested = any(r.test_after is not None for r in report.rounds)
    for column in ("round", "collect", "train solved", *(["rehearsal kept"] if rehearsed else []),
                   "rows by label", "holdout before", "holdout after", "p (won/lost)",
                   "retention before", "retention after", "KL",
                   *(["test before", "test after"] if tested else []), "adapter", "decision"):
        table.add_column(column)
    for r in report.rounds:
        decision = "[green]promoted[/]" if r.promoted else "[yellow]kept champion[/]"
        kept = [f"{r.rehearsal_kept}/{r.rehearsal_total}" if r.rehearsal_total else "-"]
        evidence = "-" if r.p_value is None else f"{r.p_value:.3f} ({r.wins}/{r.losses})"
        kl = "-" if r.kl is None else f"{r.kl:.4f}"
        table.add_row(str(r.round), r.collect, f"{r.train_solved}/{r.train_total}",
                      *(kept if rehearsed else []), _labels(r.labels), rate(r.holdout_before),
                      rate(r.holdout_after), evidence, rate(r.retention_before),
                      rate(r.retention_after), kl,
                      *([rate(r.test_before), rate(r.test_after)] if tested else []),
                      r.adapter or "-", decision)
    out.print(table)
    for r in report.rounds:
        out.print(f"round {r.round}: {r.reason}", highlight=False)
        if r.labels and set(r.labels) <= {"gold"}:
            out.print(f"round {r.round} trained on gold rows only: supervised fine-tuning on "
                      "the tasks' own answers, not self-improvement", highlight=False)
    out.print(f"champion: {report.champion or 'none (base model)'}", highlight=False)


class ImproveProgress:
    """``improve``'s progress on stderr: the estimate before each round, a line per
    stage, and a bar for stages that count tasks."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._console = console
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                                  transient=True)
        self._bar = None

    def __enter__(self) -> "ImproveProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def stage(self, round_no: int, what: str, total: int | None = None) -> None:
        if self._bar is not None:
            self._progress.remove_task(self._bar)
            self._bar = None
        label = f"round {round_no}: " if round_no else ""
        self._console.print(f"[bold]{label}{what}[/]", highlight=False)
        if total:
            self._bar = self._progress.add_task(f"{label}{what}", total=total)

    def advance(self, trajectory=None) -> None:
        if self._bar is not None:
            self._progress.advance(self._bar)

    def estimate(self, round_no: int, seconds: dict[str, float]) -> None:
        from orchestrator.estimate import minutes

        parts = ", ".join(f"{stage} {minutes(s)}" for stage, s in seconds.items())
        what = f"round {round_no}" if round_no else "the base evaluation and round 1"
        self._console.print(f"estimate for {what}: ~{minutes(sum(seconds.values()))} "
                            f"({parts}; from measured rates)", highlight=False)


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
    table = Table(title=f"run {summary.run_id}")
    table.add_column("")
    table.add_column("tasks", justify="right")
    for attempt, n in summary.solved_at.items():
        table.add_row(f"solved at attempt {attempt}", str(n))
    table.add_row("unsolved", str(summary.unsolved))
    table.add_row("[bold]solved[/]", f"[bold]{summary.solved}/{summary.total}[/]")
    table.add_row("tokens", str(summary.tokens))
    table.add_row("wall time", f"{summary.seconds:.1f} s")
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
    if manifest.dataset is not None:
        labels = manifest.dataset.counts_per_label
        table.add_row("rows by label", _labels(labels) if labels else "not recorded")
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


if __name__ == "__main__":
    app()
