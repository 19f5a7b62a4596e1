"""The commands behind ``selftaught memory``, and the one way to open the memory.

chromadb's local (``persistent``) index is safe for one process at a time: each process
keeps its own in-memory copy of the vector index, so a second writer, or a reader beside
a writer, sees ids the other has not written yet. :func:`bank_session` therefore holds
``<home>/memory.lock`` (an flock: released however the holder ends) while a process
has the local index open; the ``http`` backend (a chroma server) serves several
processes and needs no lock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from memory.bank import MemoryBank, WorthRule
from memory.embed import embed
from memory.export import export_trajectories
from memory.items import Case, Hit, Kind, Lesson
from memory.store import open_store
from orchestrator.config import Config
from orchestrator.lock import hold

MEMORY_LOCK = "memory.lock"


def export(config: Config, path: Path, *, run_id: str | None = None, verified_only: bool = False) -> int:
    """Write trajectories as chat-message JSONL to ``path``; returns how many."""
    with open_store(config.home) as store:
        return export_trajectories(store, path, run_id=run_id, only_verified=verified_only)


@contextmanager
def bank_session(config: Config, *, repair: bool = True) -> Iterator[MemoryBank]:
    """The data directory's memory for the ``with`` block, as ``[memory]`` configures
    it (repaired on opening unless ``repair`` is False). With the local index, raises
    ``LockBusy`` naming the process that has it open (see the module docstring)."""
    with _one_process(config), _open_bank(config, repair=repair) as bank:
        yield bank


def _one_process(config: Config):
    if config.memory.backend != "persistent":
        return nullcontext()
    home = Path(config.home)

    def busy(pid: int | None) -> str:
        who = f"process {pid}" if pid else "another process"
        return (f"the vector memory in {home} is in use by {who} (its local chromadb index "
                "takes one process at a time); wait for that process to end, or share the "
                'memory through a chroma server (memory.backend = "http").')

    return hold(home / MEMORY_LOCK, busy)


def _open_bank(config: Config, *, repair: bool = True) -> MemoryBank:
    settings = config.memory
    return MemoryBank(config.home, backend=settings.backend, host=settings.host, port=settings.port,
                      repair=repair,
                      prefix=settings.collection_prefix, merge_similarity=settings.merge_similarity,
                      worth_rule=WorthRule(min_uses=settings.min_uses, demote_below=settings.demote_below,
                                           retire_below=settings.retire_below))


def search(config: Config, query: str, *, k: int = 5, kind: Kind | None = None) -> list[Hit]:
    """The ``k`` items nearest ``query`` (of one ``kind``, or both merged by similarity),
    whatever their family or status: cases by their prompt, lessons by their advice or
    the prompts they were learned on."""
    if kind not in (None, "case", "lesson"):
        raise ConfigError(f"--kind {kind!r}: use case or lesson")
    if k < 1:
        raise ConfigError("-k must be at least 1")
    with bank_session(config) as bank:
        [vector] = embed([query])
        hits = []
        for which in ("case", "lesson") if kind is None else (kind,):
            hits += [_hit(item, status, similarity)
                     for item, status, similarity in bank.nearest(which, vector, k, advice=True)]
    return sorted(hits, key=lambda h: -h.similarity)[:k]


def _hit(item: Case | Lesson, status: str, similarity: float) -> Hit:
    if isinstance(item, Case):
        return Hit(id=item.id, kind="case", similarity=round(similarity, 4), family=item.family,
                   text=item.prompt, status=status, reply=item.reply)
    return Hit(id=item.id, kind="lesson", similarity=round(similarity, 4), family=item.scope,
               text=item.text, status=status, source=item.source)


def stats(config: Config) -> dict[str, Any]:
    """Counts: items per kind and status, per family, index entries, logged outcomes."""
    with bank_session(config) as bank:
        return {"backend": config.memory.backend, "index": bank.index.where, "store": str(bank.path),
                **bank.counts(), "repaired_on_open": bank.repaired}


def show(config: Config, item_id: str) -> dict[str, Any]:
    """One item, whole, with its worth; ``ConfigError`` for an unknown id."""
    with bank_session(config) as bank:
        item = bank.get(item_id)
        if item is None:
            raise ConfigError(f"no memory item {item_id!r}; `selftaught memory search TEXT` finds ids")
        kind = "case" if isinstance(item, Case) else "lesson"
        return {"kind": kind, "item": item.model_dump(mode="json"),
                "worth": bank.worth(item_id).model_dump(mode="json"), "status": bank.status(item_id)}


def lessons(config: Config, family: str | None = None) -> list[dict[str, Any]]:
    """Every lesson (of one scope: a family or ``general``), with its worth; lessons from
    a person first."""
    with bank_session(config) as bank:
        found = [{**lesson.model_dump(mode="json", exclude={"origins"}), "count": lesson.count,
                  "status": status, "worth": bank.worth(lesson.id).model_dump(mode="json")}
                 for lesson, status in bank.items("lesson", family)]
    return sorted(found, key=lambda row: row["source"] != "person")


def prune(config: Config) -> list[str]:
    """Delete retired items; returns their ids."""
    with bank_session(config) as bank:
        return bank.prune()


def reindex(config: Config) -> dict[str, Any]:
    """Rebuild the vector index from ``memory.db``."""
    started = time.monotonic()
    with bank_session(config, repair=False) as bank:
        entries = bank.reindex()
    return {"entries": entries, "seconds": round(time.monotonic() - started, 3)}
