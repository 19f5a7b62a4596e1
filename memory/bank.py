"""The vector memory: cases and lessons in SQLite (the source of truth), their embeddings
in a chromadb index (derived), and the record of whether retrieving each one helped.

Writes go in three steps: the item and its index entries are stored in ``memory.db``
with ``indexed = 0``; the entries' vectors are written to the index; the entries are
marked ``indexed = 1``. A process killed between the steps leaves entries marked 0, and
the next :class:`MemoryBank` to open finds and indexes them (:meth:`repair`); an index
that lost rows (its directory removed) is detected by counting and rebuilt the same
way. Nothing unindexed is skipped silently.

Worth: every recorded trajectory logs its outcome (solved at the first attempt or not)
and the items its prompt held. An item's ``lift`` compares the first-attempt success of
the tasks that had it with the rate of the tasks of the same families that did not
(:meth:`worth`); items that fall below ``demote_below`` are ranked after the others,
below ``retire_below`` they are no longer retrieved, and :meth:`prune` deletes them.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import StoreError
from memory.embed import embed
from memory.index import COLLECTIONS, VectorIndex
from memory.items import GENERAL, Case, Kind, Lesson, LessonOrigin, LessonSource, Status, Worth
from memory.lessons import leak_reason

MEMORY_DB = "memory.db"
INDEX_DIR = "chroma"
Embedder = Callable[[Sequence[str]], list[list[float]]]
REPAIR_BATCH = 512

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    family     TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'active',
    key        TEXT UNIQUE,
    created_at TEXT NOT NULL,
    record     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    id            TEXT PRIMARY KEY,
    item_id       TEXT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    collection    TEXT NOT NULL,
    text          TEXT NOT NULL,
    family        TEXT NOT NULL,
    trajectory_id TEXT NOT NULL,
    indexed       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entries_item ON entries(item_id);
CREATE INDEX IF NOT EXISTS entries_unindexed ON entries(indexed);
CREATE INDEX IF NOT EXISTS entries_trajectory ON entries(trajectory_id, collection);
CREATE TABLE IF NOT EXISTS outcomes (
    trajectory_id TEXT PRIMARY KEY,
    run_id        TEXT NOT NULL,
    family        TEXT NOT NULL,
    first_pass    INTEGER NOT NULL,
    retrieved     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_family ON outcomes(family);
CREATE TABLE IF NOT EXISTS retrievals (
    item_id       TEXT NOT NULL,
    trajectory_id TEXT NOT NULL,
    family        TEXT NOT NULL,
    first_pass    INTEGER NOT NULL,
    PRIMARY KEY (item_id, trajectory_id)
);
"""


@dataclass(frozen=True)
class WorthRule:
    """When an item is judged, demoted and retired (see :meth:`MemoryBank.worth`)."""

    min_uses: int = 5
    demote_below: float = -0.1
    retire_below: float = -0.25


@dataclass(frozen=True)
class LessonResult:
    """What :meth:`MemoryBank.add_lesson` did: ``added``, ``merged`` into a near-duplicate
    (``lesson`` is the merged one), ``known`` (this trajectory already gave it) or
    ``refused`` (``reason`` says why)."""

    outcome: str
    lesson: Lesson | None = None
    reason: str = ""


def new_id(kind: Kind) -> str:
    return f"{kind[0]}-{uuid.uuid4().hex[:12]}"


class MemoryBank:
    """Cases, lessons and their worth in ``<home>/memory.db``, indexed in chromadb
    (``<home>/chroma`` or a server). Opening repairs the index (:meth:`repair`; the
    number of entries it indexed is in ``repaired``) unless ``repair`` is False. Methods
    are thread-safe."""

    def __init__(self, home: Path, *, backend: str = "persistent", host: str = "localhost",
                 port: int = 8000, prefix: str = "selftaught", merge_similarity: float = 0.9,
                 worth_rule: WorthRule = WorthRule(), embedder: Embedder = embed,
                 repair: bool = True) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / MEMORY_DB
        self.merge_similarity = merge_similarity
        self.rule = worth_rule
        self._embed = embedder
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                         check_same_thread=False)
            for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "foreign_keys = ON",
                           "busy_timeout = 30000"):
                self._conn.execute(f"PRAGMA {pragma}")
            with self._write() as conn:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the memory store {self.path}: {exc}; move it aside "
                             "or set SELFTAUGHT_HOME to another directory") from exc
        self.index = VectorIndex.open(backend=backend, path=self.home / INDEX_DIR, host=host,
                                      port=port, prefix=prefix)
        self.repaired = self.repair() if repair else 0

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self.index.close()
            self._conn.close()

    def __enter__(self) -> MemoryBank:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    # -- writes -------------------------------------------------------------------------

    def add_case(self, case: Case) -> bool:
        """Store ``case`` and index it; False (nothing written) when a case from the same
        trajectory, or with the same prompt and reply, is already stored."""
        key = f"{case.prompt_hash}:{hashlib.sha256(case.reply.encode()).hexdigest()[:16]}"
        entry = (case.id, case.id, "cases", case.prompt, case.family, case.trajectory_id)
        # Check and insert in one transaction: two threads (or processes sharing a home)
        # learning the same reply to the same prompt must not both insert. The entry is
        # embedded after the write; a failure there leaves it unindexed for repair().
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM entries WHERE trajectory_id = ? AND collection = 'cases'"
                            " UNION ALL SELECT 1 FROM items WHERE key = ?",
                            (case.trajectory_id, key)).fetchall():
                return False
            conn.execute("INSERT INTO items (id, kind, family, key, created_at, record)"
                         " VALUES (?, 'case', ?, ?, ?, ?)",
                         (case.id, case.family, key, case.created_at.isoformat(), case.model_dump_json()))
            conn.execute("INSERT INTO entries (id, item_id, collection, text, family, trajectory_id)"
                         " VALUES (?, ?, ?, ?, ?, ?)", entry)
        self._index([entry], self._embed([case.prompt]))
        return True

    def add_lesson(self, text: str, origin: LessonOrigin, *, source: LessonSource, author: str,
                   answers: Iterable[str]) -> LessonResult:
        """Store the lesson ``text`` learned on ``origin``, or merge it into a stored lesson
        whose advice is at least ``merge_similarity`` similar (the merged lesson gains
        the origin; learned on two families, its scope becomes ``general``; a person's
        word makes its source ``person``). Refused, with the reason, when
        :func:`memory.lessons.leak_reason` finds one of ``answers`` in it."""
        reason = leak_reason(text, answers)
        if reason:
            return LessonResult("refused", reason=f"lesson {text!r} refused: {reason}")
        # The lock spans lookup, merge and write: concurrent lessons that merge into one
        # stored lesson must each add their origin, not overwrite one another's.
        with self._lock:
            known = self._read("SELECT item_id FROM entries WHERE trajectory_id = ? AND collection = 'lessons'",
                               (origin.trajectory_id,))
            if known:
                return LessonResult("known", lesson=self.get(known[0][0]))
            text_vector, prompt_vector = self._embed([text, origin.prompt])
            near = self.index.query("lesson_texts", text_vector, 1)
            if near and near[0][1] >= self.merge_similarity:
                lesson = self.get(near[0][0].split(":")[0])
                if isinstance(lesson, Lesson):
                    return self._merge(lesson, origin, source, prompt_vector)
            lesson_id = new_id("lesson")
            lesson = Lesson(id=lesson_id, text=text, scope=origin.family, source=source,
                            author=author, origins=[origin])
            entries = [(f"{lesson_id}:text", lesson_id, "lesson_texts", text, origin.family, origin.trajectory_id),
                       (f"{lesson_id}:0", lesson_id, "lessons", origin.prompt, origin.family, origin.trajectory_id)]
            with self._write() as conn:
                conn.execute("INSERT INTO items (id, kind, family, created_at, record) VALUES (?, 'lesson', ?, ?, ?)",
                             (lesson_id, lesson.scope, lesson.created_at.isoformat(), lesson.model_dump_json()))
                conn.executemany("INSERT INTO entries (id, item_id, collection, text, family, trajectory_id)"
                                 " VALUES (?, ?, ?, ?, ?, ?)", entries)
            self._index(entries, [text_vector, prompt_vector])
            return LessonResult("added", lesson=lesson)

    def _merge(self, lesson: Lesson, origin: LessonOrigin, source: LessonSource,
               prompt_vector: list[float]) -> LessonResult:
        scope = lesson.scope if lesson.scope == origin.family else GENERAL
        merged = lesson.model_copy(update={
            "origins": [*lesson.origins, origin], "scope": scope,
            "source": "person" if source == "person" else lesson.source})
        entry = (f"{lesson.id}:{len(lesson.origins)}", lesson.id, "lessons", origin.prompt,
                 origin.family, origin.trajectory_id)
        with self._write() as conn:
            conn.execute("UPDATE items SET family = ?, record = ? WHERE id = ?",
                         (scope, merged.model_dump_json(), lesson.id))
            conn.execute("INSERT INTO entries (id, item_id, collection, text, family, trajectory_id)"
                         " VALUES (?, ?, ?, ?, ?, ?)", entry)
        self._index([entry], [prompt_vector])
        return LessonResult("merged", lesson=merged)

    def _index(self, entries: Sequence[tuple[str, ...]], vectors: Sequence[list[float]]) -> None:
        """Write ``entries`` (rows of the entries table) to the index, then mark them."""
        by_collection: dict[str, list[int]] = {}
        for i, entry in enumerate(entries):
            by_collection.setdefault(entry[2], []).append(i)
        for collection, rows in by_collection.items():
            self.index.upsert(collection, [entries[i][0] for i in rows], [vectors[i] for i in rows],
                              [{"item": entries[i][1], "family": entries[i][4]} for i in rows])
        with self._write() as conn:
            conn.executemany("UPDATE entries SET indexed = 1 WHERE id = ?", [(e[0],) for e in entries])

    # -- the index ------------------------------------------------------------------------

    def repair(self) -> int:
        """Make the index match ``memory.db``; returns how many entries were (re)indexed.

        A collection holding fewer rows than ``memory.db`` marks as indexed lost them (its
        directory was removed); one holding more has rows ``memory.db`` does not know:
        either way it is rebuilt. Then every entry marked unindexed (a write interrupted
        between ``memory.db`` and the index) is embedded and indexed, in batches."""
        with self._lock:
            for collection in COLLECTIONS:
                (marked,), = self._read(
                    "SELECT COUNT(*) FROM entries WHERE collection = ? AND indexed = 1", (collection,))
                (total,), = self._read("SELECT COUNT(*) FROM entries WHERE collection = ?", (collection,))
                present = self.index.count(collection)
                if present < marked or present > total:
                    self.index.drop(collection)
                    with self._write() as conn:
                        conn.execute("UPDATE entries SET indexed = 0 WHERE collection = ?", (collection,))
            done = 0
            while True:
                rows = self._read("SELECT id, item_id, collection, text, family, trajectory_id FROM entries"
                                  " WHERE indexed = 0 ORDER BY rowid LIMIT ?", (REPAIR_BATCH,))
                if not rows:
                    return done
                self._index(rows, self._embed([row[3] for row in rows]))
                done += len(rows)

    def reindex(self) -> int:
        """Drop the index and rebuild it from ``memory.db``; returns the entries indexed."""
        with self._lock:
            for collection in COLLECTIONS:
                self.index.drop(collection)
            with self._write() as conn:
                conn.execute("UPDATE entries SET indexed = 0")
            return self.repair()

    def unindexed(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM entries WHERE indexed = 0")[0][0])

    # -- reads ----------------------------------------------------------------------------

    def nearest(self, kind: Kind, vector: Sequence[float], n: int, family: str | None = None,
                *, advice: bool = False) -> list[tuple[Case | Lesson, Status, float]]:
        """Up to ``n`` stored items of ``kind`` nearest ``vector`` (most similar first),
        each with its status and similarity. Cases are found by their prompt, and may be
        limited to one ``family``; lessons by the prompts of the tasks they were learned
        on, and with ``advice`` by their advice too; a lesson found several ways counts
        once, at its best similarity."""
        if kind == "case":
            found = self.index.query("cases", vector, n, where={"family": family} if family else None)
        else:
            found = self.index.query("lessons", vector, n)
            if advice:
                found += self.index.query("lesson_texts", vector, n)
        best: dict[str, float] = {}
        for entry_id, similarity in found:
            item_id = entry_id.split(":")[0]
            best[item_id] = max(similarity, best.get(item_id, -1.0))
        loaded = self._load(list(best))
        ranked = sorted(best.items(), key=lambda pair: -pair[1])[:n]
        return [(loaded[i][0], loaded[i][1], s) for i, s in ranked if i in loaded]

    def size(self, kind: Kind) -> int:
        """Rows in the index that :meth:`nearest` searches for ``kind``."""
        return self.index.count("cases" if kind == "case" else "lessons")

    def _load(self, ids: Sequence[str]) -> dict[str, tuple[Case | Lesson, Status]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._read(f"SELECT id, kind, status, record FROM items WHERE id IN ({marks})", ids)
        return {i: (_parse(kind, record), status) for i, kind, status, record in rows}

    def get(self, item_id: str) -> Case | Lesson | None:
        found = self._load([item_id])
        return found[item_id][0] if item_id in found else None

    def status(self, item_id: str) -> Status | None:
        rows = self._read("SELECT status FROM items WHERE id = ?", (item_id,))
        return rows[0][0] if rows else None

    def items(self, kind: Kind, family: str | None = None) -> list[tuple[Case | Lesson, Status]]:
        """Every stored item of ``kind`` (of one family or scope), oldest first."""
        sql, params = "SELECT kind, status, record FROM items WHERE kind = ?", [kind]
        if family is not None:
            sql, params = sql + " AND family = ?", [*params, family]
        return [(_parse(k, record), status) for k, status, record in self._read(sql + " ORDER BY rowid", params)]

    def unlogged(self, trajectory_ids: Sequence[str]) -> set[str]:
        """Those of ``trajectory_ids`` whose outcome was never recorded."""
        logged = {row[0] for row in self._read("SELECT trajectory_id FROM outcomes")}
        return set(trajectory_ids) - logged

    def learned_from(self, trajectory_ids: Sequence[str]) -> dict[str, int]:
        """How many cases, and lesson origins (new lessons and merges), came from these
        trajectories."""
        counts = {"cases": 0, "lessons": 0}
        for start in range(0, len(trajectory_ids), 500):
            chunk = list(trajectory_ids[start:start + 500])
            marks = ",".join("?" * len(chunk))
            for collection, n in self._read(
                    "SELECT collection, COUNT(*) FROM entries WHERE collection IN ('cases', 'lessons')"
                    f" AND trajectory_id IN ({marks}) GROUP BY collection", chunk):
                counts[collection] += n
        return counts

    def counts(self) -> dict[str, Any]:
        """Items per kind and status, entries and how many await indexing, logged outcomes."""
        items = {f"{kind}s": {} for kind in ("case", "lesson")}
        for kind, status, n in self._read("SELECT kind, status, COUNT(*) FROM items GROUP BY kind, status"):
            items[f"{kind}s"][status] = n
        families: dict[str, int] = {}
        for family, n in self._read("SELECT family, COUNT(*) FROM items GROUP BY family ORDER BY family"):
            families[family] = n
        (entries,), = self._read("SELECT COUNT(*) FROM entries")
        (outcomes, with_memory), = self._read("SELECT COUNT(*), COALESCE(SUM(retrieved > 0), 0) FROM outcomes")
        (retrievals,), = self._read("SELECT COUNT(*) FROM retrievals")
        return {**items, "families": families, "index_entries": entries, "unindexed": self.unindexed(),
                "trajectories_logged": outcomes, "trajectories_with_memory": with_memory,
                "retrievals_logged": retrievals}

    # -- worth ----------------------------------------------------------------------------

    def record_outcome(self, trajectory_id: str, run_id: str, family: str, first_pass: bool,
                       retrieved: Sequence[str]) -> None:
        """Log one recorded trajectory (idempotent per trajectory) and re-judge the items
        its prompt held."""
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO outcomes (trajectory_id, run_id, family, first_pass, retrieved)"
                " VALUES (?, ?, ?, ?, ?)", (trajectory_id, run_id, family, int(first_pass), len(retrieved)))
            if cursor.rowcount == 0:
                return
            conn.executemany("INSERT OR IGNORE INTO retrievals (item_id, trajectory_id, family, first_pass)"
                             " VALUES (?, ?, ?, ?)",
                             [(i, trajectory_id, family, int(first_pass)) for i in retrieved])
        for item_id in retrieved:
            judged = self.worth(item_id)
            with self._write() as conn:
                conn.execute("UPDATE items SET status = ? WHERE id = ?", (judged.status, item_id))

    def worth(self, item_id: str) -> Worth:
        """The item's record: ``uses`` and first-attempt ``wins`` of the trajectories that
        had it; per family, the first-attempt rate of that family's trajectories that did
        not; ``lift`` = (wins - expected wins at those rates) / uses, counted over the
        families that have such a baseline. Judged once ``min_uses`` of both are logged:
        ``demoted`` at ``demote_below`` or less, ``retired`` at ``retire_below`` or less."""
        used = self._read("SELECT family, COUNT(*), SUM(first_pass) FROM retrievals WHERE item_id = ?"
                          " GROUP BY family", (item_id,))
        worth = Worth(uses=sum(r[1] for r in used), wins=sum(r[2] for r in used))
        compared = wins = baseline_n = 0
        expected = 0.0
        for family, uses, family_wins in used:
            (n, passed), = self._read(
                "SELECT COUNT(*), COALESCE(SUM(first_pass), 0) FROM outcomes WHERE family = ? AND"
                " trajectory_id NOT IN (SELECT trajectory_id FROM retrievals WHERE item_id = ?)",
                (family, item_id))
            if n:
                compared, wins, baseline_n = compared + uses, wins + family_wins, baseline_n + n
                expected += uses * passed / n
        worth = worth.model_copy(update={"compared": compared, "expected": round(expected, 3),
                                         "baseline_n": baseline_n})
        if compared < self.rule.min_uses or baseline_n < self.rule.min_uses:
            return worth
        lift = (wins - expected) / compared
        status: Status = ("retired" if lift <= self.rule.retire_below
                          else "demoted" if lift <= self.rule.demote_below else "active")
        return worth.model_copy(update={"lift": round(lift, 4), "status": status})

    def prune(self) -> list[str]:
        """Delete retired items (index first, then ``memory.db``: a crash in between
        leaves rows the next :meth:`repair` re-indexes and the next prune deletes)."""
        with self._lock:
            ids = [row[0] for row in self._read("SELECT id FROM items WHERE status = 'retired'")]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            for collection in COLLECTIONS:
                rows = self._read(f"SELECT id FROM entries WHERE collection = ? AND item_id IN ({marks})",
                                  [collection, *ids])
                self.index.delete(collection, [r[0] for r in rows])
            with self._write() as conn:
                conn.execute(f"DELETE FROM entries WHERE item_id IN ({marks})", ids)
                conn.execute(f"DELETE FROM retrievals WHERE item_id IN ({marks})", ids)
                conn.execute(f"DELETE FROM items WHERE id IN ({marks})", ids)
            return ids


def _parse(kind: str, record: str) -> Case | Lesson:
    try:
        return Case.model_validate_json(record) if kind == "case" else Lesson.model_validate_json(record)
    except ValueError as exc:
        raise StoreError(f"a memory item is unreadable ({exc}); move memory.db aside") from exc

