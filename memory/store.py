"""The durable store of runs and trajectories: one interface, one SQLite backend.

``TrajectoryStore`` is the contract every backend honours (``tests/test_store.py`` runs
one shared suite against each). ``SQLiteStore`` keeps everything in one SQLite file in
WAL mode, so a killed process loses at most the write in flight and never leaves a
partial record, and several processes (a run, a worker) may share the file.

Records are stored whole as JSON beside a few indexed columns used for filtering; the
JSON is the truth, the columns are derived from it on write.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import ConfigError, StoreError
from core.records import SCHEMA_VERSION, Outcome, RunRecord, RunStatus, Trajectory

DB_FILENAME = "selftaught.db"
BUSY_TIMEOUT_MS = 30_000
"""How long a writer waits for another connection's write lock before failing."""


class RunTotals(BaseModel):
    """What a run has stored so far (the runner's ``RunSummary`` adds the plan and errors).

    ``total`` counts stored trajectories (finished tasks), not the tasks the run planned
    (that is ``RunRecord.total``).
    """

    model_config = ConfigDict(frozen=True)

    run_id: str
    total: int = 0
    solved: int = 0
    unsolved: int = 0
    solved_at: dict[int, int] = Field(default_factory=dict)
    """Attempt index (1-based) of the verified attempt -> how many tasks were solved there."""
    tokens: int = 0
    seconds: float = 0.0


@runtime_checkable
class TrajectoryStore(Protocol):
    """Runs and trajectories, durable across processes. Methods are synchronous, quick,
    and safe to call from several threads."""

    def create_run(self, run: RunRecord) -> None:
        """Store a new run. A run id that already exists raises ``StoreError``."""
        ...

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id; an unknown id raises ``ConfigError``."""
        ...

    def list_runs(self) -> list[RunRecord]:
        """Every run, newest first."""
        ...

    def set_run_status(self, run_id: str, status: RunStatus) -> None:
        """Set a run's status and ``updated_at``; an unknown id raises ``ConfigError``."""
        ...

    def add_trajectory(self, t: Trajectory) -> bool:
        """Store ``t`` unless its run already holds a trajectory for ``t.task.id``.

        Returns True when stored, False when ignored as a duplicate (so a resumed run
        can never record one task twice). The run must exist (``StoreError`` if not).
        """
        ...

    def trajectories(
        self,
        *,
        run_id: str | None = None,
        task_id: str | None = None,
        family: str | None = None,
        outcome: Outcome | None = None,
        limit: int | None = None,
    ) -> list[Trajectory]:
        """Stored trajectories matching every given filter, in insertion order."""
        ...

    def finished_task_ids(self, run_id: str) -> set[str]:
        """Ids of the tasks this run has a trajectory for (solved or not)."""
        ...

    def count(self, run_id: str | None = None) -> int:
        """How many trajectories are stored (in one run, or in all)."""
        ...

    def run_totals(self, run_id: str) -> RunTotals:
        """Totals for one run; an unknown id raises ``ConfigError``."""
        ...

    def close(self) -> None:
        """Release the backend's resources; the store is unusable afterwards."""
        ...


_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""from-version -> function turning a record dict of that version into the next version.

Runs and trajectories share the version number; a migration tells them apart by keys
(a run has ``tasks_spec``, a trajectory has ``task``).
"""


def _upgrade(record: dict[str, Any]) -> dict[str, Any]:
    """Bring a stored record dict (run or trajectory) up to ``SCHEMA_VERSION``.

    Every read goes through here, so an old row is readable by new code. A record newer
    than this code raises ``StoreError``.
    """
    version = int(record.get("schema_version", 1))
    if version > SCHEMA_VERSION:
        raise _newer_error(version)
    while version < SCHEMA_VERSION:
        migrate = _MIGRATIONS.get(version)
        if migrate is not None:
            record = migrate(record)
        version += 1
        record["schema_version"] = version
    return record


def _newer_error(version: int) -> StoreError:
    return StoreError(
        f"the store was written by a newer selftaught (schema version {version}; this "
        f"version reads up to {SCHEMA_VERSION}). Upgrade selftaught to open it."
    )


def _utc_text(moment: datetime) -> str:
    """A fixed-width UTC timestamp, so text order is time order (naive means UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id     TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    record     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trajectories (
    seq        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    run_id     TEXT NOT NULL REFERENCES runs(run_id),
    task_id    TEXT NOT NULL,
    family     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    solved_at  INTEGER,
    tokens     INTEGER NOT NULL,
    seconds    REAL NOT NULL,
    created_at TEXT NOT NULL,
    record     TEXT NOT NULL,
    UNIQUE (run_id, task_id)
);
CREATE INDEX IF NOT EXISTS trajectories_task ON trajectories(task_id);
CREATE INDEX IF NOT EXISTS trajectories_family ON trajectories(family);
CREATE INDEX IF NOT EXISTS trajectories_outcome ON trajectories(outcome);
"""


class SQLiteStore:
    """``TrajectoryStore`` in one SQLite file (WAL, synchronous=NORMAL, foreign keys on).

    One connection guarded by a lock serves every thread of this process; other
    processes open their own and wait on the busy timeout. Opening a file written by a
    newer schema, or a file that is not a selftaught database, raises ``StoreError``.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves (see _write).
            self._conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        try:
            self._configure()
            self._init_schema()
        except BaseException:
            self._conn.close()
            raise

    # -- lifecycle ------------------------------------------------------------------

    def _configure(self) -> None:
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.path} is not a selftaught store ({exc}); move it aside or set "
                "SELFTAUGHT_HOME to another directory"
            ) from exc

    def _init_schema(self) -> None:
        with self._write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else SCHEMA_VERSION
            if version > SCHEMA_VERSION:
                raise _newer_error(version)
            _execute_script(conn, _SCHEMA)
            # Older files: rows are upgraded lazily on read by _upgrade, so the file's
            # version only records the newest code that has written to it.
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. BEGIN IMMEDIATE takes the write lock up front, so two
        processes never deadlock upgrading read locks; the busy timeout makes them wait."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write to the store at {self.path}: {exc}") from exc
            try:
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise StoreError(f"cannot write to the store at {self.path}: {exc}") from exc

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the store at {self.path}: {exc}") from exc

    # -- runs -----------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        with self._write() as conn:
            try:
                conn.execute(
                    "INSERT INTO runs (run_id, status, created_at, updated_at, record) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (run.run_id, run.status, _utc_text(run.created_at),
                     _utc_text(run.updated_at), run.model_dump_json()),
                )
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"run {run.run_id!r} already exists in {self.path}") from exc

    def get_run(self, run_id: str) -> RunRecord:
        rows = self._read("SELECT record FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise _unknown_run(run_id)
        return self._load(RunRecord, rows[0][0], f"run {run_id!r}")

    def list_runs(self) -> list[RunRecord]:
        rows = self._read("SELECT run_id, record FROM runs ORDER BY created_at DESC, rowid DESC")
        return [self._load(RunRecord, record, f"run {rid!r}") for rid, record in rows]

    def set_run_status(self, run_id: str, status: RunStatus) -> None:
        with self._write() as conn:
            row = conn.execute("SELECT record FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise _unknown_run(run_id)
            run = self._load(RunRecord, row[0], f"run {run_id!r}")
            # model_validate, not model_copy: a bad status must fail here, not on read.
            run = RunRecord.model_validate(
                {**run.model_dump(), "status": status, "updated_at": datetime.now(UTC)}
            )
            conn.execute(
                "UPDATE runs SET status = ?, updated_at = ?, record = ? WHERE run_id = ?",
                (run.status, _utc_text(run.updated_at), run.model_dump_json(), run_id),
            )

    # -- trajectories ---------------------------------------------------------------

    def add_trajectory(self, t: Trajectory) -> bool:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (t.run_id,)).fetchone() is None:
                raise StoreError(
                    f"trajectory {t.id} names run {t.run_id!r}, which is not in the store; "
                    "create_run must come first"
                )
            try:
                cursor = conn.execute(
                    "INSERT INTO trajectories (id, run_id, task_id, family, outcome, solved_at,"
                    " tokens, seconds, created_at, record)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (run_id, task_id) DO NOTHING",
                    (t.id, t.run_id, t.task.id, t.task.family, t.outcome, t.solved_at,
                     t.tokens, t.seconds, _utc_text(t.created_at), t.model_dump_json()),
                )
            except sqlite3.IntegrityError as exc:
                # Only the (run_id, task_id) conflict is expected; anything else (a reused
                # trajectory id) is a bug in the caller and must not pass silently.
                raise StoreError(f"cannot store trajectory {t.id}: {exc}") from exc
            return cursor.rowcount == 1

    def trajectories(
        self,
        *,
        run_id: str | None = None,
        task_id: str | None = None,
        family: str | None = None,
        outcome: Outcome | None = None,
        limit: int | None = None,
    ) -> list[Trajectory]:
        where, params = _where(run_id=run_id, task_id=task_id, family=family, outcome=outcome)
        sql = f"SELECT id, record FROM trajectories{where} ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params += (max(int(limit), 0),)
        rows = self._read(sql, params)
        return [self._load(Trajectory, record, f"trajectory {tid}") for tid, record in rows]

    def finished_task_ids(self, run_id: str) -> set[str]:
        rows = self._read("SELECT task_id FROM trajectories WHERE run_id = ?", (run_id,))
        return {row[0] for row in rows}

    def count(self, run_id: str | None = None) -> int:
        where, params = _where(run_id=run_id)
        return int(self._read(f"SELECT COUNT(*) FROM trajectories{where}", params)[0][0])

    def run_totals(self, run_id: str) -> RunTotals:
        if not self._read("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)):
            raise _unknown_run(run_id)
        # One statement, so the totals and the histogram come from one snapshot even
        # while another process is writing.
        groups = self._read(
            "SELECT outcome, solved_at, COUNT(*), COALESCE(SUM(tokens), 0),"
            " COALESCE(SUM(seconds), 0.0) FROM trajectories WHERE run_id = ?"
            " GROUP BY outcome, solved_at ORDER BY solved_at",
            (run_id,),
        )
        total = solved = tokens = 0
        seconds = 0.0
        histogram: dict[int, int] = {}
        for outcome, solved_at, n, group_tokens, group_seconds in groups:
            total += n
            tokens += group_tokens
            seconds += group_seconds
            if outcome == "solved":
                solved += n
                if solved_at is not None:
                    histogram[int(solved_at)] = histogram.get(int(solved_at), 0) + n
        return RunTotals(
            run_id=run_id, total=total, solved=solved, unsolved=total - solved,
            solved_at=histogram, tokens=tokens, seconds=seconds,
        )

    # -- helpers --------------------------------------------------------------------

    def _load(self, model: type[Any], text: str, what: str) -> Any:
        """Parse one stored record, upgrading old shapes; damage raises ``StoreError``."""
        try:
            return model.model_validate(_upgrade(json.loads(text)))
        except (ValueError, ValidationError) as exc:
            raise StoreError(f"{what} in {self.path} is unreadable: {exc}") from exc


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated DDL inside the current transaction (``executescript`` would
    COMMIT first, breaking the atomicity of schema set-up)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _where(**filters: Any) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause over the given column filters, skipping those that are None."""
    given = {col: value for col, value in filters.items() if value is not None}
    if not given:
        return "", ()
    clause = " WHERE " + " AND ".join(f"{col} = ?" for col in given)
    return clause, tuple(given.values())


def _unknown_run(run_id: str) -> ConfigError:
    return ConfigError(f"unknown run id {run_id!r}; `selftaught runs list` shows the runs there are")


def open_store(data_home: Path, filename: str = DB_FILENAME) -> SQLiteStore:
    """Open (creating if needed) the store at ``data_home / filename``."""
    data_home = Path(data_home)
    try:
        data_home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the data directory {data_home}: {exc}; set SELFTAUGHT_HOME to a "
            "writable directory"
        ) from exc
    return SQLiteStore(data_home / filename)
