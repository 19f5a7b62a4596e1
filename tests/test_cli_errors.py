"""Errors the issue listed as silent or unclear: ``memory export DIR`` (a temporary file
made in ``/``), ``memory export --run nosuch`` ("wrote 0", exit 0), and ``--json``
errors (nothing on stdout)."""

from __future__ import annotations

import json

import pytest

from core.errors import ConfigError
from core.records import RunRecord
from memory.export import export_trajectories
from memory.store import open_store
from tests.support import cli, make_trajectory


def test_export_to_a_directory_or_an_unknown_run_is_a_config_error(tmp_path):
    home = tmp_path / "home"
    with open_store(home) as store:
        store.create_run(RunRecord(run_id="r", tasks_spec="t", settings={}, total=1))
        store.add_trajectory(make_trajectory(1))
        target = tmp_path / "out"
        target.mkdir()
        with pytest.raises(ConfigError, match="is a directory; give a file"):
            export_trajectories(store, target)
        assert list(tmp_path.glob(".*.tmp")) == [] and list(target.iterdir()) == []
        with pytest.raises(ConfigError, match="unknown run id 'nosuch'"):
            export_trajectories(store, tmp_path / "x.jsonl", run_id="nosuch")
        assert not (tmp_path / "x.jsonl").exists()
    result = cli("memory", "export", str(tmp_path / "x.jsonl"), "--run", "nosuch", cwd=tmp_path)
    assert result.returncode == 2 and "nosuch" in result.stderr and "wrote" not in result.stderr


def test_json_errors_are_one_object_on_stdout_with_the_same_exit_code(tmp_path):
    bad = cli("run", "rg:no_such_family", "--json", cwd=tmp_path)
    assert bad.returncode == 2
    payload = json.loads(bad.stdout)
    assert payload["kind"] == "ConfigError" and "no_such_family" in payload["error"]
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "home" / "selftaught.db").write_bytes(b"")
    damaged = cli("runs", "list", "--json", cwd=tmp_path)
    assert damaged.returncode == 1
    assert json.loads(damaged.stdout)["kind"] == "StoreError"
    usage = cli("runs", "list", "--json", "--no-such-flag", cwd=tmp_path)
    assert usage.returncode == 2 and json.loads(usage.stdout)["kind"] == "UsageError"
