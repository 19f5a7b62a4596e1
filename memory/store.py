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
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import ConfigError, StoreError
from core.records import SCHEMA_VERSION, Outcome, RunRecord, RunStatus, TaskError, Trajectory
from memory import damage

DB_FILENAME = "selftaught.db"
BUSY_TIMEOUT_MS = 30_000
"""How long a writer waits for another connection's write lock before failing."""

log = logging.getLogger("selftaught.store")


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

    def add_task_error(self, error: TaskError) -> None:
        """Record that a task could not finish (the run must exist)."""
        ...

    def task_errors(self, run_id: str, *, open_only: bool = True) -> list[TaskError]:
        """The run's task errors, oldest first. ``open_only``: only the latest error of
        each task that still has no trajectory (what a resume will retry)."""
        ...

    def claim_run(self, run_id: str, *, pid: int, host: str,
                  check: Callable[[RunRecord], None] | None = None) -> RunRecord:
        """Atomically make (pid, host) the run's owner: status ``running``, heartbeat now.
        ``check(current)`` runs first, inside the same write transaction, and refuses by
        raising (so two processes can never both claim one run). Unknown id: ``ConfigError``."""
        ...

    def heartbeat(self, run_id: str, pid: int) -> bool:
        """Refresh the heartbeat if ``pid`` still owns the run; False if it does not."""
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
    return _NewerSchema(
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
CREATE TABLE IF NOT EXISTS task_errors (
    seq        INTEGER PRIMARY KEY,
    run_id     TEXT NOT NULL REFERENCES runs(run_id),
    task_id    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    record     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS task_errors_run ON task_errors(run_id, task_id);
"""


class SQLiteStore:
    """``TrajectoryStore`` in one SQLite file (WAL, synchronous=NORMAL, foreign keys on).

    One connection guarded by a lock serves every thread of this process; other
    processes open their own and wait on the busy timeout. A new file is built under a
    temporary name and linked into place whole, so a zero-byte file is never one of
    ours: it is reported as lost data (``StoreError``), not silently reset. SQLite
    failures are explained by ``memory.damage.describe``: a damaged or foreign file is
    ``StoreError`` naming the repair command; an unwritable directory is ``ConfigError``.
    A file written by a newer schema raises ``StoreError``.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        problem = damage.empty_file_problem(self.path)
        if problem:
            raise StoreError(damage.damaged_message(self.path, problem))
        if not self.path.exists():
            _create_file(self.path)
        self._conn = _connect(self.path)

    # -- lifecycle ------------------------------------------------------------------

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
            with _transaction(self._conn, self.path):
                yield self._conn

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise damage.describe(self.path, exc, doing="read") from exc

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
        return self._load_each(RunRecord, rows, "run")

    def set_run_status(self, run_id: str, status: RunStatus) -> None:
        self._update_run(run_id, lambda run: {"status": status, "updated_at": datetime.now(UTC)})

    def claim_run(self, run_id: str, *, pid: int, host: str,
                  check: Callable[[RunRecord], None] | None = None) -> RunRecord:
        def claim(run: RunRecord) -> dict[str, Any]:
            if check is not None:
                check(run)
            now = datetime.now(UTC)
            return {"status": "running", "pid": pid, "host": host, "heartbeat_at": now,
                    "updated_at": now}

        return self._update_run(run_id, claim)

    def heartbeat(self, run_id: str, pid: int) -> bool:
        def beat(run: RunRecord) -> dict[str, Any] | None:
            if run.pid != pid or run.status != "running":
                return None
            return {"heartbeat_at": datetime.now(UTC)}

        try:
            return self._update_run(run_id, beat) is not None
        except ConfigError:  # the run is gone
            return False

    def _update_run(self, run_id: str, change: Callable[[RunRecord], dict[str, Any] | None]) -> RunRecord | None:
        """Read, change and write one run record in one write transaction; ``change``
        returns the fields to set (None: leave the record alone, and return None)."""
        with self._write() as conn:
            row = conn.execute("SELECT record FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise _unknown_run(run_id)
            run = self._load(RunRecord, row[0], f"run {run_id!r}")
            fields = change(run)
            if fields is None:
                return None
            # model_validate, not model_copy: a bad status must fail here, not on read.
            run = RunRecord.model_validate({**run.model_dump(), **fields})
            conn.execute(
                "UPDATE runs SET status = ?, updated_at = ?, record = ? WHERE run_id = ?",
                (run.status, _utc_text(run.updated_at), run.model_dump_json(), run_id),
            )
            return run

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
        return self._load_each(Trajectory, self._read(sql, params), "trajectory")

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

    # -- task errors ----------------------------------------------------------------

    def add_task_error(self, error: TaskError) -> None:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (error.run_id,)).fetchone() is None:
                raise StoreError(f"task error for {error.task_id} names run {error.run_id!r}, "
                                 "which is not in the store; create_run must come first")
            conn.execute(
                "INSERT INTO task_errors (run_id, task_id, kind, created_at, record)"
                " VALUES (?, ?, ?, ?, ?)",
                (error.run_id, error.task_id, error.kind, _utc_text(error.created_at),
                 error.model_dump_json()))

    def task_errors(self, run_id: str, *, open_only: bool = True) -> list[TaskError]:
        sql = "SELECT seq, record FROM task_errors e WHERE run_id = ?"
        if open_only:
            sql += (" AND seq = (SELECT MAX(seq) FROM task_errors l"
                    "  WHERE l.run_id = e.run_id AND l.task_id = e.task_id)"
                    " AND NOT EXISTS (SELECT 1 FROM trajectories t"
                    "  WHERE t.run_id = e.run_id AND t.task_id = e.task_id)")
        return self._load_each(TaskError, self._read(sql + " ORDER BY seq", (run_id,)), "task error")

    def unreadable_rows(self, limit: int = 100) -> list[str]:
        """``"<kind> <key>: <reason>"`` for stored records that do not parse (at most
        ``limit``), read in batches so memory stays small. Not part of the protocol:
        ``selftaught doctor`` uses it."""
        found: list[str] = []
        for table, kind, key, model in (("runs", "run", "run_id", RunRecord),
                                         ("trajectories", "trajectory", "id", Trajectory),
                                         ("task_errors", "task error", "seq", TaskError)):
            last = 0
            while len(found) < limit:
                rows = self._read(f"SELECT rowid, {key}, record FROM {table} WHERE rowid > ? "
                                  "ORDER BY rowid LIMIT 500", (last,))
                if not rows:
                    break
                for rowid, name, text in rows:
                    last = rowid
                    try:
                        self._load(model, text, f"{kind} {name}")
                    except StoreError as exc:
                        found.append(str(exc))
        return found[:limit]

    # -- helpers --------------------------------------------------------------------

    def _load(self, model: type[Any], text: str, what: str) -> Any:
        """Parse one stored record, upgrading old shapes; damage raises ``StoreError``."""
        try:
            return model.model_validate(_upgrade(json.loads(text)))
        except (ValueError, ValidationError) as exc:
            raise StoreError(f"{what} in {self.path} is unreadable: {exc}") from exc

    def _load_each(self, model: type[Any], rows: list[tuple[Any, str]], kind: str) -> list[Any]:
        """Parse ``(key, record)`` rows; an unreadable row is skipped with a warning naming
        it, so one bad row never hides the others (a newer schema still raises)."""
        loaded = []
        for key, text in rows:
            try:
                loaded.append(self._load(model, text, f"{kind} {key}"))
            except _NewerSchema:
                raise
            except StoreError as exc:
                log.warning("%s; skipped (`%s` lists such rows)", exc, damage.CHECK_COMMAND)
        return loaded


class _NewerSchema(StoreError):
    """A record written by a newer selftaught."""


def _connect(path: Path) -> sqlite3.Connection:
    """A configured connection to the existing store file at ``path``, schema ensured."""
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (see _transaction).
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
    except sqlite3.Error as exc:
        raise damage.describe(path, exc) from exc
    try:
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise damage.describe(path, exc) from exc
        with _transaction(conn, path):
            _init_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _create_file(path: Path) -> None:
    """Build a new, empty store under a temporary name beside ``path`` and link it into
    place; a file another process made meanwhile is kept (``os.link`` never replaces)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise damage.describe(path, exc, doing="create") from exc
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    try:
        _connect(temporary).close()  # the last connection's close folds the WAL in
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(temporary, path)
    except OSError as exc:
        raise damage.describe(path, exc, doing="create") from exc
    finally:
        for leftover in (temporary, *(temporary.with_name(temporary.name + s) for s in damage.SIDE_FILES)):
            leftover.unlink(missing_ok=True)


@contextmanager
def _transaction(conn: sqlite3.Connection, path: Path) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT on ``conn``; any SQLite failure (an integrity error
    excepted: callers handle those) becomes the error ``memory.damage.describe`` gives."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise damage.describe(path, exc, doing="write to") from exc
    try:
        yield
    except BaseException as exc:
        _rollback(conn)
        if isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError):
            raise damage.describe(path, exc, doing="write to") from exc
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(conn)
        raise damage.describe(path, exc, doing="write to") from exc


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # a damaged file may refuse even this; the transaction dies with the connection


def _init_schema(conn: sqlite3.Connection) -> None:
    """Create the tables if missing and record the schema version (inside a transaction)."""
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
