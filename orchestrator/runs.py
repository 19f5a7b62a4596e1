"""Starting and resuming runs: the composition behind ``selftaught run``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from core.records import RunRecord, RunStatus
from memory.store import open_store
from orchestrator.config import Config, with_overrides
from orchestrator.evaluate import evaluated_prompts
from orchestrator.recall import open_memory
from orchestrator.runner import OnTrajectory, RunSummary, execute_run, new_run_id, run_settings
from orchestrator.suites import load_tasks

OnStart = Callable[[str, int, int], None]
"""Called once with (run_id, total tasks, tasks already done)."""


def start_or_resume(
    config: Config,
    *,
    spec: str | None,
    resume: str | None,
    overrides: dict[str, Any] | None = None,
    on_start: OnStart | None = None,
    on_trajectory: OnTrajectory | None = None,
) -> RunSummary:
    """Start a run over ``spec``, or continue run ``resume`` with its pinned settings
    (flags given again on resume override them). Bad specs fail before anything runs."""
    store = open_store(config.home)
    if resume is not None:
        run = store.get_run(resume)
        pinned = Config.model_validate({"home": str(config.home), **run.settings})
        config = with_overrides(pinned, overrides or {})
        tasks = load_tasks(run.tasks_spec)
    else:
        assert spec is not None
        tasks = load_tasks(spec)
        spec_path = Path(spec)
        stored_spec = str(spec_path.resolve()) if spec_path.is_file() else spec
        run = RunRecord(run_id=new_run_id(), tasks_spec=stored_spec,
                        settings=run_settings(config), total=len(tasks))
        store.create_run(run)
    if on_start is not None:
        on_start(run.run_id, len(tasks), len(store.finished_task_ids(run.run_id)))
    memory = open_memory(config, learn=True, exclude=evaluated_prompts(config.home))
    try:
        return asyncio.run(execute_run(config, tasks, store, run, on_trajectory=on_trajectory,
                                       memory=memory))
    finally:
        if memory is not None:
            memory.close()


class RunListing(BaseModel):
    """One line of ``selftaught runs list``."""

    run_id: str
    status: RunStatus
    tasks: str
    """The TASKS spec the run was started with."""
    done: int
    """Tasks with a stored trajectory."""
    total: int
    created_at: str


def list_runs(config: Config) -> list[RunListing]:
    """Every run in the data directory, newest first, with how far each got."""
    with open_store(config.home) as store:
        return [RunListing(run_id=r.run_id, status=r.status, tasks=r.tasks_spec,
                           done=store.count(run_id=r.run_id), total=r.total,
                           created_at=r.created_at.isoformat())
                for r in store.list_runs()]
