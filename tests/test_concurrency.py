"""Two ``run`` processes on one data directory, with readers polling meanwhile: no
"database is locked", no lost rows, and the vector memory used by one process at a time. (``run`` during ``improve`` is measured in
benchmarks/bench_reliability.py.)"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.fake_provider import FakeOpenAI
from tests.kill_harness import store_rows
from tests.support import SELFTAUGHT, jsonl

pytestmark = [pytest.mark.enable_socket, pytest.mark.allow_hosts(["127.0.0.1"])]


def test_two_runs_and_readers_share_one_data_directory(tmp_path):
    (tmp_path / "selftaught.toml").write_text(
        '[models]\ngenerator = "openai/fake"\n[loop]\nhints = "none"\nmax_attempts = 1\n'
        "[run]\nconcurrency = 4\n")
    specs = [jsonl(tmp_path / f"tasks{k}.jsonl",
                   [{"id": f"k{k}-{i}", "prompt": f"Set {k}, question {i}?", "answer": 42}
                    for i in range(16)]) for k in (1, 2)]
    with FakeOpenAI(delay_s=0.05) as server:
        env = {**os.environ, "SELFTAUGHT_HOME": str(tmp_path / "home"),
               "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test-" + "c" * 24}
        runs = [subprocess.Popen([SELFTAUGHT, "run", str(spec), "--json"], cwd=tmp_path, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for spec in specs]
        readers = []
        while any(r.poll() is None for r in runs) and len(readers) < 3:
            readers.append(subprocess.run([SELFTAUGHT, "runs", "list", "--json"], cwd=tmp_path,
                                          env=env, capture_output=True, text=True, timeout=120))
        results = [r.communicate() for r in runs]
    for proc, (stdout, stderr) in zip(runs, results):
        assert proc.returncode == 0, stderr[-3000:]
        summary = json.loads(stdout)
        assert summary["solved"] == 16
        assert "locked" not in stderr
        # The local vector index takes one process at a time: a run that found it taken
        # says it goes without memory; one that had it reports what memory did.
        assert (summary["memory"] is None) == ("goes without memory" in stderr), stderr[-2000:]
    went_without = sum(json.loads(stdout)["memory"] is None for stdout, _ in results)
    assert went_without <= 1
    for reader in readers:
        assert reader.returncode == 0 and "locked" not in reader.stderr, reader.stderr
    rows = store_rows(tmp_path / "home" / "selftaught.db")
    assert len(rows) == 32 and len({run for run, _ in rows}) == 2
