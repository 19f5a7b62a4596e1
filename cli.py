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
from rich.markup import escape
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
    """Console entry point: turns selftaught's errors into messages and exit codes.

    With ``--json``, an error is also one JSON object on stdout, ``{"error", "kind"}``,
    with the same exit code. Ctrl-C exits 130 without interpreter shutdown
    (``orchestrator.interrupts``)."""
    if os.environ.get("PYTHONHASHSEED") != "0":  # same rg: spec, same tasks, every process
        from orchestrator.suites import pin_hash_seed

        pin_hash_seed()
    as_json = "--json" in sys.argv[1:]
    try:
        typer_app()
    except ConfigError as exc:
        _fail(exc, 2, as_json, f"[bold red]error:[/] {escape(str(exc))}")
    except SelftaughtError as exc:
        _fail(exc, 1, as_json, f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}")
    except SystemExit as exc:  # typer turns Ctrl-C into exit 130, bad usage into exit 2
        from orchestrator.interrupts import INTERRUPTED, exit_now

        if exc.code == INTERRUPTED:
            err.print("interrupted")
            exit_now(INTERRUPTED)
        if as_json and exc.code not in (0, None) and not _printed_json:
            _print_json({"error": "invalid command line; the message is on stderr",
                         "kind": "UsageError"})
        raise


def _fail(exc: SelftaughtError, code: int, as_json: bool, message: str) -> None:
    if as_json and not _printed_json:
        _print_json({"error": str(exc), "kind": type(exc).__name__})
    err.print(message, highlight=False)
    sys.exit(code)


def _config(path: Path | None, overrides: dict[str, Any] | None = None):
    from orchestrator.config import load_config, with_overrides

    config = load_config(path)
    return with_overrides(config, overrides or {})


_printed_json = False


def _print_json(payload: Any) -> None:
    global _printed_json
    _printed_json = True
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
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show what a task spec expands to."""
    from orchestrator.suites import load_tasks

    loaded = load_tasks(spec, limits=_config(config).limits)
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
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Grade answers someone already has (no model needed)."""
    from orchestrator.answers import grade_file

    report = grade_file(spec, answers, limits=_config(config).limits)
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
    from orchestrator.interrupts import InterruptGuard
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

    def last_words() -> None:
        progress.stop()
        hint = f"; continue with: selftaught run --resume {progress.run_id}" if progress.run_id else ""
        err.print(f"interrupted{hint}", highlight=False)

    guard = InterruptGuard(last_words)
    guard.exit_at_once()
    try:
        with progress:
            summary = start_or_resume(cfg, spec=spec, resume=resume, overrides=overrides,
                                      on_start=progress.start, on_trajectory=progress.advance,
                                      guard=guard)
    except KeyboardInterrupt:
        guard.exit()
    if as_json:
        _print_json(summary.model_dump(mode="json"))
    else:
        _print_run_summary(summary)
    if summary.errors:
        for line in summary.errors:
            err.print(f"[red]task failed (not recorded as a result):[/] {escape(line)}", highlight=False)
        if summary.stopped:
            err.print(f"[red]stopped:[/] {escape(summary.stopped)}", highlight=False)
        err.print(f"{summary.unfinished} task(s) unfinished; retry them with: "
                  f"selftaught run --resume {summary.run_id}", highlight=False)
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
    """pass@1 with no hints, no memory (unless --memory), one greedy attempt per task
    (replies capped as in improve: improve.profile)."""
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
    from orchestrator.config import IMPROVE_OPTIONS
    from orchestrator.improve import improve_specs

    given = locals()
    cfg = _config(config, {key: given[name] for name, key in IMPROVE_OPTIONS.items()})
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

    def stop(self) -> None:
        """Stop the live display (before last words on Ctrl-C)."""
        try:
            self._progress.stop()
        except Exception:  # never started, or already stopped
            pass

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
    if summary.unfinished:
        table.add_row("[red]unfinished (errors)[/]", str(summary.unfinished))
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
    for column in ("run_id", "kind", "status", "tasks", "done", "errors", "created_at"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["run_id"], row["kind"], row["status"], row["tasks"],
                      f'{row["done"]}/{row["total"]}', str(row["errors"] or ""), row["created_at"][:19])
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
        if m.name in listing.missing:
            status += " [bold red](missing)[/]"
        loss = "" if m.train_loss is None else f"{m.train_loss:.3f}"
        table.add_row(m.name, status, m.method, m.base_model, loss,
                      m.created_at.strftime("%Y-%m-%d %H:%M"), _eval_summary(m.evaluation))
    out.print(table)
    for name, problem in listing.missing.items():
        err.print(f"[red]adapter {name}:[/] {escape(problem)}", highlight=False)


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
    if done.champion is None:
        out.print(f"{done.before} (its directory is missing) is retired; no adapter is champion, "
                  "so runs use the base model", highlight=False)
        return
    out.print(f"{done.champion.name} is champion again; {done.before} is retired", highlight=False)


# -- scheduled jobs, the worker and the report --------------------------------------------

schedule_app = typer.Typer(no_args_is_help=True, help="Improve jobs that run by themselves, with budgets.")
typer_app.add_typer(schedule_app, name="schedule")

_OUTCOME_EXIT = {"done": 0, "budget": 1, "failed": 1, "interrupted": 130}
"""``schedule run``'s exit code per outcome."""


def _improve_params(args: list[str]) -> dict[str, Any]:
    """``improve``'s own parser applied to ``args``: its options, its checks."""
    command = typer.main.get_command(typer_app).commands["improve"]
    try:
        return dict(command.make_context("improve", list(args)).params)
    except typer.TyperException as exc:
        raise ConfigError(f"the improve arguments after --: {exc.format_message()}") from None


@schedule_app.command("add")
def schedule_add(
    name: Annotated[str, typer.Argument(help="The job's name.")],
    improve_args: Annotated[Optional[list[str]], typer.Argument(
        help="After --: the arguments of `selftaught improve` (TASKS --holdout TASKS ...).")] = None,
    cron: Annotated[Optional[str], typer.Option("--cron", help="Cron expression, e.g. '0 3 * * *'.")] = None,
    every: Annotated[Optional[str], typer.Option("--every", help="Interval: 90s, 30m, 2h, 1d, 1h30m.")] = None,
    after_trajectories: Annotated[Optional[int], typer.Option(
        "--after-trajectories", help="Run once N new trajectories are stored.")] = None,
    max_minutes: Annotated[Optional[float], typer.Option("--max-minutes", help="Wall-time budget per run.")] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="Token budget per run (all roles).")] = None,
    max_usd: Annotated[Optional[float], typer.Option("--max-usd", help="Dollar budget per run (hosted models).")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a job, e.g. `schedule add nightly --cron "0 3 * * *" --max-tokens 2000000 --
    TASKS --holdout TASKS`. The improve arguments are checked now (specs, holdout,
    leakage, config)."""
    from orchestrator.schedule import add_job

    args = list(improve_args or [])
    status = add_job(_config(config), name, cron=cron, every=every,
                     after_trajectories=after_trajectories, max_minutes=max_minutes,
                     max_tokens=max_tokens, max_usd=max_usd, improve_params=_improve_params(args),
                     improve_argv=args, config_file=config)
    if as_json:
        _print_json(status.model_dump(mode="json"))
        return
    out.print(f"job {name} added: {status.job.trigger.describe()}; next run "
              f"{_when(status)}", highlight=False)


@schedule_app.command("list")
def schedule_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Jobs with their next run, last run and last outcome."""
    from orchestrator.schedule import list_jobs

    statuses = list_jobs(_config(config))
    if as_json:
        _print_json({"jobs": [s.model_dump(mode="json") for s in statuses]})
        return
    if not statuses:
        out.print("no jobs yet; add one with `selftaught schedule add`", highlight=False)
        return
    table = Table(title="scheduled jobs")
    for column in ("name", "trigger", "budget", "next run", "last run", "last outcome"):
        table.add_column(column, overflow="fold")
    for s in statuses:
        last = s.last_run
        table.add_row(s.job.name, s.job.trigger.describe(), _budget(s.job.budget), _when(s),
                      f"{last.started_at:%Y-%m-%d %H:%M}" if last else "-",
                      last.outcome if last else "-")
    out.print(table)


@schedule_app.command("show")
def schedule_show(name: Annotated[str, typer.Argument()], config: ConfigOpt = None,
                  as_json: JsonOpt = False) -> None:
    """A job and its runs, newest first."""
    from orchestrator.schedule import show_job

    detail = show_job(_config(config), name)
    if as_json:
        _print_json(detail.model_dump(mode="json"))
        return
    job = detail.job
    out.print(f"job {job.name}: {job.trigger.describe()}; budget {_budget(job.budget)}; next run "
              f"{_when(detail)}\nimprove {' '.join(job.improve.argv)}", highlight=False)
    table = Table(title=f"runs of {job.name}")
    for column in ("run", "cause", "started", "minutes", "outcome", "rounds", "promoted",
                   "tokens", "cost $", "reason", "log"):
        table.add_column(column, overflow="fold")
    for r in detail.runs:
        table.add_row(r.run_id, r.cause, f"{r.started_at:%Y-%m-%d %H:%M:%S}", f"{r.seconds / 60:.1f}",
                      r.outcome, str(r.rounds), ", ".join(r.promoted) or "-", str(r.tokens),
                      f"{r.cost_usd:.4f}", r.reason, r.log)
    out.print(table)


def _set_paused(name: str, config: Path | None, paused: bool) -> None:
    from orchestrator.schedule import set_paused

    status = set_paused(_config(config), name, paused)
    out.print(f"job {name} {'paused' if paused else 'resumed'}; next run {_when(status)}",
              highlight=False)


@schedule_app.command("pause")
def schedule_pause(name: Annotated[str, typer.Argument()], config: ConfigOpt = None) -> None:
    """Stop a job from running until it is resumed."""
    _set_paused(name, config, True)


@schedule_app.command("resume")
def schedule_resume(name: Annotated[str, typer.Argument()], config: ConfigOpt = None) -> None:
    """Let a paused job run again."""
    _set_paused(name, config, False)


@schedule_app.command("remove")
def schedule_remove(name: Annotated[str, typer.Argument()], config: ConfigOpt = None) -> None:
    """Delete a job (its past runs stay in the report)."""
    from orchestrator.schedule import remove_job

    remove_job(_config(config), name)
    out.print(f"job {name} removed", highlight=False)


@schedule_app.command("run")
def schedule_run(name: Annotated[str, typer.Argument()], config: ConfigOpt = None,
                 as_json: JsonOpt = False) -> None:
    """Run a job now, once, in the foreground (Ctrl-C stops it after the current stage).
    Exits 0 when it ran to the end, 1 when it failed or hit its budget, 130 interrupted."""
    from orchestrator.worker import run_now

    try:
        run = run_now(_config(config), name, say=lambda line: err.print(line, highlight=False,
                                                                          markup=False))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if as_json:
        _print_json(run.model_dump(mode="json"))
    else:
        out.print(f"job {name} run {run.run_id}: [bold]{run.outcome}[/]"
                  f"{' (' + run.reason + ')' if run.reason else ''}; {run.rounds} round(s), "
                  f"promoted {', '.join(run.promoted) or 'none'}; {run.tokens} tokens, "
                  f"${run.cost_usd:.4f}, {run.seconds / 60:.1f} min; log {run.log}", highlight=False)
    raise typer.Exit(_OUTCOME_EXIT[run.outcome])


@typer_app.command()
def worker(
    wait: Annotated[bool, typer.Option("--wait", help="If another worker runs, wait for it to stop.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Run scheduled jobs when they are due, one at a time, until Ctrl-C or SIGTERM
    (which stop after the current stage)."""
    from orchestrator.worker import run_worker

    run_worker(_config(config), wait=wait, say=lambda line: err.print(line, highlight=False,
                                                                       markup=False))


@typer_app.command()
def report(
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Directory to write (default: HOME/report).")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """An HTML page with PNG plots of progress: pass@1 per family across adapters,
    solved-at distributions, memory worth, spend per job; tables of runs and adapters."""
    from orchestrator.report_page import build

    with err.status("drawing the report"):
        built = build(_config(config), out_dir)
    if as_json:
        _print_json(built.model_dump(mode="json"))
        return
    out.print(f"report: {built.files['html']} ({len(built.files) - 1} figure(s))", highlight=False)


def _when(status) -> str:
    if status.job.paused:
        return "paused"
    if status.new_trajectories is not None:
        return f"after {status.job.trigger.text} new trajectories ({status.new_trajectories} so far)"
    return f"{status.next_run:%Y-%m-%d %H:%M:%S %Z}" if status.next_run else "-"


def _budget(budget) -> str:
    parts = [f"{budget.max_minutes:g} min" if budget.max_minutes else "",
             f"{budget.max_tokens} tokens" if budget.max_tokens else "",
             f"${budget.max_usd:g}" if budget.max_usd else ""]
    return ", ".join(p for p in parts if p) or "none"


# -- reliability: checking and repairing the data directory ----------------------------------


@typer_app.command()
def doctor(
    repair: Annotated[bool, typer.Option("--repair", help="Repair what can be repaired "
                                         "(damaged files are kept beside the new ones).")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check every file of the data directory; exit 1 while a problem remains."""
    from orchestrator.doctor import doctor as examine

    report = examine(_config(config), repair=repair)
    if as_json:
        _print_json({**report.model_dump(mode="json"), "healthy": report.healthy})
    else:
        if not report.findings:
            out.print(f"{report.home}: no problems found", highlight=False)
        for f in report.findings:
            out.print(f"[bold]{escape(f.path)}[/]: {escape(f.problem)}", highlight=False)
            done = f"  repaired: {f.repaired}" if f.repaired else f"  repair: {f.repair}"
            out.print(escape(done), highlight=False)
        if not report.healthy and not repair:
            out.print("run `selftaught doctor --repair` to repair what can be", highlight=False)
    if not report.healthy:
        raise typer.Exit(1)


# -- session: a person watches the loop and answers after every verdict ---------------------


@typer_app.command()
def session(
    spec: Annotated[Optional[str], typer.Argument(
        help="Tasks to choose from (JSONL file or suite spec; none: type tasks in). With "
        "--resume: the session id (default: the newest unfinished session).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a session where it stopped.")] = False,
    script: Annotated[Optional[Path], typer.Option(
        "--script", help="JSONL of the person's inputs (task, hint|verdict|command), read "
        "instead of the keyboard.")] = None,
    who: Annotated[Optional[str], typer.Option(
        "--as", help="Name recorded with your hints and verdicts (default: $USER).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Generator model (litellm id).")] = None,
    critic_model: Annotated[Optional[str], typer.Option("--critic-model")] = None,
    hint_model: Annotated[Optional[str], typer.Option("--hint-model")] = None,
    adapter: Annotated[Optional[str], typer.Option(
        "--adapter", help="NAME, champion (the default) or none.")] = None,
    max_attempts: Annotated[Optional[int], typer.Option("--max-attempts")] = None,
    no_memory: Annotated[bool, typer.Option(
        "--no-memory", help="Neither retrieve from nor store into the vector memory.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Watch the loop work and step in: after every verdict, hint, judge, skip or quit."""
    import getpass

    from orchestrator.session import start_or_resume_session
    from orchestrator.session_input import KeyboardInput, ScriptInput

    overrides = {"models.generator": model, "models.critic": critic_model,
                 "models.hint": hint_model, "run.adapter": adapter,
                 "loop.max_attempts": max_attempts, "run.memory": False if no_memory else None}
    cfg = _config(config, overrides)
    screen = SessionScreen(out)
    inputs = ScriptInput(script, echo=screen.note) if script else KeyboardInput(screen.read_line)
    person = who or os.environ.get("USER") or getpass.getuser()
    try:
        result = start_or_resume_session(
            cfg, spec=None if resume else spec, resume=resume, session_id=spec if resume else None,
            overrides=overrides, inputs=inputs, view=screen, who=person, on_start=screen.started)
    except KeyboardInterrupt:
        if screen.session_id is not None:
            out.print(f"\ninterrupted; nothing is lost. Continue with: selftaught session "
                      f"--resume {screen.session_id}", highlight=False)
        raise typer.Exit(130) from None
    again = f"selftaught session --resume {result.session_id}"
    ending = {"finished": f"session {result.session_id} finished",
              "quit": f"session {result.session_id} left with suite tasks to do; continue: {again}",
              "paused": f"session {result.session_id} paused at a question; {again} asks it again"}
    out.print(f"{ending[result.ending]} ({result.recorded} tasks recorded now)", highlight=False)


class SessionScreen:
    """The session in the terminal: the streamed reply, verdicts, critiques, the status
    line, and the person's input (readline, so a proposed hint can be edited in place)."""

    def __init__(self, console: Console) -> None:
        self.c = console
        self.session_id: str | None = None
        try:
            import readline
        except ImportError:  # no readline (e.g. Windows): typing still works, no pre-fill
            readline = None
        self._readline = readline

    def started(self, session_id: str) -> None:
        self.session_id = session_id
        self.c.print(f"[bold]session {session_id}[/] (help: ? · Ctrl-C pauses; "
                     f"selftaught session --resume continues)", highlight=False)

    def note(self, line: str) -> None:
        self.c.print(f"[dim]{escape(line)}[/]", highlight=False)

    def task(self, task) -> None:
        checker = "a person" if task.verifier.type == "person" else f"the {task.verifier.type} verifier"
        self.c.rule(f"task {task.id} (judged by {checker})")
        self.c.print(task.prompt, highlight=False, markup=False)

    def attempt(self, index: int, max_attempts: int, turn: str) -> None:
        self.c.rule(f"attempt {index}/{max_attempts}")
        if index > 1:  # what the model reads now: the verdict and the hint
            for line in turn.splitlines():
                self.c.print(f"[cyan]› {escape(line)}[/]", highlight=False)

    def reply_started(self, resample: bool) -> None:
        if resample:
            self.c.print("\n[dim](that answer already failed: sampling again)[/]")

    def piece(self, text: str) -> None:
        self.c.print(text, end="", markup=False, highlight=False, soft_wrap=True)

    def verdict(self, attempt, status) -> None:
        v = attempt.verdict
        mark = "[green]✓ correct[/]" if v.passed else "[red]✗ wrong[/]"
        by = ""
        if v.source == "person":
            said = "" if v.overruled is None else f"; the verifier said {'right' if v.overruled.passed else 'wrong'}"
            by = f" (judged by {v.author}{said})"
        self.c.print(f"\n[bold]answer:[/] {escape(attempt.answer or '(none)')}", highlight=False)
        self.c.print(f"[bold]verdict:[/] {mark}{escape(by)} {escape(v.feedback)}", highlight=False)
        first = f" · first token {status.first_token_s:.2f} s" if status.first_token_s is not None else ""
        self.c.print(f"[dim]attempt {status.attempt}/{status.max_attempts} · {status.tokens:,} tokens"
                     f" · {status.seconds:.1f} s{first}[/]", highlight=False)

    def critique(self, text: str) -> None:
        self.c.print(f"[bold]critic:[/] {escape(text)}", highlight=False)

    def proposal(self, hint) -> None:
        self.c.print(f"[bold]proposed hint:[/] {escape(hint.text)}", highlight=False)

    def question(self, question) -> None:
        if question.kind == "choose":
            left = question.remaining
            shown = ", ".join(left[:3]) + (" …" if len(left) > 3 else "")
            self.c.print(f"[bold]next task?[/] {len(left)} left{': ' + shown if left else ''} "
                         "[dim](next · task ID|N · new · list · quit)[/]", highlight=False)
        else:
            self.c.print("[bold]your turn:[/] [dim]hint [TEXT] · accept · edit · retry · correct "
                         "REASON · wrong REASON · skip · history · quit[/]", highlight=False)

    def help(self, line: str) -> None:
        self.c.print(f"[yellow]{escape(line)}[/]", highlight=False)

    def history(self, attempts, earlier) -> None:
        table = Table(title="this task so far")
        for column in ("#", "answer", "verdict", "hint given"):
            table.add_column(column, overflow="fold")
        for a in attempts:
            judged = ("right" if a.verdict.passed else "wrong") + (
                f" ({a.verdict.author})" if a.verdict.source == "person" else "")
            table.add_row(str(a.index), a.answer, judged, a.hint.text if a.hint else "")
        self.c.print(table)
        for t in earlier:
            self.c.print(f"earlier, {t.run_id}: {t.outcome} after {len(t.attempts)} attempts",
                         highlight=False)

    def remaining(self, task_ids) -> None:
        for i, task_id in enumerate(task_ids, start=1):
            self.c.print(f"{i:>3}. {task_id}", highlight=False, markup=False)

    def recorded(self, trajectory) -> None:
        when = f"at attempt {trajectory.solved_at}" if trajectory.solved_at else ""
        self.c.print(f"[bold]recorded {trajectory.task.id}:[/] {trajectory.outcome} {when} "
                     f"({trajectory.stop_reason})", highlight=False)

    def read_line(self, prompt: str, prefill: str = "") -> str:
        readline = self._readline
        if readline is not None and prefill:
            readline.set_startup_hook(lambda: readline.insert_text(prefill))
        try:
            return input(prompt)
        finally:
            if readline is not None:
                readline.set_startup_hook(None)


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
