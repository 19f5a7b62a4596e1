"""The derived vector index: chromadb collections of embeddings, cosine space.

Embedded (``PersistentClient`` in a directory) or a chromadb server (``HttpClient``),
through the same code. The index holds ids, vectors and a few metadata keys for
filtering; everything else is in ``memory.db`` (the source of truth), from which
:meth:`memory.bank.MemoryBank.reindex` rebuilds it. chromadb is imported here only,
lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.errors import ConfigError, StoreError

COLLECTIONS = ("cases", "lessons", "lesson_texts")
"""``cases``: one vector per case (its prompt); ``lessons``: one per task a lesson was
learned on (that task's prompt, so a lesson is found from tasks like it);
``lesson_texts``: one per lesson (its advice, to find near-duplicates)."""
MAX_BATCH = 4000
"""Rows per chromadb write (a server refuses very large requests)."""


class VectorIndex:
    """The collections of one memory, named ``<prefix>-<collection>``."""

    def __init__(self, client: Any, *, prefix: str, where: str) -> None:
        self._client = client
        self._prefix = prefix
        self.where = where
        """Where the index lives, for messages (a directory or ``http://host:port``)."""
        self._collections: dict[str, Any] = {}

    @classmethod
    def open(cls, *, backend: str, path: Path, host: str = "localhost", port: int = 8000,
             prefix: str = "selftaught") -> VectorIndex:
        """Connect: ``persistent`` keeps the index in ``path``; ``http`` talks to the
        chromadb server at ``host:port``. Telemetry is off either way."""
        import chromadb
        from chromadb.config import Settings

        settings = Settings(anonymized_telemetry=False)
        if backend == "persistent":
            try:
                path.mkdir(parents=True, exist_ok=True)
                client = chromadb.PersistentClient(path=str(path), settings=settings)
            except Exception as exc:  # chromadb raises its own and plain errors
                raise StoreError(f"cannot open the vector index in {path}: {exc}; "
                                 "`selftaught memory reindex` rebuilds it") from exc
            return cls(client, prefix=prefix, where=str(path))
        if backend == "http":
            where = f"http://{host}:{port}"
            try:
                client = chromadb.HttpClient(host=host, port=port, settings=settings)
                client.heartbeat()
            except Exception as exc:
                raise ConfigError(
                    f"cannot reach the chromadb server at {where} ({exc}); start one with "
                    f"`chroma run --path DIR --host {host} --port {port}`, or set "
                    'memory.backend = "persistent"') from exc
            return cls(client, prefix=prefix, where=where)
        raise ConfigError(f"unknown memory.backend {backend!r}; use persistent or http")

    def _collection(self, name: str) -> Any:
        if name not in self._collections:
            self._collections[name] = self._call(
                self._client.get_or_create_collection, f"{self._prefix}-{name}",
                configuration={"hnsw": {"space": "cosine"}}, embedding_function=None)
        return self._collections[name]

    def upsert(self, collection: str, ids: Sequence[str], vectors: Sequence[Sequence[float]],
               metadatas: Sequence[dict[str, str]]) -> None:
        """Add or replace rows (idempotent: a repeated id overwrites)."""
        target = self._collection(collection)
        for start in range(0, len(ids), MAX_BATCH):
            end = start + MAX_BATCH
            self._call(target.upsert, ids=list(ids[start:end]), embeddings=list(vectors[start:end]),
                       metadatas=list(metadatas[start:end]))

    def query(self, collection: str, vector: Sequence[float], n: int,
              where: dict[str, Any] | None = None) -> list[tuple[str, float]]:
        """Up to ``n`` (id, cosine similarity) pairs nearest ``vector``, most similar
        first, among rows whose metadata match ``where``."""
        if n <= 0:
            return []
        # chromadb returns what there is when n exceeds it, so no count() round trip first.
        found = self._call(self._collection(collection).query, query_embeddings=[list(vector)],
                           n_results=n, where=where, include=["distances"])
        return [(i, 1.0 - float(d)) for i, d in zip(found["ids"][0], found["distances"][0])]

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            self._call(self._collection(collection).delete, ids=list(ids))

    def count(self, collection: str) -> int:
        return int(self._call(self._collection(collection).count))

    def drop(self, collection: str) -> None:
        """Delete the collection and everything in it (it is made again on next use)."""
        self._collections.pop(collection, None)
        name = f"{self._prefix}-{collection}"
        if name in {c.name if hasattr(c, "name") else c for c in self._call(self._client.list_collections)}:
            self._call(self._client.delete_collection, name)

    def close(self) -> None:
        self._collections.clear()
        close = getattr(self._client, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # closing twice, or a server already gone: nothing to keep
                pass

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, StoreError):
            raise
        except Exception as exc:
            raise StoreError(f"vector index at {self.where}: {type(exc).__name__}: {exc}; "
                             "`selftaught memory reindex` rebuilds it from memory.db") from exc
