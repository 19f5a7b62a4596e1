"""A grep audit: canary keys in the environment and in the config file never appear in
the data directory (trajectories, task errors, run records, checkpoints, datasets,
adapters), in any command's output, or in the sandbox's environment.

The provider echoes the key back in an error ("Incorrect API key provided: ..."), the
way a key most often reaches a message; the generated code dumps its environment from
inside the sandbox into its test failure, which the verdict keeps."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess

import pytest

from tests.fake_provider import FakeOpenAI
from tests.support import SELFTAUGHT, jsonl

pytestmark = [pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]

ENV_KEY = "canary-env-key-" + "Zq7" * 8          # any shape: caught by its variable's name
TOKEN = "canary-token-" + "Wv3" * 8              # a second secret variable, never used
CONFIG_KEY = "sk-canarycfg" + "Xy9" * 8          # written in the config file only
DUMP_ENV = "```python\nimport os\ndef f():\n    return sorted(os.environ.items())\n```"


def _reply(messages) -> str:
    prompt = messages[-1]["content"]
    return DUMP_ENV if "Write f" in prompt else "Answer: 42"


def test_canary_keys_never_reach_the_data_directory_outputs_or_the_sandbox(tmp_path, tiny_base):
    home = tmp_path / "home"
    (tmp_path / "selftaught.toml").write_text(
        f"# models.generator used to be called with api_key = {CONFIG_KEY}\n"
        '[models]\ngenerator = "openai/fake"\nmax_retries = 0\n'
        '[loop]\nhints = "none"\nmax_attempts = 1\n[run]\nconcurrency = 1\n')
    tasks = jsonl(tmp_path / "tasks.jsonl", [
        {"id": "echo", "prompt": "What is 6 * 7?", "answer": 42},
        {"id": "plain", "prompt": "And 7 * 6?", "answer": 42},
        {"id": "env", "prompt": "Write f.", "answer_format": "code",
         "verifier": {"type": "python_tests", "params": {
             "tests": "def check(candidate):\n    assert candidate() == 0, candidate()\n",
             "entry_point": "f"}}},
    ])
    env = {**os.environ, "SELFTAUGHT_HOME": str(home), "OPENAI_API_KEY": ENV_KEY,
           "SERVICE_TOKEN": TOKEN}
    outputs: list[str] = []

    def sh(*args: str, **extra: str) -> subprocess.CompletedProcess:
        done = subprocess.run([SELFTAUGHT, *args], cwd=tmp_path, env={**env, **extra},
                              capture_output=True, text=True, timeout=600)
        outputs.extend([done.stdout, done.stderr])
        return done

    with FakeOpenAI(faults=["401"], reply=_reply) as server:
        base = {"OPENAI_BASE_URL": server.base_url}
        first = sh("run", str(tasks), "--json", **base)  # task 1 meets the echoing 401
        assert first.returncode == 1, first.stderr[-2000:]
        run_id = json.loads(first.stdout)["run_id"]
        again = sh("run", "--resume", run_id, "--json", **base)
        assert again.returncode == 0, again.stderr[-2000:]
        assert server.requests[0].fault == "401"
    assert sh("memory", "export", str(tmp_path / "export.jsonl")).returncode == 0
    sh("runs", "list", "--json")
    sh("config", "show")
    sh("doctor", "--json")
    (tmp_path / "distill.toml").write_text(f'[models]\ngenerator = "local/{tiny_base}"\n'
                                           "[distill.train]\nmax_steps = 1\nbatch_size = 2\n")
    distilled = sh("distill", "--config", str(tmp_path / "distill.toml"), "--json")
    assert distilled.returncode == 0, distilled.stderr[-2000:]
    assert list((home / "datasets").glob("*.jsonl")) and list((home / "adapters").glob("a0001/*"))

    # The sandbox really ran the environment dump (its verdict shows what it saw).
    with sqlite3.connect(home / "selftaught.db") as conn:
        [record] = conn.execute("SELECT record FROM trajectories WHERE task_id = 'env'").fetchone()
        [echoed] = conn.execute("SELECT record FROM task_errors").fetchone()
    assert "Incorrect API key provided: [REDACTED]" in json.loads(echoed)["message"]
    feedback = json.loads(record)["attempts"][0]["verdict"]["feedback"]
    assert "'PATH'" in feedback and "'HOME'" in feedback, feedback

    leaks = []
    files = [p for p in [*home.rglob("*"), tmp_path / "export.jsonl"] if p.is_file()]
    assert len(files) > 10
    for canary in (ENV_KEY, TOKEN, CONFIG_KEY):
        for path in files:
            if canary.encode() in path.read_bytes():
                leaks.append(f"{canary[:14]}... in {path}")
        leaks += [f"{canary[:14]}... in a command's output" for text in outputs if canary in text]
    assert leaks == []
