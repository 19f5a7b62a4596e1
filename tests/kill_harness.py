"""kill -9 at chosen points of a real ``selftaught`` process, and checks that nothing
stored was lost, doubled or left half-written. Shared by tests/test_kill_points.py (a
handful of points) and benchmarks/bench_reliability.py (the 20-point sweeps).

Two ways to choose the point:

* :func:`start_and_kill` sends SIGKILL once the process's stderr shows a stage line
  (e.g. ``"round 1: distilling"``), after a given delay: random points within a stage.
* :func:`kill_on_replace_env` makes the process kill itself inside its Nth atomic file
  replace whose target contains a pattern (e.g. ``registry.json``: promotion), just
  before or just after it: exact points in a file write. It works through a
  ``sitecustomize`` module put first on ``PYTHONPATH``; nothing in selftaught knows.

After a kill, :func:`store_rows` and :func:`registry_problems` read the data directory
directly (SQLite read-only, the registry's files) to compare before and after.

For sessions, :func:`session_files` writes a scripted session against the fake OpenAI
server and :func:`rest_of_script` what is left to say on ``--resume``; for the worker,
:func:`add_worker_job` schedules a tiny improve and :func:`run_worker_until_done` runs
the next worker until the job has run to the end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support import SELFTAUGHT, jsonl

HOOK = '''
import os, signal
_spec = os.environ.get("SELFTAUGHT_KILL_ON_REPLACE")
if _spec:
    _pattern, _n, _when = _spec.rsplit(":", 2)
    _count = [0]
    _real = os.replace

    def replace(src, dst, *args, **kwargs):
        if _pattern in os.fspath(dst):
            _count[0] += 1
            if _count[0] == int(_n):
                if _when == "after":
                    _real(src, dst, *args, **kwargs)
                os.kill(os.getpid(), signal.SIGKILL)
        return _real(src, dst, *args, **kwargs)

    os.replace = replace
'''


def kill_on_replace_env(hook_dir: Path, pattern: str, n: int, when: str = "before") -> dict[str, str]:
    """Environment that makes a selftaught process SIGKILL itself at its ``n``-th
    ``os.replace`` onto a path containing ``pattern``, ``before`` or ``after`` it."""
    hook_dir.mkdir(parents=True, exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(HOOK)
    path = os.pathsep.join(filter(None, [str(hook_dir), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "SELFTAUGHT_KILL_ON_REPLACE": f"{pattern}:{n}:{when}"}


@dataclass
class Outcome:
    returncode: int
    killed: bool
    """True when SIGKILL ended it (by us or by the hook), False when it ended alone."""
    stderr: str
    stdout: str
    stage: str | None
    """The stage line seen last before the kill."""
    after_stage_s: float | None = None
    """Seconds from seeing the stage line to the end of the process."""


def start_and_kill(args: list[str], *, cwd: Path, env: dict[str, str], stage: str | None,
                   delay_s: float, timeout_s: float = 600) -> Outcome:
    """Run ``selftaught ARGS``; once ``stage`` appears on its stderr or stdout (None: at
    start), wait ``delay_s`` and SIGKILL it (unless it ended first). Both streams go to
    files, so a chatty process (a session's screen) never blocks on a full pipe."""
    stamp = time.monotonic_ns()
    err_path, out_path = cwd / f".stderr-{stamp}", cwd / f".stdout-{stamp}"
    with err_path.open("w+") as err, out_path.open("w+") as out:
        proc = subprocess.Popen([SELFTAUGHT, *args], cwd=cwd, env={**os.environ, **env},
                                stdout=out, stderr=err, text=True)
        deadline = time.monotonic() + timeout_s
        seen_at = time.monotonic() if stage is None else None
        while proc.poll() is None and time.monotonic() < deadline:
            if seen_at is None:
                if stage in err_path.read_text() or stage in out_path.read_text():
                    seen_at = time.monotonic()
            elif time.monotonic() - seen_at >= delay_s:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait(timeout=timeout_s)
        ended = time.monotonic()
    text, stdout = err_path.read_text(), out_path.read_text()
    err_path.unlink()
    out_path.unlink()
    last = _last_stage(text)
    return Outcome(proc.returncode, proc.returncode == -signal.SIGKILL, text, stdout, last,
                   None if seen_at is None else ended - seen_at)


def run_to_end(args: list[str], *, cwd: Path, env: dict[str, str], timeout_s: float = 900) -> Outcome:
    done = subprocess.run([SELFTAUGHT, *args], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout_s)
    return Outcome(done.returncode, done.returncode == -signal.SIGKILL, done.stderr, done.stdout,
                   _last_stage(done.stderr))


def _last_stage(text: str) -> str | None:
    """The last ``round N: ...`` line (a worker prefixes its job's lines ``job NAME: ``)."""
    lines = [m.group(1) for m in re.finditer(r"^(?:job \S+: )?(round \d+: .*)$", text, re.M)]
    return lines[-1] if lines else None


def store_rows(db: Path) -> dict[tuple[str, str], str]:
    """(run id, task id) -> trajectory id, read straight from the SQLite file."""
    if not db.exists():
        return {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT run_id, task_id, id FROM trajectories").fetchall()
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok", f"{db} is damaged"
    found = {(run, task): tid for run, task, tid in rows}
    assert len(found) == len(rows), "a (run, task) pair is stored twice"
    return found


def lost(before: dict, after: dict) -> int:
    """Trajectories stored before that are gone (or replaced) after."""
    return sum(1 for key, tid in before.items() if after.get(key) != tid)


def registry_problems(home: Path) -> list[str]:
    """What is wrong with the adapter registry on disk: an unreadable index, more than one
    champion, or a listed adapter whose directory is not whole."""
    index = home / "adapters" / "registry.json"
    if not index.exists():
        return []
    try:
        adapters = json.loads(index.read_text())["adapters"]
    except (ValueError, KeyError) as exc:
        return [f"index unreadable: {exc}"]
    problems = []
    champions = [n for n, m in adapters.items() if m["status"] == "champion"]
    if len(champions) > 1:
        problems.append(f"{len(champions)} champions: {champions}")
    for name in adapters:
        for required in ("adapter_config.json", "adapter_model.safetensors", "manifest.json"):
            if not (home / "adapters" / name / required).is_file():
                problems.append(f"{name} is listed but lacks {required}")
    return problems


def tiny_improve(work: Path, tiny: Path, *, train: int = 16, holdout: int = 8) -> list[str]:
    """Write a config and task files for an ``improve`` whose every stage runs in
    seconds on a tiny untrained local model (``tests.support.build_tiny_base``): the
    regex verifier passes any answer, so collection solves, a candidate is trained,
    evaluated and (margin 0) promoted. Returns the ``improve`` arguments."""
    (work / "selftaught.toml").write_text(
        f'[models]\ngenerator = "local/{tiny}"\ncritic = "local/{tiny}"\nhint = "local/{tiny}"\n'
        '[loop]\nmax_attempts = 1\nreply_max_tokens = 8\nreference_hint = "answer"\n'
        "[run]\nconcurrency = 4\n[distill.train]\nmax_steps = 2\nbatch_size = 4\n"
        "[improve]\nmargin = 0.0\nconfidence = 0.0\ncollect = \"reference\"\n")

    def rows(prefix: str, n: int, offset: int) -> list[dict]:
        return [{"id": f"{prefix}{i}", "prompt": f"What is {i + offset} + 7?", "family": "add",
                 "reference_answer": str(i + offset + 7),
                 "verifier": {"type": "regex", "params": {"pattern": ".*"}}} for i in range(n)]

    train_file = jsonl(work / "train.jsonl", rows("tr", train, 0))
    holdout_file = jsonl(work / "holdout.jsonl", rows("ho", holdout, 100))
    return ["improve", str(train_file), "--holdout", str(holdout_file), "--json"]


# -- sessions ---------------------------------------------------------------------------


def session_files(work: Path, n: int) -> tuple[Path, list[dict]]:
    """Config, task file and script lines for a scripted ``session`` against the fake
    OpenAI server (``tests.fake_provider``, which always answers 42; its base URL comes
    from ``OPENAI_BASE_URL``). Odd tasks pass and are skipped on; even ones fail and get a
    person's hint, the hint-giver's proposal accepted, or a person's verdict, so every
    step (generate, verify, critique, hint, ask, record) is in flight at some point."""
    (work / "selftaught.toml").write_text(
        '[models]\ngenerator = "openai/fake"\ncritic = "openai/fake"\nhint = "openai/fake"\n'
        'timeout_s = 5\n[loop]\nhints = "critique"\nmax_attempts = 2\n')
    tasks = jsonl(work / "tasks.jsonl", [
        {"id": f"q{i}", "prompt": f"Question {i}: what is 6 * 7?", "answer": 42 if i % 2 else 41}
        for i in range(n)])
    even = [lambda t: {"task": t, "hint": "Read the question again."},
            lambda t: {"task": t, "command": "accept"},
            lambda t: {"task": t, "verdict": "correct", "reason": "41 is what I meant"}]
    lines = [{"task": f"q{i}", "command": "skip"} if i % 2 else even[(i // 2) % 3](f"q{i}")
             for i in range(n)]
    return tasks, lines


def rest_of_script(lines: list[dict], recorded: set[str]) -> list[dict]:
    """What a person resuming a session still has to say: the lines for tasks not yet
    recorded (for the task in progress, a line it already took is passed over with a
    line of help, as a typed one would be)."""
    return [line for line in lines if line["task"] not in recorded]


def session_id(stdout: str) -> str | None:
    """The session id a ``session`` process printed first (None if it got no further)."""
    found = re.search(r"session (\d{8}-\d{6}-[0-9a-f]+)", stdout)
    return found.group(1) if found else None


# -- the worker -------------------------------------------------------------------------

JOB = "kills"


def add_worker_job(work: Path, tiny: Path, env: dict[str, str], *, train: int = 8,
                   holdout: int = 4) -> None:
    """``schedule add`` a job running :func:`tiny_improve` every 2 s (a worker that starts
    runs it at once, and its next run right after the last one ended)."""
    args = tiny_improve(work, tiny, train=train, holdout=holdout)
    with (work / "selftaught.toml").open("a") as config:
        config.write("[schedule]\npoll_seconds = 0.5\n")
    added = run_to_end(["schedule", "add", JOB, "--every", "2s", "--", *args[1:-1]], cwd=work, env=env)
    assert added.returncode == 0, added.stderr[-2000:]


def run_worker_until_done(cwd: Path, env: dict[str, str], timeout_s: float = 600) -> Outcome:
    """Start ``selftaught worker``, wait until its job has run to the end (``done``, as
    its stderr says), then stop it with SIGTERM and wait for it to exit."""
    err_path = cwd / f".worker-{time.monotonic_ns()}"
    with err_path.open("w") as err:
        proc = subprocess.Popen([SELFTAUGHT, "worker"], cwd=cwd, env={**os.environ, **env},
                                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout_s
        try:
            while f"job {JOB}: done;" not in err_path.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=timeout_s)
        finally:
            proc.kill()
    text = err_path.read_text()
    err_path.unlink()
    return Outcome(proc.returncode, proc.returncode == -signal.SIGKILL, text, "", _last_stage(text))


def job_runs(home: Path) -> list:
    """The job's runs as stored (newest first)."""
    from memory.jobs import open_jobs

    with open_jobs(home) as jobs:
        return jobs.runs(JOB)
