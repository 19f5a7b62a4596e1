"""The ``selftaught`` command: parsing, rich output and exit codes. No logic.

Exit codes: 0 success; 1 the work ran but did not succeed; 2 bad input or
configuration. ``--json`` prints exactly one JSON object on stdout; progress and logs
go to stderr. Heavy modules are imported inside commands so ``--help`` stays fast.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from errors import ConfigError, SelftaughtError

typer_app = typer.Typer(no_args_is_help=True, add_completion=False,
                        help="Agents that improve themselves from feedback.")
runs_app = typer.Typer(no_args_is_help=True, help="Runs and their state.")
memory_app = typer.Typer(no_args_is_help=True, help="Trajectories and lessons.")
config_app = typer.Typer(no_args_is_help=True, help="Configuration.")
typer_app.add_typer(runs_app, name="runs")
typer_app.add_typer(memory_app, name="memory")
typer_app.add_typer(config_app, name="config")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="A selftaught.toml to use.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def app() -> None:
    """Console entry point: turns selftaught's errors into messages and exit codes."""
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
    for section, values in data.items():
        out.print(f"\n[{section}]", highlight=False, markup=False)
        for key, value in values.items():
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
    from orchestrator.answers import grade, load_answers
    from orchestrator.suites import load_tasks

    loaded = load_tasks(spec)
    given = load_answers(answers)
    unknown = sorted(set(given) - {t.id for t in loaded})
    if unknown:
        raise ConfigError(f"{answers} has answers for ids that are not in {spec}: "
                          f"{', '.join(unknown[:10])}; fix the ids or the task spec.")
    results = asyncio.run(grade(loaded, given))
    passed = sum(r.passed for r in results)
    if as_json:
        _print_json({"total": len(results), "passed": passed,
                     "results": [r.model_dump(mode="json") for r in results]})
    else:
        table = Table(title=f"{passed}/{len(results)} passed")
        for column in ("id", "passed", "score", "feedback"):
            table.add_column(column, overflow="fold")
        for r in results:
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
    adapter: Annotated[Optional[str], typer.Option("--adapter")] = None,
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
    from memory.store import open_store

    cfg = _config(config)
    store = open_store(cfg.home)
    rows = []
    for r in store.list_runs():
        stored = store.count(run_id=r.run_id)
        rows.append({"run_id": r.run_id, "status": r.status, "tasks": r.tasks_spec,
                     "done": stored, "total": r.total, "created_at": r.created_at.isoformat()})
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
    from memory.export import export_trajectories
    from memory.store import open_store

    cfg = _config(config)
    n = export_trajectories(open_store(cfg.home), file, run_id=run_id, only_verified=verified_only)
    err.print(f"wrote {n} trajectories to {file}")


if __name__ == "__main__":
    app()
