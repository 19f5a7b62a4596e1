"""Real ``selftaught worker`` processes: a due job runs and is recorded, a second worker
on the same data directory is refused, a worker killed mid-job (SIGKILL) leaves every
store consistent, and the next worker takes the lock over, closes the dead run and
stops cleanly on SIGTERM.

The job is a real improve with a real (tiny, random) local model: its tasks accept any
answer, so it solves them, trains on them, and evaluates in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from finetune.registry import ADAPTER_FILES, AdapterRegistry
from memory.jobs import JobRun, open_jobs
from memory.store import open_store
from orchestrator.config import Config
from orchestrator.evaluate import EVAL_STORE
from orchestrator.schedule import set_paused
from tests.support import SELFTAUGHT, cli, jsonl

ANY = {"type": "regex", "params": {"pattern": "(?s).*"}}


def wait_for(check: Callable[[], object], what: str, timeout_s: float = 300) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def start_worker(tmp_path: Path, name: str) -> tuple[subprocess.Popen, Path]:
    err = tmp_path / f"{name}.err"
    env = {**os.environ, "SELFTAUGHT_HOME": str(tmp_path / "home")}
    process = subprocess.Popen([SELFTAUGHT, "worker"], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=err.open("w"))
    return process, err


def runs(home: Path) -> list[JobRun]:
    with open_jobs(home) as jobs:
        return jobs.runs("often")


def test_a_worker_runs_jobs_alone_and_a_killed_worker_leaves_everything_consistent(tmp_path, tiny_base):
    home = tmp_path / "home"
    (tmp_path / "selftaught.toml").write_text(
        f'[models]\ngenerator = "local/{tiny_base}"\ncritic = "local/{tiny_base}"\n'
        f'hint = "local/{tiny_base}"\n[loop]\nmax_attempts = 1\nreply_max_tokens = 8\n'
        "[distill.train]\nmax_steps = 20\nbatch_size = 2\n[schedule]\npoll_seconds = 0.5\n")
    jsonl(tmp_path / "train.jsonl", [{"id": f"t{i}", "prompt": f"Say something about {i}.",
                                      "verifier": ANY} for i in range(4)])
    jsonl(tmp_path / "hold.jsonl", [{"id": f"h{i}", "prompt": f"Tell me about {i * 7}.",
                                     "verifier": ANY} for i in range(2)])
    added = cli("schedule", "add", "often", "--every", "2s", "--", "train.jsonl", "--holdout",
                "hold.jsonl", cwd=tmp_path)
    assert added.returncode == 0, added.stderr

    first, first_err = start_worker(tmp_path, "first")
    try:
        done = wait_for(lambda: [r for r in runs(home) if r.outcome == "done"], "a finished job run")
        assert done[0].rounds == 1 and done[0].cause == "schedule" and done[0].pid == first.pid
        assert done[0].adapters[0].adapter == "a0001" and Path(done[0].log).is_file()
        assert done[0].tokens > 0 and [s.round for s in done[0].stages] == [0, 1, 1, 1, 1]

        second = cli("worker", cwd=tmp_path, timeout_s=120)
        assert second.returncode == 1
        assert f"another selftaught worker (pid {first.pid})" in second.stderr

        # Kill the worker while a run is training (SIGKILL: no handler, no clean-up).
        def training() -> JobRun | None:
            return next((r for r in runs(home) if r.outcome == "running"
                         and "distilling" in Path(r.log).read_text()), None)

        killed = wait_for(training, "a run that is distilling")
        first.send_signal(signal.SIGKILL)
        assert first.wait(60) == -signal.SIGKILL
    finally:
        first.kill()

    # Everything on disk is whole: the SQLite files pass their integrity check, every
    # listed adapter has its files, the trajectory stores read back.
    for db in ("selftaught.db", EVAL_STORE, "schedule.db"):
        with sqlite3.connect(home / db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",), db
    registry = AdapterRegistry(home)
    for manifest in registry.list():
        assert all((registry.path(manifest.name) / f).is_file() for f in ADAPTER_FILES)
    assert sum(m.status == "champion" for m in registry.list()) <= 1
    for name in ("selftaught.db", EVAL_STORE):
        with open_store(home, name) as store:
            for run in store.list_runs():
                assert store.run_totals(run.run_id).total == len(store.trajectories(run_id=run.run_id))
    assert next(r for r in runs(home) if r.run_id == killed.run_id).outcome == "running"

    # The next worker gets the lock the kernel freed, and closes the dead run.
    set_paused(Config(home=home), "often", True)
    third, third_err = start_worker(tmp_path, "third")
    try:
        wait_for(lambda: "worker pid" in third_err.read_text(), "the next worker to start", 120)
        closed = next(r for r in runs(home) if r.run_id == killed.run_id)
        assert (closed.outcome, closed.reason) == ("interrupted", "the process running it died")
        assert closed.ended_at is not None
        assert f"run {killed.run_id} of job often was left running" in third_err.read_text()
        third.send_signal(signal.SIGTERM)
        assert third.wait(60) == 0
    finally:
        third.kill()
    assert "SIGTERM: stopping after the current stage" in third_err.read_text()
    assert (home / "worker.lock").read_text().split() == [str(third.pid)]
    shown = json.loads(cli("schedule", "show", "often", "--json", cwd=tmp_path).stdout)
    assert shown["job"]["paused"] and shown["runs"][0]["run_id"] == killed.run_id
    assert shown["runs"][0]["outcome"] == "interrupted"
