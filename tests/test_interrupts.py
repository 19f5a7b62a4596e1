"""Ctrl-C on a real ``selftaught run`` with the embedded model: exit 130, the resume hint
is the last thing printed, and nothing is lost.

Before: Ctrl-C during generation exited 134 ("terminate called without an active
exception", the model's native thread outliving the interpreter) or hung in a litellm
finaliser; Ctrl-C during model loading printed "coroutine ... was never awaited"."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import SELFTAUGHT, stored_count

pytestmark = pytest.mark.model
SPEC = "rg:basic_arithmetic:n=6:seed=5:min_terms=2:max_terms=2:min_digits=1:max_digits=1"


def _interrupt(tmp_path: Path, when) -> tuple[subprocess.CompletedProcess, float]:
    """Start a run, send SIGINT once ``when(stderr_so_far)`` is true; (result, seconds
    from SIGINT to exit)."""
    env = {**os.environ, "SELFTAUGHT_HOME": str(tmp_path / "home")}
    errors = (tmp_path / "stderr.txt").open("w+")
    proc = subprocess.Popen([SELFTAUGHT, "run", SPEC], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=errors, text=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        errors.seek(0)
        if when(errors.read()):
            break
        time.sleep(0.1)
    if proc.poll() is not None:
        errors.seek(0)
        raise AssertionError(f"the run ended ({proc.returncode}) before it could be "
                             f"interrupted:\n{errors.read()[-3000:]}")
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    stdout, _ = proc.communicate(timeout=120)
    took = time.monotonic() - sent
    errors.seek(0)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, errors.read()), took


def _assert_clean_interrupt(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 130, result.stderr[-3000:]
    last = result.stderr.rstrip().splitlines()[-1]
    assert last.startswith("interrupted; continue with: selftaught run --resume "), result.stderr[-3000:]
    for bad in ("terminate called", "never awaited", "Traceback", "Aborted"):
        assert bad not in result.stderr, result.stderr[-3000:]
    return last.rsplit(" ", 1)[-1]


def test_ctrl_c_while_loading_and_while_generating_exits_130_after_the_hint(tmp_path):
    (tmp_path / "selftaught.toml").write_text(
        '[loop]\nmax_attempts = 1\nhints = "none"\nreply_max_tokens = 16\n[run]\nconcurrency = 2\n')
    db = tmp_path / "home" / "selftaught.db"

    # While the model loads: right after the run starts.
    loading, _ = _interrupt(tmp_path, lambda text: "tasks (0 already done)" in text)
    first = _assert_clean_interrupt(loading)

    # While generating: once a task is stored.
    generating, took = _interrupt(tmp_path, lambda text: stored_count(db) >= 1)
    second = _assert_clean_interrupt(generating)
    assert took < 30, f"exit took {took:.0f} s after Ctrl-C"
    done = stored_count(db)

    listed = subprocess.run([SELFTAUGHT, "runs", "list", "--json"], cwd=tmp_path, check=True,
                            env={**os.environ, "SELFTAUGHT_HOME": str(tmp_path / "home")},
                            capture_output=True, text=True)
    status = {r["run_id"]: r["status"] for r in json.loads(listed.stdout)["runs"]}
    assert status == {first: "interrupted", second: "interrupted"}
    resumed = subprocess.run([SELFTAUGHT, "run", "--resume", second, "--json"], cwd=tmp_path,
                             env={**os.environ, "SELFTAUGHT_HOME": str(tmp_path / "home")},
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["solved"] + json.loads(resumed.stdout)["unsolved"] == 6
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT task_id FROM trajectories WHERE run_id = ?", (second,)).fetchall()
    assert len(rows) == 6 == len(set(rows)) and done >= 1
