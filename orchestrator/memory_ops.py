"""The commands behind ``selftaught memory``."""

from __future__ import annotations

from pathlib import Path

from memory.export import export_trajectories
from memory.store import open_store
from orchestrator.config import Config


def export(config: Config, path: Path, *, run_id: str | None = None, verified_only: bool = False) -> int:
    """Write trajectories as chat-message JSONL to ``path``; returns how many."""
    with open_store(config.home) as store:
        return export_trajectories(store, path, run_id=run_id, only_verified=verified_only)
