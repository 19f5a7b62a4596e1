"""Damaged SQLite files: what an error means, a health check, and salvage.

One place decides how a SQLite failure is told to the user, so every store (the
trajectory store, ``evals.db``, the graph checkpoints) says the same thing:

* the directory or file cannot be written (permissions, a read-only mount):
  ``ConfigError`` naming the directory; the data is fine, so nothing says "move it";
* the file is damaged (garbled pages, garbage, truncated): ``StoreError`` naming the
  file and the repair command, :data:`REPAIR_COMMAND`;
* a zero-byte file where data was: ``StoreError`` (SQLite would silently treat it as a
  new, empty database);
* locked for longer than the busy timeout, disk full, I/O errors: ``StoreError`` saying so.

:func:`salvage` is the repair: it moves the damaged file aside (kept, never deleted) and
copies every row SQLite can still read into a fresh file of the same schema.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import BaseModel

from core.errors import ConfigError, SelftaughtError, StoreError

CHECK_COMMAND = "selftaught doctor"
"""The command that checks every file of the data directory (``cli.py``'s ``doctor``)."""
REPAIR_COMMAND = "selftaught doctor --repair"
"""The command every damage message names."""

SIDE_FILES = ("-wal", "-shm", "-journal")
"""Files SQLite keeps beside a database; they move with it."""

_DAMAGED = ("malformed", "not a database", "file is encrypted", "disk image",
            "database corrupt", "unsupported file format")
_UNWRITABLE = ("readonly", "read-only", "unable to open", "permission denied",
               "access permission")
_MAX_SKIPPED = 100_000
"""Salvage gives up on a table after this many unreadable row ids in a row."""

log = logging.getLogger("selftaught.store")


def describe(path: Path, exc: BaseException, *, doing: str = "open") -> SelftaughtError:
    """The error to raise for ``exc``, a SQLite failure while ``doing`` something with
    the database at ``path`` (see the module docstring)."""
    text = str(exc).lower()
    if any(word in text for word in _UNWRITABLE) or not writable(path):
        directory = path.parent
        return ConfigError(
            f"cannot {doing} {path}: {exc}. The data directory {directory} (or the file) is "
            f"not writable; nothing is damaged. Make it writable (e.g. `chmod u+w {directory}"
            f" {path}`) or set SELFTAUGHT_HOME to a writable directory.")
    if any(word in text for word in _DAMAGED):
        return StoreError(damaged_message(path, str(exc)))
    if "locked" in text or "busy" in text:
        return StoreError(
            f"cannot {doing} {path}: {exc}. Another process held it for longer than the "
            "busy timeout; wait for it to finish (or stop it) and try again.")
    if "full" in text or "i/o" in text or "disk" in text:
        return StoreError(f"cannot {doing} {path}: {exc}. Check free space and the disk.")
    return StoreError(f"cannot {doing} {path}: {exc}")


def damaged_message(path: Path, problem: str) -> str:
    """The one wording of "this file is damaged, here is the repair"."""
    return (f"{path} is damaged or not a selftaught store ({problem}); nothing was changed. Repair: "
            f"`{REPAIR_COMMAND}` keeps the damaged file beside it as {path.name}.damaged-TIME "
            f"and copies every readable row into a new {path.name}.")


def writable(path: Path) -> bool:
    """Whether this process may write ``path`` (the file if it exists, else its directory)."""
    target = path if path.exists() else path.parent
    return os.access(target, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)


def empty_file_problem(path: Path) -> str | None:
    """A zero-byte database file with no write-ahead log: its data is gone (SQLite would
    reopen it as a new database). None when ``path`` is absent or has content."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    wal = path.with_name(path.name + "-wal")
    if size == 0 and not (wal.exists() and wal.stat().st_size > 0):
        return "it is an empty file (0 bytes): the data it held is gone"
    return None


def check(path: Path, *, empty_ok: bool = False) -> str | None:
    """``PRAGMA quick_check`` of the database at ``path`` without writing to it: None when
    healthy (or absent), else the problem in words. Reads the whole file once. An empty
    file is a problem unless ``empty_ok`` (a file whose writer creates it empty first)."""
    if not path.exists():
        return None
    problem = empty_file_problem(path)
    if problem:
        return None if empty_ok else problem
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()
    found = [str(r[0]) for r in rows if str(r[0]).lower() != "ok"]
    return "; ".join(found[:3]) if found else None


class Salvage(BaseModel):
    """What :func:`salvage` did."""

    path: str
    damaged_copy: str
    """Where the damaged file now is (never deleted)."""
    copied: dict[str, int]
    """Rows copied, per table."""
    unreadable: dict[str, int]
    """Row ids given up per table because SQLite could not read past them (an upper bound
    on rows lost: some ids may never have held a row)."""


def move_aside(path: Path) -> Path:
    """Rename ``path`` and its side files to ``NAME.damaged-TIME`` (side files keep their
    suffix after it, so SQLite still pairs them); returns the new path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    os.rename(path, target)
    for suffix in SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.rename(side, target.with_name(target.name + suffix))
    return target


def salvage(path: Path, create: Callable[[Path], None]) -> Salvage:
    """Move the damaged database at ``path`` aside, call ``create(path)`` to make a fresh
    one with the current schema, and copy into it every row of every table both share
    that SQLite can still read (``INSERT OR IGNORE``, in row-id order)."""
    damaged = move_aside(path)
    create(path)
    copied: dict[str, int] = {}
    unreadable: dict[str, int] = {}
    source = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
    target = sqlite3.connect(path, isolation_level=None)
    try:
        target.execute("PRAGMA foreign_keys = OFF")  # rows arrive table by table
        for table in _tables(target):
            columns = _common_columns(source, target, table)
            if not columns:
                continue
            names = ", ".join(columns)
            marks = ", ".join("?" for _ in columns)
            count, lost = 0, [0]
            target.execute("BEGIN")
            for row in _readable_rows(source, table, names, lost):
                target.execute(f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})", row)
                count += 1
            target.execute("COMMIT")
            copied[table], unreadable[table] = count, lost[0]
    finally:
        source.close()
        target.close()
    return Salvage(path=str(path), damaged_copy=str(damaged), copied=copied, unreadable=unreadable)


def _tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite_%' ORDER BY rowid").fetchall()
    return [r[0] for r in rows]


def _common_columns(source: sqlite3.Connection, target: sqlite3.Connection, table: str) -> list[str]:
    try:
        have = [r[1] for r in source.execute(f"PRAGMA table_info({table})").fetchall()]
    except sqlite3.DatabaseError:
        return []
    want = [r[1] for r in target.execute(f"PRAGMA table_info({table})").fetchall()]
    return [c for c in want if c in have]


def _readable_rows(conn: sqlite3.Connection, table: str, names: str, lost: list[int]) -> Iterator[tuple]:
    """Every readable row of ``table`` in row-id order. A scan that hits a damaged page
    restarts one row id further, counting each id given up in ``lost[0]``, until rows
    come again or ``_MAX_SKIPPED`` ids in a row failed."""
    last = streak = 0
    while streak < _MAX_SKIPPED:
        try:
            cursor = conn.execute(
                f"SELECT rowid, {names} FROM {table} WHERE rowid > ? ORDER BY rowid", (last,))
            for row in cursor:
                last, streak = row[0], 0
                yield row[1:]
            return
        except sqlite3.DatabaseError:
            streak += 1
            lost[0] += 1
            last += 1
    log.warning("gave up reading table %s after %d unreadable row ids in a row", table, streak)
