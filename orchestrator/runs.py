"""Starting and resuming runs: the composition behind ``selftaught run``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from core.errors import ConfigError
from core.records import RunRecord, RunStatus
from memory.store import open_store
from orchestrator.config import Config, with_overrides
from orchestrator.evaluate import evaluated_prompts
from orchestrator.interrupts import InterruptGuard
from orchestrator.recall import open_memory
from orchestrator.lifecycle import refuse_if_live, shown_status, this_process
from orchestrator.runner import (OnTrajectory, RunSummary, execute_run, new_run_id, preflight,
                                 run_settings)
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
    guard: InterruptGuard | None = None,
) -> RunSummary:
    """Start a run over ``spec``, or continue run ``resume`` with its pinned settings
    (flags given again on resume override them). Everything is checked before a run
    record is written or claimed (tasks, models, credentials, adapter, state files:
    ``runner.preflight``); a run another live process is working on is refused.
    With a ``guard`` (see ``orchestrator.interrupts``), Ctrl-C ends the process through
    it once the run's clean-up is done."""
    with open_store(config.home) as store:
        if resume is not None:
            run = store.get_run(resume)
            if run.kind == "session":
                raise ConfigError(f"{resume} is a session; continue it with "
                                  f"`selftaught session --resume {resume}`")
            refuse_if_live(run)
            pinned = Config.model_validate({"home": str(config.home), **run.settings})
            config = with_overrides(pinned, overrides or {})
            tasks = load_tasks(run.tasks_spec, limits=config.limits)
            models = preflight(config)
        else:
            assert spec is not None
            tasks = load_tasks(spec, limits=config.limits)
            models = preflight(config)
            spec_path = Path(spec)
            stored_spec = str(spec_path.resolve()) if spec_path.is_file() else spec
            pid, host = this_process()
            run = RunRecord(run_id=new_run_id(), tasks_spec=stored_spec,
                            settings=run_settings(config), total=len(tasks), pid=pid, host=host,
                            heartbeat_at=datetime.now(UTC))
            store.create_run(run)
        if on_start is not None:
            on_start(run.run_id, len(tasks), len(store.finished_task_ids(run.run_id)))

        memory = open_memory(config, learn=True, exclude=evaluated_prompts(config.home))

        async def main() -> RunSummary:
            if guard is None:
                return await execute_run(config, tasks, store, run, models=models,
                                         on_trajectory=on_trajectory, memory=memory)
            guard.arm()
            try:
                return await execute_run(config, tasks, store, run, models=models,
                                         on_trajectory=on_trajectory, memory=memory)
            except asyncio.CancelledError:
                # Ctrl-C: the tasks have checkpointed and the run is marked interrupted.
                # Exit now rather than wait for litellm's executor threads to finish.
                guard.exit()

        if guard is not None:
            guard.release()
        try:
            return asyncio.run(main())
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
    errors: int = 0
    """Unfinished tasks whose last try ended in an error (a resume retries them)."""
    kind: str = "run"
    """``run`` or ``session`` (a person took part)."""


def list_runs(config: Config) -> list[RunListing]:
    """Every run in the data directory, newest first, with how far each got. A
    ``running`` run whose process is gone is shown ``interrupted``."""
    with open_store(config.home) as store:
        return [RunListing(run_id=r.run_id, status=shown_status(r), tasks=r.tasks_spec,
                           done=store.count(run_id=r.run_id), total=r.total,
                           created_at=r.created_at.isoformat(),
                           errors=len(store.task_errors(r.run_id)), kind=r.kind)
                for r in store.list_runs()]
