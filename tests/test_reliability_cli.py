"""Provider faults and refused starts through the real ``selftaught`` command, against
a loopback OpenAI-compatible server that injects faults (tests/fake_provider.py).

Each test reproduces a failure that used to pass silently: a failed model call stored
as an ordinary unsolved result with exit 0; a run record left ``running`` by a start
that was refused; a missing key noticed only after the run had started."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.fake_provider import FakeOpenAI
from tests.support import SELFTAUGHT, jsonl

pytestmark = [pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

KEY = "sk-test-" + "k3y" * 10


def sh(*args: str, cwd: Path, drop: tuple[str, ...] = (), timeout_s: float = 300,
       **env: str) -> subprocess.CompletedProcess:
    """The real CLI with ``env`` set and the variables in ``drop`` removed."""
    full = {k: v for k, v in os.environ.items() if k not in drop}
    full.update({"SELFTAUGHT_HOME": str(cwd / "home"), **env})
    return subprocess.run([SELFTAUGHT, *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=timeout_s)


def setup(tmp_path: Path, n: int = 4, *, retries: int = 3, timeout_s: float = 5.0,
          concurrency: int = 2) -> Path:
    (tmp_path / "selftaught.toml").write_text(
        '[models]\ngenerator = "openai/fake"\ncritic = "openai/fake"\nhint = "openai/fake"\n'
        f"timeout_s = {timeout_s}\nmax_retries = {retries}\nbackoff_s = 0.2\n"
        '[loop]\nhints = "none"\nmax_attempts = 1\n'
        f"[run]\nconcurrency = {concurrency}\n")
    return jsonl(tmp_path / "tasks.jsonl",
                 [{"id": f"q{i}", "prompt": f"Question {i}: what is 6 * 7?", "answer": 42}
                  for i in range(n)])


def runs(tmp_path: Path) -> list[dict]:
    listed = sh("runs", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)["runs"]


def trajectories(tmp_path: Path) -> list[dict]:
    db = tmp_path / "home" / "selftaught.db"
    with sqlite3.connect(db) as conn:
        return [json.loads(r[0]) for r in conn.execute("SELECT record FROM trajectories")]


def test_every_fault_is_survived_recorded_and_retried_with_backoff(tmp_path):
    tasks = setup(tmp_path, n=6)
    faults = ["429", "500", "truncate", "ok", "invalid_json", "reset", "timeout"]
    with FakeOpenAI(faults=faults, hang_s=8) as server:
        result = sh("run", str(tasks), "--json", cwd=tmp_path, OPENAI_BASE_URL=server.base_url,
                    OPENAI_API_KEY=KEY)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert (summary["solved"], summary["errors"], summary["unfinished"]) == (6, [], 0)
    assert sum(server.injected.values()) == 6
    recorded = [f for t in trajectories(tmp_path) for a in t["attempts"] for f in a["faults"]]
    assert len(recorded) == 6, recorded
    text = "\n".join(recorded)
    for says in ("RateLimitError", "InternalServerError", "no reply within 5.0 s"):
        assert says in text, text
    # Bounded: one request per call plus one per fault. Backed off: a retry waits.
    assert len(server.requests) == 6 + 6
    by_prompt: dict[str, list] = {}
    for request in server.requests:
        by_prompt.setdefault(request.body["messages"][-1]["content"], []).append(request)
    for tries in by_prompt.values():
        for before, after in zip(tries, tries[1:]):
            assert after.at - before.at >= 0.09, "a retry came without backoff"
    assert KEY not in result.stdout + result.stderr


def test_a_provider_outage_is_an_error_that_resume_retries(tmp_path):
    # Before: each failed call was stored as an unsolved task, exit 0, never retried.
    tasks = setup(tmp_path, n=4, retries=1)
    state = {"down": True}
    with FakeOpenAI(faults=lambda n, body: "reset" if state["down"] else "ok") as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": KEY}
        failed = sh("run", str(tasks), "--json", cwd=tmp_path, **env)
        assert failed.returncode == 1, failed.stderr[-3000:]
        summary = json.loads(failed.stdout)
        assert (summary["solved"], summary["unsolved"], summary["unfinished"]) == (0, 0, 4)
        assert len(summary["errors"]) == 4 and "TransientModelError" in summary["errors"][0]
        assert "--resume" in failed.stderr
        [run] = runs(tmp_path)
        assert (run["status"], run["errors"], run["done"]) == ("failed", 4, 0)

        state["down"] = False
        resumed = sh("run", "--resume", run["run_id"], "--json", cwd=tmp_path, **env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)
    assert (summary["solved"], summary["errors"], summary["unfinished"]) == (4, [], 0)
    stored = trajectories(tmp_path)
    assert sorted(t["task"]["id"] for t in stored) == [f"q{i}" for i in range(4)]
    [run] = runs(tmp_path)
    assert (run["status"], run["errors"], run["done"]) == ("finished", 0, 4)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("model, variable", [("hosted_vllm/m", "HOSTED_VLLM_API_BASE"),
                                             ("ollama/m", "OLLAMA_API_BASE")])
def test_a_server_that_refuses_connections_fails_the_run(tmp_path, model, variable):
    tasks = setup(tmp_path, n=2, retries=0)
    result = sh("run", str(tasks), "--model", model, "--json", cwd=tmp_path,
                **{variable: f"http://127.0.0.1:{_closed_port()}"})
    assert result.returncode == 1, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["unfinished"] == 2 and len(summary["errors"]) == 2
    assert runs(tmp_path)[0]["status"] == "failed"


def test_refused_starts_write_no_run_and_say_why(tmp_path):
    tasks = setup(tmp_path, n=1)
    # No key: before, openai ran every task to "unsolved" (exit 0) and anthropic exited
    # 1 with nothing stored; now both are refused up front, the same way.
    for model, key in (("openai/fake", "OPENAI_API_KEY"),
                       ("anthropic/claude-3-5-haiku-latest", "ANTHROPIC_API_KEY")):
        result = sh("run", str(tasks), "--model", model, "--json", cwd=tmp_path, drop=(key,))
        assert result.returncode == 2 and key in result.stderr, result.stderr[-2000:]
        error = json.loads(result.stdout)  # --json: the error as one object on stdout
        assert error["kind"] == "ConfigError" and key in error["error"]
    unknown = sh("run", str(tasks), "--model", "nosuchprovider/x", cwd=tmp_path)
    assert unknown.returncode == 2 and "provider/model" in unknown.stderr, unknown.stderr
    adapter = sh("run", str(tasks), "--adapter", "nosuch", cwd=tmp_path, OPENAI_API_KEY=KEY)
    assert adapter.returncode == 2 and "nosuch" in adapter.stderr, adapter.stderr
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "home" / "checkpoints.db").write_bytes(b"garbage " * 512)
    damaged = sh("run", str(tasks), cwd=tmp_path, OPENAI_API_KEY=KEY)
    assert damaged.returncode == 1, damaged.stderr
    assert "checkpoints.db" in damaged.stderr and "selftaught doctor --repair" in damaged.stderr
    assert runs(tmp_path) == []  # before: each of these left a run "running" forever
