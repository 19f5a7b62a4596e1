"""Input at scale: a clear error or correct handling, with bounded memory.

Before: ``rg:gcd:n=10000000`` grew past 3.6 GB with no output; a 50 MB prompt ran 2.5
minutes at 5.4 GB and exited 0; a file with one non-UTF-8 byte was refused whole with
no line named."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from core.errors import ConfigError
from orchestrator.config import LimitsConfig
from orchestrator.suites import load_tasks
from tests.support import SELFTAUGHT, cli


def _line(i: int, prompt: str | None = None) -> bytes:
    return json.dumps({"id": f"t{i}", "prompt": prompt or f"What is {i} + 1?", "answer": i + 1}).encode() + b"\n"


def _peak_rss_mb(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run the CLI alone in a child and return its result and its peak RSS in MB."""
    probe = (
        "import resource, subprocess, sys, json\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'rc': r.returncode, 'stderr': r.stderr, 'peak': peak}))\n"
    )
    import sys

    done = subprocess.run([sys.executable, "-c", probe, SELFTAUGHT, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    found = json.loads(done.stdout)
    return subprocess.CompletedProcess(args, found["rc"], "", found["stderr"]), found["peak"]


def test_a_huge_n_is_refused_before_any_task_is_generated(tmp_path):
    started = time.monotonic()
    with pytest.raises(ConfigError, match="limits.max_tasks"):
        load_tasks("rg:gcd:n=10000000")
    with pytest.raises(ConfigError, match="limits.max_tasks = 5"):
        load_tasks("rg:gcd:n=3+rg:gcd:n=3:seed=9", limits=LimitsConfig(max_tasks=5))
    assert time.monotonic() - started < 30
    assert len(load_tasks("rg:gcd:n=5", limits=LimitsConfig(max_tasks=5))) == 5


def test_a_50_mb_line_is_named_and_skipped_unread_with_bounded_memory(tmp_path):
    path = tmp_path / "tasks.jsonl"
    with path.open("wb") as handle:
        handle.write(_line(0))
        handle.write(_line(1, prompt="x" * (50 * 1024 * 1024)))
        handle.write(_line(2))
    result, peak = _peak_rss_mb("tasks", str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "line 2: longer than limits.max_line_bytes" in result.stderr
    assert peak < 400, f"peak RSS {peak:.0f} MB while refusing a 50 MB line"


def test_a_long_prompt_is_refused_with_its_limit_and_a_100k_prompt_is_fine(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(_line(0, prompt="y" * 100_000) + _line(1))
    assert [len(t.prompt) for t in load_tasks(str(path))] == [100_000, len("What is 1 + 1?")]
    with pytest.raises(ConfigError, match="line 1: prompt is 100,000 characters, more than "
                                          "limits.max_prompt_chars = 50,000"):
        load_tasks(str(path), limits=LimitsConfig(max_prompt_chars=50_000))


def test_non_utf8_bytes_are_named_by_line_and_byte(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(_line(0) + b'{"id": "t1", "prompt": "caf\xe9?", "answer": 1}\n' + _line(2))
    with pytest.raises(ConfigError) as caught:
        load_tasks(str(path))
    assert "line 2: not UTF-8 (byte 0xe9 at byte 28)" in str(caught.value)
    assert "line 1" not in str(caught.value) and "line 3" not in str(caught.value)


def test_ten_thousand_tasks_load_and_a_file_over_the_limits_is_refused(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(b"".join(_line(i) for i in range(10_000)))
    started = time.monotonic()
    tasks = load_tasks(str(path))
    assert len(tasks) == 10_000 and tasks[-1].id == "t9999"
    assert time.monotonic() - started < 60
    with pytest.raises(ConfigError, match="more than limits.max_tasks = 9,999"):
        load_tasks(str(path), limits=LimitsConfig(max_tasks=9_999))
    with pytest.raises(ConfigError, match="limits.max_file_bytes"):
        load_tasks(str(path), limits=LimitsConfig(max_file_bytes=1024))


def test_many_bad_lines_are_listed_up_to_a_bound(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(b"not json\n" * 5000)
    with pytest.raises(ConfigError) as caught:
        load_tasks(str(path))
    message = str(caught.value)
    assert "has 5000 bad line(s)" in message and "... and 4950 more" in message
    assert message.count("invalid JSON") == 50


def test_limits_come_from_the_config_file(tmp_path):
    (tmp_path / "selftaught.toml").write_text("[limits]\nmax_tasks = 3\n")
    result = cli("tasks", "rg:gcd:n=4", cwd=tmp_path)
    assert result.returncode == 2 and "limits.max_tasks = 3" in result.stderr, result.stderr


def test_a_verifier_spec_verify_would_refuse_is_refused_at_load(tmp_path):
    # Before: `tasks` accepted it and the run failed on it task by task.
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": "p", "verifier": {"type": "numeric",
                                "params": {"expectd": 4}}}) + "\n"
                    + json.dumps({"id": "b", "prompt": "p", "verifier": {"type": "nosuch"}}) + "\n")
    result = cli("tasks", str(path), "--json", cwd=tmp_path)
    assert result.returncode == 2
    assert "line 1: bad params for verifier 'numeric'" in result.stderr
    assert "line 2: unknown verifier type 'nosuch'" in result.stderr
    error = json.loads(result.stdout)
    assert error["kind"] == "ConfigError" and "line 2" in error["error"]
