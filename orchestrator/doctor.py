"""``selftaught doctor [--repair]``: check every file of the data directory, and repair
what can be repaired without losing anything.

What is checked, and the repair:

* the data directory is writable (repair: none; the message says what to run);
* ``selftaught.db`` and ``evals.db``: a full SQLite check, then every record parses
  (repair: ``memory.damage.salvage`` keeps the damaged file beside the new one and
  copies every readable row; unparsable records are only reported, and every read
  skips them with a warning);
* ``checkpoints.db``: a full SQLite check (repair: moved aside; it holds only the
  attempts of tasks in flight, so their next resume starts them again; finished tasks
  are in the trajectory store);
* the adapter registry: the index parses, and every listed adapter's directory is
  whole (repair: a champion whose directory is missing is rolled back, or retired when
  it replaced none, as ``adapters rollback`` does).

Other parts (the vector memory, sessions, schedules) can add their checks here.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from core.errors import SelftaughtError
from finetune.registry import AdapterRegistry
from memory import damage
from memory.store import DB_FILENAME, SQLiteStore
from orchestrator.config import Config
from orchestrator.lifecycle import CHECKPOINTS_FILE

STORES = (DB_FILENAME, "evals.db")


class Finding(BaseModel):
    """One problem found."""

    path: str
    problem: str
    repair: str
    """What ``--repair`` does about it, or what the user must do."""
    repaired: str | None = None
    """What ``--repair`` did (None: not repaired)."""


class DoctorReport(BaseModel):
    """What ``selftaught doctor --json`` prints."""

    home: str
    findings: list[Finding] = Field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """True when nothing is wrong, or everything wrong was repaired."""
        return all(f.repaired for f in self.findings)


def doctor(config: Config, *, repair: bool = False) -> DoctorReport:
    """Check the data directory ``config.home``; with ``repair``, repair what can be."""
    home = Path(config.home)
    report = DoctorReport(home=str(home))
    if home.exists() and not damage.writable(home / DB_FILENAME):
        report.findings.append(Finding(
            path=str(home), problem="not writable by this user",
            repair=f"make it writable (`chmod u+w {home}`) or set SELFTAUGHT_HOME"))
    for name in STORES:
        _check_store(home / name, report, repair)
    _check_checkpoints(home / CHECKPOINTS_FILE, report, repair)
    _check_adapters(config, report, repair)
    return report


def _check_store(path: Path, report: DoctorReport, repair: bool) -> None:
    problem = damage.check(path)
    if problem:
        finding = Finding(path=str(path), problem=problem,
                          repair="salvage: keep the damaged file aside, copy every readable row")
        if repair:
            result = damage.salvage(path, lambda p: SQLiteStore(p).close())
            finding.repaired = (f"kept the damaged file as {result.damaged_copy}; copied "
                                f"{_counts(result.copied)}; row ids lost: {_counts(result.unreadable)}")
        report.findings.append(finding)
    if not path.exists():
        return
    try:
        with SQLiteStore(path) as store:
            bad = store.unreadable_rows()
    except SelftaughtError as exc:
        report.findings.append(Finding(path=str(path), problem=str(exc), repair="see the message"))
        return
    for line in bad:
        report.findings.append(Finding(
            path=str(path), problem=line, repair="none: reads skip this record with a warning",
            repaired="nothing to do: the record stays in the file, reads skip it"))


def _check_checkpoints(path: Path, report: DoctorReport, repair: bool) -> None:
    problem = damage.check(path, empty_ok=True)
    if not problem:
        return
    finding = Finding(path=str(path), problem=problem,
                      repair="move it aside: tasks that were in flight start again on resume; "
                             "finished tasks are kept")
    if repair:
        finding.repaired = f"moved to {damage.move_aside(path)}"
    report.findings.append(finding)


def _check_adapters(config: Config, report: DoctorReport, repair: bool) -> None:
    from orchestrator.adapters import rollback

    registry = AdapterRegistry(config.home)
    try:
        manifests = registry.list()
    except SelftaughtError as exc:
        report.findings.append(Finding(path=str(registry.index_path), problem=str(exc),
                                       repair="restore registry.json from a backup"))
        return
    for manifest in manifests:
        problem = registry.problem(manifest.name)
        if not problem:
            continue
        champion = manifest.status == "champion"
        finding = Finding(
            path=str(registry.root / manifest.name), problem=f"adapter {manifest.name}: {problem}",
            repair=("`selftaught adapters rollback`: restore the champion it replaced, or the "
                    "base model" if champion else "none needed unless you promote it"))
        if repair and champion:
            done = rollback(config)
            now = done.champion.name if done.champion else "none (the base model)"
            finding.repaired = f"rolled back: champion is now {now}"
        elif not champion:
            finding.repaired = "nothing to do (not the champion)"
        report.findings.append(finding)


def _counts(by_table: dict[str, int]) -> str:
    return ", ".join(f"{table} {n}" for table, n in by_table.items()) or "nothing"
